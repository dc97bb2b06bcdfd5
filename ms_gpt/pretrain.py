"""`python -m ms_gpt.pretrain --config configs/<name>.yaml [--key=value ...]` — causal-LM pretraining.

Must not import: ms_gpt.model, ms_gpt.engine, ms_gpt.data, ms_gpt.checkpoint, ms_gpt.compat, ms_gpt.tokenizers,
ms_gpt.lora (an entry point only parses its options and calls a recipe or library function).
"""
import sys

if __package__ in (None, ""):  # run as a file (msrun takes a script path): see ms_gpt/_launch.py
    import _launch  # noqa: F401

from ms_gpt.entry import run  # noqa: E402
from ms_gpt.config import parse_config  # noqa: E402
from ms_gpt.recipes.pretrain import ALIASES, PretrainArguments, pretrain  # noqa: E402


def main(argv=None) -> dict:
    args = parse_config(PretrainArguments, argv, ALIASES)
    summary = pretrain(args)
    if summary.get("sample") is not None:
        print("\n---- sample ----\n" + summary["sample"] + "\n----------------")
    last = summary.get("last_eval") or {}
    print(f"final: step {summary['step']}, train loss {last.get('train_loss', float('nan')):.4f}, "
          f"val loss {last.get('val_loss', float('nan')):.4f}, validation-split perplexity "
          f"{summary.get('val_perplexity', float('nan')):.4f}; model and tokenizer in {summary['output_dir']}; "
          f"loss curve {summary.get('loss_curve')}")
    return summary


if __name__ == "__main__":
    sys.exit(run(main))
