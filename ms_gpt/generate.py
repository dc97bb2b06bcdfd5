"""`python -m ms_gpt.generate --model DIR --prompt "..."` — continue a prompt with a saved model.

Must not import: ms_gpt.model, ms_gpt.engine, ms_gpt.data, ms_gpt.checkpoint, ms_gpt.compat, ms_gpt.tokenizers,
ms_gpt.lora (an entry point only parses its options and calls a recipe or library function).
"""
import sys
from dataclasses import dataclass, field
from typing import Optional

if __package__ in (None, ""):  # run as a file (msrun takes a script path): see ms_gpt/_launch.py
    import _launch  # noqa: F401

from ms_gpt.entry import run  # noqa: E402
from ms_gpt.config import parse_config  # noqa: E402
from ms_gpt.generation import FROM_GENERATION_CONFIG, GenerationArguments, generate_text  # noqa: E402


@dataclass
class GenerateArguments(GenerationArguments):
    """Continue a prompt with a saved model (HF or ms_gpt directory). Decoding options left unset take the
    checkpoint's generation_config.json values, else greedy decoding of 50 new tokens."""

    prompt: str = field(default="", metadata={"help": "text to continue (empty = start from the BOS/EOS token)"})
    max_length: Optional[int] = field(
        default=None, metadata={"help": "prompt + new tokens, HF's max_length (used when max_new_tokens is unset)"})
    min_new_tokens: Optional[int] = field(
        default=None, metadata={"help": "no eos before this many new tokens (" + FROM_GENERATION_CONFIG + "0)"})
    eos_token_id: Optional[int] = field(
        default=None, metadata={"help": "id that ends a continuation (None = the checkpoint's; [SEP] for a BERT "
                                        "vocabulary)"})
    num_return_sequences: Optional[int] = field(
        default=None, metadata={"help": "continuations per prompt (None = generation_config.json's, else 1)"})


def main(argv=None) -> list[str]:
    args = parse_config(GenerateArguments, argv)
    if not args.model:
        raise ValueError("--model is required: a directory with config.json, weights and tokenizer files, or a "
                         "hub name")

    from ms_gpt.device import setup_device
    from ms_gpt.exported import is_exported_dir, load_exported

    setup_device(args.device_target, emulate_ascend=args.emulate_ascend)
    if is_exported_dir(args.model):  # written by python -m ms_gpt.export: decode with its MindIR graphs alone
        model, tokenizer = load_exported(args.model)
    else:
        model, tokenizer = args.load()
    texts = generate_text(model, tokenizer, args.prompt, **args.generate_kwargs())
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(f"=== sequence {i + 1} ===")
        print(text)
    return texts


if __name__ == "__main__":
    sys.exit(run(main))
