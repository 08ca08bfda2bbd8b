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
import time
from pathlib import Path

from studio.core import events  # --progress-json lines, read by the GUI
from studio.errors import UserError


def with_description(task, description: str | None = None):
    """A copy of `task` whose prompts start with `description` (default: the task's own)."""
    import dataclasses

    text = (task.description if description is None else description).strip()
    if not text:
        raise UserError("the task has no description to put in the prompt.", path=task.path,
                        field="description",
                        fix="Add a \"description\" to the task file or drop --description-in-prompt.")
    prefix = text + "\n" + task.task_prefix if task.task_prefix.strip() else text + "\n"
    return dataclasses.replace(task, task_prefix=prefix)


def evaluate(model, tokenizer, task, limit: int | None = 50, offset: int = 0, seed: int = 0,
             description_in_prompt: bool = False, chat: bool | None = None,
             progress=None) -> dict:
    """Score one loaded model on one task (a BigBenchTask). The same call the harness uses."""
    from studio.core.bigbench import evaluate_task

    if description_in_prompt:
        task = with_description(task)
    if offset >= len(task.examples):
        raise UserError(f"--offset {offset} skips all {len(task.examples)} examples.",
                        path=task.path, field="offset", fix="Use a smaller offset.")
    start = time.perf_counter()
    result = evaluate_task(model, tokenizer, task, max_examples=limit, seed=seed, chat=chat,
                           offset=offset, progress=progress)
    result["seconds"] = time.perf_counter() - start
    result["description_in_prompt"] = description_in_prompt
    return result


def against_base(model, tokenizer, task, progress=None, **kwargs) -> dict:
    """The adapter on `model` and the base model (adapter switched off) on the same examples,
    with the paired difference and its 95% bootstrap CI. progress(done, total) counts both
    passes; kwargs go to evaluate()."""
    from studio.core.bigbench import bootstrap_ci
    from studio.core.chat import with_adapter_disabled

    def part(offset_frac):
        if progress is None:
            return None
        return lambda done, total: progress(offset_frac * total + done, 2 * total)

    with with_adapter_disabled(model):
        base = evaluate(model, tokenizer, task, progress=part(0), **kwargs)
    adapted = evaluate(model, tokenizer, task, progress=part(1), **kwargs)
    diffs = [a["score"] - b["score"] for a, b in zip(adapted["results"], base["results"])]
    mean = sum(diffs) / len(diffs)
    lo, hi = bootstrap_ci(diffs, seed=kwargs.get("seed", 0))
    verdict = ("better than the base model" if lo > 0 else "worse than the base model" if hi < 0
               else "no difference from the base model shown (the CI includes 0)")
    return {"base": base, "with_adapter": adapted,
            "difference": {"mean": mean, "ci95": [lo, hi], "verdict": verdict, "n": len(diffs)}}


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
        "eval", help="score a model (+ adapter) on a BIG-bench task.json, with a 95% CI",
        description="Multiple choice by log-likelihood, generative by exact match / ROUGE-L.")
    p.add_argument("task", help="a BIG-bench task.json (or the folder holding it)")
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
