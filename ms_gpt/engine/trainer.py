"""The training engine shared by pretraining, fine-tuning and dialogue training.

One `Trainer` drives any GPT cell that returns a loss (or a tuple whose first element is the loss). The train step —
forward, backward, gradient accumulation, loss scaling, clipping, the data-parallel gradient mean and the AdamW update
— is ONE compiled graph (a Cell run in GRAPH_MODE); the learning rate comes from a table indexed in-graph. The host reads the
loss only every `logging_steps` steps, so nothing syncs per step. Checkpoints are written to a temporary directory
and renamed into place; a resumed run restores model, optimizer moments, step, schedule position and data position.

Must not import: ms_gpt.recipes, ms_gpt.data, ms_gpt.compat, ms_gpt.tokenizers.
"""
from __future__ import annotations

import glob
import json
import math
import os
import shutil
import time
from dataclasses import asdict
from typing import Any, Callable, Iterable, Optional, Protocol

import numpy as np
import mindspore as ms
from mindspore import Tensor, amp, nn, ops

from ..checkpoint import assign_weights
from ..config import TrainingArguments
from ..device import DeviceInfo, check_jit_level, compiled, enable_compile_cache, setup_device
from ..paths import atomic_directory, atomic_path
from .optim import AdamW, lr_schedule


class BatchSource(Protocol):
    """What the engine reads training batches from (implemented in ms_gpt.data: `RandomWindows`, `EpochBatches`):
    `next_batch` returns a dict of numpy arrays over SLOTS; `state_dict` is a JSON-able position saved with every
    checkpoint, and `load_state_dict` of that state makes a resumed run see the same batches as an uninterrupted
    one."""

    def next_batch(self) -> dict[str, np.ndarray]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


# Every batch is a dict over these keys (a subset); the compiled step takes them in this order, None where absent
# (a None slot is a compile-time constant). `labels` are HF's (shifted inside the model's loss); `targets` are the
# pre-shifted next tokens of LM windows (`data.lm`, `model.NextTokenLoss`).
SLOTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "labels", "targets", "mc_token_ids",
         "mc_labels")
TRAINING_STATE = "training_state.ckpt"
TRAINER_STATE = "trainer_state.json"


def _pick(x, i):
    return None if x is None else x[i]


def _call_model(model, input_ids, attention_mask, token_type_ids, position_ids, labels, targets, mc_token_ids,
                mc_labels):
    """The model on one batch in SLOTS order; targets and the multiple-choice inputs only go to cells that take
    them."""
    if targets is not None:
        return model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                     position_ids=position_ids, targets=targets)
    if mc_labels is None:
        return model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                     position_ids=position_ids, labels=labels)
    return model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, position_ids=position_ids,
                 labels=labels, mc_token_ids=mc_token_ids, mc_labels=mc_labels)


