"""Score the base model and every adapter on the same examples of one task, with paired 95% CIs
(each adapter against the base, and between every two), and the per-example rows for a "where do
they disagree" browser.

    result = evaluate_all(aset, task, limit=50, seed=0)
    result["models"]    -> [{"name", "score", "ci95", "metric", "n"}, ...]   base first
    result["pairs"]     -> [{"a", "b", "mean", "ci95", "verdict"}, ...]      a - b, same examples
    result["rows"]      -> [{"prompt", "reference", "answers": {name: ...}, "scores": {...},
                             "disagree": bool}, ...]

Each score is studio.core.task_eval.evaluate on that adapter alone (same limit, seed, format);
the base model is loaded once (AdapterSet). Layer: compare (rank 3).
"""

from __future__ import annotations

from studio.compare.loaded import BASE, AdapterSet
from studio.core import stats
from studio.core.task_eval import evaluate


def paired_difference(a: list[float], b: list[float], seed: int = 0) -> dict:
    """Mean of a - b over the same examples, its percentile-bootstrap 95% CI and what it says."""
    diffs = [x - y for x, y in zip(a, b)]
    mean = sum(diffs) / len(diffs)
    lo, hi = stats.bootstrap_ci(diffs, seed=seed)
    verdict = "better" if lo > 0 else "worse" if hi < 0 else "no difference shown (CI includes 0)"
    return {"mean": mean, "ci95": [lo, hi], "verdict": verdict, "n": len(diffs)}


def evaluate_all(aset: AdapterSet, task, limit: int | None = 50, seed: int = 0,
                 chat: bool | None = None, progress=None) -> dict:
    """Base + each adapter of `aset` on the first `limit` examples of `task` (a BigBenchTask)."""
    names = [BASE, *aset.names]
    per_model = {}
    for k, name in enumerate(names):
        step = None
        if progress is not None:
            def step(done, total, k=k):
                progress(k * total + done, len(names) * total)
        with aset.use(None if name == BASE else name) as model:
            per_model[name] = evaluate(model, aset.tokenizer, task, limit=limit, seed=seed,
                                       chat=chat, progress=step)
    scores = {name: [r["score"] for r in res["results"]] for name, res in per_model.items()}
    pairs = []
    for i, a in enumerate(names):
        for b in names[:i]:
            pairs.append({"a": a, "b": b, **paired_difference(scores[a], scores[b], seed)})
    first = per_model[BASE]
    rows = []
    for k, base_row in enumerate(first["results"]):
        answers = {n: per_model[n]["results"][k]["prediction"] for n in names}
        row_scores = {n: scores[n][k] for n in names}
        rows.append({"index": k, "prompt": base_row["prompt"], "reference": base_row["answer"],
                     "answers": answers, "scores": row_scores,
                     "disagree": len(set(row_scores.values())) > 1})
    models = [{"name": n, "metric": r["metric"], "score": r["score"], "ci95": r["ci95"],
               "n": r["n"], "seconds": r["seconds"]} for n, r in per_model.items()]
    return {"task": first["task"], "task_path": str(task.path) if task.path else None,
            "limit": limit, "seed": seed, "chat_format": first["chat_format"],
            "models": models, "pairs": pairs, "rows": rows,
            "disagreements": sum(r["disagree"] for r in rows)}


def against_base(result: dict) -> list[dict]:
    """The pairs of `result` that compare an adapter with the base model."""
    return [p for p in result["pairs"] if p["b"] == BASE]


def find_task(text: str):
    """A task from a BIG-bench task.json (or its folder), a .jsonl/.csv data file, or the name of
    a shipped sample task (resources/sample_tasks/<name>)."""
    from pathlib import Path

    from studio import paths
    from studio.core.bigbench import load_task
    from studio.errors import UserError

    path = Path(text).expanduser()
    if path.exists():
        return load_task(path)
    sample = paths.sample_tasks_dir() / text
    if sample.is_dir():
        return load_task(sample)
    names = sorted(p.name for p in paths.sample_tasks_dir().iterdir() if p.is_dir()) \
        if paths.sample_tasks_dir().is_dir() else []
    raise UserError("no such task file or sample task.", path=text, field="eval",
                    fix="Give a task.json, a .jsonl/.csv data file, or one of: "
                        + (", ".join(names) or "(no sample tasks installed)") + ".")
