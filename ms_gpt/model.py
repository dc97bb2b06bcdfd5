"""GPT-1 and GPT-2 as MindSpore cells — one definition, chosen by `GPTConfig.model_type`.

GPT-2 ("gpt2") blocks are pre-LayerNorm with a final `ln_f`; GPT-1 ("openai-gpt") blocks are post-LayerNorm with no
final norm. Everything else is shared. Attribute names follow the HF checkpoints, so every parameter name here *is* the
HF key (`h.0.attn.c_attn.weight`, `wte.weight` / `tokens_embed.weight`, ...) and checkpoint conversion is a rename table.

All `construct` methods are graph-mode safe: Python branches depend only on config values, shapes and on whether an
optional argument was passed, never on tensor values. Matmuls run in `config.compute_dtype`; LayerNorm, softmax, the
residual stream and the losses stay float32.

Must not import: ms_gpt.data, ms_gpt.engine, ms_gpt.recipes, ms_gpt.compat, ms_gpt.tokenizers; ms_gpt.checkpoint only
inside from_pretrained / save_pretrained (a function-level import: the checkpoint package loads into any cell it
is handed and never imports the model, so there is no cycle).
"""
from __future__ import annotations

import math

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer

from .config import GPTConfig
from .device import current_policy, lazy_inline_where_supported

_MS_DTYPES = {"float32": ms.float32, "float16": ms.float16, "bfloat16": ms.bfloat16}
IGNORE_INDEX = -100  # the label the loss skips (HF's value); the one definition, data and recipes import it
HEAD_FEW_ROWS = 16  # decode-step logits of at most this many rows take the table-first MatMul


def normal_weight(shape: tuple, std: float) -> Parameter:
    """A float32 N(0, std^2) weight, seeded as MindSpore's `Normal` initializer is (a draw from numpy's global
    generator, which `mindspore.set_seed` seeds), so a seed gives the same model. numpy's generator fills GPT-2
    124M's weights in ~0.5 s where the initializer's kernel took ~3 s on this CPU."""
    rng = np.random.default_rng(int(np.random.randint(1, 1 << 63, dtype=np.int64)))
    values = rng.standard_normal(shape, dtype=np.float32)
    values *= np.float32(std)
    return Parameter(Tensor(values), name="weight")


class Conv1D(nn.Cell):
    """HF's "Conv1D": a linear layer whose weight is stored [in, out] (y = x @ W + b)."""

    def __init__(self, n_in: int, n_out: int, std: float = 0.02, compute_dtype=ms.float32):
        super().__init__()
        self.n_out = n_out
        self.weight = normal_weight((n_in, n_out), std)
        self.bias = Parameter(initializer("zeros", (n_out,), ms.float32), name="bias")
        self.compute_dtype = compute_dtype
        # The MatMul / BiasAdd primitives, not ops.matmul and `+`: their gradients are two transpose-flagged MatMuls
        # and one BiasAddGrad, where ops.matmul's backward adds two Transpose kernels and `+` a ReduceSum (CPU
        # graphs pay per kernel launched).
        self.matmul = ops.MatMul()

    def construct(self, x):
        lead = x.shape[:-1]
        x2d = x.reshape(-1, x.shape[-1])
        if self.compute_dtype == ms.float32:
            y = ops.bias_add(self.matmul(x2d, self.weight), self.bias)
        else:
            y = self.matmul(x2d.astype(self.compute_dtype), self.weight.astype(self.compute_dtype))
            y = ops.bias_add(y.astype(ms.float32), self.bias)
        return y.reshape(lead + (self.n_out,))


class LoraWeight(nn.Cell):
    """One LoRA factor: a bias-free linear weight stored [out, in] (PEFT's `lora_A` / `lora_B` nn.Linear layout)."""

    def __init__(self, weight: Parameter):
        super().__init__()
        self.weight = weight


