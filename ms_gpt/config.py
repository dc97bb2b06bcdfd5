"""Configuration: GPTConfig (GPT-1 "openai-gpt" and GPT-2 "gpt2", read from / written to HF config.json), the
options dataclasses (TrainingArguments, LoraArguments) and `parse_config` (options from YAML and the command line).

Must not import: ms_gpt.model, ms_gpt.engine, ms_gpt.data, ms_gpt.recipes, ms_gpt.compat, ms_gpt.tokenizers,
ms_gpt.checkpoint, ms_gpt.lora (adapters sit on top of configuration: LoraArguments' option check lives here and
ms_gpt.lora uses it).
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from .paths import atomic_write

MODEL_TYPES = ("gpt2", "openai-gpt")
ACTIVATIONS = ("gelu_new", "gelu", "relu", "gelu_pytorch_tanh")
COMPUTE_DTYPES = ("float32", "float16", "bfloat16")
HF_ARCHITECTURES = {  # ms_gpt class -> the HF architecture name written to config.json, per model_type
    "GPTModel": {"gpt2": "GPT2Model", "openai-gpt": "OpenAIGPTModel"},
    "GPTLMHeadModel": {"gpt2": "GPT2LMHeadModel", "openai-gpt": "OpenAIGPTLMHeadModel"},
    "GPTForSequenceClassification": {"gpt2": "GPT2ForSequenceClassification",
                                     "openai-gpt": "OpenAIGPTForSequenceClassification"},
    "GPTDoubleHeadsModel": {"gpt2": "GPT2DoubleHeadsModel", "openai-gpt": "OpenAIGPTDoubleHeadsModel"},
}

# HF config.json spells some fields differently per model type; these are read as aliases.
_HF_ALIASES = {
    "n_ctx": "n_positions",
    "afn": "activation_function",
    "hidden_size": "n_embd",
    "num_hidden_layers": "n_layer",
    "num_attention_heads": "n_head",
}


def read_mapping(path: str) -> dict:
    """A config file's top-level mapping: JSON (`.json`) or YAML (anything else); errors name the file."""
    is_json = path.endswith(".json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f) if is_json else (yaml.safe_load(f) or {})
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: not valid {'JSON' if is_json else 'YAML'} ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of option: value")
    return data


@dataclass
class GPTConfig:
    """Sizes and options of a GPT. Field names are those of HF's GPT2Config / OpenAIGPTConfig.

    `model_type` chooses the network: "gpt2" (pre-LN blocks, final `ln_f`, keys `wte`/`wpe`) or "openai-gpt"
    (post-LN blocks, no final LN, keys `tokens_embed`/`positions_embed`).
    """

    model_type: str = "gpt2"
    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: Optional[int] = None  # MLP width; None = 4 * n_embd
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    scale_attn_weights: bool = True
    # heads
    num_labels: int = 2
    pad_token_id: Optional[int] = None
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int] = None
    summary_first_dropout: float = 0.1  # double heads: dropout before the multiple-choice projection
    lm_coef: float = 0.0  # weight of the auxiliary LM loss in task heads (GPT-1 paper: 0.5)
    # ms_gpt: dtype of the matmuls (LayerNorm, softmax and the loss always run in float32)
    compute_dtype: str = "float32"
    extra: dict = field(default_factory=dict, repr=False)  # unknown HF fields, kept for a faithful save

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"GPTConfig.model_type={self.model_type!r}; expected one of {MODEL_TYPES}")
        if self.activation_function not in ACTIVATIONS:
            raise ValueError(
                f"GPTConfig.activation_function={self.activation_function!r}; expected one of {ACTIVATIONS}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"GPTConfig.compute_dtype={self.compute_dtype!r}; expected one of {COMPUTE_DTYPES}")
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig.n_embd={self.n_embd} is not divisible by n_head={self.n_head}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def inner_dim(self) -> int:
        return self.n_inner or 4 * self.n_embd

    @property
    def is_gpt2(self) -> bool:
        return self.model_type == "gpt2"

    # ---- HF interchange -------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "GPTConfig":
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            name = _HF_ALIASES.get(key, key)
            if name in known:
                if key != name and name in data:
                    continue  # the canonical key wins over an alias (e.g. n_positions over n_ctx)
                kwargs[name] = value
            else:
                extra[key] = value
        if kwargs.get("activation_function") == "gelu" and kwargs.get("model_type") == "openai-gpt":
            # HF's OpenAIGPT maps afn "gelu" to the tanh approximation (gelu_new)
            kwargs["activation_function"] = "gelu_new"
        if "num_labels" not in kwargs and isinstance(extra.get("id2label"), dict):
            kwargs["num_labels"] = len(extra["id2label"])
        try:
            return cls(**kwargs, extra=extra)
        except TypeError as err:  # wrong type for a field
            raise ValueError(f"{source}: {err}") from None

    @classmethod
    def from_json_file(cls, path: str) -> "GPTConfig":
        return cls.from_dict(read_mapping(path), source=path)

    def to_dict(self, architecture: Optional[str] = None) -> dict[str, Any]:
        """HF-compatible dict (what transformers' GPT2Config / OpenAIGPTConfig read). `architectures` names the HF
        class of the ms_gpt class `architecture` (what save_pretrained writes); without it, the loaded value or else
        the LM head's."""
        out = dict(self.extra)
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"})
        out["n_ctx"] = self.n_positions
        if isinstance(out.get("id2label"), dict) and len(out["id2label"]) != self.num_labels:
            # stale labels from a checkpoint loaded with another num_labels; HF would rebuild them from these
            out.pop("id2label")
            out.pop("label2id", None)
        if self.model_type == "openai-gpt":
            out["afn"] = "gelu" if self.activation_function == "gelu_new" else self.activation_function
        if architecture is not None:
            out["architectures"] = [HF_ARCHITECTURES[architecture][self.model_type]]
        else:
            out["architectures"] = out.get("architectures", [HF_ARCHITECTURES["GPTLMHeadModel"][self.model_type]])
        return out

    def save(self, directory: str) -> str:
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "config.json")
        with atomic_write(path) as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
        return path

    def replace(self, **changes: Any) -> "GPTConfig":
        return dataclasses.replace(self, **changes)


