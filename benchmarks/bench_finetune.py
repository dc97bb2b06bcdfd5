"""The fine-tuning recipes end to end, as a user runs them: `python -m ms_gpt.finetune --config <recipe>` with ms_gpt's
engine under every padding policy (`auto` and each explicit one) and with `--trainer mindnlp`, in one run.

Every variant is its own process (a fresh MindSpore, as on the command line) and prints one JSON line:
- `wall_s`: the whole command (start-up, data, training, evaluation, saving);
- `train_s`, `steps_per_s`: the training call (ms_gpt: `Trainer.train`, compiles and the evaluations it runs
  included; mindnlp: `Trainer.train`) and steps over it;
- `train_compilations` / `eval_compilations`: graphs the engine compiled for the train / evaluation step;
- `vs_mindnlp` / `wall_vs_mindnlp`: steps_per_s over mindnlp's / mindnlp's wall_s over this one, same run
  (sentiment and entailment; the dialogue recipe has no mindnlp path).
Other processes may share the machine: compare the ratios within one run; each line carries the load average.

    python benchmarks/bench_finetune.py                           # sentiment, entailment, dialogue (~10 min idle)
    python benchmarks/bench_finetune.py --recipes sentiment --variants auto,mindnlp
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# recipe -> (config, steps, extra options); max_steps keeps a run to a few minutes on 2 CPU cores
RECIPES = {
    "sentiment": ("configs/sentiment_rt.yaml", 150, []),
    "entailment": ("configs/entailment.yaml", 150, []),
    "dialogue": ("configs/gpt2_chitchat_zh.yaml", 150, ["--task=dialogue", "--pretrain_files=", "--chat_samples=0",
                                                        "--eval_steps=50"]),
}
VARIANTS = ("auto", "max_length", "bucket", "dynamic", "mindnlp")


def run(recipe: str, variant: str, steps: int, tmp: str) -> dict:
    config, default_steps, extra = RECIPES[recipe]
    steps = steps or default_steps
    out = os.path.join(tmp, f"{recipe}-{variant}")
    padding = "auto" if variant == "mindnlp" else variant
    cmd = [sys.executable, "-m", "ms_gpt.finetune", f"--config={config}", f"--max_steps={steps}",
           f"--padding={padding}", f"--output_dir={out}", "--disable_tqdm=true", *extra]
    if variant == "mindnlp":
        cmd.append("--trainer=mindnlp")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), GLOG_v="3")
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        return {"recipe": recipe, "variant": variant, "error": done.stderr.strip().splitlines()[-1:]}
    with open(os.path.join(out, "all_results.json"), encoding="utf-8") as f:
        res = json.load(f)
    train_s = res.get("train_runtime", res.get("train_seconds"))
    line = {"recipe": recipe, "variant": variant, "padding": res.get("padding"), "steps": res["train_steps"],
            "wall_s": wall, "train_s": train_s, "steps_per_s": res["train_steps"] / train_s,
            "train_compilations": res.get("train_compilations"), "eval_compilations": res.get("eval_compilations")}
    for key in ("eval_accuracy", "test_accuracy", "heldout_loss_after"):
        if key in res:
            line[key] = res[key]
    line["load_average"] = os.getloadavg()[0]
    return line


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated: " + ", ".join(RECIPES))
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--max_steps", type=int, default=0, help="training steps per run (0 = the recipe's default)")
    args = parser.parse_args(argv)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in args.recipes.split(","):
            if recipe not in RECIPES:
                parser.error(f"unknown recipe {recipe!r}; expected {', '.join(RECIPES)}")
            variants = args.variants.split(",")
            for variant in variants:
                if variant not in VARIANTS:
                    parser.error(f"unknown variant {variant!r}; expected {', '.join(VARIANTS)}")
            # mindnlp first: every ms_gpt line then carries its ratio to it
            variants.sort(key=lambda v: v != "mindnlp")
            base = None
            for variant in variants:
                if variant == "mindnlp" and recipe == "dialogue":
                    continue  # the dialogue recipe trains with ms_gpt's engine only
                r = run(recipe, variant, args.max_steps, tmp)
                if variant == "mindnlp" and "error" not in r:
                    base = r
                elif base is not None and "error" not in r:
                    r["vs_mindnlp"] = r["steps_per_s"] / base["steps_per_s"]
                    r["wall_vs_mindnlp"] = base["wall_s"] / r["wall_s"]
                print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
                lines.append(r)
    return lines


if __name__ == "__main__":
    main()