class TrainStep(nn.Cell):
    """forward + backward (+ in-graph gradient accumulation over the leading micro-batch axis) + fp16 loss scaling
    with overflow skip + data-parallel gradient mean + global-norm clipping + the AdamW update: one graph.

    Overflow is detected by MindSpore's own `amp.all_finite`, which takes the path of the chip: the NPU float-status
    registers on Atlas training series (910A, saturation mode: an overflow there is a large finite number that
    `isfinite` misses), the AllFinite kernel on 910B, isfinite elsewhere (`ExecutionPolicy.overflow_check`). Under
    data parallel the verdict is reduced over the ranks (SUM of the overflow flags), so every rank skips or steps
    together. Dynamic loss scale: an overflowing step leaves the weights and optimizer state alone and divides the
    scale by `scale_factor` (floor 1); `scale_window` finite steps in a row multiply it by `scale_factor`."""

    def __init__(self, model: nn.Cell, optimizer: AdamW, accum: int, max_norm: float, reducer=None,
                 loss_scale=None, good_steps=None, scale_factor: float = 2.0, scale_window: int = 1000):
        super().__init__(auto_prefix=False)  # parameter names stay the model's (HF keys) and the optimizer's
        self.model = model
        self.optimizer = optimizer
        self.weights = optimizer.params
        self.accum = accum
        self.max_norm = max_norm
        self.reducer = reducer
        self.use_scaling = loss_scale is not None
        self.loss_scale = loss_scale
        self.good_steps = good_steps
        self.scale_factor = float(scale_factor)
        self.scale_window = int(scale_window)
        self.hyper_map = ops.HyperMap()
        self.overflow_allreduce = None
        if reducer is not None and loss_scale is not None:
            from mindspore.communication import GlobalComm

            # SUM of the ranks' overflow flags (as MindSpore's loss-scale cell; the CPU backend reduces SUM only)
            self.overflow_allreduce = ops.AllReduce(ops.ReduceOp.SUM, GlobalComm.WORLD_COMM_GROUP)

    def forward(self, input_ids, attention_mask, token_type_ids, position_ids, labels, targets, mc_token_ids,
                mc_labels):
        loss = _first(_call_model(self.model, input_ids, attention_mask, token_type_ids, position_ids, labels,
                                  targets, mc_token_ids, mc_labels))
        if self.use_scaling:
            loss = loss * self.loss_scale
        return loss

    def construct(self, input_ids, attention_mask, token_type_ids, position_ids, labels, targets, mc_token_ids,
                  mc_labels):
        grad_fn = ms.value_and_grad(self.forward, None, self.weights)
        loss, grads = grad_fn(_pick(input_ids, 0), _pick(attention_mask, 0), _pick(token_type_ids, 0),
                              _pick(position_ids, 0), _pick(labels, 0), _pick(targets, 0), _pick(mc_token_ids, 0),
                              _pick(mc_labels, 0))
        for i in range(1, self.accum):
            loss_i, grads_i = grad_fn(_pick(input_ids, i), _pick(attention_mask, i), _pick(token_type_ids, i),
                                      _pick(position_ids, i), _pick(labels, i), _pick(targets, i),
                                      _pick(mc_token_ids, i), _pick(mc_labels, i))
            loss = loss + loss_i
            grads = self.hyper_map(ops.add, grads, grads_i)
        scale = 1.0 / self.accum
        if self.use_scaling:
            scale = scale / self.loss_scale
        if self.accum > 1 or self.use_scaling:
            grads = self.hyper_map(ops.partial(ops.mul, scale), grads)
            loss = loss * scale
        if self.reducer is not None:
            grads = self.reducer(grads)
        if self.use_scaling:
            finite = amp.all_finite(grads)
            if self.overflow_allreduce is not None:
                finite = self.overflow_allreduce(ops.logical_not(finite).astype(ms.float32)) < 0.5
            if finite:
                if self.max_norm > 0:
                    grads = ops.clip_by_global_norm(grads, self.max_norm)
                self.optimizer(grads)
                ops.assign_add(self.good_steps, 1)
                if self.good_steps >= self.scale_window:  # grow the scale after a run of finite steps
                    ops.assign(self.loss_scale, self.loss_scale * self.scale_factor)
                    ops.assign(self.good_steps, 0)
            else:
                ops.assign(self.loss_scale, ops.maximum(self.loss_scale / self.scale_factor, 1.0))
                ops.assign(self.good_steps, 0)
            return loss
        if self.max_norm > 0:
            grads = ops.clip_by_global_norm(grads, self.max_norm)
        return ops.depend(loss, self.optimizer(grads))


class EvalStep(nn.Cell):
    """The model's forward (loss first) for evaluation batches, as one graph."""

    def __init__(self, model: nn.Cell):
        super().__init__(auto_prefix=False)
        self.model = model

    def construct(self, input_ids, attention_mask, token_type_ids, position_ids, labels, targets, mc_token_ids,
                  mc_labels):
        return _call_model(self.model, input_ids, attention_mask, token_type_ids, position_ids, labels, targets,
                           mc_token_ids, mc_labels)


