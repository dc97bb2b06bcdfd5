"""`python -m ms_gpt.serve --model DIR` — an OpenAI-compatible HTTP server (completions, chat, streaming) with
continuous batching, Prometheus metrics and a web chat page at `/`.

Must not import: ms_gpt.model, ms_gpt.engine, ms_gpt.data, ms_gpt.checkpoint, ms_gpt.compat, ms_gpt.tokenizers,
ms_gpt.lora (an entry point only parses its options and calls a recipe or library function).
"""
import os
import sys
from dataclasses import dataclass, field
from typing import Optional

if __package__ in (None, ""):  # run as a file (msrun takes a script path): see ms_gpt/_launch.py
    import _launch  # noqa: F401

from ms_gpt.entry import run  # noqa: E402
from ms_gpt.config import parse_config  # noqa: E402


@dataclass
class ServeArguments:
    """Serve a saved model (HF or ms_gpt directory, hub name, or PEFT adapter directory) over the OpenAI API:
    GET /health, /v1/models, /metrics and / (web chat); POST /v1/completions and /v1/chat/completions."""

    model: Optional[str] = field(
        default=None, metadata={"help": "model directory (config.json, weights, tokenizer files), hub name or PEFT "
                                        "adapter directory (required)"})
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on (0.0.0.0 = every interface)"})
    port: int = field(default=8000, metadata={"help": "TCP port to listen on"})
    max_batch_size: int = field(
        default=8, metadata={"help": "KV-cache slots: requests decoded together in one step"})
    max_queue: int = field(
        default=64, metadata={"help": "requests waiting for a slot before new ones are refused with 429"})
    served_model_name: Optional[str] = field(
        default=None, metadata={"help": "the model name clients send and /v1/models lists (None = the directory "
                                        "name)"})
    dtype: Optional[str] = field(
        default=None, metadata={"help": "matmul dtype: float32 | float16 | bfloat16 (None = the checkpoint's)"})
    max_history: int = field(
        default=0, metadata={"help": "chat: messages (user and assistant) given to the model, the newest kept "
                                     "(0 = as many as fit in the context)"})
    device_target: str = field(default="auto", metadata={"help": "device: auto | CPU | GPU | Ascend"})
    emulate_ascend: bool = field(
        default=False, metadata={"help": "make the graph choices an Ascend job makes on CPU/GPU (all-slot rows, "
                                         "static decode windows, jit level O0, fused LayerNorm)"})


def main(argv=None) -> None:
    args = parse_config(ServeArguments, argv)
    if not args.model:
        raise ValueError("--model is required: a directory with config.json, weights and tokenizer files, a hub "
                         "name or a PEFT adapter directory")
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be in [1, 65535], got {args.port}")
    if args.max_batch_size < 1 or args.max_queue < 1:
        raise ValueError(f"--max_batch_size and --max_queue must be >= 1, got {args.max_batch_size} and "
                         f"{args.max_queue}")
    if args.dtype not in (None, "float32", "float16", "bfloat16"):
        raise ValueError(f"--dtype must be float32, float16 or bfloat16, got {args.dtype!r}")

    from ms_gpt.device import setup_device
    from ms_gpt.generation import generation_config
    from ms_gpt.serving.app import ServerState, load_model, serve
    from ms_gpt.serving.engine import ServingEngine

    setup_device(args.device_target, emulate_ascend=args.emulate_ascend)
    model, tokenizer = load_model(args.model, args.dtype)
    name = args.served_model_name or os.path.basename(os.path.normpath(args.model))
    engine = ServingEngine(model, max_batch_size=args.max_batch_size, max_queue=args.max_queue)
    state = ServerState(engine, tokenizer, name, engine.context_length, generation_config(model), args.max_history,
                        model.config.vocab_size)
    serve(state, args.host, args.port)


if __name__ == "__main__":
    sys.exit(run(main))
