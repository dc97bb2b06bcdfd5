"""LoRA adapters on the Conv1D projections, in Hugging Face PEFT's on-disk format.

`apply_lora(model, r, ...)` swaps each targeted Conv1D (`c_attn`, `c_proj`, `c_fc`) for a `LoraConv1D` that keeps
the base Parameters and adds `lora_A.weight` [r, in] / `lora_B.weight` [out, r], and freezes everything except the
adapter and the `modules_to_save` (e.g. a classification head): the engine's optimizer only sees trainable Parameters,
so the base weights get no gradient, no AdamW moments and no update.

A LoRA model's `save_pretrained(dir)` writes what PEFT's `PeftModel.save_pretrained` writes: `adapter_config.json`
(`peft_type: LORA`, `fan_in_fan_out: true`, `base_model_name_or_path`, `task_type`, r, lora_alpha, ...) and
`adapter_model.safetensors` with keys `base_model.model.<HF module path>.lora_A.weight` and the modules_to_save
weights under their plain HF names. `from_pretrained(adapter_dir)` loads the base named by base_model_name_or_path
(a local path, absolute or relative to the working directory, or a hub name), applies the adapter and loads its
weights; `merge_lora(model)` folds W += scaling * (B A)^T into a plain model (`merge_and_save` writes it). Checkpoint I/O
does not know adapters: this module registers the PEFT layout with it (`ms_gpt.checkpoint.register_layout`) when
imported, and the package's __init__ imports it.

Must not import: ms_gpt.engine, ms_gpt.data, ms_gpt.recipes, ms_gpt.compat.
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Any, Optional, Sequence

import numpy as np

from .checkpoint import CheckpointLayout, register_layout
from .config import check_lora_options
from .paths import atomic_directory

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
LORA_TARGETS = ("c_attn", "c_proj", "c_fc")  # the Conv1D modules of a GPT block
# ms_gpt class -> PEFT task_type, and the head modules PEFT keeps trainable for it (modules_to_save)
TASK_TYPES = {"GPTLMHeadModel": "CAUSAL_LM", "GPTForSequenceClassification": "SEQ_CLS",
              "GPTDoubleHeadsModel": None, "GPTModel": "FEATURE_EXTRACTION"}
HEADS = {"GPTForSequenceClassification": ["score"], "GPTDoubleHeadsModel": ["multiple_choice_head"]}
# PEFT options this loader does not implement: (key, value that is fine)
_UNSUPPORTED = (("use_dora", False), ("lora_bias", False), ("bias", "none"), ("rank_pattern", {}),
                ("alpha_pattern", {}), ("layers_to_transform", None), ("target_parameters", None),
                ("trainable_token_indices", None), ("layer_replication", None), ("exclude_modules", None))


def lora_layers(model) -> dict[str, Any]:
    """{module path: LoraConv1D} of a model (empty without LoRA)."""
    from .model import LoraConv1D

    return {name: cell for name, cell in model.cells_and_names() if isinstance(cell, LoraConv1D)}


def is_lora_model(model) -> bool:
    return getattr(model, "lora_config", None) is not None


def _match(name: str, target: str) -> bool:
    """PEFT's rule for a list entry: the module path equals it or ends with `.<target>`."""
    return name == target or name.endswith("." + target)


def _module_matches(name: str, targets) -> bool:
    if isinstance(targets, str):  # PEFT: a string is a regular expression over the full module path
        return re.fullmatch(targets, name) is not None
    return any(_match(name, t) for t in targets)


def _child(parent, attr: str):
    return parent._cells[attr]  # CellList children are named "0", "1", ...


def _set_child(model, path: str, cell) -> None:
    """Replace the sub-cell at `path` without Cell.__setattr__, which would prefix the (shared) parameter names."""
    parts = path.split(".")
    parent = model
    for part in parts[:-1]:
        parent = _child(parent, part)
    if parts[-1] not in parent._cells:
        raise ValueError(f"no sub-cell {path!r}")
    parent._cells[parts[-1]] = cell


