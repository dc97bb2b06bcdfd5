"""`make demo` / `python -m ms_gpt.demo [--output_dir DIR] [--write_corpus_only] [--smoke]`: the GPT-1 paradigm at CPU
scale in about ten minutes on two cores — pretraining on review text, fine-tuning on fresh vs rotten, and the same
fine-tune from scratch (`ms_gpt.recipes.paradigm`). Prints both held-out (test split) accuracies (at this scale
pretraining does not beat scratch: see the README).

Must not import: ms_gpt.model, ms_gpt.engine, ms_gpt.data, ms_gpt.checkpoint, ms_gpt.compat, ms_gpt.tokenizers,
ms_gpt.lora (an entry point only parses its options and calls a recipe or library function).
"""
import sys

if __package__ in (None, ""):  # run as a file (msrun takes a script path): see ms_gpt/_launch.py
    import _launch  # noqa: F401

from ms_gpt.entry import run  # noqa: E402


def main(argv=None) -> dict:
    from ms_gpt.config import parse_config
    from ms_gpt.recipes.paradigm import DemoArguments, run_paradigm

    return run_paradigm(parse_config(DemoArguments, argv))


if __name__ == "__main__":
    sys.exit(run(main))
