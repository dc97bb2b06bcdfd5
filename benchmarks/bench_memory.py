"""Peak host memory and step time of one training step: full fine-tuning vs gradient checkpointing vs LoRA vs both.

Every (size, mode) runs in a FRESH subprocess (a worker: this file with `--worker`), so its peak is its own: the
parent reads the child's RSS high-water mark from `os.wait4` (ru_maxrss, kilobytes on Linux). The worker builds a
randomly initialised GPT-2 of the named size (no download; weights do not change memory or time), wraps it like
pretraining (`NextTokenLoss`), builds the engine's `Trainer` (compiled train step: forward, backward, clipping,
AdamW) and runs `--steps` steps on random token windows; it reports its own RSS after building the model (weights
only) and the time of each step (the first one includes compilation).

Modes: `full` (all weights trained), `gc` (gradient_checkpointing: each Block recomputed in the backward pass),
`lora` (lora_r=8 on c_attn, base frozen: no gradients or AdamW moments for it), `lora_gc` (both).

    python benchmarks/bench_memory.py --seqs 128,256,512,1024 --sizes gpt2,gpt2-medium   # what the README shows
    python benchmarks/bench_memory.py --seqs 1024 --previous runs.jsonl --headroom_gb 100  # only the estimates
    python benchmarks/bench_memory.py --seqs 256 --modes full,gc                            # a quick look

Heavy: GPT-2 124M at 512 tokens x 2 already peaks at ~8 GB (LoRA) on MindSpore 2.7's CPU backend. Sequence lengths
run shortest first; before each run the parent estimates the peak from the runs so far (`fit_peak`: c + a x tokens
+ b x batch x seq^2 per mode, the activation terms shared by modes with the same gradient_checkpointing setting) and
skips runs above `--limit_gb` (reported as not fitting, by estimate) or above MemAvailable minus `--headroom_gb`.
Larger sizes run (one step) at the longest length only when their estimate fits. `--previous FILE` adds the
measured lines of an earlier run to the fits. Output: one JSON line per run, the estimates for every size, the
largest size within the limit, and the Ascend sizing ESTIMATE (`ascend_table`: measured bytes per weight, 12 B per
trainable parameter, activations from the standard per-layer count, not from the CPU runs).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {  # HF GPT-2 shapes
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),
}
MODES = {"full": dict(gc=False, lora=0), "gc": dict(gc=True, lora=0), "lora": dict(gc=False, lora=8),
         "lora_gc": dict(gc=True, lora=8)}
VOCAB = 50257


def n_params(size: str) -> int:
    s = SIZES[size]
    c, layers = s["n_embd"], s["n_layer"]
    return VOCAB * c + 1024 * c + layers * (12 * c * c + 13 * c) + 2 * c


def lora_params(size: str, r: int = 8) -> int:
    s = SIZES[size]
    return s["n_layer"] * r * (s["n_embd"] + 3 * s["n_embd"])  # c_attn: A [r, C], B [3C, r]


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def worker(size: str, mode: str, seq: int, batch: int, steps: int) -> None:
    sys.path.insert(0, ROOT)
    os.environ.setdefault("GLOG_v", "3")
    import numpy as np

    from ms_gpt.config import GPTConfig, TrainingArguments
    from ms_gpt.device import setup_device
    from ms_gpt.engine.trainer import Trainer
    from ms_gpt.lora import apply_lora
    from ms_gpt.model import GPTLMHeadModel, NextTokenLoss

    device = setup_device("CPU", 0)
    rss0 = _rss_kb()
    config = GPTConfig(vocab_size=VOCAB, n_positions=1024, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                       **SIZES[size])
    lm = GPTLMHeadModel(config)
    for p in lm.get_parameters():  # materialise the lazily initialised weights now, so they count as "model"
        p.init_data()
    opts = MODES[mode]
    if opts["lora"]:
        apply_lora(lm, opts["lora"], 16, 0.0, ["c_attn"])
    rss_model = _rss_kb()

    class Windows:
        def __init__(self):
            self.rng = np.random.default_rng(0)

        def next_batch(self):
            w = self.rng.integers(0, VOCAB, (batch, seq + 1), dtype=np.int32)
            return {"input_ids": w[:, :-1], "targets": w[:, 1:]}

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    import tempfile

    out = tempfile.mkdtemp(prefix="bench_memory_")
    args = TrainingArguments(output_dir=out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=1e-4,
                             logging_steps=1, save_steps=0, eval_steps=0, disable_tqdm=True, device_target="CPU",
                             gradient_checkpointing=opts["gc"])
    trainer = Trainer(NextTokenLoss(lm), args, Windows(), device=device, export_model=lm)
    trainable = sum(int(np.prod(p.shape)) for p in trainer.params)
    times = []
    for _ in range(steps):
        inputs, _ = trainer._next_stacked()
        t0 = time.perf_counter()
        loss = trainer._train_step(*inputs)
        loss.asnumpy()
        times.append(time.perf_counter() - t0)
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({"rss_start_mb": rss0 / 1024, "rss_model_mb": rss_model / 1024, "trainable": trainable,
                      "step_seconds": times, "loss": float(loss.asnumpy())}), flush=True)


def mem_available_gb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024 ** 2
    return 0.0


def run_one(size: str, mode: str, seq: int, batch: int, steps: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--sizes", size, "--modes", mode, "--seq",
           str(seq), "--batch", str(batch), "--steps", str(steps)]
    env = dict(os.environ, GLOG_v="3", PYTHONPATH=ROOT)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # os.wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the max over all children so far)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    record = {"size": size, "mode": mode, "seq": seq, "batch": batch, "params": n_params(size),
              "peak_rss_gb": round(usage.ru_maxrss / 1024 ** 2, 3), "wall_s": round(time.perf_counter() - t0, 1),
              "load_average": os.getloadavg()[0]}
    if proc.returncode != 0:
        record["error"] = (stderr or stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return record
    result = json.loads(stdout.strip().splitlines()[-1])
    times = result["step_seconds"]
    record.update(trainable=result["trainable"], rss_model_gb=round(result["rss_model_mb"] / 1024, 3),
                  rss_start_gb=round(result["rss_start_mb"] / 1024, 3), first_step_s=round(times[0], 2),
                  step_s=round(min(times[1:]), 2) if len(times) > 1 else None, loss=round(result["loss"], 4))
    return record


def _rows(measured: list[dict], mode: str) -> list[dict]:
    return [m for m in measured if m["mode"] == mode and "error" not in m and m["size"] == "gpt2"
            and "peak_rss_gb" in m]


def fit_peak(measured: list[dict], mode: str) -> tuple[float, float, float] | None:
    """(c, a, b): peak GB of the 124M model in `mode` = c + a * tokens + b * batch * seq^2 (tokens = batch * seq; the
    seq^2 term is the attention matrices). Three or more sequence lengths of the mode: least squares. Fewer: a and
    b come from the mode with the same gradient_checkpointing setting that has three (activations do not depend on
    which weights train) and c is fitted; with nothing to borrow, b alone is fitted (an upper bound)."""
    def design(rows):
        return np.array([[1.0, m["seq"] * m["batch"], m["batch"] * m["seq"] ** 2] for m in rows])

    rows = _rows(measured, mode)
    if not rows:
        return None
    y = np.array([m["peak_rss_gb"] for m in rows])
    if len({m["seq"] for m in rows}) >= 3:
        c, a, b = np.linalg.lstsq(design(rows), y, rcond=None)[0]
        return float(c), float(a), float(b)
    donors = [other for other in MODES if other != mode and MODES[other]["gc"] == MODES[mode]["gc"]
              and len({m["seq"] for m in _rows(measured, other)}) >= 3]
    if donors:
        _, a, b = fit_peak(measured, donors[0])
        x = design(rows)
        return float(np.mean(y - x[:, 1] * a - x[:, 2] * b)), a, b
    m = rows[-1]
    base = m["rss_model_gb"] + 12e-9 * m["trainable"]
    return base, 0.0, (m["peak_rss_gb"] - base) / (m["batch"] * m["seq"] ** 2)


def estimate(measured: list[dict], size: str, mode: str, seq: int, batch: int) -> float | None:
    """Peak GB of (size, mode, seq, batch) from the 124M fit of the mode (fit_peak): the constant part split into
    start RSS + weights + parameter-proportional state (scaled with the parameter count), the per-token part scaled
    by layers x width, the attention part by layers x heads."""
    fit = fit_peak(measured, mode)
    if fit is None:
        return None
    c, a, b = fit
    m = _rows(measured, mode)[-1]
    s0, s1 = SIZES["gpt2"], SIZES[size]
    param_part = (c - m["rss_start_gb"]) * n_params(size) / m["params"]
    act = a * seq * batch * (s1["n_layer"] * s1["n_embd"]) / (s0["n_layer"] * s0["n_embd"]) + \
        b * batch * seq ** 2 * (s1["n_layer"] * s1["n_head"]) / (s0["n_layer"] * s0["n_head"])
    return m["rss_start_gb"] + param_part + act


def ascend_table(measured: list[dict], seq: int, batch: int) -> list[dict]:
    """Sizing ESTIMATE for one Ascend card (not measured on Ascend). Model state from the CPU measurements: the
    weights' bytes per parameter as measured (float32), plus 12 B per trainable parameter (float32 gradient + two
    AdamW moments). Activations NOT from the CPU runs (MindSpore's CPU runtime keeps ~14 float32 copies of every
    attention matrix alive, see README) but from the standard count for a GPT layer with 16-bit matmul outputs
    (Korthikanti et al. 2022): seq*batch*width*(34 + 5*heads*seq/width) bytes per layer; with recompute only each
    layer's input (2*seq*batch*width bytes) is kept plus one layer's full set; plus the logits (float32 logits and
    their gradient: 8*seq*batch*vocab) and 2 GB for the runtime."""
    rows = []
    full = [m for m in measured if m.get("size") == "gpt2" and "rss_model_gb" in m]
    bytes_per_param = ((full[-1]["rss_model_gb"] - full[-1]["rss_start_gb"]) * 1e9 / full[-1]["params"]) if full \
        else 4.0
    for mode in MODES:
        for size in SIZES:
            s1 = SIZES[size]
            c, layers, heads = s1["n_embd"], s1["n_layer"], s1["n_head"]
            per_layer = seq * batch * c * (34 + 5 * heads * seq / c)
            act = (layers * 2 * seq * batch * c + per_layer) if MODES[mode]["gc"] else layers * per_layer
            act += 8 * seq * batch * VOCAB
            trainable = lora_params(size) if MODES[mode]["lora"] else n_params(size)
            gb = (2e9 + bytes_per_param * n_params(size) + 12 * trainable + act) / 1e9
            rows.append({"mode": mode, "size": size, "params": n_params(size), "seq": seq, "batch": batch,
                         "estimate_gb": round(gb, 1), "fits_32gb": gb < 32, "fits_64gb": gb < 64})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="gpt2", help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--modes", default="full,gc,lora,lora_gc", help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--seq", type=int, default=1024, help="sequence length (the worker's; the target length)")
    parser.add_argument("--seqs", default="256,512,1024",
                        help="comma-separated lengths run in increasing order at 124M, e.g. 256,512,1024: each "
                             "longer one runs only if the fit of the shorter ones says it fits the memory")
    parser.add_argument("--batch", type=int, default=2, help="sequences per step (default: 2)")
    parser.add_argument("--steps", type=int, default=3, help="steps per run (the first includes compilation)")
    parser.add_argument("--limit_gb", type=float, default=16.0, help="the memory budget a run must fit")
    parser.add_argument("--headroom_gb", type=float, default=3.0, help="MemAvailable left for everything else")
    parser.add_argument("--previous", default=None,
                        help="JSON lines of an earlier run of this script: its measured runs join the fits")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes, modes = args.sizes.split(","), args.modes.split(",")
    for name in sizes:
        if name not in SIZES:
            parser.error(f"unknown size {name!r}; choose from {', '.join(SIZES)}")
    for name in modes:
        if name not in MODES:
            parser.error(f"unknown mode {name!r}; choose from {', '.join(MODES)}")
    if args.worker:
        worker(sizes[0], modes[0], args.seq, args.batch, args.steps)
        return
    seqs = sorted(int(x) for x in str(args.seqs or args.seq).split(","))
    measured: list[dict] = []
    if args.previous:
        with open(args.previous, encoding="utf-8") as f:
            measured = [r for r in map(json.loads, f) if "peak_rss_gb" in r and "error" not in r]
    fits: dict[str, dict] = {}
    for size in sizes:
        for seq in seqs if size == "gpt2" else [seqs[-1]]:
            for mode in modes:
                predicted = estimate(measured, size, mode, seq, args.batch)
                available = mem_available_gb()
                record = {"size": size, "mode": mode, "seq": seq, "batch": args.batch,
                          "estimated_gb": None if predicted is None else round(predicted, 2)}
                done = [m for m in measured if (m["size"], m["mode"], m["seq"], m["batch"]) ==
                        (size, mode, seq, args.batch)]
                if done:
                    record = {**done[-1], "from_previous": True}
                    if seq == seqs[-1] and record.get("fits_limit"):
                        fits[mode] = {"size": size, "measured": True}
                    print(json.dumps(record), flush=True)
                    continue
                if predicted is not None and predicted > args.limit_gb:
                    record.update(skipped=f"estimated peak {predicted:.1f} GB > limit {args.limit_gb} GB",
                                  fits_limit=False)
                elif predicted is not None and predicted > available - args.headroom_gb:
                    record.update(skipped=f"estimated peak {predicted:.1f} GB, only {available:.1f} GB available")
                    record["fits_limit_by_estimate"] = predicted <= args.limit_gb
                elif predicted is None and size != "gpt2":
                    record.update(skipped="no 124M run of this mode to estimate from")
                else:
                    record.update(run_one(size, mode, seq, args.batch, args.steps if size == "gpt2" else 1))
                    record["fits_limit"] = "error" not in record and record["peak_rss_gb"] <= args.limit_gb
                    measured.append(record)
                if seq == seqs[-1] and (record.get("fits_limit") or record.get("fits_limit_by_estimate")):
                    fits[mode] = {"size": size, "measured": bool(record.get("fits_limit"))}
                print(json.dumps(record), flush=True)
    for mode in modes:
        for size in SIZES:
            est = estimate(measured, size, mode, seqs[-1], args.batch)
            if est is not None:
                print(json.dumps({"estimate": {"mode": mode, "size": size, "seq": seqs[-1], "batch": args.batch,
                                               "peak_gb": round(est, 2), "fits_limit": est <= args.limit_gb}}))
    print(json.dumps({"largest_size_within_limit": fits, "limit_gb": args.limit_gb}), flush=True)
    for row in ascend_table(measured, 1024, args.batch):
        print(json.dumps({"ascend_estimate": row}), flush=True)


if __name__ == "__main__":
    main()