def apply_lora(model, r: int, lora_alpha: float = 8.0, lora_dropout: float = 0.0,
               target_modules: Sequence[str] | str = ("c_attn",), modules_to_save: Optional[Sequence[str]] = None,
               base_model_name_or_path: Optional[str] = None, use_rslora: bool = False, seed: int = 0,
               init_b: str = "zeros"):
    """Add LoRA adapters to `model` in place and freeze the rest; returns the model.

    target_modules: module names matched as PEFT does (the path equals the name or ends with `.name`; a string is a
    regular expression over the whole path). modules_to_save: modules kept trainable and saved with the adapter
    (default: the task head of the class, as PEFT's SEQ_CLS does). lora_A starts as PEFT's Kaiming-uniform
    (U(+-1/sqrt(in)), drawn from `seed`), lora_B as zeros (init_b="normal" draws N(0, 0.02) instead, for tests).
    """
    from mindspore import Parameter, Tensor

    from .model import Conv1D, LoraConv1D

    check_lora_options(r, lora_alpha, lora_dropout, target_modules)
    if r == 0:
        raise ValueError("apply_lora: r=0 means LoRA off; give r >= 1")
    if is_lora_model(model):
        raise ValueError("apply_lora: the model already has LoRA adapters")
    targets = target_modules if isinstance(target_modules, str) else [str(t) for t in target_modules]
    cells = dict(model.cells_and_names())
    chosen = [name for name, cell in cells.items() if name and _module_matches(name, targets)]
    wrong = sorted({type(cells[n]).__name__ for n in chosen if not isinstance(cells[n], Conv1D)})
    if wrong:
        raise ValueError(f"lora_target_modules={targets!r} names {', '.join(wrong)} modules; LoRA applies to the "
                         f"Conv1D projections ({', '.join(LORA_TARGETS)})")
    if not chosen:
        raise ValueError(f"lora_target_modules={targets!r} names no module of {type(model).__name__}; the Conv1D "
                         f"projections are {', '.join(LORA_TARGETS)} (e.g. h.0.attn.c_attn)")
    if not isinstance(targets, str):
        unused = [t for t in targets if not any(_match(n, t) for n in chosen)]
        if unused:
            raise ValueError(f"lora_target_modules: {unused} name no module of {type(model).__name__}; the Conv1D "
                             f"projections are {', '.join(LORA_TARGETS)}")
    scaling = lora_alpha / math.sqrt(r) if use_rslora else lora_alpha / r
    rng = np.random.default_rng(seed)
    for name in chosen:
        base = cells[name]
        n_in, n_out = base.weight.shape
        prefix = base.weight.name[:-len("weight")]  # the base's own naming (keeps any wrapper prefix)
        a = rng.uniform(-1.0, 1.0, (r, n_in)) / math.sqrt(n_in)
        b = np.zeros((n_out, r)) if init_b == "zeros" else rng.normal(0.0, 0.02, (n_out, r))
        base_name = base.weight.name
        layer = LoraConv1D(base, Parameter(Tensor(a.astype(np.float32))), Parameter(Tensor(b.astype(np.float32))),
                           scaling, float(lora_dropout))
        # parameter names: the base keeps its own, the factors get the PEFT path (unique names for the graph)
        layer.weight.name = base_name
        layer.lora_A.weight.name = prefix + "lora_A.weight"
        layer.lora_B.weight.name = prefix + "lora_B.weight"
        _set_child(model, name, layer)
    cls_name = type(model).__name__
    saved = list(HEADS.get(cls_name, [])) if modules_to_save is None else [str(m) for m in modules_to_save]
    head_params = set()
    for name, cell in model.cells_and_names():
        if name and any(_match(name, m) for m in saved):
            head_params.update(id(p) for p in cell.get_parameters())
    for m in saved:
        if not any(_match(n, m) for n in cells if n):
            raise ValueError(f"modules_to_save: {m!r} names no module of {cls_name}")
    for name, param in model.parameters_and_names():
        param.requires_grad = ".lora_A." in name or ".lora_B." in name or id(param) in head_params
    model.lora_config = {"r": int(r), "lora_alpha": lora_alpha, "lora_dropout": float(lora_dropout),
                         "target_modules": targets, "modules_to_save": saved or None,
                         "base_model_name_or_path": base_model_name_or_path, "use_rslora": bool(use_rslora),
                         "task_type": TASK_TYPES.get(cls_name)}
    return model


