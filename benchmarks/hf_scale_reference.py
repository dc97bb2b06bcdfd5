"""The Hugging Face transformers + PyTorch side of bench_scale.py (run by the reference venv `.venv-ref`, never by
ms_gpt). Prints one JSON line.

    .venv-ref/bin/python benchmarks/hf_scale_reference.py --checkpoint DIR --task decode --prompt_len 32 --new_tokens 64
    .venv-ref/bin/python benchmarks/hf_scale_reference.py --checkpoint DIR --task train --block 256 --batch 4 --steps 3

decode: greedy generation (eos disabled) of the checkpoint, batch 1 and a left-padded batch, each run once to warm up
and once timed; per-token time is the median gap between two new tokens, first_token_s the time to the first one;
`new_length_first_token_s` is a call with a prompt length not seen before. The greedy ids are returned for the
equality check. `matmul_floor_ms_batch1` / `_batchN`: torch doing only the weight products of one decode step (the
same ones bench_scale's MindSpore floor does) for 1 and N rows. train: AdamW steps (lr 1e-4, no dropout) on random windows; the fastest step of `--steps`.
"""
import argparse
import json
import os
import time

import numpy as np
import torch
from transformers import AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList


class Stamps(LogitsProcessor):
    """Records the time each step's logits are ready (after that step's forward pass)."""

    def __init__(self):
        self.times = []

    def __call__(self, input_ids, scores):
        self.times.append(time.perf_counter())
        return scores


def timed_generate(model, ids, mask, new_tokens):
    stamps = Stamps()
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), do_sample=False,
                             max_new_tokens=new_tokens, logits_processor=LogitsProcessorList([stamps]),
                             pad_token_id=0)
    gaps = np.diff(stamps.times)
    return {"first_token_s": stamps.times[0] - start, "ms_per_token": 1000 * float(np.median(gaps)),
            "ids": out[:, ids.shape[1]:].tolist()}


def matmul_floor_ms(model, rows: int, calls: int = 30) -> float:
    """Median ms of torch multiplying a `rows`-row input by every 2-D weight but the position table (Conv1D
    [in, out]; the token table [vocab, C] as the LM head, x @ W^T)."""
    vocab = model.config.vocab_size
    weights = [p for name, p in model.named_parameters() if p.dim() == 2 and "wpe" not in name
               and "positions_embed" not in name]
    x = torch.ones(rows, max(max(w.shape) for w in weights))

    def step():
        total = 0.0
        for w in weights:
            total += (x[:, :w.shape[1]] @ w.t()).sum() if w.shape[0] == vocab else (x[:, :w.shape[0]] @ w).sum()
        return float(total)

    times = []
    with torch.no_grad():
        for i in range(calls + 3):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times[3:]))


def decode(model, args):
    model.generation_config.eos_token_id = None  # every run produces new_tokens tokens
    rows = json.loads(args.prompts)
    results = {}
    for name, batch in (("batch1", rows[:1]), (f"batch{len(rows)}", rows)):
        width = max(len(r) for r in batch)
        ids = np.array([[0] * (width - len(r)) + r for r in batch], dtype=np.int64)
        mask = np.array([[0] * (width - len(r)) + [1] * len(r) for r in batch], dtype=np.int64)
        timed_generate(model, ids, mask, args.new_tokens)  # warm-up
        results[name] = timed_generate(model, ids, mask, args.new_tokens)
    longer = np.array([rows[0] + rows[0][:13]], dtype=np.int64)
    new_len = timed_generate(model, longer, np.ones_like(longer), 5)
    results["new_length_first_token_s"] = new_len["first_token_s"]
    for count in (1, len(rows)):
        results[f"matmul_floor_ms_batch{count}"] = matmul_floor_ms(model, count)
    return results


def train(model, args):
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    rng = np.random.default_rng(0)
    vocab = model.config.vocab_size
    times = []
    for _ in range(args.steps + 1):
        ids = torch.tensor(rng.integers(0, vocab, (args.batch, args.block)))
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    step_s = min(times[1:])
    # torch's GEMM alone at the MLP's first product of this step (bench_scale measures MindSpore's the same way)
    rows, inner = args.batch * args.block, model.config.n_embd
    x, w = torch.randn(rows, inner), torch.randn(inner, 4 * inner)
    gemm = []
    for _ in range(23):
        start = time.perf_counter()
        torch.mm(x, w)
        gemm.append(time.perf_counter() - start)
    return {"step_ms": 1000 * step_s, "tokens_per_s": args.batch * args.block / step_s,
            "parameters": sum(p.numel() for p in model.parameters()),
            "gemm_gflops": 2 * rows * inner * 4 * inner / min(gemm[3:]) / 1e9}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="HF-layout model directory (required)")
    parser.add_argument("--task", choices=("decode", "train"), required=True,
                        help="greedy decode timing or training-step timing (required)")
    parser.add_argument("--prompts", default="[]", help="JSON list of prompt id lists (decode)")
    parser.add_argument("--new_tokens", type=int, default=64, help="decode: tokens per call (default: 64)")
    parser.add_argument("--block", type=int, default=256, help="train: tokens per row (default: 256)")
    parser.add_argument("--batch", type=int, default=4, help="train: rows per step (default: 4)")
    parser.add_argument("--steps", type=int, default=3, help="train: timed steps after a warm-up one (default: 3)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.checkpoint, dtype=torch.float32)
    model.eval()
    result = decode(model, args) if args.task == "decode" else train(model, args)
    result.update(framework=f"torch {torch.__version__} / transformers "
                            f"{__import__('transformers').__version__}",
                  threads=torch.get_num_threads(), load_average=os.getloadavg()[0])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