def preset(name: str, **overrides: Any) -> GPTConfig:
    """Named shapes: `gpt2` (124M), `gpt2-medium`, `openai-gpt` (GPT-1, 117M), `tiny` (tests)."""
    presets = {
        "gpt2": dict(model_type="gpt2", vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                     bos_token_id=50256, eos_token_id=50256),
        "gpt2-medium": dict(model_type="gpt2", vocab_size=50257, n_positions=1024, n_embd=1024, n_layer=24,
                            n_head=16, bos_token_id=50256, eos_token_id=50256),
        "openai-gpt": dict(model_type="openai-gpt", vocab_size=40478, n_positions=512, n_embd=768, n_layer=12,
                           n_head=12),
        "tiny": dict(model_type="gpt2", vocab_size=1000, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
    }
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
    return GPTConfig(**{**presets[name], **overrides})


# ---- run configuration: YAML file + --key=value overrides --------------------------------------------------------
@dataclass
class TrainingArguments:
    """Options of the training engine; names follow HF TrainingArguments where one exists."""

    output_dir: str = field(
        default="runs/default",
        metadata={"help": "directory for checkpoints, metrics.jsonl, the final model and tokenizer"})
    seed: int = field(default=1337, metadata={"help": "random seed (weights, data order, dropout)"})
    max_steps: int = field(
        default=1000, metadata={"help": "optimizer steps to train; -1 = derive from num_train_epochs"})
    num_train_epochs: float = field(
        default=1.0, metadata={"help": "epochs over the training data when max_steps is -1"})
    per_device_train_batch_size: int = field(
        default=16, metadata={"help": "training batch size per device (per micro-batch)"})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "evaluation batch size per device"})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "micro-batches accumulated into one optimizer step"})
    learning_rate: float = field(default=1e-3, metadata={"help": "peak learning rate of AdamW"})
    min_learning_rate: float = field(default=0.0, metadata={"help": "floor of the cosine schedule"})
    lr_scheduler_type: str = field(
        default="constant", metadata={"help": "learning-rate schedule: constant | linear | cosine"})
    warmup_steps: int = field(default=0, metadata={"help": "steps of linear warmup (wins over warmup_ratio when > 0)"})
    warmup_ratio: float = field(default=0.0, metadata={"help": "fraction of the steps used for linear warmup"})
    weight_decay: float = field(
        default=0.0, metadata={"help": "AdamW decoupled weight decay (not applied to biases and LayerNorm)"})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2"})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon"})
    max_grad_norm: float = field(
        default=1.0, metadata={"help": "clip the global gradient norm to this (0 = no clipping)"})
    eval_steps: int = field(default=100, metadata={"help": "evaluate every N steps (0 = only at the end)"})
    eval_iters: int = field(default=200, metadata={"help": "pretraining: batches per split in each evaluation"})
    logging_steps: int = field(
        default=50, metadata={"help": "loss/lr/tokens-per-second to the bar and metrics.jsonl every N steps"})
    save_steps: int = field(default=0, metadata={"help": "checkpoint every N steps (0 = only at the end)"})
    save_total_limit: int = field(default=2, metadata={"help": "keep the last K step checkpoints (plus the best)"})
    resume_from_checkpoint: Optional[str] = field(
        default=None, metadata={"help": "a checkpoint dir, or \"auto\" = the latest in output_dir"})
    fp16: bool = field(default=False, metadata={"help": (
        "float16 matmuls (every model: scratch, pretrained, init_from, LoRA) with dynamic loss scaling; "
        "the CPU backend runs them through casts (no fp16 MatMul kernel in MindSpore 2.7)")})
    bf16: bool = field(default=False, metadata={"help": "bfloat16 matmuls (Ascend A2; the CPU backend has none)"})
    loss_scale_value: float = field(default=65536.0, metadata={
        "help": "fp16: initial dynamic loss scale (2^16, as HF/torch and MindFormers)"})
    scale_factor: float = field(default=2.0, metadata={
        "help": "fp16: the loss scale is divided by this on an overflowing step and multiplied after scale_window "
                "good steps (MindFormers' name)"})
    scale_window: int = field(default=1000, metadata={
        "help": "fp16: good (finite) steps in a row before the loss scale grows (MindFormers' name)"})
    device_target: str = field(default="auto", metadata={"help": "device: auto | CPU | GPU | Ascend"})
    emulate_ascend: bool = field(default=False, metadata={"help": (
        "on CPU/GPU, make exactly the graph choices an Ascend job makes (static shapes, padding auto = max_length, "
        "jit level O0, fused LayerNorm, static decode windows): dry-run an Ascend config before submitting it")})
    ascend_precision_mode: Optional[str] = field(default=None, metadata={"help": (
        "Ascend op precision mode (MindSpore's precision_mode), e.g. must_keep_origin_dtype for a true float32 run "
        "on Atlas training series (910A), whose default lowers matmuls to float16; None = MindSpore's default")})
    jit: bool = field(
        default=True, metadata={"help": "compile the train/eval steps (graph mode); False = PyNative, for debugging"})
    jit_level: str = field(
        default="auto",
        metadata={"help": "MindSpore graph optimisation level O0 | O1 | O2 (static shapes only); auto = O1 on CPU, "
                          "O0 on Ascend/GPU and with emulate_ascend"})
    disable_tqdm: bool = field(default=False, metadata={"help": "no progress bar (log lines only)"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute each Block's activations in the backward pass (MindSpore recompute; for Ascend: on "
                "MindSpore 2.7's CPU backend the peak memory does not drop, see README)"})
    compile_cache_dir: Optional[str] = field(default=None, metadata={"help": (
        "reuse compiled graphs across runs (MindSpore's compile cache) from a subfolder of this directory keyed by "
        "the options, model and input shapes; None = off")})

    @property
    def compute_dtype(self) -> str:
        """The model's matmul dtype (`GPTConfig.compute_dtype`) these options ask for: fp16, bf16 or float32."""
        return "float16" if self.fp16 else "bfloat16" if self.bf16 else "float32"


