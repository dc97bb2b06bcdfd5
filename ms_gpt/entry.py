"""What every `python -m ms_gpt.X` entry point and `ms-gpt-X` console script runs its main() through: user errors
become one clear line on stderr and exit code 2, Ctrl-C exit code 130.

Must not import: any ms_gpt module (the entry points import it; the console-script table in ms_gpt.cli imports the
entry points, so nothing here may lead back to them).
"""
from __future__ import annotations

import sys


def run(main) -> int:
    try:
        main()
    except (ValueError, FileNotFoundError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
