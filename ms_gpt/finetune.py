"""`python -m ms_gpt.finetune --config configs/<name>.yaml [--key=value ...]` — fine-tuning with the GPT-1 task
formats (classification, entailment, similarity, multiple_choice); `--task dialogue` runs the dialogue recipe."""
import os
import sys

if __package__ in (None, ""):  # launched as a file (msrun takes a script path): import from the project root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from ms_gpt.cli import run  # noqa: E402


def split_task(argv: list) -> tuple:
    """(task named on the command line or in the --config file, argv without the command-line --task option)."""
    import yaml

    task, rest, config = None, [], None
    i = 0
    while i < len(argv):
        key, eq, value = argv[i].partition("=")
        if key in ("--task", "--config") and not eq and i + 1 < len(argv):
            value, i = argv[i + 1], i + 1
        if key == "--task":
            task = value
        else:
            rest.append(argv[i] if eq or key not in ("--config",) else f"--config={value}")
            if key == "--config":
                config = value
        i += 1
    if task is None and config and os.path.isfile(config):
        with open(config, encoding="utf-8") as f:
            data = yaml.safe_load(f)
        task = data.get("task") if isinstance(data, dict) else None
    return task, rest


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    task, rest = split_task(argv)
    if task == "dialogue":
        from ms_gpt.recipes.dialogue import train_dialogue

        return train_dialogue(rest)
    from ms_gpt.config import parse_config
    from ms_gpt.recipes.finetune import ALIASES, FinetuneArguments, finetune

    args = parse_config(FinetuneArguments, argv, ALIASES)
    results = finetune(args)
    shown = {k: results[k] for k in ("eval_accuracy", "eval_f1", "test_accuracy", "test_f1") if k in results}
    print("final: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items())
          + f"; best model and tokenizer in {args.output_dir}")
    return results


if __name__ == "__main__":
    sys.exit(run(main))
