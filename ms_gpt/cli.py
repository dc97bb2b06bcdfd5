"""Shared by the `python -m ms_gpt.X` entry points: user errors become one clear line and exit code 2."""
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
