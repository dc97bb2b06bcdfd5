"""PyTorch eager timings that ms_gpt's training benchmark compares against. Runs under the reference venv only
(.venv-ref/bin/python); ms_gpt itself never imports torch.

Two models:
- "seed": a char-level GPT written the way the seed project wrote it (one `Head` module per attention head with its
  own key/query/value Linear layers, a `MultiHeadAttention` that concatenates the heads, `FeedForward`, pre-LN
  `Block`s, AdamW at lr 1e-3, evaluation = mean loss over `eval_iters` batches under torch.no_grad);
- "standard": a conventional GPT-2 style model (one fused qkv Linear, batched heads), for the larger shape.

Prints one JSON line: milliseconds per training step and per evaluation batch, measured after warm-up.
Usage: python torch_seed_reference.py --model seed --vocab 65 --block 32 --batch 16 --layers 4 --heads 4 --dim 64
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Head(nn.Module):
    """One causal self-attention head with its own projections, as in the seed."""

    def __init__(self, dim: int, head_size: int, block: int):
        super().__init__()
        self.key = nn.Linear(dim, head_size, bias=False)
        self.query = nn.Linear(dim, head_size, bias=False)
        self.value = nn.Linear(dim, head_size, bias=False)
        self.register_buffer("tril", torch.tril(torch.ones(block, block)))

    def forward(self, x):
        _, steps, _ = x.shape
        k, q = self.key(x), self.query(x)
        weights = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5
        weights = weights.masked_fill(self.tril[:steps, :steps] == 0, float("-inf"))
        return F.softmax(weights, dim=-1) @ self.value(x)


class MultiHeadAttention(nn.Module):
    def __init__(self, dim: int, heads: int, block: int):
        super().__init__()
        self.heads = nn.ModuleList([Head(dim, dim // heads, block) for _ in range(heads)])
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        return self.proj(torch.cat([h(x) for h in self.heads], dim=-1))


class FeedForward(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        return self.net(x)


class SeedBlock(nn.Module):
    def __init__(self, dim: int, heads: int, block: int):
        super().__init__()
        self.sa = MultiHeadAttention(dim, heads, block)
        self.ffwd = FeedForward(dim)
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x):
        x = x + self.sa(self.ln1(x))
        return x + self.ffwd(self.ln2(x))


class StandardBlock(nn.Module):
    """GPT-2 block: fused qkv projection, all heads in one batched attention, gelu MLP."""

    def __init__(self, dim: int, heads: int, block: int):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.c_attn = nn.Linear(dim, 3 * dim)
        self.c_proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))

    def forward(self, x):
        batch, steps, dim = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(dim, dim=-1)
        q, k, v = (t.view(batch, steps, self.heads, dim // self.heads).transpose(1, 2) for t in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(att.transpose(1, 2).reshape(batch, steps, dim))
        return x + self.mlp(self.ln_2(x))


class LanguageModel(nn.Module):
    def __init__(self, kind: str, vocab: int, block: int, layers: int, heads: int, dim: int):
        super().__init__()
        block_cls = SeedBlock if kind == "seed" else StandardBlock
        self.token_embedding_table = nn.Embedding(vocab, dim)
        self.position_embedding_table = nn.Embedding(block, dim)
        self.blocks = nn.Sequential(*[block_cls(dim, heads, block) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab)

    def forward(self, idx, targets):
        _, steps = idx.shape
        x = self.token_embedding_table(idx) + self.position_embedding_table(torch.arange(steps))
        logits = self.lm_head(self.ln_f(self.blocks(x)))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def measure(args) -> dict:
    torch.manual_seed(1337)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = LanguageModel(args.model, args.vocab, args.block, args.layers, args.heads, args.dim)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = torch.randint(args.vocab, (4096 + args.block + 1,))

    def get_batch(batch: int):
        starts = torch.randint(len(data) - args.block - 1, (batch,))
        x = torch.stack([data[i:i + args.block] for i in starts])
        y = torch.stack([data[i + 1:i + args.block + 1] for i in starts])
        return x, y

    def train_step():
        x, y = get_batch(args.batch)
        loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    @torch.no_grad()
    def eval_batch():
        x, y = get_batch(args.batch)
        return model(x, y).item()

    def timed(fn, count: int) -> list[float]:
        # several short rounds; the fastest round is the least disturbed by other processes on the machine
        rounds = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            for _ in range(count):
                fn()
            rounds.append((time.perf_counter() - start) / count * 1000.0)
        return rounds

    model.train()
    for _ in range(args.warmup):
        train_step()
    step_rounds = timed(train_step, args.steps)
    model.eval()
    for _ in range(args.warmup):
        eval_batch()
    eval_rounds = timed(eval_batch, args.eval_batches)
    return {"framework": f"torch {torch.__version__}", "model": args.model, "threads": torch.get_num_threads(),
            "train_step_ms": min(step_rounds), "train_step_ms_median": sorted(step_rounds)[len(step_rounds) // 2],
            "eval_batch_ms": min(eval_rounds), "eval_batch_ms_median": sorted(eval_rounds)[len(eval_rounds) // 2],
            "parameters": sum(p.numel() for p in model.parameters()), "load_average": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("seed", "standard"), default="seed",
                        help="the seed's per-head code or a fused GPT (default: seed)")
    parser.add_argument("--vocab", type=int, default=65, help="vocabulary size (default: 65)")
    parser.add_argument("--block", type=int, default=32, help="tokens per row (default: 32)")
    parser.add_argument("--batch", type=int, default=16, help="rows per step (default: 16)")
    parser.add_argument("--layers", type=int, default=4, help="transformer blocks (default: 4)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads (default: 4)")
    parser.add_argument("--dim", type=int, default=64, help="hidden size (default: 64)")
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed round")
    parser.add_argument("--eval-batches", type=int, default=20, help="evaluation batches per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default: 5)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed warm-up steps (default: 5)")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch's default)")
    print(json.dumps(measure(parser.parse_args())))


if __name__ == "__main__":
    main()
