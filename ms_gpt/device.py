"""Device and context setup (the one function every entry point calls first), the execution policy (the ONE place
that decides from the device and the `emulate_ascend` flag which graph choices a run makes: `ExecutionPolicy`,
`current_policy`) and how a Cell is compiled (`compiled`, `graph_mode`, the compile cache), with the fallbacks
MindSpore versions need.

Must not import: any ms_gpt module.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Callable, Optional

os.environ.setdefault("GLOG_v", "3")

import mindspore as ms  # noqa: E402

DEVICES = ("auto", "CPU", "GPU", "Ascend")


@dataclass(frozen=True)
class ExecutionPolicy:
    """The graph choices of a run, decided ONLY from the device target and the `emulate_ascend` flag. Every other
    module asks this object (via `current_policy()` or `DeviceInfo.policy`) instead of reading the device.

    `emulate_ascend=True` on CPU/GPU makes exactly the choices an Ascend job makes (static shapes, Ascend's jit
    level, the fused LayerNorm in training, static decode windows), so a config can be dry-run on a laptop; what
    stays the host's own: the kernels (CPU kernels, no NPU float-status registers) and `lazy_inline` (it does not
    compile on MindSpore 2.7's CPU backend: "Input[0] must be a Primitive ValueNode" at O0 and O1, measured).
    """

    target: str = "CPU"  # the real device: CPU | GPU | Ascend
    emulate_ascend: bool = False

    @property
    def ascend(self) -> bool:
        """Whether graphs are built as an Ascend job builds them (on Ascend, or emulated)."""
        return self.target == "Ascend" or self.emulate_ascend

    @property
    def static_shapes(self) -> bool:
        """Ascend graphs recompile (or fail) when batch shapes change: data is padded to fixed lengths
        (padding `auto` = `max_length`)."""
        return self.ascend

    @property
    def static_decode_windows(self) -> bool:
        """generate()'s decode step: one graph per window in STATIC_WINDOWS instead of one dynamic-window graph."""
        return self.ascend

    @property
    def jit_level(self) -> str:
        """`jit_level: auto`: O0 on Ascend (MindSpore's default there: kernel-by-kernel, no graph sinking) and GPU; O1
        on CPU (fusion, measured faster there)."""
        return "O0" if self.ascend or self.target == "GPU" else "O1"

    @property
    def fused_layer_norm(self) -> bool:
        """Training/eval LayerNorm as the fused kernel (Ascend/GPU); on plain CPU it is composed of MatMul and
        elementwise ops (`model.LayerNorm`: faster there)."""
        return self.ascend or self.target != "CPU"

    @property
    def lazy_inline(self) -> bool:
        """`mindspore.lazy_inline` on the repeated Block (Ascend's compile-time lever: one Block graph reused by
        every layer). Real Ascend only: it does not compile on the CPU backend (see the class docstring)."""
        return self.target == "Ascend"

    @property
    def overflow_check(self) -> str:
        """How fp16 loss scaling detects an overflow, i.e. which path `mindspore.amp.all_finite` takes here:
        "npu_float_status" on Atlas training series (910A, saturation mode: an overflow saturates to a finite value,
        so only the NPU float-status registers see it; also 910B with MS_ASCEND_CHECK_OVERFLOW_MODE=SATURATION_MODE),
        "all_finite" on 910B/910_93 (INF/NAN mode), "float_status" on GPU, "isfinite" on CPU (emulation included:
        a CPU has no float-status registers)."""
        if self.target == "Ascend":
            from mindspore._c_expression import MSContext

            soc = MSContext.get_instance().get_ascend_soc_version()
            saturation = os.environ.get("MS_ASCEND_CHECK_OVERFLOW_MODE") == "SATURATION_MODE"
            return "npu_float_status" if soc == "ascend910" or saturation else "all_finite"
        return "float_status" if self.target == "GPU" else "isfinite"

    def describe(self) -> dict:
        """The policy's choices as a JSON-able dict (the run's first lines and all_results.json)."""
        return {"target": self.target, "emulate_ascend": self.emulate_ascend, "static_shapes": self.static_shapes,
                "jit_level": self.jit_level, "fused_layer_norm": self.fused_layer_norm,
                "static_decode_windows": self.static_decode_windows, "lazy_inline": self.lazy_inline,
                "overflow_check": self.overflow_check}


@dataclass
class DeviceInfo:
    target: str  # CPU | GPU | Ascend
    rank: int = 0
    world_size: int = 1
    emulate_ascend: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def policy(self) -> ExecutionPolicy:
        return ExecutionPolicy(self.target, self.emulate_ascend)

    @property
    def static_shapes(self) -> bool:
        """Ascend graphs recompile (or fail) when batch shapes change, so data is padded to fixed lengths there."""
        return self.policy.static_shapes


_STATE: dict = {}


