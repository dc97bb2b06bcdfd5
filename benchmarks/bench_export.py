"""MindIR export, measured in one process: `ms_gpt.exporter.export_model` of a GPT-2 124M directory (random weights,
saved first), the size of each file written, and the decode ms/token of the MindIR runner
(`ms_gpt.exported.MindIRGenerator`: mindspore.load + nn.GraphCell) against generate() on the same weights, the two
alternating for `--rounds` rounds so both see the same machine load. The export's decode gears are chosen so the
runner attends to the window generate()'s dynamic graph picks (prompt + new tokens rounded up to 32), so the
comparison is of the same computation. Prints one JSON line; `runner_over_generate` is the ms/token ratio (target:
<= 1.10) and `same_ids` whether both decoded the same greedy ids.

    python benchmarks/bench_export.py [--model gpt2] [--batch_size 1] [--prompt_tokens 32] [--new_tokens 64]
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("GLOG_v", "3")

import numpy as np  # noqa: E402

from ms_gpt.config import preset  # noqa: E402
from ms_gpt.device import setup_device  # noqa: E402
from ms_gpt.exported import MindIRGenerator  # noqa: E402
from ms_gpt.exporter import export_model  # noqa: E402
from ms_gpt.generation import PREFILL_CHUNK, generate  # noqa: E402
from ms_gpt.model import GPTLMHeadModel  # noqa: E402


def timed(run, ids, mask, new_tokens: int) -> dict:
    """One greedy call of `run` (generate() or the runner's generate_ids): first-token seconds, median ms/token."""
    stamps = []
    start = time.perf_counter()
    out = run(ids, attention_mask=mask, max_new_tokens=new_tokens, eos_token_id=[], pad_token_id=0,
              on_token=lambda _: stamps.append(time.perf_counter()))
    return {"first_token_s": stamps[0] - start, "ms_per_token": 1000 * float(np.median(np.diff(stamps))), "ids": out}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gpt2", help="ms_gpt.config.preset name (default: gpt2, GPT-2 124M)")
    parser.add_argument("--batch_size", type=int, default=1, help="rows per call, left-padded (default: 1)")
    parser.add_argument("--prompt_tokens", type=int, default=32, help="longest prompt row in tokens (default: 32)")
    parser.add_argument("--new_tokens", type=int, default=64, help="new tokens per call (default: 64)")
    parser.add_argument("--rounds", type=int, default=3, help="timed calls of each, alternating (default: 3)")
    parser.add_argument("--output_dir", default=None,
                        help="where to write the model and its export (default: None = a temporary directory, "
                             "removed at the end)")
    opts = parser.parse_args(argv)
    if opts.batch_size < 1 or opts.prompt_tokens < 1 or opts.new_tokens < 4 or opts.rounds < 1:
        parser.error("--batch_size, --prompt_tokens and --rounds must be >= 1 and --new_tokens >= 4 (ms/token is a "
                     "gap between two new tokens)")
    try:
        config = preset(opts.model)
    except ValueError as err:
        parser.error(f"--model: {err}")
    if opts.prompt_tokens + opts.new_tokens > config.n_positions:
        parser.error(f"--prompt_tokens + --new_tokens exceeds n_positions={config.n_positions}")

    setup_device("CPU", seed=0)
    work = opts.output_dir or tempfile.mkdtemp(prefix="bench_export_")
    record = {"bench": "export", "model": opts.model, "batch_size": opts.batch_size,
              "prompt_tokens": opts.prompt_tokens, "new_tokens": opts.new_tokens, "rounds": opts.rounds}
    try:
        model = GPTLMHeadModel(config)
        model.set_train(False)
        source, out = os.path.join(work, "model"), os.path.join(work, "exported")
        model.save_pretrained(source)
        window = -(-(opts.prompt_tokens + opts.new_tokens - 1) // PREFILL_CHUNK) * PREFILL_CHUNK  # generate()'s W
        start = time.perf_counter()
        exported = export_model(source, out, batch_sizes=[opts.batch_size], windows=[window])
        record["export_s"] = time.perf_counter() - start
        record["windows"] = exported["windows"]
        sizes = {g["file"]: os.path.getsize(os.path.join(out, g["file"])) for g in exported["graphs"]}
        record["file_mb"] = {name: round(size / 2 ** 20, 1) for name, size in sizes.items()}
        record["total_mb"] = round(sum(sizes.values()) / 2 ** 20, 1)
        start = time.perf_counter()
        runner = MindIRGenerator(out)
        runner.graphs(opts.batch_size)
        record["runner_load_s"] = time.perf_counter() - start

        rng = np.random.default_rng(0)
        lengths = [max(1, opts.prompt_tokens - 2 * i) for i in range(opts.batch_size)]
        ids = np.zeros((opts.batch_size, opts.prompt_tokens), np.int64)
        mask = np.zeros_like(ids)
        for row, length in enumerate(lengths):
            ids[row, -length:] = rng.integers(0, config.vocab_size, length)
            mask[row, -length:] = 1
        runs = {"runner": runner.generate_ids, "generate": lambda *a, **k: generate(model, *a, **k)}
        for name, run in runs.items():  # first calls: compiles
            first = timed(run, ids, mask, opts.new_tokens)
            record[f"{name}_first_token_s"] = first["first_token_s"]
        times, outputs = {}, {}
        for _ in range(opts.rounds):
            for name, run in runs.items():
                result = timed(run, ids, mask, opts.new_tokens)
                times.setdefault(name, []).append(result["ms_per_token"])
                outputs[name] = result["ids"]
        for name, values in times.items():
            record[f"{name}_ms_per_token"] = float(np.median(values))
        record["runner_over_generate"] = record["runner_ms_per_token"] / record["generate_ms_per_token"]
        record["same_ids"] = bool(np.array_equal(outputs["runner"], outputs["generate"]))
    finally:
        if opts.output_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    record["load_average"] = round(os.getloadavg()[0], 2)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in record.items()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