def _annotation_text(annotation: Any) -> str:
    """A field's type as written: "int", "Optional[str]", "list[str]" (also for typing objects, not only strings)."""
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


@dataclass
class LoraArguments:
    """LoRA options shared by the recipes (names as in TRL's ModelConfig; the adapter is saved in PEFT's layout)."""

    lora_r: int = field(default=0, metadata={
        "help": "LoRA rank on the Conv1D projections; 0 = off (train all weights), > 0 trains only the adapter "
                "(and task heads) on top of the frozen base model"})
    lora_alpha: float = field(default=8.0, metadata={"help": "LoRA scaling numerator: update = lora_alpha / r * B A"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA branch's input"})
    lora_target_modules: list[str] = field(default_factory=lambda: ["c_attn"], metadata={
        "help": "Conv1D modules that get adapters (comma-separated): c_attn, c_proj (attention and MLP), c_fc"})
    merge_lora: bool = field(default=False, metadata={
        "help": "with lora_r > 0: write a plain full checkpoint with the adapter merged in, instead of the adapter"})

    def __post_init__(self) -> None:
        check_lora_options(self.lora_r, self.lora_alpha, self.lora_dropout, self.lora_target_modules)


def check_lora_options(r: Any, alpha: Any, dropout: Any, target_modules: Any) -> None:
    """One clear error for a bad LoRA option (LoraArguments and ms_gpt.lora.apply_lora both check with it)."""
    if isinstance(r, bool) or not isinstance(r, int) or r < 0:
        raise ValueError(f"lora_r must be a non-negative integer (0 = LoRA off), got {r!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"lora_alpha must be a positive number, got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"lora_dropout must be in [0, 1), got {dropout!r}")
    if not target_modules:
        raise ValueError("lora_target_modules is empty; name Conv1D modules such as c_attn, c_proj, c_fc")


def _coerce(value: Any, annotation: Any, key: str, source: str) -> Any:
    """Convert a YAML / command-line value to the field's type, or raise naming the key."""
    text = _annotation_text(annotation)
    optional = "Optional" in text or "None" in text
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and optional):
        if optional:
            return None
        raise ValueError(f"{source}: '{key}' may not be empty")
    base = text.replace("Optional[", "").replace("]", "").strip()
    try:
        if base == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if base == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(float(value)) if isinstance(value, str) else int(value)
        if base == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if base == "str":
            return str(value)
        if base.startswith("list") or base.startswith("List"):
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, (list, tuple)):
                return list(value)
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"{source}: '{key}' expects {base}, got {value!r}") from None
    return value


