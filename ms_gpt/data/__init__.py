"""The data layer: every batch a model trains or evaluates on is built here, in numpy.

- `lm`:       text corpora and random language-model windows (`RandomWindows`, `eval_batches`), pre-shifted: they
              carry `targets` ({"input_ids": w[:-1], "targets": w[1:]}) for `model.NextTokenLoss`.
- `padding`:  padded example batches for classification, multiple choice and dialogue — padding policies, `collate`,
              the resumable `EpochBatches`, `eval_batches` — under HF's contract: `labels` are class indices, or
              (language-model rows) the input ids with padding at IGNORE_INDEX, shifted only inside the loss.
- `tasks`:    GPT-1 task formats and their readers (csv/json/txt files, IMDB archive, hub datasets).
- `dialogue`: chit-chat YAML conversations, the held-out split, their encoding, and plain-text streams.

Training batch sources (`RandomWindows`, `EpochBatches`) implement the engine's `BatchSource` protocol
(`ms_gpt.engine.trainer`) by shape alone: `next_batch`, `state_dict`, `load_state_dict`.

Must not import (in any data module): ms_gpt.engine, ms_gpt.recipes (data is below them), ms_gpt.compat (except
`tasks` opening a hub dataset).
"""
