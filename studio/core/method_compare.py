"""Train several adapter methods on the same data with the same step budget and compare them.

    rows = compare_methods(base_recipe, ["lora", "dora", "ia3"], steps=60, log=print)
    print(markdown_table(rows))

Each method runs as its own training process (studio.worker), so a crash of one method does not
stop the others and peak memory is measured per method, not accumulated in one process. Every
method's run is an ordinary run folder (it shows on the Runs page). Accuracy is exact match of
greedy answers on the eval split, measured here after each run with the method's own loader.
No Qt.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from studio.errors import UserError

COLUMNS = [
    ("method", "Method"),
    ("status", "Status"),
    ("trainable_params", "Trainable params"),
    ("trainable_pct", "Trainable %"),
    ("wall_s", "Wall time (s)"),
    ("peak_memory_mb", "Peak memory (MB)"),
    ("train_loss", "Final train loss"),
    ("eval_loss", "Final eval loss"),
    ("accuracy", "Eval accuracy"),
    ("adapter_mb", "Adapter size (MB)"),
]


def method_recipe(base, method_id: str, steps: int):
    """The base recipe with another method (its default parameters) and the shared step budget."""
    from studio.core.recipe import _plugin_defaults

    recipe = base.resolved()
    if recipe.method.id != method_id:
        recipe.method.id = method_id
        recipe.method.params = _plugin_defaults(method_id)
    recipe.training.max_steps = steps
    recipe.name = f"compare-{method_id}"
    return recipe


def folder_size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 2**20


def eval_examples_of(recipe, limit: int):
    """The examples a run evaluated on: the eval file, or the same split the training used."""
    from studio.core.data import load_examples, split_examples

    if recipe.data.eval_path:
        examples = load_examples(recipe.resolve_path(recipe.data.eval_path), recipe.data.format)
    else:
        examples = load_examples(recipe.resolve_path(recipe.data.path), recipe.data.format)
        _, examples = split_examples(examples, recipe.data.eval_fraction, recipe.training.seed)
    return examples[:limit] if limit > 0 else examples


def adapter_accuracy(recipe, adapter_dir: Path, limit: int) -> float | None:
    """Exact-match accuracy of base + adapter (loaded by the method's plugin) on the eval split."""
    import torch

    from studio import plugins
    from studio.core.evaluate import exact_match
    from studio.core.models import load_model

    examples = eval_examples_of(recipe, limit)
    if not examples:
        return None
    plugin = plugins.get_plugin(recipe.method.id)
    quant = recipe.model.quantization or (
        "4bit" if plugin.capabilities.get("needs_quantized_base") else "")
    model, tokenizer = load_model(recipe.resolve_path(recipe.model.path), quant or None,
                                  recipe.model.dtype)
    model = plugin.load(model, adapter_dir)
    model.eval()
    with torch.no_grad():
        result = exact_match(model, tokenizer, examples)
    return float(result["accuracy"])


def summarise_run(run_dir: Path, events: list[dict]) -> dict:
    """Numbers of one finished (or failed) run, from its own events and folder."""
    started = next((e for e in events if e.get("event") == "started"), {})
    logs = [e for e in events if e.get("event") == "log"]
    evals = [e for e in events if e.get("event") == "eval" and e.get("eval_loss") is not None]
    end = next((e for e in reversed(events)
                if e.get("event") in ("finished", "failed", "cancelled")), {})
    trainable = started.get("trainable_params")
    total = started.get("total_params")
    tail = [e["loss"] for e in logs[-5:] if e.get("loss") is not None]
    adapter = run_dir / "adapter"
    return {
        "status": end.get("event", "unknown"),
        "cause": end.get("cause", ""),
        "trainable_params": trainable,
        "trainable_pct": (100.0 * trainable / total) if trainable and total else None,
        "peak_memory_mb": max((e.get("memory_mb") or 0.0 for e in logs), default=None),
        "train_loss": sum(tail) / len(tail) if tail else None,
        "eval_loss": evals[-1]["eval_loss"] if evals else None,
        "adapter_mb": folder_size_mb(adapter) if adapter.is_dir() else None,
        "run_dir": str(run_dir),
    }


def run_one(recipe, poll_s: float = 0.5, on_event: Callable[[dict], None] | None = None):
    """Train one recipe in its own process; returns (run_dir, events, wall seconds)."""
    from studio.core.runs import create_run
    from studio.worker.launcher import Job

    run_dir = create_run(recipe)
    start = time.perf_counter()
    job = Job.start(run_dir)
    events: list[dict] = []
    while job.wait(timeout=poll_s) is None:      # the reader ends after the terminal event
        for event in job.poll_events():
            events.append(event)
            if on_event:
                on_event(event)
    for event in job.poll_events():
        events.append(event)
        if on_event:
            on_event(event)
    return run_dir, events, time.perf_counter() - start


def compare_methods(base, method_ids: list[str], steps: int, eval_limit: int = 60,
                    log: Callable[[str], None] = print) -> list[dict]:
    """Train each method with the same data and step budget; one row of numbers per method."""
    from studio import plugins

    found, _ = plugins.discover()
    unknown = [m for m in method_ids if m not in found]
    if unknown:
        raise UserError(f"unknown method(s): {', '.join(unknown)}", field="methods",
                        fix=f"choose from: {', '.join(sorted(found))}")
    if steps < 1:
        raise UserError("the step budget must be at least 1", field="steps", fix="e.g. --steps 60")
    rows = []
    for method_id in method_ids:
        recipe = method_recipe(base, method_id, steps)
        recipe.validate()
        log(f"[{method_id}] training {steps} steps ...")

        def show(event, _m=method_id):
            if event.get("event") == "log" and event.get("step", 0) % 10 == 0:
                log(f"[{_m}] step {event['step']}/{event.get('total_steps', steps)} "
                    f"loss {event.get('loss', float('nan')):.4f}")
            elif event.get("event") == "failed":
                log(f"[{_m}] failed: {event.get('cause', '')}")

        run_dir, events, wall = run_one(recipe, on_event=show)
        row = {"method": method_id, "wall_s": wall, **summarise_run(run_dir, events)}
        row["accuracy"] = None
        if row["status"] == "finished":
            log(f"[{method_id}] evaluating on up to {eval_limit} eval examples ...")
            row["accuracy"] = adapter_accuracy(recipe, run_dir / "adapter", eval_limit)
        log(f"[{method_id}] {row['status']}: " + ", ".join(
            f"{k}={_fmt(row.get(k))}" for k, _ in COLUMNS[2:]))
        rows.append(row)
    return rows


def baseline_accuracy(base, eval_limit: int = 60) -> float | None:
    """Exact match of the base model without any adapter, for the table's first line."""
    import torch

    from studio.core.evaluate import exact_match
    from studio.core.models import load_model

    recipe = base.resolved()
    examples = eval_examples_of(recipe, eval_limit)
    model, tokenizer = load_model(recipe.resolve_path(recipe.model.path),
                                  recipe.model.quantization or None, recipe.model.dtype)
    model.eval()
    with torch.no_grad():
        return float(exact_match(model, tokenizer, examples)["accuracy"])


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.4g}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(rows: list[dict], base_accuracy: float | None = None) -> str:
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    lines = [head, rule]
    if base_accuracy is not None:
        cells = ["base model (no adapter)", "—"] + ["—"] * (len(COLUMNS) - 2)
        cells[[k for k, _ in COLUMNS].index("accuracy")] = _fmt(base_accuracy)
        lines.append("| " + " | ".join(cells) + " |")
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(key)) for key, _ in COLUMNS) + " |")
    return "\n".join(lines)