def option_help(cls, name: str) -> str:
    """The one-line meaning of option `name` of dataclass `cls`: its field's `metadata["help"]`, looked up along the
    class hierarchy so that a subclass changing only a default keeps the base class's meaning."""
    for klass in cls.__mro__:
        spec = getattr(klass, "__dataclass_fields__", {}).get(name)
        if spec is not None and spec.metadata.get("help"):
            return spec.metadata["help"]
    return ""


def _type_name(annotation: Any) -> str:
    text = _annotation_text(annotation)
    if text.startswith("Optional[") and text.endswith("]"):
        return _type_name(text[len("Optional["):-1]) + " or None"
    if text.lower().startswith("list["):
        return f"list of {text[5:-1]} (comma-separated)"
    return text


def _program_name() -> str:
    import sys

    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    parent, name = os.path.split(script)
    if name.endswith(".py") and os.path.basename(parent) == "ms_gpt":
        return f"python -m ms_gpt.{name[:-3]}"
    return name or "ms_gpt"


def format_help(cls, values: Optional[dict[str, Any]] = None, aliases: Optional[dict[str, str]] = None,
                config_path: Optional[str] = None, sources: Optional[dict[str, str]] = None) -> str:
    """`--help` text of dataclass `cls`: every option with its type, default (the --config file's value when one was
    given) and meaning, all taken from the dataclass fields."""
    values = values or {}
    lines = [f"usage: {_program_name()} [--config FILE.yaml] [--key=value | --key value | --flag ...]", ""]
    doc = inspect.cleandoc(cls.__doc__ or "")
    if doc and not doc.startswith(cls.__name__ + "("):  # dataclasses invent a signature docstring
        lines += [doc, ""]
    lines.append("options" + (f" (defaults shown are those of {config_path} where it sets them)" if config_path else
                              "") + ":")
    lines.append("  -h, --help  show this help and exit")
    lines.append("  --config FILE  YAML (or JSON) file of option: value pairs; command-line options override it")
    for spec in dataclasses.fields(cls):
        if spec.name in values:
            default = values[spec.name]
            origin = "from command line" if (sources or {}).get(spec.name) == "command line" else "from config"
        elif spec.default is not dataclasses.MISSING:
            default, origin = spec.default, "default"
        elif spec.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default, origin = spec.default_factory(), "default"  # type: ignore[misc]
        else:
            default, origin = None, "required"
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        shown = "required" if origin == "required" else f"{origin}: {shown!r}" if isinstance(shown, str) else \
            f"{origin}: {shown}"
        lines.append(f"  --{spec.name} {_type_name(spec.type)}  ({shown})")
        lines.append(f"      {option_help(cls, spec.name) or '(no description)'}")
    if aliases:
        lines += ["", "aliases: " + ", ".join(f"--{a} = --{n}" for a, n in sorted(aliases.items()))]
    return "\n".join(lines)


