"""Device and context setup (the one function every entry point calls first) and how a Cell is compiled
(`compiled`, `graph_mode`, the compile cache), with the fallbacks MindSpore versions need.

Must not import: any ms_gpt module.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Callable, Optional

os.environ.setdefault("GLOG_v", "3")

import mindspore as ms  # noqa: E402

DEVICES = ("auto", "CPU", "GPU", "Ascend")


@dataclass
class DeviceInfo:
    target: str  # CPU | GPU | Ascend
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def static_shapes(self) -> bool:
        """Ascend graphs recompile (or fail) when batch shapes change, so data is padded to fixed lengths there."""
        return self.target == "Ascend"


_STATE: dict = {}


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


def compiled(cell, jit: bool = True, jit_level: str = "auto", target: Optional[str] = None) -> Callable:
    """Run `cell` as a compiled graph: each call switches MindSpore to GRAPH_MODE and back, so the rest of the
    program stays in PyNative. (On MindSpore 2.7 CPU a graph-mode Cell ran the seed's step in ~45 ms, the same graph
    through `mindspore.jit` inside PyNative in ~108 ms: the PyNative executor launches the graph's kernels through
    its own queue.) jit=False runs the cell op by op in PyNative (debugging, and the benchmark's baseline)."""
    if not jit:
        return cell
    target = target or ms.get_context("device_target")
    level = jit_level if jit_level != "auto" else ("O1" if target == "CPU" else "O0")
    if level not in ("O0", "O1", "O2"):
        raise ValueError(f"jit_level={jit_level!r}; expected auto, O0, O1 or O2")
    cell.set_jit_config(ms.JitConfig(jit_level=level))

    def run(*inputs):
        with graph_mode():
            return cell(*inputs)
    run.cell = cell
    return run


def setup_device(device_target: str = "auto", seed: int | None = None) -> DeviceInfo:
    """Select the device, use PyNative (compiled steps switch to graph mode: `graph_mode`), join data parallel
    under msrun.

    Idempotent: a second call returns the first result (MindSpore's communication can be initialised once), but
    `seed` is applied on every call, so each run in one process (a notebook, the demo) starts from its own seed.
    """
    if device_target not in DEVICES:
        raise ValueError(f"device_target={device_target!r}; expected one of {DEVICES}")
    if seed is not None:
        ms.set_seed(seed)
    if "info" in _STATE:
        return _STATE["info"]
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
    info = DeviceInfo(target=target, rank=rank, world_size=world)
    _STATE["info"] = info
    return info


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