def apply_lora_from_args(model, args, base_model_name_or_path: Optional[str],
                         modules_to_save: Optional[Sequence[str]] = None):
    """The recipes' hook: LoRA per the run options (lora_r > 0), or nothing (lora_r = 0)."""
    check_lora_options(args.lora_r, args.lora_alpha, args.lora_dropout, args.lora_target_modules)
    if args.lora_r == 0:
        return model
    if not base_model_name_or_path:
        raise ValueError("lora_r > 0 trains an adapter on a pretrained base: give the base model (init_from / "
                         "model_name_or_path)")
    return apply_lora(model, args.lora_r, args.lora_alpha, args.lora_dropout, args.lora_target_modules,
                      modules_to_save, base_model_name_or_path, seed=args.seed)


# ---- PEFT files --------------------------------------------------------------------------------------------------
def _alpha_json(alpha: float):
    return int(alpha) if float(alpha).is_integer() else float(alpha)


def adapter_state_dict(model) -> dict[str, np.ndarray]:
    """The adapter's weights under PEFT keys: LoRA factors and the modules_to_save parameters."""
    out = {}
    for name, param in model.parameters_and_names():
        if param.requires_grad or ".lora_A." in name or ".lora_B." in name:
            out[PEFT_PREFIX + name] = param.asnumpy()
    return out


def adapter_config_dict(model) -> dict[str, Any]:
    cfg = model.lora_config
    targets = cfg["target_modules"]
    return {
        "peft_type": "LORA", "task_type": cfg["task_type"], "base_model_name_or_path": cfg["base_model_name_or_path"],
        "r": cfg["r"], "lora_alpha": _alpha_json(cfg["lora_alpha"]), "lora_dropout": cfg["lora_dropout"],
        "target_modules": targets if isinstance(targets, str) else sorted(targets),
        "modules_to_save": cfg["modules_to_save"], "fan_in_fan_out": True, "bias": "none",
        "use_rslora": cfg["use_rslora"], "use_dora": False, "lora_bias": False, "init_lora_weights": True,
        "inference_mode": True, "rank_pattern": {}, "alpha_pattern": {}, "layers_to_transform": None,
        "layers_pattern": None, "revision": None, "auto_mapping": None,
    }


def save_adapter(model, directory: str) -> None:
    """Write adapter_config.json + adapter_model.safetensors (PEFT layout) into `directory`, each atomically.

    The safetensors metadata also records the base's model_type and shape (PEFT ignores it; ms_gpt checks it on
    load). A full checkpoint left in the directory by an earlier run (config.json + weights) is removed, so the
    directory is unambiguously an adapter.
    """
    from safetensors.numpy import save_file

    from .checkpoint import CONFIG_NAME, WEIGHT_FILES

    if not is_lora_model(model):
        raise ValueError("save_adapter: the model has no LoRA adapters")
    directory = os.path.abspath(os.fspath(directory))
    config = model.config
    metadata = {"format": "pt", "ms_gpt_model_type": config.model_type, "ms_gpt_n_embd": str(config.n_embd),
                "ms_gpt_n_layer": str(config.n_layer)}
    with atomic_directory(directory, merge=True, last=(ADAPTER_CONFIG,)) as tmp:
        save_file(adapter_state_dict(model), os.path.join(tmp, ADAPTER_WEIGHTS), metadata=metadata)
        with open(os.path.join(tmp, ADAPTER_CONFIG), "w", encoding="utf-8") as f:
            json.dump(adapter_config_dict(model), f, indent=2, sort_keys=True)
    for stale in (CONFIG_NAME,) + WEIGHT_FILES:
        if os.path.isfile(os.path.join(directory, stale)):
            os.remove(os.path.join(directory, stale))


