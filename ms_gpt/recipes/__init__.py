"""Recipes: the library functions behind the `python -m ms_gpt.X` entry points.

Must not import (in any recipe): the entry points ms_gpt.pretrain, ms_gpt.finetune, ms_gpt.generate, ms_gpt.chat,
ms_gpt.evaluate, ms_gpt.demo, ms_gpt.cli.
"""