def write_report(rows: list[dict], out: Path, command: str, base_accuracy: float | None,
                 recipe) -> None:
    """Markdown table with the command that regenerates it, plus the raw rows as JSON."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t = recipe.training
    text = (
        "# Method comparison\n\n"
        f"Same data, same {rows[0].get('steps', t.max_steps) if rows else t.max_steps} optimizer "
        f"steps per method (batch {t.batch_size} x grad-accum {t.grad_accum}, "
        f"lr {t.learning_rate}, {t.lr_scheduler}), each method with its plugin's default "
        "hyperparameters, each in its own process. Model: "
        f"`{Path(recipe.model.path).name}`; data: `{Path(recipe.data.path).name}`.\n"
        "Accuracy = exact match of greedy answers on the eval split. Peak memory = the training "
        "process's resident memory (CPU) or CUDA max allocated (GPU).\n\n"
        f"Regenerate with:\n\n```bash\n{command}\n```\n\n"
        + markdown_table(rows, base_accuracy) + "\n"
    )
    failed = [r for r in rows if r.get("status") != "finished"]
    if failed:
        text += "\nRuns that did not finish:\n\n" + "\n".join(
            f"- {r['method']}: {r.get('cause') or r.get('status')}" for r in failed) + "\n"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    json_out = out.with_suffix(".json")
    json_out.write_text(json.dumps(rows, indent=2, default=str), encoding="utf-8")
