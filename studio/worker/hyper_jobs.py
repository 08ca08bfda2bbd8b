"""Hypernetwork work as runs: generated adapters and hypernetwork training, each a run folder.

    res = generate_run(model_path, description="...")       # T2L (or kind="dnd", prompts=[...])
    res["run_dir"], res["adapter_dir"], res["ms"]            # a finished run with adapter/
    run_dir = create_train_run(library, kind="t2l", mode="recon", head="S", steps=300)
    Job.start(run_dir)                                       # the same worker process as training

A generated adapter lands in `<runs>/<stamp>-generated-<task>/adapter/` with status.json
"finished", so the Runs and Chat pages list it like a trained one. A hypernetwork training run
holds `hyper_job.json` (its settings) instead of recipe.toml; studio.worker.child sees that file
and calls `run_hyper_job`, which streams the same events (started, log, eval, finished, failed,
cancelled) so the curves panel plots them. No Qt.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from studio.core import events, runs
from studio.errors import UserError
from studio.fileio import write_json_atomic, write_text_atomic

JOB_FILE = "hyper_job.json"
KIND_NAMES = {"t2l": "Text-to-LoRA", "dnd": "DnD"}
MODES = ("recon", "sft")
HEADS = ("L", "M", "S")

_loaded: dict[tuple, object] = {}    # (folder, weights mtime) -> api.Hypernetwork, process-wide
_lock = threading.Lock()


def load_cached(folder: str | Path | None, kind: str | None = "t2l"):
    """The hypernetwork in `folder` (None: the shipped default of `kind`), loaded once.
    kind=None accepts either kind."""
    from studio.hyper import api

    folder = Path(folder) if folder else api.default_hypernetwork_dir(kind or "t2l")
    weights = folder / api.WEIGHTS_FILE
    key = (str(folder.resolve()), weights.stat().st_mtime_ns if weights.is_file() else 0)
    with _lock:
        if key not in _loaded:
            _loaded[key] = api.load_hypernetwork(folder)
        hn = _loaded[key]
    if kind is not None and hn.kind != kind:
        raise UserError(f"this hypernetwork is a {KIND_NAMES.get(hn.kind, hn.kind)} network, "
                        f"not {KIND_NAMES[kind]}.", path=folder,
                        fix=f"Choose a {KIND_NAMES[kind]} hypernetwork or switch the generator.")
    return hn


def generate_run(model_path: str | Path, kind: str = "t2l", description: str = "",
                 prompts: list[str] | None = None, hypernetwork: str | Path | None = None,
                 name: str = "", runs_base: Path | None = None) -> dict:
    """Generate an adapter for the task into a new finished run folder; returns api.generate's
    result plus run_dir, ms (generation time, encoder already loaded) and warm_up_s."""
    from studio.hyper import api

    if kind not in KIND_NAMES:
        raise UserError(f"unknown generator '{kind}'.", field="kind", fix="Use t2l or dnd.")
    task_text, prompts = api.check_task_input(
        kind, description, [p.strip() for p in (prompts or []) if p and p.strip()])
    hn = load_cached(hypernetwork, kind)
    t0 = time.perf_counter()
    api.warm_up()                                   # the sentence encoder (seconds, once)
    warm_up_s = time.perf_counter() - t0
    task_text = task_text or prompts[0]
    label = name.strip() or f"generated-{kind}-{' '.join(task_text.split()[:6])}"
    run_dir = runs.new_run_dir(label, runs_base, max_chars=48)
    try:
        res = api.generate(hn, run_dir / "adapter", description=description if kind == "t2l" else None,
                           prompts=prompts if kind == "dnd" else None, base_model=str(model_path))
    except BaseException:
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    ms = res["seconds"] * 1e3
    display = name.strip() or f"{KIND_NAMES[kind]}: {' '.join(task_text.split())[:60]}"
    metrics = {"generation_ms": round(ms, 1), "encode_ms": round(res["encode_ms"], 1),
               "emit_ms": round(res["emit_ms"], 1), "write_ms": round(res["write_ms"], 1),
               "size_mb": res["size_mb"], "hypernetwork": str(hn.folder)}
    event = events.finished(0, res["adapter_dir"], metrics)
    write_text_atomic(run_dir / "events.jsonl", events.encode(event))
    write_json_atomic(run_dir / "generation.json", {
        "kind": kind, "description": description.strip() if kind == "t2l" else "",
        "prompts": prompts if kind == "dnd" else [], "model": str(model_path),
        "hypernetwork": str(hn.folder), **metrics})
    runs.write_status(run_dir, runs.new_status(
        display, "text_to_lora" if kind == "t2l" else "dnd", Path(model_path).name, total_steps=0,
        status="finished", adapter_path=res["adapter_dir"], updated=event["time"]))
    res.update(run_dir=str(run_dir), ms=ms, warm_up_s=warm_up_s, name=display)
    return res


# ---- training a hypernetwork as a background run ---------------------------------------------

def check_library(folder: str | Path) -> Path:
    """A quick check that `folder` can be a library (the trainer checks every adapter in depth)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError("the adapter folder does not exist.", path=folder,
                        fix="Choose a folder holding one sub-folder per task adapter.")
    if (folder / "library.json").is_file():
        return folder
    tasks = [d for d in folder.iterdir() if d.is_dir() and (
        (d / "adapter_config.json").is_file() or (d / "adapter" / "adapter_config.json").is_file())]
    if not tasks:
        raise UserError("no PEFT adapters found in this folder.", path=folder,
                        fix="Put one sub-folder per task, each with adapter_config.json + "
                            "adapter_model.safetensors (or an adapter/ folder) and description.txt.")
    missing = [d.name for d in tasks if not (d / "description.txt").is_file()
               and not (d / "description.json").is_file()]
    if missing:
        raise UserError(f"{len(missing)} adapter(s) have no description: {', '.join(missing[:4])}.",
                        path=folder / missing[0],
                        fix="Add description.txt (one task description per line) to each adapter folder.")
    if len(tasks) < 2:
        raise UserError("a hypernetwork needs adapters of at least two tasks.", path=folder,
                        fix="Add more task adapters to the folder.")
    return folder