class LoraConv1D(Conv1D):
    """A frozen Conv1D plus PEFT's LoRA update: y = x W + b + scaling * (dropout(x) A^T) B^T.

    Takes over the wrapped Conv1D's `weight` / `bias` Parameters (same objects, same names) and adds `lora_A.weight`
    [r, in] and `lora_B.weight` [out, r], so the parameter names are PEFT's keys without `base_model.model.`.
    scaling = lora_alpha / r (lora_alpha / sqrt(r) with use_rslora). Built by `ms_gpt.lora.apply_lora`.
    """

    def __init__(self, base: Conv1D, lora_a: Parameter, lora_b: Parameter, scaling: float, dropout: float = 0.0):
        nn.Cell.__init__(self)  # not Conv1D.__init__: the base Parameters are reused, none are created
        self.n_out, self.compute_dtype, self.matmul = base.n_out, base.compute_dtype, base.matmul
        self.weight, self.bias = base.weight, base.bias
        self.lora_A = LoraWeight(lora_a)
        self.lora_B = LoraWeight(lora_b)
        self.scaling = float(scaling)
        self.r = int(lora_a.shape[0])
        self.use_dropout = dropout > 0
        self.lora_dropout = nn.Dropout(p=dropout) if dropout > 0 else None
        self.matmul_t = ops.MatMul(transpose_b=True)  # x [N, in] @ A^T, then @ B^T: both factors stay [out, in]

    def construct(self, x):
        y = super().construct(x)
        lead = x.shape[:-1]
        h = x.reshape(-1, x.shape[-1])
        if self.use_dropout:
            h = self.lora_dropout(h)
        a, b = self.lora_A.weight, self.lora_B.weight
        if self.compute_dtype != ms.float32:
            h, a, b = h.astype(self.compute_dtype), a.astype(self.compute_dtype), b.astype(self.compute_dtype)
        delta = self.matmul_t(self.matmul_t(h, a), b).astype(ms.float32)
        return y + (delta * self.scaling).reshape(lead + (self.n_out,))


class LayerNorm(nn.Cell):
    """LayerNorm over the last axis with HF parameter names (`weight`, `bias`), always computed in float32.

    On the CPU backend it is composed of MatMul (the two means) and elementwise ops: MindSpore 2.7's CPU LayerNorm
    kernel and its gradient took 2-4x longer at every training and evaluation shape measured (fwd+bwd [512, 64]: 518
    vs 240 us; [1024, 768]: 12.4 vs 3.1 ms; fwd [6400, 64]: 1.8 vs 0.74 ms), the same result within 1e-6. The
    fused kernel stays where it is faster: one-token decode steps (`fused=True`, [1, 768]: 29 vs 40 us) and other
    devices (Ascend / GPU kernels are fused and fast) and under `emulate_ascend` (`device.ExecutionPolicy`).
    """

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = Parameter(initializer("ones", (dim,), ms.float32), name="weight")
        self.bias = Parameter(initializer("zeros", (dim,), ms.float32), name="bias")
        self.norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)
        self.composed = not current_policy().fused_layer_norm  # the execution policy at construction decides
        self.eps = eps
        self.dim = dim
        self.mean_of_row = Tensor(np.full((dim, 1), 1.0 / dim, np.float32))  # x @ this = the row means
        self.matmul = ops.MatMul()

    def construct(self, x, fused=False):
        if fused or not self.composed:
            return self.norm(x, self.weight, self.bias)[0]
        rows = x.reshape(-1, self.dim)
        centred = rows - self.matmul(rows, self.mean_of_row)
        variance = self.matmul(centred * centred, self.mean_of_row)
        return (centred * ops.rsqrt(variance + self.eps) * self.weight + self.bias).reshape(x.shape)


class Embedding(nn.Cell):
    """A lookup table with the HF parameter name `weight` ([num, dim])."""

    def __init__(self, num: int, dim: int, std: float = 0.02):
        super().__init__()
        self.weight = normal_weight((num, dim), std)

    def construct(self, ids):
        return ops.gather(self.weight, ids, 0)


