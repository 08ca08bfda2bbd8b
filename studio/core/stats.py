"""Statistics for comparing models on the same examples: percentile-bootstrap confidence
intervals of a mean, paired differences, per-task stratified intervals and class-balanced
accuracy (so a model that only shifts the label prior earns nothing).

Used by task evaluation (studio.core.task_eval, studio.core.bigbench), the hypernetwork
evaluation (benchmarks/hyper_eval.py and its report) and comparison of adapters. Layer: core;
pure Python, no torch.
"""

from __future__ import annotations

import random


def bootstrap_ci(values, n: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) confidence interval of the mean of `values`."""
    vals = [float(v) for v in values]
    if not vals:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    k = len(vals)
    means = sorted(sum(vals[rng.randrange(k)] for _ in range(k)) / k for _ in range(n))
    lo = means[int((alpha / 2) * (n - 1))]
    hi = means[int((1 - alpha / 2) * (n - 1) + 0.5)]
    return (lo, hi)


def balanced_accuracy(scores: list[float], labels: list[str]) -> float:
    """Mean over answer classes of the accuracy within the class: 0.5 for any constant answer on
    a two-class task, whatever the label mix (plain accuracy rewards leaning to the common label)."""
    by: dict[str, list[float]] = {}
    for s, label in zip(scores, labels):
        by.setdefault(label, []).append(s)
    return sum(sum(v) / len(v) for v in by.values()) / len(by)


def is_classification(labels: list[str], max_classes: int = 6) -> bool:
    """A fixed small label set (true/false, sentiment, ...), not per-example answers (arithmetic)."""
    classes = set(labels)
    return 2 <= len(classes) <= max_classes and len(labels) >= 4 * len(classes)


def paired_balanced(a: list[float], b: list[float], labels: list[str], n: int = 1000, seed: int = 0
                    ) -> tuple[float, float, float]:
    """Balanced accuracy of a minus b on the same examples, with a 95% CI from resampling examples
    within each class."""
    draws = sorted(_draws(a, b, labels, True, random.Random(seed), n))
    return (balanced_accuracy(a, labels) - balanced_accuracy(b, labels),
            draws[int(0.025 * (n - 1))], draws[int(0.975 * (n - 1) + 0.5)])


def _draws(a, b, labels, balanced: bool, rng: random.Random, n: int) -> list[float]:
    """Bootstrap draws of the paired difference on one task (class-stratified when balanced)."""
    groups: dict[str, list[int]] = {}
    for i, label in enumerate(labels if balanced else ["all"] * len(a)):
        groups.setdefault(label, []).append(i)
    out = []
    for _ in range(n):
        total = 0.0
        for members in groups.values():
            pick = [members[rng.randrange(len(members))] for _ in members]
            total += sum(a[i] - b[i] for i in pick) / len(pick)
        out.append(total / len(groups))
    return out


def adjusted_paired(rows: list[dict], a: str, b: str, n: int = 1000, seed: int = 0
                    ) -> tuple[float, float, float]:
    """a minus b averaged over tasks, with classification tasks scored by balanced accuracy (so
    shifting the label prior earns nothing) and the rest by their own metric; 95% CI from
    resampling examples within each task (and class)."""
    rng = random.Random(seed)
    means, all_draws = [], []
    for r in rows:
        va, vb, labels = r["conditions"][a]["scores"], r["conditions"][b]["scores"], r.get("answers")
        balanced = bool(labels) and is_classification(labels)
        if balanced:
            means.append(balanced_accuracy(va, labels) - balanced_accuracy(vb, labels))
        else:
            means.append(sum(x - y for x, y in zip(va, vb)) / len(va))
        all_draws.append(_draws(va, vb, labels or [], balanced, rng, n))
    avg = sorted(sum(d[i] for d in all_draws) / len(all_draws) for i in range(n))
    return sum(means) / len(means), avg[int(0.025 * (n - 1))], avg[int(0.975 * (n - 1) + 0.5)]


def stratified_ci(per_task: list[list[float]], n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% CI of the mean over tasks of each task's mean, resampling examples within tasks."""
    rng = random.Random(seed)
    means = []
    for _ in range(n):
        means.append(sum(sum(v[rng.randrange(len(v))] for _ in v) / len(v) for v in per_task)
                     / len(per_task))
    means.sort()
    return means[int(0.025 * (n - 1))], means[int(0.975 * (n - 1) + 0.5)]


def paired(per_task_a, per_task_b) -> tuple[float, float, float]:
    diffs = [[a - b for a, b in zip(va, vb)] for va, vb in zip(per_task_a, per_task_b)]
    mean = sum(sum(d) / len(d) for d in diffs) / len(diffs)
    return (mean, *stratified_ci(diffs))
