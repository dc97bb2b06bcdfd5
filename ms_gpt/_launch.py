"""Puts the project root on sys.path for an entry file run as a script (msrun takes a script path:
`msrun ... ms_gpt/pretrain.py`).

Python then puts the file's folder, ms_gpt/, first on sys.path: `import ms_gpt` fails and ms_gpt/tokenizers.py would
shadow the `tokenizers` library. That same folder makes this file importable as the top-level module `_launch`,
which puts the project root in that place. Under `python -m ms_gpt.X` and the `ms-gpt-*` console scripts it is
never imported.

Must not import: any ms_gpt module (it runs before ms_gpt is importable).
"""
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
