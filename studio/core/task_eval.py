"""Score a loaded model (optionally with an adapter) on a BIG-bench task: one model alone, or the
adapter against its own base on the same examples with the paired difference and its 95% CI.

The one implementation behind `peft-studio eval`, the GUI's evaluation dialog (which runs that
command) and benchmarks/hyper_eval.py. Layer: core (no Qt, no worker, no CLI).
"""

from __future__ import annotations

import time

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