class Attention(nn.Cell):
    """Causal self-attention: c_attn -> q, k, v -> heads -> masked softmax -> merge heads -> c_proj."""

    def __init__(self, config: GPTConfig, proj_std: float):
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.head_dim
        self.n_embd = config.n_embd
        self.compute_dtype = _MS_DTYPES[config.compute_dtype]
        self.scale = 1.0 / math.sqrt(self.head_dim) if config.scale_attn_weights else 1.0
        self.c_attn = Conv1D(config.n_embd, 3 * config.n_embd, config.initializer_range, self.compute_dtype)
        self.c_proj = Conv1D(config.n_embd, config.n_embd, proj_std, self.compute_dtype)
        self.attn_dropout = nn.Dropout(p=config.attn_pdrop)
        self.resid_dropout = nn.Dropout(p=config.resid_pdrop)
        self.mask_value = float(np.finfo(np.float32).min)  # scores are float32 when masked
        self.matmul_qk = ops.BatchMatMul(transpose_b=True)  # q @ k^T without materialising k^T
        self.matmul_pv = ops.BatchMatMul()  # the primitive: its gradient needs no Transpose kernels (ops.matmul's does)
        # in-place write of new keys/values into a static cache [B * H * slots, D]: ScatterUpdate on rows. (On
        # MindSpore 2.7 CPU ScatterNdUpdate into [B, H, slots, D] took ~1 ms per call at GPT-2 124M, a quarter of a
        # decode step; ScatterUpdate ~15 us.)
        self.cache_write = ops.ScatterUpdate()

    def split_heads(self, qkv):
        """[B, T, 3C] -> q, k, v each [B, H, T, D], with a single transpose and a single Unstack (CPU pays per
        kernel launched, and three StridedSlice kernels are several times slower than one Unstack there)."""
        batch, seq, _ = qkv.shape
        qkv = qkv.reshape(batch, seq, 3, self.n_head, self.head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = ops.unstack(qkv, 0)
        return q, k, v

    def merge_heads(self, x):
        batch, _, seq, _ = x.shape
        return x.transpose(0, 2, 1, 3).reshape(batch, seq, self.n_embd)

    def construct(self, x, mask, layer_cache=None, cache_write=None):
        """x [B, T, C]; mask bool [B or 1, 1, T, S] (True = may attend); optional static KV cache.

        With `layer_cache=(k, v)` (Parameters [B * H * L, D], row (b * H + h) * L + slot) and `cache_write` =
        (int32 [B * H * T]: the cache row of each new key/value in [B, H, T] order, int32 [B * H * W]: the rows of
        the first W slots), the T new keys/values are written into the caches in place and attention runs over the
        first W slots. Returns (output [B, T, C], (k, v)) — the keys/values attended to.
        """
        if layer_cache is not None and x.shape[1] == 1:
            return self.decode_one(x, mask, layer_cache, cache_write)
        q, k, v = self.split_heads(self.c_attn(x))
        q = q * self.scale
        if layer_cache is not None:
            # written in place (the caches are Parameters): only the T new rows move, not the whole cache
            # then the rows of the attended window are read back in [B, H, window, D] order by one Gather (a
            # Reshape of the written Parameter would copy the whole cache anyway)
            batch, heads, seq, dim = k.shape
            write_rows, read_rows = cache_write
            # the cache's dtype (generation's --dtype) is the stored keys'/values' dtype
            k = self.cache_write(layer_cache[0], write_rows, k.reshape(-1, dim).astype(layer_cache[0].dtype))
            v = self.cache_write(layer_cache[1], write_rows, v.reshape(-1, dim).astype(layer_cache[1].dtype))
            k = ops.gather(k, read_rows, 0).reshape(batch, heads, -1, dim)
            v = ops.gather(v, read_rows, 0).reshape(batch, heads, -1, dim)
        if self.compute_dtype == ms.float32:
            scores = self.matmul_qk(q, k)
        else:
            scores = self.matmul_qk(q.astype(self.compute_dtype), k.astype(self.compute_dtype)).astype(ms.float32)
        scores = ops.where(mask, scores, self.mask_value)
        probs = self.attn_dropout(ops.softmax(scores, axis=-1))
        out = self.matmul_pv(probs.astype(self.compute_dtype), v.astype(self.compute_dtype)).astype(ms.float32)
        return self.resid_dropout(self.c_proj(self.merge_heads(out))), (k, v)

    def decode_one(self, x, mask, layer_cache, cache_write):
        """`construct` for one new token per row (a decode step, x [B, 1, C]) with a static cache: the same
        products laid out so that no kernel transposes. With T = 1, [B, 1, 3, H, D] -> q, k, v [B, H, D] is an
        Unstack of a Reshape and the head merge a Reshape; the scores are k @ q^T ([B, H, W, D] @ [B, H, D, 1]),
        where q @ k^T with transpose_b took 4x the time of the other BatchMatMul on MindSpore 2.7 CPU (GPT-2 124M,
        8 rows x 96 slots: ~2.0 vs ~0.44 ms a layer)."""
        batch = x.shape[0]
        q, k, v = ops.unstack(self.c_attn(x).reshape(batch, 3, self.n_head, self.head_dim), 1)
        q = q * self.scale
        write_rows, read_rows = cache_write
        # the cache is in the model's compute dtype (generation._KVCache): float16 keys/values under fp16
        k = self.cache_write(layer_cache[0], write_rows, k.reshape(-1, self.head_dim).astype(layer_cache[0].dtype))
        v = self.cache_write(layer_cache[1], write_rows, v.reshape(-1, self.head_dim).astype(layer_cache[1].dtype))
        k = ops.gather(k, read_rows, 0).reshape(batch, self.n_head, -1, self.head_dim)
        v = ops.gather(v, read_rows, 0).reshape(batch, self.n_head, -1, self.head_dim)
        q = q.reshape(batch, self.n_head, self.head_dim, 1)
        if self.compute_dtype == ms.float32:
            scores = self.matmul_pv(k, q)
        else:
            scores = self.matmul_pv(k.astype(self.compute_dtype), q.astype(self.compute_dtype)).astype(ms.float32)
        scores = ops.where(mask, scores.reshape(batch, self.n_head, 1, -1), self.mask_value)
        probs = self.attn_dropout(ops.softmax(scores, axis=-1))
        out = self.matmul_pv(probs.astype(self.compute_dtype), v.astype(self.compute_dtype)).astype(ms.float32)
        return self.resid_dropout(self.c_proj(out.reshape(batch, 1, self.n_embd))), (k, v)


class MLP(nn.Cell):
    def __init__(self, config: GPTConfig, proj_std: float):
        super().__init__()
        dtype = _MS_DTYPES[config.compute_dtype]
        self.c_fc = Conv1D(config.n_embd, config.inner_dim, config.initializer_range, dtype)
        self.c_proj = Conv1D(config.inner_dim, config.n_embd, proj_std, dtype)
        self.dropout = nn.Dropout(p=config.resid_pdrop)
        self.activation = config.activation_function

    def act(self, x):
        if self.activation == "relu":
            return ops.relu(x)
        if self.activation == "gelu":
            return ops.gelu(x, approximate="none")
        # gelu_new = 0.5 x (1 + tanh(z)) = x * sigmoid(2z), z = sqrt(2/pi) (x + 0.044715 x^3). Written with sigmoid:
        # within 6e-7 of the float64 formula, while ops.tanh is off by 1e-4 on CPU and the fused GeLU kernel is ~10x
        # slower on CPU than these five elementwise ops (measured on MindSpore 2.7).
        return x * ops.sigmoid(x * (1.5957691216057308 + 0.07135481627260025 * x * x))

    def construct(self, x):
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Cell):
    """GPT-2: x + attn(ln_1(x)), then + mlp(ln_2(.)). GPT-1: ln_1(x + attn(x)), then ln_2(. + mlp(.))."""

    @lazy_inline_where_supported  # Ascend: one Block graph reused by every layer (compile time)
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.pre_norm = config.is_gpt2
        # GPT-2 scales the init of residual projections by 1/sqrt(2 * n_layer)
        proj_std = config.initializer_range / math.sqrt(2 * config.n_layer) if config.is_gpt2 \
            else config.initializer_range
        self.ln_1 = LayerNorm(config.n_embd, config.layer_norm_epsilon)
        self.attn = Attention(config, proj_std)
        self.ln_2 = LayerNorm(config.n_embd, config.layer_norm_epsilon)
        self.mlp = MLP(config, proj_std)

    def construct(self, x, mask, layer_cache=None, cache_write=None):
        fused = layer_cache is not None  # decoding: a few rows, where the fused LayerNorm kernel is faster
        if self.pre_norm:
            a, present = self.attn(self.ln_1(x, fused), mask, layer_cache, cache_write)
            x = x + a
            return x + self.mlp(self.ln_2(x, fused)), present
        a, present = self.attn(x, mask, layer_cache, cache_write)
        x = self.ln_1(x + a, fused)
        return self.ln_2(x + self.mlp(x), fused), present


