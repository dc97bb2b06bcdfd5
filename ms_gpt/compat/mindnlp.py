"""The one door from ms_gpt to mindnlp 0.4.1, with the fixes it needs on MindSpore 2.7.

Importing this module is cheap: mindnlp (about 5 s on an idle 2-core CPU) is imported by the first accessor call,
and the fixes are applied then, once per process::

    from ms_gpt.compat.mindnlp import import_mindnlp, get_trainer_classes, as_mindnlp_model, load_dataset

    mindnlp = import_mindnlp()                        # patched mindnlp module
    Trainer, TrainingArguments = get_trainer_classes()
    trainer = Trainer(model=as_mindnlp_model(cell), args=TrainingArguments(...), train_dataset=..., eval_dataset=...,
                      compute_metrics=...)
    train_ds = load_dataset("csv", data_files="train.csv", split="train")   # mindspore GeneratorDataset

Only mindnlp>=0.4,<0.5 is accepted: mindnlp 0.5+ is a torch shim that re-patches `mindspore.Tensor` on import and
breaks native MindSpore code such as ms_gpt's models.

What a model needs for mindnlp's Trainer
----------------------------------------
mindnlp's Trainer is written against a torch-like `mindnlp.core.nn.Module`, not a `mindspore.nn.Cell`: it reads the
class's `forward` signature (to pick dataset columns and find label names), walks `named_parameters()`,
`named_children()` and `_parameters`, calls `set_train()` / `zero_grad()`, and its optimizers read `param.grad`.
A plain Cell fails in `Trainer.__init__` (`type object ... has no attribute 'forward'`). `as_mindnlp_model(cell)`
supplies all of that; the Cell itself must provide:

- `construct` with named parameters: the Trainer calls `model(**batch)`, and dataset columns whose names are not
  parameters of `construct` are dropped (`remove_unused_columns`). Parameters whose name contains "label" become
  the Trainer's `label_names`; evaluation computes a loss only when those columns are present.
- a return value with the loss first: a scalar loss Tensor, a tuple `(loss, logits, ...)`, or a dict with "loss".
  `compute_metrics` receives everything after the loss as `EvalPrediction.predictions` (a single array when there
  is one extra output), and the label columns as `label_ids`. Return logits if you want metrics.
- PyNative mode (the Trainer takes gradients with the PyNative executor).

The adapter shares the Cell's Parameters, so the Cell is trained in place. Weight decay goes to every parameter
whose name does not contain "bias" (the Trainer only recognises mindnlp LayerNorm modules, not Cells).
mindnlp models (`mindnlp.transformers.*`) are Modules already and are passed through unchanged.

`evaluate.load("accuracy")` needs the network: compute metrics locally in `compute_metrics`.

Side effects of `import mindnlp` 0.4.1 itself (not undone here): it sets HF_ENDPOINT=https://hf-mirror.com (when
unset), MS_DEV_FORCE_ACL=1, TOKENIZERS_PARALLELISM=false and MS_ALLOC_CONF (outside Ascend 910B/310), removes
RANK_TABLE_FILE, replaces `mindspore.Tensor.data_ptr` and the `__str__` of MindSpore Float/Int dtypes, and
initialises jieba's dictionary (about 1 s of the import, cached in /tmp).

Must not import: any ms_gpt module. No other ms_gpt module imports mindnlp.
"""
from __future__ import annotations

import glob
import importlib
import importlib.metadata
import inspect
import os
from types import ModuleType
from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

if TYPE_CHECKING:
    import mindspore

__all__ = ["import_mindnlp", "get_trainer_classes", "as_mindnlp_model", "load_dataset", "check_mindnlp_version"]

_MINDNLP: ModuleType | None = None
# Set on functions installed by this module, so a second application can recognise its own work.
_COMPAT_MARK = "_ms_gpt_compat"


