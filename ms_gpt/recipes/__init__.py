"""Recipes: the library functions behind the `python -m ms_gpt.X` entry points."""