def split_argv(argv: list[str]) -> tuple[Optional[str], list[tuple[str, str]]]:
    """(the --config path or None, [(key, raw value), ...] in command-line order) of `--key=value`, `--key value` and
    bare `--flag` (= "true") arguments; anything else is a ValueError."""
    overrides: list[tuple[str, str]] = []
    config_path = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ValueError(f"command line: expected --key=value, got {arg!r}")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value = argv[i + 1]
                i += 1
            else:
                value = "true"  # a bare flag
        if key == "config":
            config_path = value
        else:
            overrides.append((key, value))
        i += 1
    return config_path, overrides


def option_value(argv: list[str], name: str) -> Any:
    """The value `parse_config` would give option `name` before type checks: the command line's (last wins), else
    the --config file's, else None. For an entry point that picks its options class by one option (`--task`)."""
    config_path, overrides = split_argv([a for a in argv if a not in ("-h", "--help")])
    found = [value for key, value in overrides if key.replace("-", "_") == name]
    if found:
        return found[-1]
    if config_path:
        return read_mapping(config_path).get(name)
    return None


def parse_config(cls, argv: Optional[list[str]] = None, aliases: Optional[dict[str, str]] = None):
    """Build dataclass `cls` from `--config file.yaml` and `--key=value` / `--key value` overrides.

    Unknown keys or values of the wrong type raise a ValueError that names the key and lists the valid ones.
    `-h`/`--help` prints every option (type, default or the --config file's value, meaning from the field's
    `metadata["help"]`) and exits with status 0.
    `aliases` maps extra spellings to field names (e.g. ModelArts' `data_url` -> `train_file`).
    """
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    aliases = dict(aliases or {})
    want_help = any(a in ("-h", "--help") for a in argv)
    config_path, overrides = split_argv([a for a in argv if a not in ("-h", "--help")])
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    def put(key: str, value: Any, source: str) -> None:
        name = aliases.get(key.replace("-", "_"), key.replace("-", "_"))
        if name not in fields:
            valid = ", ".join(sorted(fields))
            raise ValueError(f"{source}: unknown option '{key}'. Valid options: {valid}")
        values[name] = _coerce(value, fields[name].type, name, source)
        sources[name] = source

    if config_path:
        for key, value in read_mapping(config_path).items():
            put(str(key), value, config_path)
    for key, value in overrides:
        put(key, value, "command line")
    if want_help:
        print(format_help(cls, values, aliases, config_path, sources))
        raise SystemExit(0)
    try:
        return cls(**values)
    except TypeError as err:
        raise ValueError(f"configuration: {err}") from None