def create_train_run(library: str | Path, kind: str = "t2l", mode: str = "recon", head: str = "S",
                     steps: int = 300, name: str = "", out_dir: str | Path | None = None,
                     model_path: str | Path | None = None, runs_base: Path | None = None,
                     **options) -> Path:
    """A run folder for hypernetwork training (start it with studio.worker.launcher.Job)."""
    library = check_library(library)
    if kind not in KIND_NAMES:
        raise UserError(f"unknown hypernetwork kind '{kind}'.", field="kind", fix="Use t2l or dnd.")
    if mode not in MODES:
        raise UserError(f"unknown training mode '{mode}'.", field="mode", fix="Use recon or sft.")
    if head not in HEADS:
        raise UserError(f"unknown head size '{head}'.", field="head", fix="Use L, M or S.")
    if int(steps) < 1:
        raise UserError("steps must be at least 1.", field="steps", fix="e.g. 300 steps.")
    if kind == "dnd":
        mode = "recon"                  # DnD learns from the library's checkpoints only
        options.pop("init_from", None)
    if options.get("init_from"):
        from studio.hyper.training import check_start_from

        options["init_from"] = str(check_start_from(options["init_from"]))
    label = name.strip() or f"hypernet-{kind}{'-' + mode if kind == 't2l' else ''}-{library.name}"
    run_dir = runs.new_run_dir(label, runs_base, max_chars=48)
    out = Path(out_dir) if out_dir else run_dir / "hypernetwork"
    job = {"library": str(library.resolve()), "out_dir": str(out), "kind": kind, "mode": mode,
           "head": head, "steps": int(steps), "model_path": str(model_path) if model_path else None,
           "options": options}
    write_json_atomic(run_dir / JOB_FILE, job)
    method = f"hypernetwork ({KIND_NAMES[kind]}{', ' + mode + ', head ' + head if kind == 't2l' else ''})"
    runs.write_status(run_dir, runs.new_status(
        label, method, Path(model_path).name if model_path else library.name,
        total_steps=int(steps)))
    return run_dir


def is_hyper_run(run_dir: str | Path) -> bool:
    return (Path(run_dir) / JOB_FILE).is_file()


def run_hyper_job(run_dir: str | Path, emit, control=None) -> dict:
    """The worker child's body for a hypernetwork run: train, streaming events through `emit`."""
    from studio.hyper import api

    run_dir = Path(run_dir)
    job = json.loads((run_dir / JOB_FILE).read_text(encoding="utf-8"))

    def progress(event: dict) -> None:
        event = dict(event)
        event.setdefault("time", time.time())
        if event.get("event") == "started":
            event.setdefault("run_dir", str(run_dir))
            event.setdefault("trainable_params", 0)
            event.setdefault("total_params", 0)
        emit(event)

    stop = (lambda: bool(control.cancelled)) if control is not None else None
    return api.train_hypernetwork(job["library"], job["out_dir"], kind=job["kind"], mode=job["mode"],
                                  head=job["head"], steps=job["steps"], model_path=job["model_path"],
                                  progress=progress, should_stop=stop, **(job.get("options") or {}))
