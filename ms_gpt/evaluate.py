"""`python -m ms_gpt.evaluate --model DIR --task perplexity|multiple_choice|last_word [--key=value ...]` —
zero-shot evaluation: sliding-window perplexity, likelihood-ranked choices, last-word accuracy.

Must not import: ms_gpt.model, ms_gpt.engine, ms_gpt.data, ms_gpt.checkpoint, ms_gpt.compat, ms_gpt.tokenizers,
ms_gpt.lora (an entry point only parses its options and calls a recipe or library function).
"""
import os
import sys

if __package__ in (None, ""):  # run as a file (msrun takes a script path): see ms_gpt/_launch.py
    import _launch  # noqa: F401

from ms_gpt.entry import run  # noqa: E402
from ms_gpt.config import parse_config  # noqa: E402
from ms_gpt.evaluation import EvaluateArguments, evaluate  # noqa: E402

ALIASES = {"model_name_or_path": "model", "validation_file": "data_file", "batch_size": "per_device_eval_batch_size"}


def main(argv=None) -> dict:
    args = parse_config(EvaluateArguments, argv, ALIASES)
    result = evaluate(args)
    where = f"; {os.path.join(args.output_dir, 'eval_results.json')}" if args.output_dir else ""
    print(f"{args.task}: {result['summary']}{where}")
    return result


if __name__ == "__main__":
    sys.exit(run(main))
