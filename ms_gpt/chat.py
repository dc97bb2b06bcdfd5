"""`python -m ms_gpt.chat --model DIR` — multi-turn chat with a Chinese GPT-2 dialogue model (BERT vocabulary).

Type a turn and press Enter; `/reset` forgets the conversation, `/exit` (or end of input) quits. When stdin is not
a terminal, each input line is one turn and each reply is printed on one line (for scripts and tests).
"""
import argparse
import os
import sys

if __package__ in (None, ""):  # launched as a file: import from the project root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from ms_gpt.cli import run  # noqa: E402
from ms_gpt.generation import add_generation_args, generation_kwargs  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ms_gpt.chat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="directory with config.json, weights and vocab.txt")
    parser.add_argument("--max_history", type=int, default=3,
                        help="utterances (user and bot) given to the model, the new user turn included")
    add_generation_args(parser, max_new_tokens=32)
    args = parser.parse_args(argv)

    from ms_gpt.device import setup_device
    from ms_gpt.dialogue import ChatSession
    from ms_gpt.model import GPTLMHeadModel
    from ms_gpt.tokenizers import load_tokenizer

    setup_device(args.device_target)
    tokenizer = load_tokenizer(args.model)
    model = GPTLMHeadModel.from_pretrained(args.model)
    session = ChatSession(model, tokenizer, max_history=args.max_history, max_new_tokens=args.max_new_tokens,
                          **generation_kwargs(args))
    interactive = sys.stdin.isatty()
    if interactive:
        print("chat: /reset clears the history, /exit quits")
    while True:
        try:
            line = input("user> " if interactive else "")
        except EOFError:
            break
        turn = line.strip()
        if not turn:
            continue
        if turn == "/exit":
            break
        if turn == "/reset":
            session.reset()
            if interactive:
                print("(history cleared)")
            continue
        reply = session.reply(turn)
        print(f"bot> {reply}" if interactive else reply, flush=True)


if __name__ == "__main__":
    sys.exit(run(main))
