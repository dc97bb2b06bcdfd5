"""`python -m ms_gpt.generate --model DIR --prompt "..."` — continue a prompt with a saved model."""
import argparse
import os
import sys

if __package__ in (None, ""):  # launched as a file: import from the project root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from ms_gpt.cli import run  # noqa: E402
from ms_gpt.generation import add_generation_args, generate_text, generation_kwargs  # noqa: E402


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(prog="python -m ms_gpt.generate", description=__doc__)
    parser.add_argument("--model", required=True, help="directory with config.json, weights and tokenizer files")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--num_return_sequences", type=int, default=1)
    add_generation_args(parser, max_new_tokens=50)
    args = parser.parse_args(argv)

    from ms_gpt.device import setup_device
    from ms_gpt.model import GPTLMHeadModel
    from ms_gpt.tokenizers import load_tokenizer

    setup_device(args.device_target)
    tokenizer = load_tokenizer(args.model)
    model = GPTLMHeadModel.from_pretrained(args.model)
    texts = generate_text(model, tokenizer, args.prompt, max_new_tokens=args.max_new_tokens,
                          num_return_sequences=args.num_return_sequences, **generation_kwargs(args))
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(f"=== sequence {i + 1} ===")
        print(text)
    return texts


if __name__ == "__main__":
    sys.exit(run(main))