def check_mindnlp_version(version: str) -> None:
    """Raise ImportError unless `version` is a mindnlp release these fixes were written for (0.4.x)."""
    from packaging.version import Version

    parsed = Version(version)
    if parsed >= Version("0.5"):
        raise ImportError(
            f"mindnlp {version} is installed but ms_gpt supports mindnlp>=0.4,<0.5 (tested with 0.4.1): mindnlp 0.5+ "
            "is a torch shim that re-patches mindspore.Tensor on import and breaks native MindSpore code. "
            "Install mindnlp==0.4.1.")
    if parsed < Version("0.4"):
        raise ImportError(f"mindnlp {version} is installed but ms_gpt supports mindnlp>=0.4,<0.5 (tested with 0.4.1); "
                          "older releases lack mindnlp.core. Install mindnlp==0.4.1.")


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _check_installed_stack() -> None:
    """Turn the known-bad dependency combinations into one readable error before `import mindnlp` trips on them."""
    from packaging.version import Version

    mindnlp_version = _installed_version("mindnlp")
    if mindnlp_version is None:
        raise ImportError("mindnlp is not installed; ms_gpt's mindnlp interop needs mindnlp==0.4.1 "
                          "(pip install -r requirements.txt)")
    check_mindnlp_version(mindnlp_version)
    # mindnlp.utils.testing_utils imports private names from `_pytest.doctest` whenever pytest is installed; from
    # pytest 8.0.2 `import_path` is no longer importable from there (it lives in `_pytest.pathlib`), so
    # `import mindnlp` fails with "cannot import name 'import_path' from '_pytest.doctest'".
    pytest_version = _installed_version("pytest")
    if pytest_version is not None and Version(pytest_version) >= Version("8.0.2"):
        raise ImportError(f"pytest {pytest_version} is installed; mindnlp 0.4.1 cannot be imported next to "
                          "pytest>=8.0.2. Install pytest<8.0.2.")
    # mindnlp -> datasets -> pyarrow; pyarrow 26 wheels need numpy 2, MindSpore 2.7 needs numpy<2.
    pyarrow_version, numpy_version = _installed_version("pyarrow"), _installed_version("numpy")
    if (pyarrow_version is not None and numpy_version is not None
            and Version(pyarrow_version) >= Version("26") and Version(numpy_version) < Version("2")):
        raise ImportError(f"pyarrow {pyarrow_version} needs numpy>=2 but numpy {numpy_version} is installed "
                          "(MindSpore 2.7 needs numpy<2). Install pyarrow<26.")


def _bind_stub_tensor_module() -> None:
    # Breaks: `import mindnlp` (0.4.1) on MindSpore 2.7 -> mindnlp/patch.py assigns
    # `mindspore.common._stub_tensor.StubTensor.data_ptr` and fails with "module 'mindspore.common' has no attribute
    # '_stub_tensor'". MindSpore 2.7 still ships that submodule, but only as an empty placeholder class that nothing
    # imports any more, so it is never bound as an attribute of `mindspore.common`. Importing it binds it; the
    # placeholder is harmless to patch (mindnlp's `isinstance(x, StubTensor)` checks are then simply never true).
    importlib.import_module("mindspore.common._stub_tensor")


def _fix_empty() -> None:
    # Breaks: building any mindnlp 0.4.1 layer with parameters (nn.Embedding, nn.Linear, ...) on MindSpore 2.7 ->
    # RuntimeError "Two args are needed by RunOp, but got 1" from mindnlp.core.ops.creation.empty, which calls
    # `mindspore._c_expression.pyboost_empty([size, dtype, device])`; MindSpore 2.7 changed that binding to
    # `pyboost_empty(primitive, args)`. `mindspore.mint.empty` is no drop-in either: with device=None it asks for
    # Ascend even when the CPU backend is selected. Every caller overwrites the buffer right away (parameter
    # initialisers), so zeros on the current device are equivalent and work on every backend. `device` is ignored:
    # mindnlp 0.4.1 only passes it from its Triton (GPU kernel) helpers.
    import mindspore
    from mindnlp.core import ops as core_ops
    from mindnlp.core.ops import creation

    def empty(*size, dtype=None, device=None):
        if len(size) == 1 and isinstance(size[0], (tuple, list)):
            size = size[0]
        return mindspore.ops.zeros(tuple(size), dtype if dtype is not None else creation.get_default_dtype())

    # `mindnlp.core.ops` re-exports creation's names with `import *`, so both bindings are replaced.
    for module in (creation, core_ops):
        module.empty = empty