def enable_gradient_checkpointing(model: nn.Cell) -> int:
    """Recompute every Block's activations in the backward pass instead of storing them (MindSpore's
    `Cell.recompute`, configured for graph mode; a Block's output is kept). Returns how many Blocks are set.
    Apply LoRA first: recompute flags the sub-cells a Block holds at the time of the call."""
    from .device import graph_mode

    count = 0
    for _, cell in model.cells_and_names():
        if isinstance(cell, Block):
            if not getattr(cell, "_has_config_recompute", False):
                with graph_mode():  # in PyNative, recompute() would also wrap eager calls in its own executor path
                    cell.recompute()
            count += 1
    return count


class GPTPreTrainedModel(nn.Cell):
    """Shared by all GPT cells: input checks for eager calls and HF checkpoint loading/saving."""

    config: GPTConfig

    def __call__(self, *args, **kwargs):
        # Eager calls get value checks (a host sync); inside a compiled step the model is parsed, not called,
        # and the data pipeline validates instead.
        if args:
            args = (_as_int_tensor(args[0]),) + tuple(args[1:])
            check_inputs(self.config, args[0], kwargs.get("attention_mask"), "past_key_values" in kwargs)
        elif "input_ids" in kwargs:
            kwargs["input_ids"] = _as_int_tensor(kwargs["input_ids"])
            check_inputs(self.config, kwargs["input_ids"], kwargs.get("attention_mask"), "past_key_values" in kwargs)
        if isinstance(kwargs.get("attention_mask"), np.ndarray):
            kwargs["attention_mask"] = Tensor(kwargs["attention_mask"].astype(np.int32))
        return super().__call__(*args, **kwargs)

    @classmethod
    def from_pretrained(cls, path: str, **config_overrides):
        """Load an HF-layout directory (config.json + model.safetensors or pytorch_model.bin), a hub name, or an
        ms_gpt checkpoint. See `ms_gpt.checkpoint.load_pretrained`."""
        from .checkpoint import load_pretrained
        return load_pretrained(cls, path, **config_overrides)

    def save_pretrained(self, directory: str, safe_serialization: bool = True) -> None:
        from .checkpoint import save_pretrained
        save_pretrained(self, directory, safe_serialization=safe_serialization)

    def gradient_checkpointing_enable(self) -> None:
        """HF's name: recompute each Block in the backward pass of compiled training steps."""
        enable_gradient_checkpointing(self)

    def base_model(self) -> "GPTModel":
        return self if isinstance(self, GPTModel) else self.transformer

    def resize_token_embeddings(self, new_num_tokens: int) -> None:
        """Grow (or shrink) the token table; existing rows are kept, new rows drawn from N(0, initializer_range)."""
        base = self.base_model()
        table = base.token_embedding()
        old = table.weight.asnumpy()
        if new_num_tokens == old.shape[0]:
            return
        if new_num_tokens < 1:
            raise ValueError(f"resize_token_embeddings: new_num_tokens must be positive, got {new_num_tokens}")
        rng = np.random.default_rng(new_num_tokens)
        new = rng.normal(0.0, self.config.initializer_range, (new_num_tokens, old.shape[1])).astype(np.float32)
        keep = min(new_num_tokens, old.shape[0])
        new[:keep] = old[:keep]
        table.weight = Parameter(Tensor(new), name=table.weight.name)
        self.config.vocab_size = new_num_tokens  # the body and the heads share this config object


