"""`python -m ms_gpt.export --model DIR --output_dir OUT` — MindIR prefill/decode graphs of a model for Ascend
inference (MindSpore Lite / MindIE), their export_config.json and the tokenizer files; see ms_gpt.exporter.

Must not import: ms_gpt.model, ms_gpt.engine, ms_gpt.data, ms_gpt.checkpoint, ms_gpt.compat, ms_gpt.tokenizers,
ms_gpt.lora (an entry point only parses its options and calls a recipe or library function).
"""
import sys
from dataclasses import dataclass, field
from typing import List, Optional

if __package__ in (None, ""):  # run as a file (msrun takes a script path): see ms_gpt/_launch.py
    import _launch  # noqa: F401

from ms_gpt.entry import run  # noqa: E402
from ms_gpt.config import parse_config  # noqa: E402


@dataclass
class ExportArguments:
    """Export a model (HF / ms_gpt directory, hub name, or PEFT LoRA adapter directory: merged) as MindIR graphs
    with static shapes: per batch size, a prefill graph (PREFILL_CHUNK prompt tokens into the KV cache) and one
    decode graph per window gear; a sequence-classification model exports its classifier graph instead."""

    model: Optional[str] = field(
        default=None, metadata={"help": "model directory, hub name or LoRA adapter directory (required)"})
    output_dir: Optional[str] = field(
        default=None, metadata={"help": "directory to write the .mindir files, export_config.json and the "
                                        "tokenizer into (required)"})
    batch_sizes: List[str] = field(
        default_factory=lambda: ["1"], metadata={"help": "batch-size gears, comma-separated (one graph set each)"})
    max_length: Optional[int] = field(
        default=None, metadata={"help": "longest prompt + new tokens served; the cache holds max_length + 32 slots "
                                        "(None = the model's n_positions)"})
    windows: List[str] = field(
        default_factory=lambda: ["256"],
        metadata={"help": "decode window gears in cache slots, comma-separated; a step attends to the smallest "
                          "window holding its call (max_length is always a gear too)"})
    dtype: Optional[str] = field(
        default=None, metadata={"help": "compute dtype of the graphs: float32 | float16 (Ascend) | bfloat16 "
                                        "(None = config.json's)"})
    device_target: str = field(default="auto", metadata={"help": "device: auto | CPU | GPU | Ascend"})


def main(argv=None) -> dict:
    args = parse_config(ExportArguments, argv)
    if not args.model or not args.output_dir:
        raise ValueError("--model and --output_dir are required")

    from ms_gpt.device import setup_device
    from ms_gpt.exporter import export_model

    setup_device(args.device_target)
    config = export_model(args.model, args.output_dir, batch_sizes=args.batch_sizes, max_length=args.max_length,
                          windows=args.windows, dtype=args.dtype)
    for graph in config["graphs"]:
        print(graph["file"])
    print(f"exported {len(config['graphs'])} graphs to {args.output_dir} in {config['export_seconds']} s")
    return config


if __name__ == "__main__":
    sys.exit(run(main))