def _fix_parameter_grad() -> None:
    # Breaks: mindnlp 0.4.1 `Trainer.train()` on MindSpore 2.7 -> AttributeError "'Parameter' object has no attribute
    # 'grad'". mindnlp trains torch-style: core.autograd.value_and_grad(attach_grads=True), used by
    # Trainer.training_step, tests `param.grad is None` before it ever stored a gradient, and the optimizers read
    # `param.grad`. MindSpore 2.7's Tensor has no public `grad` attribute (only the C++ slot `_grad`). A class-level
    # default of None gives every mindnlp Parameter an empty gradient slot; each instance then stores its own.
    from mindnlp.core.nn import Parameter

    if "grad" not in vars(Parameter):
        Parameter.grad = None


def _fix_value_and_grad() -> None:
    # mindnlp's Trainer.training_step takes gradients through `core.autograd.value_and_grad`, which drives
    # MindSpore's private PyNative executor (new_graph / end_graph / grad). MindSpore 2.10 changed that protocol
    # ("Can not find top cell for backward"). The public `mindspore.value_and_grad` does the same job on 2.7-2.10;
    # this keeps mindnlp's contract: gradients are attached to (added into) `param.grad` and the values returned.
    import mindspore
    from mindnlp.core import autograd
    from mindnlp.core.autograd import function
    from mindnlp.engine.trainer import base

    original = function.value_and_grad

    def value_and_grad(fn, params_or_argnums, has_aux=False, attach_grads=True):
        params = tuple(params_or_argnums)
        if params and isinstance(params[0], int):  # gradients with respect to inputs: mindnlp's own path
            return original(fn, params, has_aux, attach_grads)
        grad_fn = mindspore.value_and_grad(fn, grad_position=None, weights=params, has_aux=has_aux)

        def value_and_grad_f(*args, **kwargs):
            values, grads = grad_fn(*args, **kwargs)
            if not attach_grads:
                return values, grads
            for param, grad in zip(params, grads):
                param.grad = grad if param.grad is None else param.grad + grad
            return values

        return value_and_grad_f

    for module in (function, autograd, base):
        module.value_and_grad = value_and_grad


def _fix_eval_loss_repeat() -> None:
    # Breaks: mindnlp 0.4.1 `Trainer.evaluate()` on MindSpore 2.7 CPU/GPU -> RuntimeError "'repeat' is not supported
    # on this device". Trainer.evaluation_loop spreads each batch's scalar loss over the batch with
    # `loss.repeat(batch_size)`; MindSpore 2.7 implements Tensor.repeat only as an Ascend kernel, and its CPU/GPU
    # fallback (mindspore.ops.tensor_method.tensor_repeat) raises unconditionally. Rather than changing
    # mindspore.Tensor for everybody, the loss handed from prediction_step to the loop gets a `repeat` built on
    # `tile` (same result: a 0-d loss repeated n times is a length-n vector).
    import mindspore
    from mindnlp.engine.trainer import base as trainer_base

    original = trainer_base.Trainer.prediction_step
    if getattr(original, _COMPAT_MARK, False):
        return

    class _EvalLoss(mindspore.Tensor):
        def repeat(self, *repeats):
            return mindspore.ops.tile(mindspore.Tensor(self), repeats)

    def prediction_step(self, *args, **kwargs):
        loss, logits, labels = original(self, *args, **kwargs)
        return (None if loss is None else _EvalLoss(loss)), logits, labels

    prediction_step.__doc__ = original.__doc__
    setattr(prediction_step, _COMPAT_MARK, True)
    trainer_base.Trainer.prediction_step = prediction_step


def _fix_missing_strings() -> None:
    # Breaks: iterating the dataset that mindnlp 0.4.1's load_dataset returns for a csv/json file with an empty text
    # cell (e.g. the 14 empty "plot" rows of data/sentiment-rt) -> RuntimeError "Data type of 1th item of the input
    # ... is expected to be int or float or str, but got object". `datasets` reads an empty string cell as None and
    # mindnlp hands each row to mindspore's GeneratorDataset unchanged, which cannot convert None; a `.filter` in the
    # pipeline comes too late (the row is converted before any operation sees it). Missing values of string columns
    # become "" (what the csv module reads for an empty cell); columns of other types are left alone.
    from mindnlp.dataset import load as mindnlp_load

    if getattr(mindnlp_load.TransferDataset.__getitem__, _COMPAT_MARK, False):
        return

    def string_columns(source) -> set:
        cached = getattr(source, "_ms_gpt_string_columns", None)  # __getitem__ runs per row: look once
        if cached is None:
            features = getattr(source.ds, "features", None) or {}
            cached = {name for name, feature in features.items()
                      if getattr(feature, "dtype", None) in ("string", "large_string")}
            source._ms_gpt_string_columns = cached
        return cached

    def fill(row: tuple, names, strings: set) -> tuple:
        return tuple("" if value is None and name in strings else value for name, value in zip(names, row))

    original_getitem = mindnlp_load.TransferDataset.__getitem__
    original_iter = mindnlp_load.TransferIterableDataset.__iter__

    def getitem(self, index):
        return fill(original_getitem(self, index), self.column_names, string_columns(self))

    def iterate(self):
        strings = string_columns(self)
        for row in original_iter(self):
            yield fill(row, self.column_names, strings)

    for method in (getitem, iterate):
        setattr(method, _COMPAT_MARK, True)
    mindnlp_load.TransferDataset.__getitem__ = getitem
    mindnlp_load.TransferIterableDataset.__iter__ = iterate