class GPTModel(GPTPreTrainedModel):
    """The transformer body. Returns hidden states [B, T, n_embd] (and per-layer (k, v) with use_cache)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.is_gpt2 = config.is_gpt2
        if config.is_gpt2:
            self.wte = Embedding(config.vocab_size, config.n_embd, config.initializer_range)
            self.wpe = Embedding(config.n_positions, config.n_embd, 0.01)
        else:
            self.tokens_embed = Embedding(config.vocab_size, config.n_embd, config.initializer_range)
            self.positions_embed = Embedding(config.n_positions, config.n_embd, config.initializer_range)
        self.drop = nn.Dropout(p=config.embd_pdrop)
        self.h = nn.CellList([Block(config) for _ in range(config.n_layer)])
        if config.is_gpt2:
            self.ln_f = LayerNorm(config.n_embd, config.layer_norm_epsilon)
        # lower-triangular causal buffer, sliced to the sequence length in construct (True = may attend)
        self.causal_mask = Tensor(np.tril(np.ones((config.n_positions, config.n_positions), dtype=np.bool_))
                                  .reshape(1, 1, config.n_positions, config.n_positions))
        self.n_positions = config.n_positions

    def token_embedding(self) -> Embedding:
        return self.wte if self.is_gpt2 else self.tokens_embed

    def position_embedding(self) -> Embedding:
        return self.wpe if self.is_gpt2 else self.positions_embed

    def construct(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
                  past_key_values=None, cache_position=None, use_cache=False, cache_window=None):
        """input_ids [B, T] int. attention_mask [B, T] (1 = real token; [B, L] over the cache slots when decoding).

        Decoding with a static cache: `past_key_values` is a tuple of (k, v) per layer, each a Parameter
        [B * H * L, D] (row (b * H + h) * L + slot) that is updated in place; `cache_position` an int32 tensor [1]
        with the slot of the first of the T new tokens (they go to slots cache_position .. cache_position + T - 1;
        token t sees the slots up to its own that `attention_mask` marks real). `cache_window` (int32 [W], the slot
        ids 0..W-1; W may be a dynamic axis) limits attention to the first W slots, with `attention_mask` [B, W]
        over them (None = all slots), so a decode step reads only the part of the cache it needs. Returns (hidden,
        presents) when use_cache or past_key_values is given, else hidden.
        """
        batch, seq = input_ids.shape
        if seq > self.n_positions:
            raise ValueError(f"sequence length {seq} exceeds n_positions={self.n_positions}")
        wte = self.token_embedding()
        cache_write = None
        if past_key_values is None:
            if position_ids is None:
                position_ids = ops.arange(seq, dtype=ms.int32).reshape(1, seq)
            mask = self.causal_mask[:, :, :seq, :seq]
            if attention_mask is not None:
                mask = ops.logical_and(mask, attention_mask.astype(ms.bool_).reshape(batch, 1, 1, seq))
        else:
            heads = self.config.n_head
            slots = past_key_values[0][0].shape[0] // (batch * heads)
            new_slots = cache_position + ops.arange(seq, dtype=ms.int32)  # [T]
            rows = ops.arange(batch * heads, dtype=ms.int32).reshape(batch, heads, 1) * slots
            slot_ids = ops.arange(slots, dtype=ms.int32) if cache_window is None else cache_window
            cache_write = ((rows + new_slots.reshape(1, 1, seq)).reshape(-1),
                           (rows + slot_ids.reshape(1, 1, -1)).reshape(-1))
            visible = (slot_ids.reshape(1, -1) <= new_slots.reshape(seq, 1)).reshape(1, 1, seq, -1)
            if attention_mask is not None:
                visible = ops.logical_and(visible, attention_mask.astype(ms.bool_).reshape(batch, 1, 1, -1))
            mask = visible
            if position_ids is None:
                position_ids = new_slots.reshape(1, seq)
        hidden = wte(input_ids) + self.position_embedding()(position_ids)
        if token_type_ids is not None:
            hidden = hidden + wte(token_type_ids)
        hidden = self.drop(hidden)
        presents = ()
        for i, block in enumerate(self.h):
            layer_cache = None if past_key_values is None else past_key_values[i]
            hidden, present = block(hidden, mask, layer_cache, cache_write)
            presents = presents + (present,)
        if self.is_gpt2:
            hidden = self.ln_f(hidden, past_key_values is not None)
        if use_cache or past_key_values is not None:
            return hidden, presents
        return hidden


def lm_loss(logits, labels):
    """Next-token cross entropy: position t predicts labels[t+1]; label -100 is ignored (HF semantics)."""
    vocab = logits.shape[-1]
    shift_logits = logits[:, :-1, :].reshape(-1, vocab).astype(ms.float32)
    shift_labels = labels[:, 1:].reshape(-1).astype(ms.int32)
    return ops.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX)


class NextTokenLoss(nn.Cell):
    """Mean next-token cross entropy of an LM on pre-shifted windows (`ms_gpt.data.lm`): `targets` are already the
    next tokens (input_ids = w[:-1], targets = w[1:]) and every position has one, as in the char-GPT recipe. HF's
    `labels` (shifted inside, -100 skipped) go to the model itself (`lm_loss`)."""

    def __init__(self, lm: nn.Cell):
        super().__init__()
        self.lm = lm
        # one fused kernel forward and one backward; ops.cross_entropy expands to ~25 small kernels, which is most of
        # a small model's step on CPU (every target here is valid, so no ignore_index is needed)
        self.cross_entropy = ops.SparseSoftmaxCrossEntropyWithLogits()

    def construct(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, targets=None):
        logits = self.lm(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                         position_ids=position_ids)
        return self.cross_entropy(logits.reshape(-1, logits.shape[-1]).astype(ms.float32),
                                  targets.reshape(-1).astype(ms.int32))


def _lm_labels_from_inputs(input_ids, attention_mask):
    if attention_mask is None:
        return input_ids
    return ops.where(attention_mask.astype(ms.bool_), input_ids, IGNORE_INDEX)


class GPTLMHeadModel(GPTPreTrainedModel):
    """Language model; the output projection is tied to the token embedding (no separate lm_head parameter)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = GPTModel(config)
        self.compute_dtype = _MS_DTYPES[config.compute_dtype]
        self.matmul_t = ops.MatMul(transpose_b=True)
        self.matmul = ops.MatMul()

    def logits(self, hidden, decoding: bool = False):
        """hidden [..., C] -> logits [..., vocab] against the tied token table. `decoding` (static shapes, a few rows:
        generate()'s steps) multiplies table-first."""
        table = self.transformer.token_embedding().weight
        lead = hidden.shape[:-1]
        width = hidden.shape[-1]
        h2d = hidden.reshape(-1, width)
        rows = h2d.shape[0]
        if self.compute_dtype != ms.float32:
            h2d = h2d.astype(self.compute_dtype)
            table = table.astype(self.compute_dtype)
        if decoding and rows <= HEAD_FEW_ROWS:
            # decoding (a few rows): table @ h^T, then transposed back. MindSpore 2.7 CPU's MatMul reads the
            # [vocab, C] table faster so than as h @ table^T (GPT-2, 8 rows: 14.7 vs 17.2 ms; 1 row: equal)
            out = self.matmul(table, h2d.reshape(width, 1) if rows == 1 else h2d.T)
            out = out.reshape(1, -1) if rows == 1 else out.T
        else:
            out = self.matmul_t(h2d, table)
        return out.astype(ms.float32).reshape(lead + (out.shape[-1],))

    def construct(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
                  past_key_values=None, cache_position=None, use_cache=False):
        """Returns (loss, logits) with labels, (logits, presents) when caching, else logits [B, T, vocab]."""
        out = self.transformer(input_ids, attention_mask, token_type_ids, position_ids, past_key_values,
                               cache_position, use_cache)
        if use_cache or past_key_values is not None:
            return self.logits(out[0]), out[1]
        logits = self.logits(out)
        if labels is not None:
            return lm_loss(logits, labels), logits
        return logits


