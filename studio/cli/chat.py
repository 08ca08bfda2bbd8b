"""`peft-studio chat`: answer a prompt with the base model and with an adapter."""

from __future__ import annotations


def cmd_chat(args) -> int:
    from studio.core.chat import compare_answers, generate, load_for_chat

    model, tokenizer = load_for_chat(args.model, args.adapter)
    if args.adapter:
        answers = compare_answers(model, tokenizer, args.prompt, args.max_new_tokens)
        print(f"base:    {answers['base']}")
        print(f"adapter: {answers['adapter']}")
    else:
        print(generate(model, tokenizer, args.prompt, args.max_new_tokens))
    return 0


def register(sub) -> None:
    p = sub.add_parser("chat", help="answer a prompt with the base model and with an adapter")
    p.add_argument("--model", required=True, help="base model folder")
    p.add_argument("--adapter", help="adapter folder (a run's adapter/)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("prompt")
    p.set_defaults(func=cmd_chat)
