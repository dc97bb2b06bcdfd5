"""AdamW with PyTorch/HF semantics (bias correction, decoupled weight decay) and learning-rate schedules.

The update runs inside the compiled train step: one fused `AdamWeightDecay` kernel per parameter, with Adam's bias
correction folded into that step's lr / eps / decay scalars, so the whole update costs one kernel per tensor (kernel
launches dominate small models on CPU). The schedule is a precomputed table indexed in-graph by the step counter:
nothing about the learning rate crosses from the host per step.

Must not import: ms_gpt.recipes, ms_gpt.data, ms_gpt.compat, ms_gpt.tokenizers.
"""
from __future__ import annotations

import math

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

SCHEDULES = ("constant", "linear", "cosine")


def lr_schedule(learning_rate: float, total_steps: int, warmup_steps: int = 0, kind: str = "constant",
                min_learning_rate: float = 0.0) -> np.ndarray:
    """lr for steps 0..total_steps-1 (float32): linear warmup from 0, then constant / linear / cosine decay to min_lr."""
    if kind not in SCHEDULES:
        raise ValueError(f"lr_scheduler_type={kind!r}; expected one of {SCHEDULES}")
    if total_steps < 1:
        raise ValueError(f"the schedule needs at least one step, got total_steps={total_steps}")
    steps = np.arange(total_steps, dtype=np.float64)
    lr = np.full(total_steps, learning_rate, dtype=np.float64)
    if kind != "constant":
        decay_steps = max(1, total_steps - warmup_steps)
        progress = np.clip((steps - warmup_steps) / decay_steps, 0.0, 1.0)
        if kind == "linear":
            lr = min_learning_rate + (learning_rate - min_learning_rate) * (1.0 - progress)
        else:
            lr = min_learning_rate + (learning_rate - min_learning_rate) * 0.5 * (1.0 + np.cos(math.pi * progress))
    if warmup_steps > 0:
        warm = steps < warmup_steps
        lr[warm] = learning_rate * (steps[warm] + 1) / warmup_steps
    return lr.astype(np.float32)


def decay_mask(shapes: list[tuple]) -> list[bool]:
    """Weight decay only on >= 2-D weights (matmuls and embeddings), never on biases or LayerNorm parameters."""
    return [len(shape) >= 2 for shape in shapes]


class AdamW(nn.Cell):
    """AdamW over `params`; `construct(grads)` applies one step at lr = schedule[step] and advances the step.

    State: `moment1.*`, `moment2.*` and `step` are Parameters, so they are saved and restored with the optimizer
    checkpoint and a resumed run continues exactly.
    """

    def __init__(self, params, schedule: np.ndarray, weight_decay: float = 0.0, betas=(0.9, 0.999),
                 eps: float = 1e-8):
        super().__init__()
        self.params = ms.ParameterTuple(params)
        self.moment1 = self.params.clone(prefix="moment1", init="zeros")
        self.moment2 = self.params.clone(prefix="moment2", init="zeros")
        self.decay_flags = tuple(decay_mask([p.shape for p in params]))
        self.step = Parameter(Tensor(0, ms.int32), name="optimizer_step", requires_grad=False)
        self.schedule = Parameter(Tensor(schedule, ms.float32), name="lr_schedule", requires_grad=False)
        self.num_steps = len(schedule)
        self.beta1, self.beta2, self.eps = float(betas[0]), float(betas[1]), float(eps)
        self.weight_decay = float(weight_decay)
        self.fused = ops.AdamWeightDecay()
        self.hyper_map = ops.HyperMap()

    def current_lr(self):
        return self.schedule[ops.minimum(self.step, self.num_steps - 1)]

    def construct(self, grads):
        lr = self.current_lr()
        t = (self.step + 1).astype(ms.float32)
        correction1 = 1.0 - ops.pow(self.beta1, t)
        correction2_sqrt = ops.sqrt(1.0 - ops.pow(self.beta2, t))
        # fused kernel: var -= lr_t * (m / (sqrt(v) + eps_t) + decay_t * var); choose lr_t, eps_t, decay_t so that
        # this equals PyTorch AdamW: var -= lr * wd * var + lr * m_hat / (sqrt(v_hat) + eps)
        lr_t = lr * correction2_sqrt / correction1
        eps_t = self.eps * correction2_sqrt
        decay_t = self.weight_decay * lr / lr_t
        zero = ops.zeros_like(decay_t)
        ok = True
        for i in range(len(self.params)):
            decay = decay_t if self.decay_flags[i] else zero
            ok = ops.depend(ok, self.fused(self.params[i], self.moment1[i], self.moment2[i], lr_t, self.beta1,
                                           self.beta2, eps_t, decay, grads[i]))
        ops.assign_add(self.step, ops.ones((), ms.int32))
        return ok