def pool_last_token(hidden, input_ids, attention_mask, pad_token_id):
    """Hidden state of the rightmost real token of each row ([B, T, C] -> [B, C]), for left or right padding.

    Real tokens are those with attention_mask == 1, or (without a mask) ids != pad_token_id; rows with none pool
    position 0. Unlike `argmax(ids == pad) - 1`, this holds when pad == eos and with left padding.
    """
    batch, seq, dim = hidden.shape
    if attention_mask is not None:
        real = attention_mask.astype(ms.int32)
    elif pad_token_id is not None:
        real = (input_ids != pad_token_id).astype(ms.int32)
    else:
        real = ops.ones((batch, seq), ms.int32)
    last = (real * ops.arange(seq, dtype=ms.int32).reshape(1, seq)).max(axis=-1)
    index = ops.broadcast_to(last.reshape(batch, 1, 1), (batch, 1, dim))
    return ops.gather_elements(hidden, 1, index).reshape(batch, dim)


def _flatten_choices(x):
    """[B, K, T] -> [B*K, T]; None stays None."""
    return None if x is None else x.reshape(-1, x.shape[-1])


class GPTForSequenceClassification(GPTPreTrainedModel):
    """Linear head (`score`, no bias) on the rightmost real token.

    input_ids [B, T] — or [B, K, T]: the K sequences of a row run through the model and their pooled states are
    summed before the head (GPT-1's similarity format: both orders of the pair). With `config.lm_coef` > 0 the loss
    adds lm_coef x the LM loss on the inputs (GPT-1's auxiliary objective; padding ignored).
    Returns (loss, logits) with labels, else logits [B, num_labels].
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = GPTModel(config)
        self.score = nn.Dense(config.n_embd, config.num_labels, weight_init=Normal(config.initializer_range),
                              has_bias=False)
        self.num_labels = config.num_labels
        self.lm_coef = config.lm_coef
        self.pad_token_id = config.pad_token_id

    def construct(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None):
        batch = input_ids.shape[0]
        multi = input_ids.ndim == 3
        if multi:
            input_ids, attention_mask = _flatten_choices(input_ids), _flatten_choices(attention_mask)
            token_type_ids, position_ids = _flatten_choices(token_type_ids), _flatten_choices(position_ids)
        hidden = self.transformer(input_ids, attention_mask, token_type_ids, position_ids)
        pooled = pool_last_token(hidden, input_ids, attention_mask, self.pad_token_id)
        if multi:
            pooled = pooled.reshape(batch, -1, pooled.shape[-1]).sum(axis=1)
        logits = self.score(pooled)
        if labels is None:
            return logits
        loss = ops.cross_entropy(logits, labels.astype(ms.int32).reshape(-1))
        if self.lm_coef > 0:
            lm_logits = tied_logits(self.transformer, hidden)
            loss = loss + self.lm_coef * lm_loss(lm_logits, _lm_labels_from_inputs(input_ids, attention_mask))
        return loss, logits


def tied_logits(transformer: GPTModel, hidden):
    """LM logits through the token table (float32), for the task heads' auxiliary LM loss."""
    table = transformer.token_embedding().weight
    h2d = hidden.reshape(-1, hidden.shape[-1])
    return ops.matmul(h2d, table.swapaxes(0, 1)).reshape(hidden.shape[:-1] + (table.shape[0],))


