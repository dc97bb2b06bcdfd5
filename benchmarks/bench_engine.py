"""The serving engine's decode step against MindSpore's MatMul floor, printed as JSON lines (one run, one machine).

For each row count R in `--rows` (default 1, 8, 16) the engine (`ms_gpt.serving.engine.ServingEngine`, GPT-2 124M
with random weights of the real shape, `--max_batch_size` slots) serves R greedy requests of `--prompt_len` tokens
and `--new_tokens` new tokens each, submitted together, so every decode step runs R active slots. `step_ms` is the
median time of those steps as the engine measures them (inputs built, the compiled step, the R greedy ids on the
host); `matmul_floor_ms` is what MindSpore's MatMul kernels alone take for the step's weight products at R rows
(`bench_scale.weight_read_floor_ms`, imported: the same floor bench_scale reports). `fraction_of_floor` =
floor / step: issue 24's target is >= 0.8 at 8 and 16 rows. `tokens_per_s` is the whole run's output tokens over
its wall time (prefills included). Other processes on the machine slow both sides: compare within one run and read
`load_average`.

    python benchmarks/bench_engine.py [--rows 1,8,16] [--prompt_len 32] [--new_tokens 64]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
os.environ.setdefault("GLOG_v", "3")

import numpy as np  # noqa: E402

from bench_scale import weight_read_floor_ms  # noqa: E402
from ms_gpt.config import preset  # noqa: E402
from ms_gpt.device import setup_device  # noqa: E402
from ms_gpt.model import GPTLMHeadModel  # noqa: E402
from ms_gpt.serving.engine import SamplingParams, ServingEngine  # noqa: E402

TARGET_FRACTION = 0.8  # issue 24: the decode step at >= 80% of the MatMul floor at 8 and 16 rows


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def emit(record: dict) -> dict:
    record["load_average"] = round(os.getloadavg()[0], 2)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in record.items()}), flush=True)
    return record


def serve_batch(engine: ServingEngine, rows: int, prompt_len: int, new_tokens: int, seed: int) -> dict:
    """R greedy requests at once; the decode steps that ran exactly R slots, and the run's tokens/s."""
    rng = np.random.default_rng(seed)
    vocab = engine.vocab_size
    done = threading.Semaphore(0)
    engine.step_times.clear()

    def on_event(ids, finish):
        if finish is not None:
            done.release()

    start = time.perf_counter()
    for _ in range(rows):
        engine.submit(rng.integers(0, vocab, prompt_len).tolist(),
                      SamplingParams(max_tokens=new_tokens, temperature=0.0), on_event)
    for _ in range(rows):
        if not done.acquire(timeout=1800):
            raise RuntimeError("bench_engine: a request did not finish")
    wall = time.perf_counter() - start
    steps = [seconds for active, seconds in engine.step_times if active == rows]
    return {"step_ms": 1000 * float(np.median(steps)), "step_ms_min": 1000 * float(np.min(steps)),
            "steps": len(steps), "tokens_per_s": rows * new_tokens / wall}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1,8,16",
                        help="comma-separated numbers of active slots to time (default: 1,8,16)")
    parser.add_argument("--model", default="gpt2",
                        help="ms_gpt.config.preset name of the model shape, random weights (default: gpt2)")
    parser.add_argument("--max_batch_size", type=int, default=0,
                        help="the engine's KV-cache slots (default: 0 = the largest of --rows)")
    parser.add_argument("--prompt_len", type=int, default=32, help="prompt tokens of every request (default: 32)")
    parser.add_argument("--new_tokens", type=int, default=64, help="greedy tokens of every request (default: 64)")
    parser.add_argument("--floor_calls", type=int, default=30,
                        help="timed calls of the MatMul-floor graph per row count (default: 30)")
    opts = parser.parse_args(argv)
    try:
        rows = [int(r) for r in opts.rows.split(",")]
    except ValueError:
        parser.error(f"--rows must be comma-separated integers, got {opts.rows!r}")
    if any(r < 1 for r in rows) or opts.prompt_len < 1 or opts.new_tokens < 2 or opts.floor_calls < 1:
        parser.error("--rows entries, --prompt_len and --floor_calls must be >= 1 and --new_tokens >= 2")
    slots = opts.max_batch_size or max(rows)
    if slots < max(rows):
        parser.error(f"--max_batch_size {slots} is below the largest --rows entry {max(rows)}")
    setup_device("CPU", seed=0)
    model = GPTLMHeadModel(preset(opts.model))
    if opts.prompt_len + opts.new_tokens > model.config.n_positions:
        parser.error(f"--prompt_len + --new_tokens exceeds n_positions={model.config.n_positions}")
    engine = ServingEngine(model, max_batch_size=slots, max_queue=max(rows))
    started = time.perf_counter()
    engine.start()
    engine.wait_ready()
    warm_up_s = time.perf_counter() - started
    compiled = engine.compile_counts()
    try:
        for r in rows:
            served = serve_batch(engine, r, opts.prompt_len, opts.new_tokens, seed=r)
            floor = weight_read_floor_ms(model, rows=r, calls=opts.floor_calls)
            record = {"bench": "engine_decode_step", "model": opts.model, "rows": r, "max_batch_size": slots,
                      "prompt_len": opts.prompt_len, "new_tokens": opts.new_tokens, **served,
                      "matmul_floor_ms": floor, "fraction_of_floor": floor / served["step_ms"],
                      "target_fraction": TARGET_FRACTION, "warm_up_s": warm_up_s, "cpu": cpu_name(),
                      "cores": os.cpu_count()}
            record["met"] = record["fraction_of_floor"] >= TARGET_FRACTION if r >= 8 else None
            emit(record)
        after = engine.compile_counts()
        emit({"bench": "engine_compile_counts", "after_warm_up": compiled, "after_run": after,
              "no_compile_after_warm_up": after == compiled})
    finally:
        engine.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