def _import_keeping_dtype_names() -> ModuleType:
    """mindnlp/patch.py replaces `__str__` of MindSpore's Int and Float dtype classes ("Int64" -> "mindspore.int64").
    MindSpore 2.7's own `ops.arange` (and other ops) parse those names, so every later ms_gpt forward fails with
    "'>' not supported ... NoneType". Keep MindSpore's names: restore the methods right after the import."""
    import mindspore.common.dtype as ms_dtype

    classes = (ms_dtype.Int, ms_dtype.Float)
    saved = {cls: cls.__dict__.get("__str__") for cls in classes}
    try:
        return importlib.import_module("mindnlp")
    finally:
        for cls, method in saved.items():
            if method is None:
                if "__str__" in cls.__dict__:
                    delattr(cls, "__str__")
            else:
                cls.__str__ = method


def import_mindnlp() -> ModuleType:
    """Import mindnlp 0.4.x with the MindSpore 2.7 fixes applied (first call only) and return the module.

    Raises ImportError with the reason when mindnlp or its pinned neighbours (pytest, pyarrow) are missing or at
    versions known not to work.
    """
    global _MINDNLP
    if _MINDNLP is None:
        _check_installed_stack()
        _bind_stub_tensor_module()
        mindnlp = _import_keeping_dtype_names()
        _fix_empty()
        _fix_parameter_grad()
        _fix_value_and_grad()
        _fix_eval_loss_repeat()
        _fix_missing_strings()
        _MINDNLP = mindnlp
    return _MINDNLP


def get_trainer_classes() -> tuple[type, type]:
    """Return mindnlp's `(Trainer, TrainingArguments)` with `train()` and `evaluate()` working on MindSpore 2.7."""
    import_mindnlp()
    from mindnlp.engine import Trainer, TrainingArguments

    return Trainer, TrainingArguments


def as_mindnlp_model(model: Any) -> Any:
    """Make a `mindspore.nn.Cell` trainable by mindnlp's Trainer (see the module docstring for the contract).

    A mindnlp `nn.Module` (any mindnlp.transformers model) is returned unchanged. The returned adapter keeps the
    Cell as `.cell` and shares its Parameters, so training updates the Cell itself.
    """
    import_mindnlp()
    import mindspore
    from mindnlp.core import nn as mindnlp_nn

    if isinstance(model, mindnlp_nn.Module):
        return model
    if not isinstance(model, mindspore.nn.Cell):
        raise TypeError(f"as_mindnlp_model expects a mindspore.nn.Cell or mindnlp Module, got {type(model).__name__}")
    signature = inspect.signature(model.construct)
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    if not any(p.kind in keyword_kinds for p in signature.parameters.values()):
        raise ValueError(f"{type(model).__name__}.construct{signature} has no named parameters; mindnlp's Trainer "
                         "passes each batch as keyword arguments named after the dataset columns")

    def forward(self, *args, **kwargs):
        outputs = self.cell(*args, **kwargs)
        # The Trainer takes the loss as outputs[0]; indexing a bare loss Tensor would not give the loss.
        return (outputs,) if isinstance(outputs, mindspore.Tensor) else outputs

    # The Trainer inspects the *class's* forward (find_labels, can_return_loss), so each wrapped Cell class gets
    # its own adapter class whose forward advertises the Cell's construct signature.
    self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    forward.__signature__ = signature.replace(parameters=[self_parameter, *signature.parameters.values()])
    adapter_class = type(f"{type(model).__name__}ForMindnlpTrainer", (_cell_adapter_base(),), {"forward": forward})
    return adapter_class(model)


