"""Generation speed with and without the KV cache; prints one JSON line.

A GPT-2-shaped model (6 layers, 384 wide, GPT-2 vocabulary, random weights) continues a 32-token prompt by 256
greedy tokens, batch 1. Each path runs once to compile every shape it needs, then once timed. Prefill time is the
time to the first new token; a decode step is the time between two new tokens, and the median step gives
`decode_ms_per_token` / `decode_tokens_per_s` (robust to other processes sharing the CPU; `load_avg` records how
busy it was). `speedup` = cached / uncached decode tokens per second.

    python benchmarks/bench_generate.py [--new_tokens 256] [--prompt_len 32]
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("GLOG_v", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from ms_gpt.config import GPTConfig  # noqa: E402
from ms_gpt.device import setup_device  # noqa: E402
from ms_gpt.generation import compile_counts, generate  # noqa: E402
from ms_gpt.model import GPTLMHeadModel  # noqa: E402

MODEL = dict(model_type="gpt2", vocab_size=50257, n_positions=512, n_embd=384, n_layer=6, n_head=6)


def timed_generation(model, prompt: np.ndarray, new_tokens: int, use_cache: bool) -> dict:
    stamps = []
    start = time.perf_counter()
    out = generate(model, prompt, max_new_tokens=new_tokens, eos_token_id=[], use_cache=use_cache,
                   on_token=lambda _: stamps.append(time.perf_counter()))
    assert out.shape[1] == prompt.shape[1] + new_tokens
    step_s = float(np.median(np.diff(stamps)))
    return {"prefill_ms": 1000 * (stamps[0] - start), "decode_ms_per_token": 1000 * step_s,
            "decode_tokens_per_s": 1 / step_s, "total_s": stamps[-1] - start, "ids": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new_tokens", type=int, default=256, help="tokens generated per call (default: 256)")
    parser.add_argument("--prompt_len", type=int, default=32, help="prompt tokens (default: 32)")
    args = parser.parse_args()
    device = setup_device("auto", seed=0)
    model = GPTLMHeadModel(GPTConfig(**MODEL))
    prompt = np.random.default_rng(0).integers(0, MODEL["vocab_size"], (1, args.prompt_len))
    results = {}
    for name, use_cache in (("cache", True), ("no_cache", False)):
        timed_generation(model, prompt, args.new_tokens, use_cache)  # compiles every shape of this path
        results[name] = timed_generation(model, prompt, args.new_tokens, use_cache)
    same = bool((results["cache"].pop("ids") == results["no_cache"].pop("ids")).all())
    report = {
        "benchmark": "generate",
        "device": device.target,
        "model": MODEL,
        "batch": 1,
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
        **{f"{name}_{key}": round(value, 3) for name, r in results.items() for key, value in r.items()},
        "speedup": round(results["cache"]["decode_tokens_per_s"] / results["no_cache"]["decode_tokens_per_s"], 2),
        "same_tokens": same,
        "load_avg": round(os.getloadavg()[0], 2),
        "compiles": compile_counts(model),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
