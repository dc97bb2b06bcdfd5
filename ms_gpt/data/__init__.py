"""Data: corpora, LM windows, dialogues, GPT-1 task formats and padding policies."""
