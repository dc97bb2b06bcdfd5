"""`python -m ms_gpt.finetune --config configs/<name>.yaml [--key=value ...]` — fine-tuning with the GPT-1 task
formats (classification, entailment, similarity, multiple_choice); `--task dialogue` runs the dialogue recipe.

Must not import: ms_gpt.model, ms_gpt.engine, ms_gpt.data, ms_gpt.checkpoint, ms_gpt.compat, ms_gpt.tokenizers,
ms_gpt.lora (an entry point only parses its options and calls a recipe or library function).
"""
import sys

if __package__ in (None, ""):  # run as a file (msrun takes a script path): see ms_gpt/_launch.py
    import _launch  # noqa: F401

from ms_gpt.entry import run  # noqa: E402


def main(argv=None) -> dict:
    from ms_gpt.config import option_value, parse_config

    argv = list(sys.argv[1:] if argv is None else argv)
    if option_value(argv, "task") == "dialogue":  # its own options and recipe; it receives the whole option list
        from ms_gpt.recipes.dialogue import train_dialogue

        return train_dialogue(argv)
    from ms_gpt.recipes.finetune import ALIASES, FinetuneArguments, finetune

    args = parse_config(FinetuneArguments, argv, ALIASES)
    results = finetune(args)
    shown = {k: results[k] for k in ("eval_accuracy", "eval_f1", "test_accuracy", "test_f1") if k in results}
    print("final: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items())
          + f"; best model and tokenizer in {args.output_dir}")
    return results


if __name__ == "__main__":
    sys.exit(run(main))
