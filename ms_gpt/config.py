"""GPTConfig: one configuration for GPT-1 ("openai-gpt") and GPT-2 ("gpt2"), readable from / writable to HF config.json."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

MODEL_TYPES = ("gpt2", "openai-gpt")
ACTIVATIONS = ("gelu_new", "gelu", "relu", "gelu_pytorch_tanh")
COMPUTE_DTYPES = ("float32", "float16", "bfloat16")

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
        if kwargs.get("model_type", "gpt2") == "openai-gpt" and "layer_norm_epsilon" not in kwargs:
            kwargs["layer_norm_epsilon"] = 1e-5
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

    def to_dict(self) -> dict[str, Any]:
        """HF-compatible dict (what transformers' GPT2Config / OpenAIGPTConfig read)."""
        out = dict(self.extra)
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"})
        out["n_ctx"] = self.n_positions
        if isinstance(out.get("id2label"), dict) and len(out["id2label"]) != self.num_labels:
            # stale labels from a checkpoint loaded with another num_labels; HF would rebuild them from these
            out.pop("id2label")
            out.pop("label2id", None)
        if self.model_type == "openai-gpt":
            out["afn"] = "gelu" if self.activation_function == "gelu_new" else self.activation_function
            out["architectures"] = out.get("architectures", ["OpenAIGPTLMHeadModel"])
        else:
            out["architectures"] = out.get("architectures", ["GPT2LMHeadModel"])
        return out

    def save(self, directory: str) -> str:
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "config.json")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
        os.replace(tmp, path)
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

    output_dir: str = "runs/default"
    seed: int = 1337
    max_steps: int = 1000  # -1 = derive from num_train_epochs (fine-tuning)
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = 16
    per_device_eval_batch_size: int = 64
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    min_learning_rate: float = 0.0
    lr_scheduler_type: str = "constant"  # constant | linear | cosine
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0  # 0 = no clipping
    eval_steps: int = 100  # evaluate every N steps (0 = only at the end)
    eval_iters: int = 200  # pretraining: batches per split in each evaluation
    logging_steps: int = 50  # loss/lr/tokens-per-second to the bar and metrics.jsonl every N steps
    save_steps: int = 0  # checkpoint every N steps (0 = only at the end)
    save_total_limit: int = 2  # keep the last K step checkpoints (plus the best)
    resume_from_checkpoint: Optional[str] = None  # a checkpoint dir, or "auto" = the latest in output_dir
    fp16: bool = False  # float16 matmuls with dynamic loss scaling (Ascend/GPU)
    bf16: bool = False  # bfloat16 matmuls (Ascend)
    device_target: str = "auto"  # auto | CPU | GPU | Ascend
    jit: bool = True  # compile the train/eval steps (graph mode); False = PyNative, for debugging
    jit_level: str = "auto"  # MindSpore graph optimisation level O0 | O1 | O2; auto = O1 on CPU, O0 on Ascend/GPU
    disable_tqdm: bool = False
    compile_cache_dir: Optional[str] = field(default=None, metadata={"help": (
        "reuse compiled graphs across runs (MindSpore's compile cache) from a subfolder of this directory keyed by "
        "the options, model and input shapes; None = off")})


def _coerce(value: Any, annotation: Any, key: str, source: str) -> Any:
    """Convert a YAML / command-line value to the field's type, or raise naming the key."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
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


def parse_config(cls, argv: Optional[list[str]] = None, aliases: Optional[dict[str, str]] = None):
    """Build dataclass `cls` from `--config file.yaml` and `--key=value` / `--key value` overrides.

    Unknown keys or values of the wrong type raise a ValueError that names the key and lists the valid ones.
    `aliases` maps extra spellings to field names (e.g. ModelArts' `data_url` -> `train_file`).
    """
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    aliases = dict(aliases or {})
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

    overrides: list[tuple[str, Any]] = []
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
    if config_path:
        for key, value in read_mapping(config_path).items():
            put(str(key), value, config_path)
    for key, value in overrides:
        put(key, value, "command line")
    try:
        return cls(**values)
    except TypeError as err:
        raise ValueError(f"configuration: {err}") from None