def is_adapter_dir(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, ADAPTER_CONFIG))


def read_adapter_config(directory: str) -> dict[str, Any]:
    from .config import read_mapping

    path = os.path.join(directory, ADAPTER_CONFIG)
    cfg = read_mapping(path)
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{path}: peft_type={cfg.get('peft_type')!r}; ms_gpt loads LoRA adapters only")
    for key, fine in _UNSUPPORTED:
        value = cfg.get(key, fine)
        if value != fine and not (fine is None and value in ([], {})) and not (fine == {} and value is None):
            raise ValueError(f"{path}: {key}={value!r} is not supported by ms_gpt's LoRA (expected {fine!r})")
    for key in ("r", "lora_alpha", "target_modules"):
        if key not in cfg:
            raise ValueError(f"{path}: missing '{key}'")
    return cfg


def _resolve_base(cfg: dict, directory: str) -> str:
    from .paths import resolve_path

    base = cfg.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{os.path.join(directory, ADAPTER_CONFIG)}: no base_model_name_or_path; load the base "
                         "model yourself and call ms_gpt.lora.load_adapter(model, adapter_dir)")
    return resolve_path(base)


def load_adapter(model, directory: str):
    """Apply the adapter in `directory` (PEFT layout) to `model` (the base) and load its weights; returns model.

    Errors name the file: a base of another model_type (recorded by ms_gpt), a key that names no module, a shape
    that does not fit the base (e.g. another n_embd), a task head of another class.
    """
    from .checkpoint import assign_weights, listed, read_safetensors

    cfg = read_adapter_config(directory)
    weights_path = os.path.join(directory, ADAPTER_WEIGHTS)
    if not os.path.isfile(weights_path):
        raise FileNotFoundError(f"{directory}: no {ADAPTER_WEIGHTS} beside {ADAPTER_CONFIG}")
    weights = read_safetensors(weights_path)
    metadata = _safetensors_metadata(weights_path)
    cls_name = type(model).__name__
    recorded = metadata.get("ms_gpt_model_type")
    if recorded and recorded != model.config.model_type:
        raise ValueError(f"{weights_path}: the adapter was trained on a {recorded} model, but its base is a "
                         f"{model.config.model_type} model (base_model_name_or_path="
                         f"{cfg.get('base_model_name_or_path')!r})")
    task = cfg.get("task_type")
    expected_task = TASK_TYPES.get(cls_name)
    if task and expected_task and task != expected_task:
        wanted = [k for k, v in TASK_TYPES.items() if v == task]
        raise ValueError(f"{directory}: task_type={task!r} is an adapter for {wanted[0] if wanted else task}, "
                         f"not {cls_name}")
    keys = {}
    for key, value in weights.items():
        if not key.startswith(PEFT_PREFIX):
            raise ValueError(f"{weights_path}: key {key!r} does not start with {PEFT_PREFIX!r} (not a PEFT adapter)")
        name = key[len(PEFT_PREFIX):].replace(".default.", ".")  # tolerate adapter-named keys
        keys[name] = value
    lora_modules = sorted({k.rsplit(".lora_", 1)[0] for k in keys if ".lora_A." in k or ".lora_B." in k})
    cells = dict(model.cells_and_names())
    absent = [m for m in lora_modules if m not in cells]
    if absent:
        raise ValueError(f"{weights_path}: adapter modules not in {cls_name} ({model.config.model_type}): "
                         f"{listed(absent)}")
    ranks = {keys[m + ".lora_A.weight"].shape[0] for m in lora_modules if m + ".lora_A.weight" in keys}
    r = int(cfg["r"])
    if ranks and ranks != {r}:
        raise ValueError(f"{weights_path}: lora_A ranks {sorted(ranks)} differ from r={r} in {ADAPTER_CONFIG}")
    for m in lora_modules:
        n_in, n_out = cells[m].weight.shape
        for part, shape in (("lora_A", (r, n_in)), ("lora_B", (n_out, r))):
            key = f"{m}.{part}.weight"
            if key not in keys:
                raise ValueError(f"{weights_path}: missing {PEFT_PREFIX}{key}")
            if tuple(keys[key].shape) != shape:
                raise ValueError(f"{weights_path}: {PEFT_PREFIX}{key} has shape {tuple(keys[key].shape)}, the base "
                                 f"{model.config.model_type} model needs {shape} (a different base model?)")
    # PEFT lists head names for the task (SEQ_CLS: classifier and score); keep those this class has
    saved = [m for m in (cfg.get("modules_to_save") or []) if any(_match(n, m) for n in cells if n)]
    table = model.base_model().token_embedding().weight
    table_key = next((n for n, p in model.parameters_and_names() if p is table), None)
    stored = keys.get(table_key)
    if stored is not None and stored.shape[0] != table.shape[0] and stored.shape[1:] == table.shape[1:]:
        model.resize_token_embeddings(int(stored.shape[0]))  # task tokens were added before training
    apply_lora(model, r, float(cfg["lora_alpha"]), 0.0, lora_modules, saved, cfg.get("base_model_name_or_path"),
               bool(cfg.get("use_rslora", False)))
    model.lora_config.update(target_modules=cfg["target_modules"], lora_dropout=float(cfg.get("lora_dropout", 0.0)),
                             task_type=task)
    params = dict(model.parameters_and_names())
    unknown = [k for k in keys if k not in params]
    if unknown:
        raise ValueError(f"{weights_path}: keys that name no parameter of {cls_name}: {listed(unknown)}")
    bad = [f"{k}: adapter {tuple(v.shape)} vs model {tuple(params[k].shape)}" for k, v in keys.items()
           if tuple(v.shape) != tuple(params[k].shape)]
    if bad:
        raise ValueError(f"{weights_path}: shape mismatch with the base model: {listed(bad)}")
    assign_weights(params, keys)
    model.set_train(False)
    return model