def current_policy() -> ExecutionPolicy:
    """The policy of this process: the one `setup_device` (or `use_policy`) set, else that of MindSpore's current
    device without emulation."""
    policy = _STATE.get("policy")
    if policy is not None:
        return policy
    target = ms.get_context("device_target")
    return ExecutionPolicy(target if target in ("CPU", "GPU", "Ascend") else "CPU", False)


@contextlib.contextmanager
def use_policy(policy: ExecutionPolicy):
    """Run the enclosed code under `policy` (tests, notebooks), then restore the previous one."""
    previous = _STATE.get("policy")
    _STATE["policy"] = policy
    try:
        yield policy
    finally:
        if previous is None:
            _STATE.pop("policy", None)
        else:
            _STATE["policy"] = previous


def lazy_inline_where_supported(init: Callable) -> Callable:
    """Decorate a Cell's `__init__` with `mindspore.lazy_inline` when the policy at construction says so (real
    Ascend), and leave it a plain `__init__` elsewhere."""
    inlined = ms.lazy_inline(init)

    @functools.wraps(init)
    def construct_cell(self, *args, **kwargs):
        (inlined if current_policy().lazy_inline else init)(self, *args, **kwargs)
    return construct_cell


def check_jit_level(jit_level: str, dynamic: bool, what: str) -> None:
    """jit_level O2 compiles static shapes only: with a dynamic axis (padding `dynamic`, a dynamic decode window)
    it is one clear error here instead of a failure deep in the compiler."""
    if jit_level == "O2" and dynamic:
        raise ValueError(f"jit_level=O2 compiles static shapes only, but {what} has a dynamic sequence axis; use "
                         "padding=max_length (or auto with emulate_ascend / on Ascend), or jit_level O0/O1/auto")


def startup_lines(compute_dtype: str, policy: ExecutionPolicy) -> list[str]:
    """The run's first lines: its compute dtype and execution policy, plus the note of `compute_dtype_note`."""
    lines = [f"compute_dtype {compute_dtype}; execution policy {json.dumps(policy.describe())}"]
    note = compute_dtype_note(compute_dtype, policy)
    return lines + ([note] if note else [])


def compute_dtype_note(compute_dtype: str, policy: ExecutionPolicy) -> Optional[str]:
    """One line for the run's start where the host backend lacks the requested matmul kernel, else None. The graph
    stays in the requested dtype (Ascend runs it natively); bf16 on CPU is an error (no kernel to run it)."""
    if policy.target != "CPU" or compute_dtype == "float32":
        return None
    if compute_dtype == "bfloat16":
        raise ValueError("bf16: MindSpore 2.7's CPU backend has no bfloat16 MatMul kernel, so this graph cannot run "
                         "here; train bf16 on Ascend (Atlas A2 / 910B), or use fp16 to dry-run mixed precision on CPU")
    return ("note: MindSpore 2.7's CPU backend has no float16 MatMul kernel (it inserts casts to float32); the graph "
            "keeps float16 matmuls as Ascend runs them, but CPU numbers are not Ascend's")


def _detect_target() -> str:
    # The installed MindSpore package decides what exists (CPU wheels report CPU). CANN's set_env.sh exports
    # ASCEND_HOME_PATH on Ascend hosts (ModelArts / OpenI images); DEVICE_ID alone proves nothing: msrun sets it.
    plugin = os.path.join(os.path.dirname(ms.__file__), "lib", "plugin", "libmindspore_ascend.so.2")
    if os.environ.get("ASCEND_HOME_PATH") and os.path.exists(plugin):
        return "Ascend"
    target = ms.get_context("device_target")
    return target if target in ("CPU", "GPU", "Ascend") else "CPU"


@contextlib.contextmanager
def graph_mode():
    """Run the enclosed Cell calls as compiled graphs (GRAPH_MODE), then return to the previous mode."""
    previous = ms.get_context("mode")
    if previous == ms.GRAPH_MODE:
        yield
        return
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        yield
    finally:
        ms.set_context(mode=previous)


def compiled(cell, jit: bool = True, jit_level: str = "auto",
             policy: Optional[ExecutionPolicy] = None) -> Callable:
    """Run `cell` as a compiled graph: each call switches MindSpore to GRAPH_MODE and back, so the rest of the
    program stays in PyNative. (On MindSpore 2.7 CPU a graph-mode Cell ran the seed's step in ~45 ms, the same graph
    through `mindspore.jit` inside PyNative in ~108 ms: the PyNative executor launches the graph's kernels through
    its own queue.) jit=False runs the cell op by op in PyNative (debugging, and the benchmark's baseline)."""
    if not jit:
        return cell
    level = jit_level if jit_level != "auto" else (policy or current_policy()).jit_level
    if level not in ("O0", "O1", "O2"):
        raise ValueError(f"jit_level={jit_level!r}; expected auto, O0, O1 or O2")
    cell.set_jit_config(ms.JitConfig(jit_level=level))

    def run(*inputs):
        with graph_mode():
            return cell(*inputs)
    run.cell = cell
    return run