class SequenceSummary(nn.Cell):
    """Multiple-choice head of the double-heads model: dropout -> `summary` linear to one score."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.first_dropout = nn.Dropout(p=config.summary_first_dropout)
        self.summary = nn.Dense(config.n_embd, 1, weight_init=Normal(config.initializer_range))

    def construct(self, pooled):
        return self.summary(self.first_dropout(pooled)).squeeze(-1)


class GPTDoubleHeadsModel(GPTPreTrainedModel):
    """LM head + a multiple-choice scalar read at `mc_token_ids` of each choice.

    input_ids [B, K, T] (K choices), mc_token_ids [B, K]. With `mc_labels` [B] (and optionally LM `labels`
    [B, K, T]) returns (loss, mc_loss, lm_loss, mc_logits) with loss = mc_loss + lm_coef x lm_loss;
    otherwise (lm_logits [B, K, T, V], mc_logits [B, K]).
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = GPTModel(config)
        self.multiple_choice_head = SequenceSummary(config)
        self.lm_coef = config.lm_coef

    def construct(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
                  mc_token_ids=None, mc_labels=None):
        batch, choices, seq = input_ids.shape
        hidden = self.transformer(_flatten_choices(input_ids), _flatten_choices(attention_mask),
                                  _flatten_choices(token_type_ids), _flatten_choices(position_ids))
        dim = hidden.shape[-1]
        if mc_token_ids is None:
            mc_index = ops.full((batch * choices, 1, dim), seq - 1, dtype=ms.int32)
        else:
            mc_index = ops.broadcast_to(mc_token_ids.astype(ms.int32).reshape(-1, 1, 1), (batch * choices, 1, dim))
        pooled = ops.gather_elements(hidden, 1, mc_index).reshape(batch, choices, dim)
        mc_logits = self.multiple_choice_head(pooled)
        if mc_labels is None:
            lm_logits = tied_logits(self.transformer, hidden).reshape(batch, choices, seq, -1)
            return lm_logits, mc_logits
        mc_loss = ops.cross_entropy(mc_logits, mc_labels.astype(ms.int32).reshape(-1))
        if labels is None:
            lm = ops.zeros((), ms.float32)
        else:
            lm = lm_loss(tied_logits(self.transformer, hidden), _flatten_choices(labels))
        return mc_loss + self.lm_coef * lm, mc_loss, lm, mc_logits


