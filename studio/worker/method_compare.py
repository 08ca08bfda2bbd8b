"""Train several adapter methods on the same data with the same step budget and compare them.

    rows = compare_methods(base_recipe, ["lora", "dora", "ia3"], steps=60, log=print)
    print(markdown_table(rows))

Each method runs as its own training process (studio.worker.launcher.Job), so a crash of one
method does not stop the others and peak memory is measured per method, not accumulated in one
process. Every method's run is an ordinary run folder (it shows on the Runs page). Accuracy is
exact match of greedy answers on the eval split, measured here after each run with the method's
own loader. The CLI (studio/cli/compare.py) and the GUI dialog (which runs that CLI) call this.
No Qt.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from studio.errors import UserError
from studio.fileio import write_text_atomic

COLUMNS = [
    ("method", "Method"),
    ("status", "Status"),
    ("learning_rate", "LR"),
    ("trainable_params", "Trainable params"),
    ("trainable_pct", "Trainable %"),
    ("wall_s", "Wall time (s)"),
    ("peak_memory_mb", "Peak memory (MB)"),
    ("train_loss", "Final train loss"),
    ("eval_loss", "Final eval loss"),
    ("accuracy", "Eval accuracy"),
    ("adapter_mb", "Adapter size (MB)"),
]


def method_recipe(base, method_id: str, steps: int, learning_rate: float | str = "method",
                  overrides: dict | None = None):
    """The base recipe with another method and the shared step budget; returns (recipe, notes).

    learning_rate: a number (the same for every method), "recipe" (the base recipe's) or "method"
    (the plugin's suggested `learning_rate` from its manifest, else the recipe's).
    overrides: parameter values for this method on top of its plugin's defaults.
    """
    from studio import plugins

    plugin = plugins.get_plugin(method_id)
    recipe = base.resolved()
    if recipe.method.id != method_id:
        recipe.method.id = method_id
        recipe.method.params = plugin.defaults()
    recipe.method.params = {**recipe.method.params, **(overrides or {})}
    notes = [f"{k}={v}" for k, v in (overrides or {}).items()]
    # a phase length longer than the whole budget would never end: fit it to the budget
    for name, spec in plugin.parameters.items():
        if (spec.get("x-scale-with-steps") and name not in (overrides or {})
                and int(recipe.method.params.get(name, spec["default"])) >= steps):
            recipe.method.params[name] = max(1, steps // 2)
            notes.append(f"{name}={recipe.method.params[name]} (default "
                         f"{spec['default']} does not fit {steps} steps)")
    recipe.training.max_steps = steps
    recipe.training.epochs = 0
    if learning_rate == "method":
        recipe.training.learning_rate = plugin.manifest.get("learning_rate",
                                                            recipe.training.learning_rate)
    elif learning_rate != "recipe":
        recipe.training.learning_rate = float(learning_rate)
    recipe.name = f"compare-{method_id}"
    return recipe, notes


def limit_eval_file(recipe, limit: int) -> None:
    """Point the recipe at the first `limit` lines of its JSONL eval file (saved in the data folder),
    so the runs' eval loss and the accuracy are measured on the same, affordable examples."""
    from studio import paths

    if limit <= 0 or not recipe.data.eval_path:
        return
    source = recipe.resolve_path(recipe.data.eval_path)
    if source.suffix.lower() != ".jsonl" or not source.is_file():
        return
    lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(lines) <= limit:
        return
    folder = paths.data_dir() / "comparisons"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{source.stem}-first{limit}.jsonl"
    text = "\n".join(lines[:limit]) + "\n"
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8")
    recipe.data.eval_path = str(target)


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
    quant = recipe.model.quantization or plugin.requires_quantization or (
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
        "steps_done": logs[-1]["step"] if logs else 0,
        "trainable_params": trainable,
        "trainable_pct": (100.0 * trainable / total) if trainable and total else None,
        "peak_memory_mb": max((e.get("memory_mb") or 0.0 for e in logs), default=None),
        "train_loss": sum(tail) / len(tail) if tail else None,
        "eval_loss": evals[-1]["eval_loss"] if evals else None,
        "adapter_mb": folder_size_mb(adapter) if adapter.is_dir() else None,
        "run_dir": str(run_dir),
    }


def run_one(recipe, poll_s: float = 0.5, on_event: Callable[[dict], None] | None = None,
            runs_dir: Path | None = None):
    """Train one recipe in its own process; returns (run_dir, events, wall seconds).

    If this process is interrupted (Ctrl-C, or the GUI stopping the comparison), the training
    process is killed too: it runs in its own session and would otherwise go on alone.
    """
    from studio.core.runs import create_run
    from studio.worker.launcher import Job

    run_dir = create_run(recipe, base=runs_dir)
    start = time.perf_counter()
    job = Job.start(run_dir)
    events: list[dict] = []
    try:
        while job.wait(timeout=poll_s) is None:      # the reader ends after the terminal event
            for event in job.poll_events():
                events.append(event)
                if on_event:
                    on_event(event)
    except BaseException:
        job.kill()
        # not job.wait(): a Thread.join interrupted by KeyboardInterrupt can report the reader as
        # ended while it still runs; wait for it to record the `failed` event in the run folder
        deadline = time.monotonic() + 10
        while job.terminal_event is None and time.monotonic() < deadline:
            time.sleep(0.05)
        raise
    for event in job.poll_events():
        events.append(event)
        if on_event:
            on_event(event)
    return run_dir, events, time.perf_counter() - start


def compare_methods(base, method_ids: list[str], steps: int, eval_limit: int = 60,
                    log: Callable[[str], None] = print, learning_rate: float | str = "method",
                    overrides: dict[str, dict] | None = None,
                    on_progress: Callable[[dict], None] | None = None,
                    runs_dir: Path | None = None) -> list[dict]:
    """Train each method with the same data and step budget; one row of numbers per method.

    on_progress gets {"method", "index", "count", "phase": "train"|"eval"|"done", "step", "steps"}.
    """
    from studio import plugins

    found, problems = plugins.discover()
    unknown = [m for m in method_ids if m not in found]
    if unknown:
        why = [p for p in problems if any(f"/{m}:" in p or f"'{m}'" in p for m in unknown)]
        raise UserError(f"unknown method(s): {', '.join(unknown)}"
                        + (f" ({why[0]})" if why else ""), field="methods",
                        fix=f"choose from: {', '.join(sorted(found))}")
    if not method_ids:
        raise UserError("no methods chosen", field="methods", fix="e.g. --methods lora,dora,ia3")
    if steps < 1:
        raise UserError("the step budget must be at least 1", field="steps", fix="e.g. --steps 60")
    overrides = overrides or {}
    for method_id, values in overrides.items():     # refuse bad --set values before any training
        if method_id not in method_ids:
            raise UserError(f"--set names method '{method_id}', which is not being compared",
                            field="set", fix=f"compare one of: {', '.join(method_ids)}")
        found[method_id].validate(values)
    progress = on_progress or (lambda info: None)
    rows = []
    for index, method_id in enumerate(method_ids):
        recipe, notes = method_recipe(base, method_id, steps, learning_rate,
                                      overrides.get(method_id))
        limit_eval_file(recipe, eval_limit)
        recipe.validate()
        base_info = {"method": method_id, "index": index, "count": len(method_ids), "steps": steps}
        log(f"[{method_id}] training {steps} steps at lr {recipe.training.learning_rate:g}"
            + (f" ({'; '.join(notes)})" if notes else "") + " ...")
        progress({**base_info, "phase": "train", "step": 0})

        def show(event, _m=method_id, _info=base_info):
            if event.get("event") == "log":
                progress({**_info, "phase": "train", "step": event.get("step", 0)})
                if event.get("step", 0) % 10 == 0:
                    log(f"[{_m}] step {event['step']}/{steps} loss {event.get('loss', 0.0):.4f}")
            elif event.get("event") == "failed":
                log(f"[{_m}] failed: {event.get('cause', '')}")

        run_dir, events, wall = run_one(recipe, on_event=show, runs_dir=runs_dir)
        row = {"method": method_id, "learning_rate": recipe.training.learning_rate,
               "steps": steps, "wall_s": wall, "notes": "; ".join(notes),
               **summarise_run(run_dir, events)}
        row["accuracy"] = None
        if row["status"] == "finished":
            log(f"[{method_id}] evaluating on up to {eval_limit} eval examples ...")
            progress({**base_info, "phase": "eval", "step": steps})
            try:
                row["accuracy"] = adapter_accuracy(recipe, run_dir / "adapter", eval_limit)
            except Exception as err:  # noqa: BLE001 - one method's evaluation must not end the rest
                row["status"] = "eval failed"
                row["cause"] = f"{type(err).__name__}: {err}"
        log(f"[{method_id}] {row['status']}: " + ", ".join(
            f"{k}={_fmt(row.get(k))}" for k, _ in COLUMNS[2:]))
        rows.append(row)
        progress({**base_info, "phase": "done", "step": steps, "row": row})
    return rows


def baseline_accuracy(base, eval_limit: int = 60) -> float | None:
    """Exact match of the base model without any adapter, for the table's first line."""
    import torch

    from studio.core.evaluate import exact_match
    from studio.core.models import load_model

    recipe = base.resolved()
    limit_eval_file(recipe, eval_limit)
    examples = eval_examples_of(recipe, eval_limit)
    model, tokenizer = load_model(recipe.resolve_path(recipe.model.path),
                                  recipe.model.quantization or None, recipe.model.dtype)
    model.eval()
    with torch.no_grad():
        return float(exact_match(model, tokenizer, examples)["accuracy"])


def describe_machine() -> str:
    """Where the numbers come from: device, cores, and how busy the machine was at the start."""
    import os
    import platform

    text = f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores"
    try:
        import torch

        if torch.cuda.is_available():
            text += f", GPU {torch.cuda.get_device_name(0)}"
        else:
            text += f", no GPU (torch uses {torch.get_num_threads()} threads)"
    except ImportError:
        pass
    if hasattr(os, "getloadavg"):
        text += (f"; load average {os.getloadavg()[0]:.1f} when the comparison started "
                 "(a load above the core count means other jobs shared the CPU and stretched the "
                 "wall times)")
    return text


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if 0 < abs(value) < 0.01:
            return f"{value:.0e}" if value == float(f"{value:.0e}") else f"{value:.2g}"
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
                 recipe, learning_rate: float | str = "method",
                 planned: list[str] | None = None, machine: str = "") -> None:
    """Markdown table with the command that regenerates it, plus the raw rows as JSON.

    planned: every method of the comparison; when some have no row yet, the report says it is
    partial (it is rewritten after each method, so an interrupted comparison keeps what it has).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t = recipe.training
    steps = rows[0].get("steps", t.max_steps) if rows else t.max_steps
    lr_text = {"method": "each method's suggested learning rate (LR column, from its plugin "
                         "manifest)",
               "recipe": f"learning rate {t.learning_rate:g} for every method"}.get(
        learning_rate, f"learning rate {learning_rate} for every method")
    text = (
        "# Method comparison\n\n"
        f"Regenerate with:\n\n```bash\n{command}\n```\n\n"
        f"Same data, same {steps} optimizer steps per method (batch {t.batch_size} x grad-accum "
        f"{t.grad_accum}, {t.lr_scheduler} schedule, {t.warmup_steps} warm-up steps), "
        f"{lr_text}, each method with its plugin's default hyperparameters unless noted, each in "
        f"its own process. Model: `{Path(recipe.model.path).name}` ({recipe.model.dtype}"
        f"{', ' + recipe.model.quantization if recipe.model.quantization else ''}); "
        f"data: `{Path(recipe.data.path).name}`"
        + (f", evaluated on `{Path(recipe.data.eval_path).name}`" if recipe.data.eval_path else "")
        + ".\n\n"
        "Eval loss and accuracy use the first `--eval-limit` examples of the eval split; accuracy "
        "= exact match of greedy answers. Peak memory = the "
        "training process's largest resident memory seen at a logged step (CPU) or CUDA max "
        "allocated (GPU). Wall time = the whole training process (start, model load, training, "
        "save), not the accuracy evaluation. Final train loss = mean of the last 5 logged steps.\n\n"
        + (f"Machine: {machine}.\n\n" if machine else "")
        + markdown_table(rows, base_accuracy) + "\n"
    )
    missing = [m for m in planned or [] if m not in {r["method"] for r in rows}]
    if missing:
        text += (f"\n**Partial:** {len(rows)} of {len(planned)} methods done so far; not yet run: "
                 f"{', '.join(missing)}.\n")
    noted = [r for r in rows if r.get("notes")]
    if noted:
        text += "\nSettings changed from the defaults:\n\n" + "\n".join(
            f"- {r['method']}: {r['notes']}" for r in noted) + "\n"
    failed = [r for r in rows if r.get("status") != "finished"]
    if failed:
        text += "\nRuns that did not finish:\n\n" + "\n".join(
            f"- {r['method']}: {r.get('cause') or r.get('status')}" for r in failed) + "\n"
    write_text_atomic(out, text)
    json_out = out.with_suffix(".json")
    json_out.write_text(json.dumps({"command": command, "base_accuracy": base_accuracy,
                                    "rows": rows, "not_run": missing}, indent=2, default=str),
                        encoding="utf-8")