def _safetensors_metadata(path: str) -> dict[str, str]:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    return dict(header.get("__metadata__") or {})


def load_adapter_model(cls, directory: str, **config_overrides):
    """`cls.from_pretrained(adapter_dir)`: the base from base_model_name_or_path, then the adapter."""
    from .checkpoint import load_pretrained

    cfg = read_adapter_config(directory)
    task, expected_task = cfg.get("task_type"), TASK_TYPES.get(cls.__name__)
    if task and expected_task and task != expected_task:
        wanted = [k for k, v in TASK_TYPES.items() if v == task]
        raise ValueError(f"{directory}: task_type={task!r} is an adapter for {wanted[0] if wanted else task}, "
                         f"not {cls.__name__}")
    base = _resolve_base(cfg, directory)
    if is_adapter_dir(base):
        raise ValueError(f"{directory}: base_model_name_or_path {base!r} is itself an adapter directory")
    head = os.path.join(directory, ADAPTER_WEIGHTS)
    if cls.__name__ == "GPTForSequenceClassification" and "num_labels" not in config_overrides \
            and os.path.isfile(head):
        from .checkpoint import read_safetensors

        score = read_safetensors(head).get(PEFT_PREFIX + "score.weight")
        if score is not None:
            config_overrides = dict(config_overrides, num_labels=int(score.shape[0]))
    import warnings

    try:
        with warnings.catch_warnings(record=True) as caught:  # the base's own head warnings, judged below
            warnings.simplefilter("always")
            model = load_pretrained(cls, base, **config_overrides)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{directory}: cannot load its base model {cfg.get('base_model_name_or_path')!r} "
                                f"(base_model_name_or_path, resolved from the working directory {os.getcwd()}): "
                                f"{err}") from None
    model = load_adapter(model, directory)
    from .checkpoint import read_safetensors

    stored = {k[len(PEFT_PREFIX):] for k in read_safetensors(head)}
    heads = [n for n, _ in model.parameters_and_names() if not n.startswith("transformer.")]
    for w in caught:  # "newly initialized" head weights are fine when the adapter carries them (modules_to_save)
        if not ("newly initialized" in str(w.message) and all(n in stored for n in heads)):
            warnings.warn(w.message, w.category, stacklevel=3)
    return model