_CELL_ADAPTER_BASE: type | None = None


def _cell_adapter_base() -> type:
    """The mindnlp Module subclass behind as_mindnlp_model (built on first use: it needs mindnlp imported)."""
    global _CELL_ADAPTER_BASE
    if _CELL_ADAPTER_BASE is None:
        from mindnlp.core import nn as mindnlp_nn

        class CellAdapter(mindnlp_nn.Module):
            """A mindnlp Module view of a mindspore Cell: same Parameters, Cell's train/eval mode kept in sync."""

            def __init__(self, cell: mindspore.nn.Cell):
                super().__init__()
                self.cell = cell
                for name, param in cell.parameters_and_names():
                    # mindnlp's autograd and optimizers read and write `param.grad` (see _fix_parameter_grad).
                    if not hasattr(param, "grad"):
                        param.grad = None
                    # Registered directly: register_parameter() only accepts mindnlp Parameters and dot-free names.
                    self._parameters[name] = param
                self.cell.set_train(self.training)

            def train(self, mode: bool = True):
                super().train(mode)
                self.cell.set_train(mode)
                return self

            set_train = train  # mindnlp's Module aliases set_train to its own train at class creation

        _CELL_ADAPTER_BASE = CellAdapter
    return _CELL_ADAPTER_BASE


DataFiles = Union[str, Sequence[str], Mapping[str, Union[str, Sequence[str]]]]


def _missing_local_files(data_files: DataFiles, base_dir: str) -> list[str]:
    if isinstance(data_files, str):
        candidates = [data_files]
    elif isinstance(data_files, Mapping):
        candidates = [f for files in data_files.values() for f in ([files] if isinstance(files, str) else files)]
    else:
        candidates = list(data_files)
    local = [f for f in candidates if "://" not in f]
    return [f for f in local if not glob.glob(os.path.join(base_dir, os.path.expanduser(f)))]


def load_dataset(path: str, *, data_files: DataFiles | None = None, split: str | None = None,
                 cache_dir: str | None = None, shuffle: bool = False, **kwargs: Any) -> Any:
    """Read local data with mindnlp.dataset.load_dataset (a wrapper over `datasets.load_dataset`), offline.

    `path` is a `datasets` builder name ("csv", "json", "text", "parquet") used with `data_files`, or a local
    directory of data files. Returns a `mindspore.dataset.GeneratorDataset` (columns = file columns; strings come
    out as numpy str arrays, an empty text cell as "") when `split` is given or there is a single split, else a dict
    split -> dataset.
    Other keyword arguments must be named parameters of mindnlp's load_dataset (name, data_dir, features,
    keep_in_memory, streaming, num_proc, ...): it silently drops builder options such as csv's `delimiter`, so those
    are refused here rather than ignored.
    """
    import_mindnlp()
    import datasets.config
    from mindnlp.dataset import load_dataset as mindnlp_load_dataset

    accepted = set(inspect.signature(mindnlp_load_dataset).parameters) - {"config_kwargs"}
    dropped = sorted(set(kwargs) - accepted)
    if dropped:
        raise ValueError(f"load_dataset: mindnlp 0.4.1 would silently ignore {', '.join(dropped)}; "
                         f"accepted options: {', '.join(sorted(accepted))}")
    path = os.path.expanduser(path)
    if (os.sep in path or path.startswith(".")) and not os.path.exists(path):
        raise FileNotFoundError(f"load_dataset: {path!r} does not exist")
    if data_files is not None:
        base_dir = path if os.path.isdir(path) else ""
        missing = _missing_local_files(data_files, base_dir)
        if missing:
            raise FileNotFoundError(f"load_dataset: data file(s) not found: {', '.join(map(repr, missing))}")
    if cache_dir is None:
        # mindnlp's default is os.path.join(<cwd>/.mindnlp, "datasets", path): it litters the working tree, and for
        # an absolute `path` os.path.join collapses to `path` itself, i.e. the cache lands inside the data folder.
        cache_dir = datasets.config.HF_DATASETS_CACHE
    return mindnlp_load_dataset(path, data_files=data_files, split=split, cache_dir=str(cache_dir), shuffle=shuffle,
                                **kwargs)