# ---- eager-call input checks ------------------------------------------------------------------------------------
def _as_int_tensor(x):
    if isinstance(x, np.ndarray) or isinstance(x, (list, tuple)):
        return Tensor(np.asarray(x, dtype=np.int32))
    return x


def check_inputs(config: GPTConfig, input_ids, attention_mask=None, decoding: bool = False) -> None:
    """Raise one clear ValueError for ids outside the vocabulary, too-long sequences or a mis-shaped mask."""
    if not isinstance(input_ids, Tensor):
        return
    if input_ids.ndim not in (2, 3):
        raise ValueError(f"input_ids must be [batch, seq] (or [batch, choices, seq]), got shape {input_ids.shape}")
    if input_ids.shape[-1] > config.n_positions:
        raise ValueError(f"input_ids has sequence length {input_ids.shape[-1]} > n_positions={config.n_positions}; "
                         "truncate the input")
    ids = input_ids.asnumpy()
    if ids.size and (ids.min() < 0 or ids.max() >= config.vocab_size):
        bad = ids[(ids < 0) | (ids >= config.vocab_size)]
        raise ValueError(f"input_ids contains id {int(bad[0])} outside the vocabulary [0, {config.vocab_size})")
    if attention_mask is not None and not decoding and tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} does not match input_ids shape "
                         f"{tuple(input_ids.shape)}")