def _to_tensor(x: Optional[np.ndarray]) -> Optional[Tensor]:
    if x is None:
        return None
    if isinstance(x, Tensor):
        return x
    x = np.asarray(x)
    return Tensor(x.astype(np.int32) if np.issubdtype(x.dtype, np.integer) else x.astype(np.float32))


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def dynamic_length_inputs(inputs: list[Optional[Tensor]]) -> list[Optional[Tensor]]:
    """`Cell.set_inputs` specs for step inputs in SLOTS order whose sequence length varies: the last axis of every
    input shaped like input_ids (attention_mask, token-level labels, ...) is dynamic (None), all other axes stay
    fixed. One graph then serves every length."""
    ids_shape = tuple(inputs[0].shape)
    return [None if x is None else
            Tensor(shape=list(ids_shape[:-1]) + [None] if tuple(x.shape) == ids_shape else list(x.shape),
                   dtype=x.dtype)
            for x in inputs]


class Trainer:
    """Train `model` on batches from `train_source`.

    eval_sets: name -> callable returning an iterable of batches (each a dict over SLOTS); evaluated every
    `args.eval_steps` steps and at the end. The logged figure is `<name>_loss` (mean over the batches), plus whatever
    `compute_metrics(name, outputs, batches)` returns (it receives the host copies of each eval step's outputs).
    dynamic_shapes: the batches' sequence length varies (padding `dynamic`); the train and eval steps are then each
    compiled once as a dynamic-shape graph instead of once per length.
    """

    def __init__(self, model: nn.Cell, args: TrainingArguments, train_source: BatchSource,
                 eval_sets: Optional[dict[str, Callable[[], Iterable[dict]]]] = None, tokenizer: Any = None,
                 run_config: Optional[dict] = None, total_steps: Optional[int] = None,
                 compute_metrics: Optional[Callable] = None, metric_for_best_model: str = "val_loss",
                 greater_is_better: bool = False, device: Optional[DeviceInfo] = None,
                 export_model: Optional[nn.Cell] = None, dynamic_shapes: bool = False):
        self.model = model
        self.dynamic_shapes = dynamic_shapes
        self.export_model = export_model or model  # what save_pretrained writes (the bare GPT cell)
        self.args = args
        self.train_source = train_source
        self.eval_sets = eval_sets or {}
        self.tokenizer = tokenizer
        self.run_config = run_config or {}
        self.compute_metrics = compute_metrics
        self.metric_for_best_model = metric_for_best_model
        self.greater_is_better = greater_is_better
        self.device = device or setup_device(args.device_target, args.seed, args.emulate_ascend,
                                             args.ascend_precision_mode)
        self.policy = self.device.policy
        level = args.jit_level if args.jit_level != "auto" else self.policy.jit_level
        check_jit_level(level, dynamic_shapes, "the training data (padding dynamic)")
        if args.fp16 and args.bf16:
            raise ValueError("fp16 and bf16 are both set; choose one")
        if args.fp16 and (args.scale_factor <= 1 or args.scale_window < 1 or args.loss_scale_value < 1):
            raise ValueError(f"fp16 loss scale: scale_factor={args.scale_factor} must be > 1, scale_window="
                             f"{args.scale_window} >= 1 and loss_scale_value={args.loss_scale_value} >= 1")
        self.total_steps = int(total_steps or args.max_steps)
        if self.total_steps < 1:
            raise ValueError(f"max_steps must be positive, got {self.total_steps}")
        warmup = args.warmup_steps or int(math.ceil(args.warmup_ratio * self.total_steps))
        schedule = lr_schedule(args.learning_rate, self.total_steps, warmup, args.lr_scheduler_type,
                               args.min_learning_rate)
        if args.gradient_checkpointing:
            from ..model import enable_gradient_checkpointing

            enable_gradient_checkpointing(model)
        # only trainable Parameters get gradients and AdamW state: frozen ones (a LoRA run's base) are left alone
        self.params = model.trainable_params()
        self.optimizer = AdamW(self.params, schedule, args.weight_decay, (args.adam_beta1, args.adam_beta2),
                               args.adam_epsilon)
        self.step = 0
        self.best_metric: Optional[float] = None
        self.best_step: Optional[int] = None
        self.history: list[dict] = []
        self._train_step = self._build_train_step()
        self._eval_step = self._build_eval_step()

    # ---- compiled steps ---------------------------------------------------------------------------------------------
    def _build_train_step(self):
        args = self.args
        reducer = None
        if self.device.world_size > 1:
            reducer = nn.DistributedGradReducer(self.optimizer.params, mean=True, degree=self.device.world_size)
        if args.fp16:
            self.loss_scale = ms.Parameter(Tensor(float(args.loss_scale_value), ms.float32), name="loss_scale",
                                           requires_grad=False)
            self.good_steps = ms.Parameter(Tensor(0, ms.int32), name="loss_scale_good_steps", requires_grad=False)
        self.train_cell = TrainStep(self.model, self.optimizer, args.gradient_accumulation_steps,
                                    float(args.max_grad_norm), reducer, self.loss_scale if args.fp16 else None,
                                    self.good_steps if args.fp16 else None, args.scale_factor, args.scale_window)
        return compiled(self.train_cell, args.jit, args.jit_level, self.policy)

    def _build_eval_step(self):
        self.eval_cell = EvalStep(self.model)
        return compiled(self.eval_cell, self.args.jit, self.args.jit_level, self.policy)

    def precision_state(self) -> dict:
        """The run's compute dtype (read from the model's config), and with fp16 the loss scale and its good-step
        count now (a host read): for the run's first lines and all_results.json."""
        configs = {cell.config.compute_dtype for _, cell in self.model.cells_and_names() if hasattr(cell, "config")}
        out = {"compute_dtype": ",".join(sorted(configs)) or self.args.compute_dtype}
        if self.args.fp16:
            out.update(loss_scale=float(self.loss_scale.asnumpy()),
                       loss_scale_good_steps=int(self.good_steps.asnumpy()))
        return out

    @property
    def train_compilations(self) -> int:
        """How many graphs the train step has compiled so far (1 for a run of fixed-length batches)."""
        return len(self.train_cell.compile_cache)

    @property
    def eval_compilations(self) -> int:
        """How many graphs the evaluation step has compiled so far."""
        return len(self.eval_cell.compile_cache)

    def _declare_dynamic(self, cell: nn.Cell, inputs: list[Optional[Tensor]]) -> None:
        """With dynamic_shapes, declare the length axis dynamic before the cell's first (and only) compile."""
        if self.dynamic_shapes and self.args.jit and cell.get_inputs() is None:
            cell.set_inputs(*dynamic_length_inputs(inputs))

    # ---- data -------------------------------------------------------------------------------------------------------
    def _next_stacked(self) -> tuple[list[Optional[Tensor]], int]:
        micro = [self.train_source.next_batch() for _ in range(self.args.gradient_accumulation_steps)]
        tokens = 0
        inputs = []
        for key in SLOTS:
            if key in micro[0]:
                arrays = [np.asarray(b[key]) for b in micro]
                if any(a.shape != arrays[0].shape for a in arrays):
                    raise ValueError(f"gradient accumulation needs equal micro-batch shapes; '{key}' has "
                                     f"{[a.shape for a in arrays]}")
                inputs.append(_to_tensor(np.stack(arrays)))
            else:
                inputs.append(None)
        for b in micro:
            mask = b.get("attention_mask")
            tokens += int(np.asarray(mask).sum()) if mask is not None else int(np.asarray(b["input_ids"]).size)
        return inputs, tokens

    # ---- the loop ---------------------------------------------------------------------------------------------------
    def train(self) -> dict:
        args = self.args
        self.model.set_train(True)
        if args.resume_from_checkpoint:
            self.resume(args.resume_from_checkpoint)
        os.makedirs(args.output_dir, exist_ok=True)
        metrics_path = os.path.join(args.output_dir, "metrics.jsonl")
        main = self.device.is_main
        bar = None
        if main and not args.disable_tqdm:
            from tqdm.auto import tqdm
            bar = tqdm(total=self.total_steps, initial=self.step, desc="train", dynamic_ncols=True)
        pending: list[Tensor] = []  # device-side losses since the last log: read in one go
        window_tokens, window_start = 0, None
        compile_seconds = None
        tokens_per_second = None
        spent = {"eval_seconds": 0.0, "save_seconds": 0.0}  # where a run's wall time goes besides the steps
        first = True
        while self.step < self.total_steps:
            inputs, tokens = self._next_stacked()
            if first and args.compile_cache_dir and args.jit:
                self._enable_compile_cache(inputs)
            self._declare_dynamic(self.train_cell, inputs)
            t0 = time.perf_counter()
            loss = self._train_step(*inputs)
            self.step += 1
            pending.append(loss)
            if first:
                float(loss.asnumpy())  # wait for compile + first step so that throughput excludes compile time
                compile_seconds = time.perf_counter() - t0
                window_start, window_tokens = time.perf_counter(), 0
                first = False
            else:
                window_tokens += tokens * self.device.world_size
            if bar is not None:
                bar.update(1)
            at_end = self.step == self.total_steps
            if self.step % max(1, args.logging_steps) == 0 or at_end:
                losses = ops.stack(pending).asnumpy() if len(pending) > 1 else pending[0].asnumpy().reshape(1)
                first_step = self.step - len(pending) + 1
                bad = np.flatnonzero(~np.isfinite(losses))
                if bad.size:
                    raise FloatingPointError(
                        f"non-finite training loss {losses[bad[0]]} at step {first_step + int(bad[0])}; "
                        "lower the learning rate, enable clipping (max_grad_norm) or check the data")
                pending = []
                elapsed = time.perf_counter() - window_start
                if window_tokens and elapsed > 0:
                    tokens_per_second = window_tokens / elapsed
                record = {"step": self.step, "loss": float(losses.mean()),
                          "lr": float(self.optimizer.schedule.asnumpy()[min(self.step, self.total_steps) - 1]),
                          "tokens_per_second": tokens_per_second}
                self._log(record, metrics_path)
                if bar is not None:
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                                    tok_s=f"{tokens_per_second:.0f}" if tokens_per_second else "-")
                window_start, window_tokens = time.perf_counter(), 0
            evaluated = None
            if self.eval_sets and ((args.eval_steps and self.step % args.eval_steps == 0) or at_end):
                t_eval = time.perf_counter()
                evaluated = self.evaluate()
                evaluated["step"] = self.step
                self._log(evaluated, metrics_path)
                if bar is not None:
                    bar.write(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in evaluated.items()))
                self._track_best(evaluated)
                window_start += time.perf_counter() - t_eval  # evaluation time is not training throughput
                spent["eval_seconds"] += time.perf_counter() - t_eval
            if (args.save_steps and self.step % args.save_steps == 0) or at_end:
                t_save = time.perf_counter()
                self.save_checkpoint()
                spent["save_seconds"] += time.perf_counter() - t_save
        if bar is not None:
            bar.close()
        summary = {"step": self.step, "compile_seconds": compile_seconds, "tokens_per_second": tokens_per_second,
                   "best_step": self.best_step, "best_metric": self.best_metric, **spent, **self.precision_state(),
                   "execution_policy": self.policy.describe()}
        if main:
            self.plot_losses()
        return summary

    def _enable_compile_cache(self, inputs: list) -> None:
        """Compile cache for this run, keyed by what shapes its graphs (see `device.enable_compile_cache`)."""
        skip = ("output_dir", "disable_tqdm", "compile_cache_dir", "resume_from_checkpoint")
        configs = sorted({json.dumps(vars(cell.config), sort_keys=True, default=str)
                          for _, cell in self.model.cells_and_names() if hasattr(cell, "config")})
        key = {"args": {k: v for k, v in asdict(self.args).items() if k not in skip},
               "run_config": {k: v for k, v in self.run_config.items() if k not in skip},
               "model": type(self.model).__name__, "configs": configs, "world_size": self.device.world_size,
               "target": self.device.target, "total_steps": self.total_steps,
               "parameters": [(p.name, tuple(p.shape), str(p.dtype)) for p in self.model.get_parameters()],
               "inputs": [None if x is None else (tuple(x.shape), str(x.dtype)) for x in inputs]}
        enable_compile_cache(self.args.compile_cache_dir, key)

    def evaluate(self) -> dict:
        """Mean loss (and metrics) on every eval set; one host read per set."""
        self.model.set_train(False)
        result: dict[str, Any] = {}
        for name, make_batches in self.eval_sets.items():
            outputs, batches = [], []
            for batch in make_batches():
                inputs = [_to_tensor(batch.get(k)) for k in SLOTS]
                self._declare_dynamic(self.eval_cell, inputs)
                outputs.append(self._eval_step(*inputs))
                batches.append(batch)
            if not outputs:
                raise ValueError(f"eval set '{name}' produced no batches")
            host = [tuple(o.asnumpy() for o in out) if isinstance(out, tuple) else (out.asnumpy(),)
                    for out in outputs]
            if any(key in batches[0] for key in ("labels", "targets", "mc_labels")):
                result[f"{name}_loss"] = float(np.mean([h[0] for h in host]))
            if self.compute_metrics is not None:
                result.update(self.compute_metrics(name, host, batches))
        self.model.set_train(True)
        return result

    def _track_best(self, metrics: dict) -> None:
        value = metrics.get(self.metric_for_best_model)
        if value is None:
            return
        better = self.best_metric is None or (value > self.best_metric if self.greater_is_better
                                              else value < self.best_metric)
        if better:
            self.best_metric, self.best_step = float(value), self.step

    def _log(self, record: dict, path: str) -> None:
        self.history.append(record)
        if self.device.is_main:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    # ---- checkpoints ------------------------------------------------------------------------------------------------
    def _state_params(self) -> list:
        params = list(self.model.get_parameters()) + list(self.optimizer.moment1) + list(self.optimizer.moment2)
        params.append(self.optimizer.step)
        if self.args.fp16:
            params += [self.loss_scale, self.good_steps]
        return params

    def save_checkpoint(self) -> Optional[str]:
        """Write output_dir/checkpoint-<step> atomically (temp dir + rename); rotate old ones, keep the best."""
        if not self.device.is_main:
            return None
        final = os.path.join(self.args.output_dir, f"checkpoint-{self.step}")
        with atomic_directory(final) as tmp:
            ms.save_checkpoint(self._state_params(), os.path.join(tmp, TRAINING_STATE))
            self.export_model.config.save(tmp)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(tmp)
            state = {"global_step": self.step, "total_steps": self.total_steps, "best_metric": self.best_metric,
                     "best_step": self.best_step, "metric_for_best_model": self.metric_for_best_model,
                     "data_state": self.train_source.state_dict(), "log_history": self.history,
                     "args": asdict(self.args), "run_config": self.run_config}
            with open(os.path.join(tmp, TRAINER_STATE), "w", encoding="utf-8") as f:
                json.dump(state, f, indent=1, default=_json_default)
        self._rotate()
        return final

    def _rotate(self) -> None:
        keep = max(1, self.args.save_total_limit)
        found = sorted(list_checkpoints(self.args.output_dir), key=lambda p: _step_of(p))
        protected = {os.path.join(self.args.output_dir, f"checkpoint-{self.best_step}")} if self.best_step else set()
        for path in found[:-keep]:  # the newest `keep` stay, and the best wherever it is
            if path not in protected:
                shutil.rmtree(path, ignore_errors=True)

    def best_checkpoint(self) -> Optional[str]:
        if self.best_step is None:
            return None
        path = os.path.join(self.args.output_dir, f"checkpoint-{self.best_step}")
        return path if os.path.isdir(path) else None

    def load_weights_from(self, checkpoint: str) -> None:
        """The model's weights from checkpoint-<step> (e.g. the best one at the end of training), copied in place so
        the compiled steps and evaluations see them (`ms_gpt.checkpoint.assign_weights`)."""
        params = {p.name: p for p in self.model.get_parameters()}
        state = ms.load_checkpoint(os.path.join(checkpoint, TRAINING_STATE))
        for name in params:
            if name not in state:
                raise ValueError(f"{checkpoint}: no weights for '{name}'")
        assign_weights(params, {name: state[name] for name in params})

    def resume(self, checkpoint: str) -> None:
        if checkpoint == "auto":
            found = list_checkpoints(self.args.output_dir)
            if not found:
                return  # nothing to resume: a fresh run
            checkpoint = max(found, key=_step_of)
        state_file = os.path.join(checkpoint, TRAINER_STATE)
        if not os.path.isfile(state_file):
            raise FileNotFoundError(f"resume_from_checkpoint: {checkpoint} has no {TRAINER_STATE}")
        with open(state_file, encoding="utf-8") as f:
            state = json.load(f)
        params = {p.name: p for p in self._state_params()}
        saved = ms.load_checkpoint(os.path.join(checkpoint, TRAINING_STATE))
        saved_lora, lora = (any(".lora_A." in k for k in names) for names in (saved, params))
        if saved_lora != lora:
            kinds = {True: "a LoRA run (adapter weights only are trained)", False: "a full run (all weights trained)"}
            raise ValueError(f"{checkpoint} was written by {kinds[saved_lora]}, but this run is {kinds[lora]}; "
                             "resume with the same lora_r and lora_target_modules as the checkpoint's run")
        missing = sorted(set(params) - set(saved))
        if missing:
            raise ValueError(f"{checkpoint}: training state lacks {missing[:5]} (different model or optimizer?)")
        for name, param in params.items():
            if tuple(saved[name].shape) != tuple(param.shape):
                raise ValueError(f"{checkpoint}: '{name}' has shape {tuple(saved[name].shape)}, the model "
                                 f"expects {tuple(param.shape)}")
        assign_weights(params, {name: saved[name] for name in params})
        self.step = int(state["global_step"])
        self.best_metric, self.best_step = state.get("best_metric"), state.get("best_step")
        self.history = list(state.get("log_history", []))
        self.train_source.load_state_dict(state["data_state"])
        if self.device.is_main:  # one line, bar or no bar, so a log shows where the run picked up
            print(f"resumed from checkpoint {os.path.abspath(checkpoint)} at step {self.step} "
                  f"(training to step {self.total_steps})", flush=True)

    def plot_losses(self) -> Optional[str]:
        from matplotlib.figure import Figure  # no pyplot: leaves a notebook's inline backend alone

        train = [(r["step"], r["loss"]) for r in self.history if "loss" in r]
        evals = {}
        for r in self.history:
            for key, value in r.items():
                if key.endswith("_loss") and isinstance(value, float):
                    evals.setdefault(key, []).append((r["step"], value))
        if not train and not evals:
            return None
        fig = Figure(figsize=(7, 4))
        ax = fig.subplots()
        if train:
            ax.plot(*zip(*train), label="train (logged)", alpha=0.6)
        for key, points in evals.items():
            ax.plot(*zip(*points), marker="o", markersize=3, label=key)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()
        ax.grid(alpha=0.3)
        path = os.path.join(self.args.output_dir, "loss.png")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100)
        return path


def list_checkpoints(output_dir: str) -> list[str]:
    return [p for p in glob.glob(os.path.join(output_dir, "checkpoint-*")) if _step_of(p) >= 0]


def _step_of(path: str) -> int:
    tail = os.path.basename(path).rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")
