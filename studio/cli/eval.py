"""`peft-studio eval TASK.json`: score a model (optionally with an adapter) on any BIG-bench task.

    peft-studio eval path/to/task.json [--model DIR] [--adapter DIR [--against-base]]
                     [--description-in-prompt]
                     [--limit N] [--offset K] [--seed S] [--format chat|plain] [--json OUT]

Multiple-choice tasks (`target_scores`) are scored by the log-likelihood of each choice;
generative tasks (`target`) by exact match, with ROUGE-L reported beside it. The score comes with
a percentile-bootstrap 95% confidence interval over the examples (studio.core.bigbench).
`--description-in-prompt` puts the task's own description in front of every prompt (the
"base model + description" baseline of the hypernetwork evaluation).
"""

from __future__ import annotations

import json
from pathlib import Path

from studio.core import events  # --progress-json lines, read by the GUI
from studio.core.task_eval import against_base, evaluate, with_description
from studio.errors import UserError


def format_comparison(result: dict) -> str:
    d = result["difference"]
    lo, hi = d["ci95"]
    return "\n".join([
        "base model:", "  " + format_summary(result["base"]).replace("\n", "\n  "),
        "with the adapter:", "  " + format_summary(result["with_adapter"]).replace("\n", "\n  "),
        f"adapter - base, same {d['n']} examples: {d['mean']:+.3f} (95% CI {lo:+.3f} to {hi:+.3f})"
        f": {d['verdict']}"])


def format_summary(result: dict) -> str:
    lo, hi = result["ci95"]
    kind = "accuracy" if result["metric"] == "multiple_choice_grade" else "exact match"
    lines = [f"task: {result['task']}  ({result['n']} examples, "
             f"{'multiple choice' if kind == 'accuracy' else 'generative'}, "
             f"{'chat' if result['chat_format'] else 'plain'} prompts"
             f"{', description in prompt' if result.get('description_in_prompt') else ''})",
             f"{kind}: {result['score']:.3f}  (95% CI {lo:.3f} - {hi:.3f})"]
    if kind == "accuracy":
        lines.append(f"chance: {result['chance']:.3f}   length-normalised accuracy: "
                     f"{result['accuracy_norm']:.3f}")
    else:
        lines.append(f"ROUGE-L: {result['rouge_l']:.3f}")
    return "\n".join(lines)


def cmd_eval(args) -> int:
    from studio.core.bigbench import load_task
    from studio.core.chat import load_for_chat
    from studio.paths import default_model_dir

    if args.limit < 0 or args.offset < 0:
        raise UserError("--limit and --offset cannot be negative.", field="limit",
                        fix="e.g. --limit 50 (0 scores every example)")
    task = load_task(args.task)
    if args.description_in_prompt:
        with_description(task)                  # fail before loading the model
    model_path = args.model or str(default_model_dir())
    if args.against_base and not args.adapter:
        raise UserError("--against-base compares an adapter with its base model, and no adapter "
                        "was given.", field="against-base", fix="Add --adapter DIR.")
    model, tokenizer = load_for_chat(model_path, args.adapter or None)
    chat = None if args.format == "auto" else args.format == "chat"
    options = dict(limit=args.limit or None, offset=args.offset, seed=args.seed,
                   description_in_prompt=args.description_in_prompt, chat=chat)
    if getattr(args, "progress_json", False):
        def progress(done, total):
            print(events.progress_line({"done": done, "total": total}), flush=True)
        print(events.progress_line({"done": 0, "total": 1, "phase": "loaded"}), flush=True)
        options["progress"] = progress
    if args.against_base:
        result = against_base(model, tokenizer, task, **options)
        print(format_comparison(result))
    else:
        result = evaluate(model, tokenizer, task, **options)
        print(format_summary(result))
    result.update(model=str(model_path), adapter=args.adapter or None,
                  task_path=str(task.path))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1), encoding="utf-8")
        print(f"results: {out}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="score a model (+ adapter) on a BIG-bench task.json, with a 95%% CI",
        description="Multiple choice by log-likelihood, generative by exact match / ROUGE-L.")
    p.add_argument("task", help="a BIG-bench task.json (or the folder holding it), or a .jsonl/.csv "
                                "data file: exact match on each example's reply")
    p.add_argument("--model", help="base model folder (default: the installed default model)")
    p.add_argument("--adapter", help="PEFT adapter folder to evaluate on top of the model")
    p.add_argument("--against-base", action="store_true",
                   help="also score the base model on the same examples and report the paired "
                        "difference (adapter - base) with its 95%% CI")
    p.add_argument("--description-in-prompt", action="store_true",
                   help="put the task's description in front of every prompt")
    p.add_argument("--limit", type=int, default=50, help="examples to score (default 50; 0 = all)")
    p.add_argument("--offset", type=int, default=0, help="skip the first K examples")
    p.add_argument("--seed", type=int, default=0, help="choice order and bootstrap seed")
    p.add_argument("--format", choices=("auto", "chat", "plain"), default="auto",
                   help="chat template (auto when the tokenizer has one) or BIG-bench's plain Q:/A:")
    p.add_argument("--json", metavar="OUT", help="also write every per-example result here")
    p.add_argument("--progress-json", action="store_true",
                   help="print '@progress {json}' lines as examples are scored (for the GUI)")
    p.set_defaults(func=cmd_eval)