def setup_device(device_target: str = "auto", seed: int | None = None, emulate_ascend: bool = False,
                 ascend_precision_mode: Optional[str] = None) -> DeviceInfo:
    """Select the device, use PyNative (compiled steps switch to graph mode: `graph_mode`), join data parallel
    under msrun, and set this process's `ExecutionPolicy` from the device and `emulate_ascend`.
    `ascend_precision_mode` (None = MindSpore's default) goes to Ascend's op precision mode; on another device it
    is checked and otherwise ignored.

    Idempotent: a second call returns the first result (MindSpore's communication can be initialised once), but
    `seed` is applied on every call, so each run in one process (a notebook, the demo) starts from its own seed.
    """
    if device_target not in DEVICES:
        raise ValueError(f"device_target={device_target!r}; expected one of {DEVICES}")
    if seed is not None:
        ms.set_seed(seed)
    if ascend_precision_mode is not None and ascend_precision_mode not in ASCEND_PRECISION_MODES:
        raise ValueError(f"ascend_precision_mode={ascend_precision_mode!r}; expected one of {ASCEND_PRECISION_MODES}")
    if "info" in _STATE:
        info = dataclasses.replace(_STATE["info"], emulate_ascend=bool(emulate_ascend))
        _STATE["policy"] = info.policy
        return info
    target = _detect_target() if device_target == "auto" else device_target
    if ms.get_context("device_target") != target:  # set_device may only run before the first kernel
        ms.set_device(target)
    ms.set_context(mode=ms.PYNATIVE_MODE)
    rank, world = 0, 1
    if int(os.environ.get("MS_WORKER_NUM", os.environ.get("RANK_SIZE", "1"))) > 1:
        from mindspore.communication import get_group_size, get_rank, init

        init()
        rank, world = get_rank(), get_group_size()
        # no auto-parallel context: the engine averages gradients itself (DistributedGradReducer in the compiled
        # step), and evaluation graphs stay plain per-rank graphs
    if target == "Ascend" and ascend_precision_mode is not None:
        _set_ascend_precision_mode(ascend_precision_mode)
    info = DeviceInfo(target=target, rank=rank, world_size=world)
    _STATE["info"] = info
    info = dataclasses.replace(info, emulate_ascend=bool(emulate_ascend))
    _STATE["policy"] = info.policy
    return info


# Ascend's op precision modes as MindSpore 2.7 accepts them (`device_context.ascend.op_precision.precision_mode`).
# MindSpore's default on Atlas training series (910A) lowers matmuls to float16 ("force_fp16" in 2.7's docstring,
# "allow_fp32_to_fp16" in its Chinese docs) and is "must_keep_origin_dtype" on Atlas A2 (910B): a "float32" run on
# 910A computes its matmuls in float16 unless this is "must_keep_origin_dtype".
ASCEND_PRECISION_MODES = ("force_fp16", "allow_fp32_to_fp16", "allow_mix_precision", "must_keep_origin_dtype",
                          "force_fp32", "allow_fp32_to_bf16", "allow_mix_precision_fp16",
                          "allow_mix_precision_bf16")


def _set_ascend_precision_mode(mode: str) -> None:
    try:
        from mindspore.device_context.ascend.op_precision import precision_mode
    except ImportError:  # MindSpore < 2.4
        ms.set_context(ascend_config={"precision_mode": mode})
    else:
        precision_mode(mode)


def enable_compile_cache(directory: str, key: dict) -> str:
    """Turn on MindSpore's compile cache (MS_COMPILER_CACHE_ENABLE / MS_COMPILER_CACHE_PATH) for this process, in a
    subfolder of `directory` named by a hash of `key`, ms_gpt's sources and the MindSpore version; returns it.

    MindSpore matches a cached graph by its compile order in the process, not by its content (a 3-layer run found a
    2-layer run's graph and ran it, measured on 2.7): `key` must hold everything that shapes the graphs of the run
    (options, model config, parameter and input shapes), so that a run reuses only graphs of an identical run.
    Call it before the first graph compiles.
    """
    digest = hashlib.sha256(f"mindspore {ms.__version__}\n".encode())
    package = os.path.dirname(os.path.abspath(__file__))
    for folder, dirs, files in sorted(os.walk(package)):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                with open(os.path.join(folder, name), "rb") as f:
                    digest.update(os.path.relpath(os.path.join(folder, name), package).encode() + b"\0" + f.read())
    digest.update(json.dumps(key, sort_keys=True, default=str).encode())
    path = os.path.join(os.path.abspath(directory), digest.hexdigest()[:16])
    os.makedirs(path, exist_ok=True)
    os.environ["MS_COMPILER_CACHE_ENABLE"] = "1"
    os.environ["MS_COMPILER_CACHE_PATH"] = path
    return path
