"""Real-size speed against Hugging Face transformers + PyTorch, printed as JSON lines (one run, one machine).

1. `decode` (GPT-2 124M and GPT-1 117M, random weights saved in HF layout and loaded by both): greedy decoding of
   a `--prompt_len`-token prompt by `--new_tokens` tokens, batch 1 and a left-padded batch of `--batch` rows
   (prompts of different lengths). ms/token = the median gap between two new tokens; `first_token_s` = time to the
   first one. `new_length_first_token_s`: after those calls, a prompt length never seen before (the stall a chat
   turn would meet), with the compile counts before/after. `same_greedy_ids`: ms_gpt's ids equal HF's.
   Targets: >= 1.4x HF's decode tokens/s at batch 1, > 1x at the batch, a new length's first token <= 1 s.
2. `train_124m`: training steps of GPT-2 124M (block 256, batch 4): tokens/s and % of a nominal float32 peak
   (PEAK_GFLOPS: 2 cores x 2.45 GHz x 32 FLOP/cycle with AVX2 FMA) with FLOPs = 6 x parameters x tokens. A figure
   above 100% means the cores run faster than that nominal clock (boost). Target >= 1x HF.
3. `pretrain_one_step`: `python -m ms_gpt.pretrain` at the 124M shape (GPT-2 BPE on tiny Shakespeare, block 256,
   batch 4, one step, one evaluation batch, no sample) end to end: the plain command (the target's run), then twice
   with `--compile_cache_dir` (a cold cache, which also writes it, then a warm one), with the run's own phase
   seconds. Target: <= 30 s.

The torch side runs in the reference venv (`.venv-ref`, built by `make ref`; or `--ref_python`) as a subprocess;
without it every comparison line says `"torch": "unavailable: ..."` and the run exits with status 1 (`--allow_no_torch`
makes that 0). Both sides share the machine's cores with whatever else runs: compare the ratios of one run, and read
`load_average`.

    python benchmarks/bench_scale.py [--only decode,train_124m,pretrain_one_step] [--models gpt2,openai-gpt]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("GLOG_v", "3")

import numpy as np  # noqa: E402

from ms_gpt.config import TrainingArguments, preset  # noqa: E402
from ms_gpt.data.lm import RandomWindows  # noqa: E402
from ms_gpt.device import setup_device  # noqa: E402
from ms_gpt.engine.trainer import Trainer  # noqa: E402
from ms_gpt.generation import compile_counts, generate  # noqa: E402
from ms_gpt.model import GPTLMHeadModel, NextTokenLoss  # noqa: E402

REF_PYTHON = os.path.join(ROOT, ".venv-ref", "bin", "python")
HF_SCRIPT = os.path.join(ROOT, "benchmarks", "hf_scale_reference.py")
PEAK_GFLOPS = 2 * 2.45 * 32
MODELS = ("gpt2", "openai-gpt")  # ms_gpt.config.preset names: GPT-2 124M, GPT-1 117M
TARGETS = {"decode_batch1": 1.4, "decode_batch": 1.0, "new_length_first_token_s": 1.0, "train_124m": 1.0,
           "pretrain_one_step_s": 30.0}
BENCHES = ("decode", "train_124m", "pretrain_one_step")


def emit(record: dict) -> dict:
    record["load_average"] = round(os.getloadavg()[0], 2)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in record.items()}), flush=True)
    return record


def torch_run(ref_python: str, *args: str) -> dict:
    # MindSpore's runtime setenv()s OMP_NUM_THREADS=1 in C, which a child would inherit; let torch use its default
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([ref_python, HF_SCRIPT, *args], capture_output=True, text=True, timeout=1800, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{HF_SCRIPT} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def save_random_checkpoint(name: str, directory: str) -> str:
    setup_device("CPU", seed=0)
    path = os.path.join(directory, name)
    GPTLMHeadModel(preset(name)).save_pretrained(path)
    return path


def timed_generate(model, rows: list, new_tokens: int) -> dict:
    width = max(len(r) for r in rows)
    ids = np.array([[0] * (width - len(r)) + r for r in rows], dtype=np.int64)
    mask = np.array([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=np.int64)
    stamps = []
    start = time.perf_counter()
    out = generate(model, ids, attention_mask=mask, max_new_tokens=new_tokens, eos_token_id=[], pad_token_id=0,
                   on_token=lambda _: stamps.append(time.perf_counter()))
    return {"first_token_s": stamps[0] - start, "ms_per_token": 1000 * float(np.median(np.diff(stamps))),
            "ids": out[:, width:].tolist()}


def launch_floor_ms(name: str, prompt: list, new_tokens: int) -> float:
    """ms/token of the same decode (same layers, heads, kernels, host loop) on a model with almost no arithmetic
    (hidden size 8 per head, 256-token vocabulary): what MindSpore's runtime costs per step whatever the weights.
    With `weight_read_floor_ms` it bounds a decode step from below (`mindspore_bound_ms`; the floor graph's own
    ~150 kernel launches are counted in both, so the bound is slightly high)."""
    config = preset(name)
    tiny = GPTLMHeadModel(preset(name, n_embd=8 * config.n_head, vocab_size=256))
    prompt = [t % 256 for t in prompt]
    timed_generate(tiny, [prompt], new_tokens)  # compiles
    return timed_generate(tiny, [prompt], new_tokens)["ms_per_token"]


def weight_read_floor_ms(model, rows: int = 1, calls: int = 30) -> float:
    """Median ms of one compiled graph that does nothing but the matrix products a decode step of `rows` rows must
    do: every 2-D weight except the position table (each Conv1D, and the tied token table as the LM head) times a
    `rows`-row input. At one row (GEMVs) no decoder step can be faster on this machine than reading those weights
    once; at more rows it is what MindSpore's MatMul kernels alone cost for that batch."""
    import mindspore as ms
    from mindspore import nn, ops

    from ms_gpt.device import compiled

    class WeightReads(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            skip = ("wpe", "positions_embed")
            self.weights = ms.ParameterTuple([p for p in model.get_parameters()
                                              if len(p.shape) == 2 and not any(k in p.name for k in skip)])
            self.widest = max(max(p.shape) for p in self.weights)
            self.vocab = model.config.vocab_size
            self.matmul = ops.MatMul()

        def construct(self, x):
            total = ops.zeros((), ms.float32)
            for w in self.weights:
                if w.shape[0] == self.vocab:  # the token table [vocab, C] as the LM head, table-first as decoding
                    total = total + self.matmul(w, x[:, :w.shape[1]].T).sum()
                else:  # Conv1D [in, out]
                    total = total + self.matmul(x[:, :w.shape[0]], w).sum()
            return total

    cell = WeightReads()
    step = compiled(cell, True, "auto")
    x = ms.Tensor(np.ones((rows, cell.widest), np.float32))
    for _ in range(3):
        step(x).asnumpy()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        step(x).asnumpy()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def bench_decode(name: str, checkpoint: str, opts, ref_python) -> dict:
    rng = np.random.default_rng(0)
    vocab = preset(name).vocab_size
    rows = [rng.integers(0, vocab, opts.prompt_len - 2 * i).tolist() for i in range(opts.batch)]
    model = GPTLMHeadModel.from_pretrained(checkpoint)
    ours = {}
    for label, batch in (("batch1", rows[:1]), ("batch", rows)):
        timed_generate(model, batch, opts.new_tokens)  # compiles this batch size's two graphs
        ours[label] = timed_generate(model, batch, opts.new_tokens)
    before = compile_counts(model)
    new_len = timed_generate(model, [rows[0] + rows[0][:13]], 5)
    floor = weight_read_floor_ms(model)
    floor_batch = weight_read_floor_ms(model, rows=opts.batch)
    launches = launch_floor_ms(name, rows[0], opts.new_tokens)
    record = {"bench": "decode", "model": name, "parameters": sum(int(np.prod(p.shape)) for p in
                                                                  model.get_parameters()),
              "prompt_len": opts.prompt_len, "new_tokens": opts.new_tokens, "batch": opts.batch,
              "ms_gpt_ms_per_token_batch1": ours["batch1"]["ms_per_token"],
              "ms_gpt_ms_per_token_batch": ours["batch"]["ms_per_token"],
              "ms_gpt_first_token_s_batch1": ours["batch1"]["first_token_s"],
              "ms_gpt_new_length_first_token_s": new_len["first_token_s"],
              "compiles_before_new_length": before, "compiles_after_new_length": compile_counts(model),
              "target_new_length_first_token_s": TARGETS["new_length_first_token_s"],
              "weight_read_floor_ms": floor,
              "ms_gpt_fraction_of_floor_batch1": floor / ours["batch1"]["ms_per_token"],
              "matmul_floor_ms_batch": floor_batch,
              "launch_floor_ms": launches,
              "mindspore_bound_ms": floor + launches,
              "ms_gpt_fraction_of_mindspore_bound_batch1": (floor + launches) / ours["batch1"]["ms_per_token"]}
    record["new_length_met"] = record["ms_gpt_new_length_first_token_s"] <= TARGETS["new_length_first_token_s"]
    if ref_python is None:
        record["torch"] = f"unavailable: {opts.ref_python} not found (make ref builds it)"
        return emit(record)
    ref = torch_run(ref_python, "--checkpoint", checkpoint, "--task", "decode", "--prompts", json.dumps(rows),
                    "--new_tokens", str(opts.new_tokens))
    hf_batch = ref[f"batch{opts.batch}"]
    record.update({"torch": ref["framework"], "torch_threads": ref["threads"],
                   "hf_ms_per_token_batch1": ref["batch1"]["ms_per_token"],
                   "hf_ms_per_token_batch": hf_batch["ms_per_token"],
                   "hf_first_token_s_batch1": ref["batch1"]["first_token_s"],
                   "hf_new_length_first_token_s": ref["new_length_first_token_s"],
                   "torch_matmul_floor_ms_batch1": ref["matmul_floor_ms_batch1"],
                   "torch_matmul_floor_ms_batch": ref[f"matmul_floor_ms_batch{opts.batch}"],
                   "torch_load_average": ref["load_average"]})
    record["speed_vs_hf_batch1"] = ref["batch1"]["ms_per_token"] / ours["batch1"]["ms_per_token"]
    record["speed_vs_hf_batch"] = hf_batch["ms_per_token"] / ours["batch"]["ms_per_token"]
    record["same_greedy_ids"] = (ours["batch1"]["ids"] == ref["batch1"]["ids"]
                                 and ours["batch"]["ids"] == hf_batch["ids"])
    # the best ratio any decoder could reach at batch 1 on this machine: HF's time over the weight-read floor
    record["max_possible_speed_vs_hf_batch1"] = ref["batch1"]["ms_per_token"] / floor
    # ... and the best a MindSpore graph could reach here, paying the runtime's per-kernel cost on top
    record["max_mindspore_speed_vs_hf_batch1"] = ref["batch1"]["ms_per_token"] / (floor + launches)
    # at the batch: HF's time over MindSpore's own MatMul kernels for those rows (no attention, no runtime cost)
    record["max_mindspore_speed_vs_hf_batch"] = hf_batch["ms_per_token"] / floor_batch
    record["target_batch1"], record["target_batch"] = TARGETS["decode_batch1"], TARGETS["decode_batch"]
    record["met"] = bool(record["speed_vs_hf_batch1"] >= TARGETS["decode_batch1"]
                         and record["speed_vs_hf_batch"] > TARGETS["decode_batch"] and record["new_length_met"])
    return emit(record)


def gemm_gflops(rows: int, inner: int, cols: int, calls: int = 20) -> float:
    """GFLOP/s of MindSpore's MatMul kernel alone on one [rows, inner] x [inner, cols] float32 product (compiled,
    best of `calls`): the ceiling of a compute-bound training step built from it on this CPU."""
    import mindspore as ms
    from mindspore import nn, ops

    from ms_gpt.device import compiled

    class Product(nn.Cell):
        def __init__(self):
            super().__init__()
            self.weight = ms.Parameter(ms.Tensor(np.random.default_rng(0).standard_normal((inner, cols), np.float32)))
            self.matmul = ops.MatMul()

        def construct(self, x):
            return self.matmul(x, self.weight)

    step = compiled(Product(), True, "auto")
    x = ms.Tensor(np.random.default_rng(1).standard_normal((rows, inner), np.float32))
    times = []
    for _ in range(calls + 3):
        start = time.perf_counter()
        step(x).asnumpy()
        times.append(time.perf_counter() - start)
    return 2 * rows * inner * cols / min(times[3:]) / 1e9


def bench_train(checkpoint: str, opts, ref_python) -> dict:
    block, batch = 256, 4
    config = preset("gpt2", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, max_steps=1000, learning_rate=1e-4, weight_decay=0.01,
                                 max_grad_norm=0.0, per_device_train_batch_size=batch, disable_tqdm=True)
        ids = np.random.default_rng(0).integers(0, config.vocab_size, 100_000).astype(np.int32)
        lm = GPTLMHeadModel(config)
        trainer = Trainer(NextTokenLoss(lm), args, RandomWindows(ids, block, batch, seed=0))
        trainer.model.set_train(True)
        times = []
        for _ in range(opts.train_steps + 1):
            inputs, _ = trainer._next_stacked()
            start = time.perf_counter()
            trainer._train_step(*inputs).asnumpy()
            times.append(time.perf_counter() - start)
        n_params = sum(int(np.prod(p.shape)) for p in lm.trainable_params())
    step_s = min(times[1:])
    tokens = block * batch
    record = {"bench": "train_124m", "block": block, "batch": batch, "parameters": n_params,
              "ms_gpt_compile_and_first_step_s": times[0], "ms_gpt_step_ms": 1000 * step_s,
              "ms_gpt_tokens_per_s": tokens / step_s,
              "ms_gpt_percent_of_nominal_fp32_peak": 100 * 6 * n_params * tokens / step_s / 1e9 / PEAK_GFLOPS,
              "peak_gflops": PEAK_GFLOPS,
              # the MLP's first product at this step's shape: MindSpore's GEMM speed on this CPU
              "ms_gpt_gemm_gflops": gemm_gflops(block * batch, config.n_embd, 4 * config.n_embd)}
    if ref_python is None:
        record["torch"] = f"unavailable: {opts.ref_python} not found (make ref builds it)"
        return emit(record)
    ref = torch_run(ref_python, "--checkpoint", checkpoint, "--task", "train", "--block", str(block), "--batch",
                    str(batch), "--steps", str(opts.train_steps))
    record.update({"torch": ref["framework"], "hf_step_ms": ref["step_ms"], "hf_tokens_per_s": ref["tokens_per_s"],
                   "hf_percent_of_nominal_fp32_peak": 100 * 6 * ref["parameters"] * tokens
                   / (ref["step_ms"] / 1000) / 1e9 / PEAK_GFLOPS, "torch_load_average": ref["load_average"]})
    record["torch_gemm_gflops"] = ref["gemm_gflops"]
    record["speed_vs_hf"] = record["ms_gpt_tokens_per_s"] / ref["tokens_per_s"]
    # a step made of GEMMs cannot beat torch by more than MindSpore's GEMM beats torch's on this CPU
    record["gemm_speed_vs_torch"] = record["ms_gpt_gemm_gflops"] / ref["gemm_gflops"]
    record["target"] = TARGETS["train_124m"]
    record["met"] = record["speed_vs_hf"] >= record["target"]
    return emit(record)


def bench_pretrain_one_step(opts) -> list:
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "compile_cache")
        # the one-step run is the step, its evaluation and the saves; the recipe's closing validation-split
        # perplexity (eval_perplexity, on by default) scores 33k tokens at 124M and is timed apart as a third run
        # no_cache: the plain command (the compile cache is off by default); cold_cache also writes the cache
        runs = (("no_cache", False), ("cold_cache", False), ("warm_cache", False),
                ("warm_cache_with_val_perplexity", True))
        for label, perplexity in runs:
            out = os.path.join(tmp, label)
            cmd = [sys.executable, "-m", "ms_gpt.pretrain", "--tokenizer=gpt2", "--n_layer=12", "--n_head=12",
                   "--n_embd=768", "--block_size=256", "--per_device_train_batch_size=4", "--max_steps=1",
                   "--eval_iters=1", "--sample_tokens=0", f"--eval_perplexity={str(perplexity).lower()}",
                   "--disable_tqdm", f"--output_dir={out}"]
            cmd += [] if label == "no_cache" else [f"--compile_cache_dir={cache}"]
            env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
            start = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
            phases = next(json.loads(line.split(":", 1)[1]) for line in proc.stdout.splitlines()
                          if line.startswith("phase seconds:"))
            record = {"bench": "pretrain_one_step", "compile_cache": label,
                      "command": " ".join(c for c in cmd[1:] if not c.startswith(("--output_dir", "--compile_cache"))),
                      "wall_s": wall, "startup_and_imports_s": wall - sum(
                          v for k, v in phases.items() if k not in ("first_step_with_compile", "evaluations",
                                                                    "checkpoints")),
                      "eval_perplexity": perplexity,
                      "phase_seconds": phases, "target_s": TARGETS["pretrain_one_step_s"]}
            record["met"] = wall <= record["target_s"] if not perplexity else None
            records.append(emit(record))
    return records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(BENCHES),
                        help=f"comma-separated subset of {BENCHES} (default: all)")
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"decode: comma-separated subset of {MODELS} (default: both)")
    parser.add_argument("--prompt_len", type=int, default=32,
                        help="decode: prompt tokens of the batch-1 row; row i of the batch has 2i fewer (default: 32)")
    parser.add_argument("--new_tokens", type=int, default=64, help="decode: greedy tokens per call (default: 64)")
    parser.add_argument("--batch", type=int, default=8, help="decode: rows of the left-padded batch (default: 8)")
    parser.add_argument("--train_steps", type=int, default=3,
                        help="train_124m: timed steps after the compiled first one (default: 3)")
    parser.add_argument("--ref_python", default=REF_PYTHON,
                        help="python of the torch + transformers venv (default: .venv-ref/bin/python, `make ref`)")
    parser.add_argument("--allow_no_torch", action="store_true",
                        help="exit 0 when the reference venv is missing (default: exit 1)")
    opts = parser.parse_args(argv)
    chosen = opts.only.split(",")
    unknown = set(chosen) - set(BENCHES) or set(opts.models.split(",")) - set(MODELS)
    if unknown:
        raise SystemExit(f"bench_scale: unknown choice(s) {sorted(unknown)}")
    ref_python = opts.ref_python if os.path.exists(opts.ref_python) else None
    if ref_python is None:
        print(json.dumps({"torch": f"unavailable: {opts.ref_python} not found (make ref builds it); "
                                   "ms_gpt figures only"}), flush=True)
    if "pretrain_one_step" in chosen:
        # first, while this process holds no model: the run's ~11 GB and the in-process benches' ~13 GB (models,
        # optimizer state, compiled graphs MindSpore keeps until exit) together exceed this machine's 24 GB
        bench_pretrain_one_step(opts)
    setup_device("CPU", seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = {}
        if "decode" in chosen:
            for name in opts.models.split(","):
                checkpoints[name] = save_random_checkpoint(name, tmp)
                bench_decode(name, checkpoints[name], opts, ref_python)
        if "train_124m" in chosen:
            checkpoint = checkpoints.get("gpt2") or save_random_checkpoint("gpt2", tmp)
            bench_train(checkpoint, opts, ref_python)
    return 0 if ref_python is not None or opts.allow_no_torch else 1


if __name__ == "__main__":
    sys.exit(main())
