"""`peft-studio chat`: answer with the base model and with an adapter, side by side.

    peft-studio chat --model DIR [--adapter DIR] "prompt"        one turn
    peft-studio chat --model DIR [--adapter DIR]                  a conversation: one turn per line
                                                                  on stdin, history kept per side
Sampling (--temperature, --top-p, --top-k, --repetition-penalty, --max-new-tokens) and --system are
the Chat page's settings; each side keeps its own history, as in the window.
"""

from __future__ import annotations

import sys


def cmd_chat(args) -> int:
    from studio.core.chat import Sampling, conversation, load_for_chat, reply, with_adapter_disabled

    sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                        top_p=args.top_p, top_k=args.top_k,
                        repetition_penalty=args.repetition_penalty).check(flags=True)
    model, tokenizer = load_for_chat(args.model, args.adapter)     # slow: only with good settings
    histories = {"base": [], "adapter": []}
    sides = ("base", "adapter") if args.adapter else ("base",)

    def turn(prompt: str) -> None:
        for side in sides:
            messages = conversation(histories[side], prompt, args.system or "")
            if side == "base" and args.adapter:
                with with_adapter_disabled(model):
                    answer = reply(model, tokenizer, messages, sampling)
            else:
                answer = reply(model, tokenizer, messages, sampling)
            histories[side] += [{"role": "user", "content": prompt},
                                {"role": "assistant", "content": answer["text"]}]
            label = f"{side}:".ljust(9) if args.adapter else ""
            print(f"{label}{answer['text']}", flush=True)

    if args.prompt is not None:
        turn(args.prompt)
        return 0
    if sys.stdin.isatty():
        print("one turn per line; Ctrl-D ends the conversation", file=sys.stderr)
    for line in sys.stdin:
        if line.strip():
            turn(line.strip())
    return 0


def register(sub) -> None:
    p = sub.add_parser("chat", help="answer with the base model and with an adapter (one turn, or "
                                    "a conversation from stdin)")
    p.add_argument("--model", required=True, help="base model folder")
    p.add_argument("--adapter", help="adapter folder (a run's adapter/)")
    p.add_argument("--system", help="system prompt, sent on every turn")
    from studio.core.chat import SAMPLING_SCHEMA
    from studio.schema import allowed_text

    for name, spec in SAMPLING_SCHEMA.items():     # ranges checked by Sampling.check()
        p.add_argument("--" + name.replace("_", "-"), default=spec["default"],
                       type=int if spec["type"] == "integer" else float,
                       help=f"{spec['help']} ({allowed_text(spec)}; default {spec['default']})"
                       .replace("%", "%%"))
    p.add_argument("prompt", nargs="?", help="one prompt; without it, read one turn per line "
                                             "from stdin")
    p.set_defaults(func=cmd_chat)