# ---- merging -----------------------------------------------------------------------------------------------------
def merged_state_dict(model) -> dict[str, np.ndarray]:
    """Every base parameter with the LoRA update folded in: W [in, out] += scaling * (B A)^T."""
    layers = lora_layers(model)
    out = {}
    for name, param in model.parameters_and_names():
        if ".lora_A." in name or ".lora_B." in name:
            continue
        out[name] = param.asnumpy().copy()
    for path, layer in layers.items():
        a = layer.lora_A.weight.asnumpy().astype(np.float64)
        b = layer.lora_B.weight.asnumpy().astype(np.float64)
        key = path + ".weight"
        out[key] = (out[key].astype(np.float64) + layer.scaling * (b @ a).T).astype(np.float32)
    return out


def merge_lora(model):
    """A plain model (same class and config, no adapters, eval mode) whose weights include the LoRA update."""
    from .checkpoint import load_state_dict

    if not is_lora_model(model):
        raise ValueError("merge_lora: the model has no LoRA adapters")
    plain = type(model)(model.config)
    load_state_dict(plain, merged_state_dict(model), strict=True, source="merged LoRA weights")
    plain.set_train(False)
    return plain


def merge_and_save(model_or_dir, output_dir: str, tokenizer=None) -> None:
    """Write a full checkpoint (config.json + model.safetensors, no adapter) with the adapter merged in.
    `model_or_dir`: a LoRA model or an adapter directory (then the base is loaded as from_pretrained does, as an LM,
    and the adapter's tokenizer files are copied too)."""
    source_dir = None
    if isinstance(model_or_dir, (str, os.PathLike)):
        from .model import GPTForSequenceClassification, GPTLMHeadModel

        source_dir = os.fspath(model_or_dir)
        task = read_adapter_config(source_dir).get("task_type")
        cls = GPTForSequenceClassification if task == "SEQ_CLS" else GPTLMHeadModel
        model_or_dir = load_adapter_model(cls, source_dir)
    merge_lora(model_or_dir).save_pretrained(output_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
    elif source_dir is not None:
        from .tokenizers import load_tokenizer

        try:
            load_tokenizer(source_dir).save_pretrained(output_dir)
        except (FileNotFoundError, ValueError):
            pass  # an adapter without tokenizer files


def save_model(model, args) -> None:
    """What a recipe writes to args.output_dir: model.save_pretrained — the full model, or a LoRA run's adapter, or
    with args.merge_lora the merged full model."""
    if getattr(args, "merge_lora", False) and getattr(model, "lora_config", None):
        merge_lora(model).save_pretrained(args.output_dir)
    else:
        model.save_pretrained(args.output_dir)


# Adapters extend checkpoint I/O from above: from_pretrained(adapter_dir) and a LoRA model's save_pretrained come here.
# Importing ms_gpt imports this module, so the layout is there even when a user never imports ms_gpt.lora.
register_layout(CheckpointLayout(name="peft_lora", marker=ADAPTER_CONFIG, files=(ADAPTER_CONFIG, ADAPTER_WEIGHTS),
                                 load=load_adapter_model, save=save_adapter, owns=is_lora_model))
