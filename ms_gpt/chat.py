"""`python -m ms_gpt.chat --model DIR` — multi-turn chat with a Chinese GPT-2 dialogue model (BERT vocabulary).

Type a turn and press Enter; `/reset` forgets the conversation, `/exit` (or end of input) quits. When stdin is not
a terminal, each input line is one turn and each reply is printed on one line (for scripts and tests).

Must not import: ms_gpt.model, ms_gpt.engine, ms_gpt.data, ms_gpt.checkpoint, ms_gpt.compat, ms_gpt.tokenizers,
ms_gpt.lora (an entry point only parses its options and calls a recipe or library function).
"""
import sys
from dataclasses import dataclass, field

if __package__ in (None, ""):  # run as a file (msrun takes a script path): see ms_gpt/_launch.py
    import _launch  # noqa: F401

from ms_gpt.entry import run  # noqa: E402
from ms_gpt.config import parse_config  # noqa: E402
from ms_gpt.generation import GenerationArguments, generation_config  # noqa: E402


@dataclass
class ChatArguments(GenerationArguments):
    """Multi-turn chat with a GPT-2 of BERT vocabulary ([CLS] turn [SEP] turn [SEP] ..., the reply ends at [SEP]).
    Decoding options left unset take the checkpoint's generation_config.json values, else greedy, 32 new tokens."""

    max_history: int = field(
        default=3, metadata={"help": "utterances (user and bot) given to the model, the new user turn included"})


def main(argv=None) -> None:
    args = parse_config(ChatArguments, argv)
    if not args.model:
        raise ValueError("--model is required: a directory with config.json, weights and the BERT vocabulary")

    from ms_gpt.device import setup_device
    from ms_gpt.dialogue import ChatSession

    setup_device(args.device_target, emulate_ascend=args.emulate_ascend)
    model, tokenizer = args.load()
    options = args.generate_kwargs()
    options.pop("max_new_tokens", None)  # per reply; a reply runs from 1 token to the next [SEP]
    max_new_tokens = args.max_new_tokens or generation_config(model).get("max_new_tokens", 32)
    session = ChatSession(model, tokenizer, max_history=args.max_history, max_new_tokens=max_new_tokens, **options)
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
