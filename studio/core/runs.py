"""The run store: one folder per run under runs_dir(), the folders themselves are the database.

    run_dir = create_run(recipe)        # <YYYYmmdd-HHMMSS>-<name>/ with recipe.toml
    log = RunLog(run_dir); log.append(event)   # events.jsonl + status.json, as training goes
    list_runs()  -> [RunInfo, ...]      # newest first, robust to torn files and dead processes

No Qt, no torch. Every write is a temp file + rename (status.json) or a whole-line append
(events.jsonl), so a crash of either process leaves readable files.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from studio import paths
from studio.errors import UserError
from studio.fileio import write_json_atomic

ACTIVE = ("running", "paused")
_TAIL_BYTES = 256 * 1024
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class RunInfo:
    path: Path
    name: str
    status: str           # created | running | paused | finished | failed | cancelled | failed (...)
    step: int
    total_steps: int | None
    last_loss: float | None
    eval_loss: float | None
    created: str          # ISO time
    method: str
    model: str
    cause: str = ""       # why it failed
    adapter_path: str = ""

    def to_dict(self) -> dict:
        out = asdict(self)
        out["path"] = str(self.path)
        return out


def slug(name: str) -> str:
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-.")
    return text[:60] or "run"


def new_run_dir(label: str, base: Path | None = None, max_chars: int = 60) -> Path:
    """A fresh, empty run folder <base>/<YYYYmmdd-HHMMSS>-<slug(label)>[-N]/ (base: runs_dir()).
    Created with an exclusive mkdir, so two processes never get the same folder and an existing
    folder is never reused."""
    base = Path(base) if base else paths.runs_dir()
    base.mkdir(parents=True, exist_ok=True)
    stem = f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{slug(label)[:max_chars]}"
    run_dir, n = base / stem, 1
    while True:
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            n += 1
            run_dir = base / f"{stem}-{n}"


def new_status(name: str, method: str, model: str, total_steps: int | None = None,
               status: str = "created", **extra) -> dict:
    """A run's first status.json: step 0, no losses yet."""
    return {"status": status, "name": name, "created": datetime.now().isoformat(timespec="seconds"),
            "method": method, "model": model, "step": 0, "total_steps": total_steps,
            "last_loss": None, "eval_loss": None, **extra}


def write_status(run_dir, status: dict) -> None:
    write_json_atomic(Path(run_dir) / "status.json", status)


def create_run(recipe, base: Path | None = None) -> Path:
    """A fresh run folder with the recipe (absolute paths) copied in; status 'created'."""
    run_dir = new_run_dir(recipe.name, base)
    recipe.resolved().save(run_dir / "recipe.toml")
    write_status(run_dir, new_status(recipe.name, recipe.method.id, Path(recipe.model.path).name))
    return run_dir


def find_run(name_or_path: str | Path) -> Path:
    """A run folder from its path or its folder name under runs_dir()."""
    candidate = Path(name_or_path).expanduser()
    for path in (candidate, paths.runs_dir() / str(name_or_path)):
        if path.is_dir() and (path / "recipe.toml").is_file():
            return path
    raise UserError("no such run", path=name_or_path,
                    fix="give a run folder (see `peft-studio runs` for the list)")


def check_not_running(run_dir) -> None:
    """UserError when a live process is training this run (two would write the same folder)."""
    status = read_status(run_dir)
    if status.get("status") in ACTIVE and pid_alive(status.get("pid"), status.get("pid_start")):
        raise UserError(f"this run is still being trained by process {status['pid']}",
                        path=run_dir, fix="cancel it first, or wait for it to finish")


def checkpoints_dir(run_dir) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir) -> list[tuple[int, Path]]:
    """Complete checkpoints (those with progress.json, written last), oldest first."""
    root = checkpoints_dir(run_dir)
    found = []
    if root.is_dir():
        for child in root.iterdir():
            match = _STEP_DIR.match(child.name)
            if match and (child / "progress.json").is_file():
                found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(run_dir) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def load_recipe(run_dir):
    from studio.core.recipe import Recipe

    return Recipe.load(Path(run_dir) / "recipe.toml")


# ---- status.json + events.jsonl --------------------------------------------------------------

def read_status(run_dir) -> dict:
    try:
        data = json.loads((Path(run_dir) / "status.json").read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _process_start(pid: int) -> str | None:
    """Start time of a process (Linux /proc), to tell a live run from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def pid_alive(pid, start: str | None = None) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if os.path.exists(f"/proc/{pid}/stat"):
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":   # zombie: exited
                    return False
        except (OSError, IndexError):
            pass
    return start is None or _process_start(pid) in (None, start)


def fold_event(status: dict, event: dict) -> dict:
    """status.json after `event` (pure function)."""
    status = dict(status)
    name = event.get("event")
    status["updated"] = event.get("time", time.time())
    if name == "started":
        status.update(status="running", total_steps=event.get("total_steps"),
                      step=event.get("resumed_from", status.get("step", 0)) or 0, cause="")
    elif name == "log":
        status.update(status="running", step=event.get("step"), last_loss=event.get("loss"))
    elif name == "eval":
        status["eval_loss"] = event.get("eval_loss")
    elif name == "checkpoint":
        status["last_checkpoint"] = event.get("path")
    elif name == "paused":
        status["status"] = "paused"
    elif name == "resumed":
        status["status"] = "running"
    elif name == "cancelled":
        status.update(status="cancelled", step=event.get("step"),
                      last_checkpoint=event.get("checkpoint"))
    elif name == "finished":
        metrics = event.get("metrics") or {}
        status.update(status="finished", step=event.get("step"),
                      adapter_path=event.get("adapter_path"))
        if metrics.get("eval_loss") is not None:
            status["eval_loss"] = metrics["eval_loss"]
    elif name == "failed":
        status.update(status="failed", cause=event.get("cause", ""))
    return status


class RunLog:
    """Appends events to events.jsonl and keeps status.json current (child, CLI, launcher)."""

    def __init__(self, run_dir, pid: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.status = read_status(self.run_dir)
        if pid is not None:
            self.status.update(pid=pid, pid_start=_process_start(pid))
            write_status(self.run_dir, self.status)

    def append(self, event: dict) -> None:
        from studio.core.events import encode

        with open(self.run_dir / "events.jsonl", "a", encoding="utf-8") as fh:
            fh.write(encode(event))
        self.status = fold_event(self.status, event)
        if event.get("event") in ("finished", "failed", "cancelled"):
            self.status.pop("pid", None)
        write_status(self.run_dir, self.status)


def read_events(run_dir, tail_bytes: int | None = None) -> list[dict]:
    """The run's events; torn or corrupt lines (e.g. the last one after a crash) are skipped."""
    path = Path(run_dir) / "events.jsonl"
    try:
        with open(path, "rb") as fh:
            if tail_bytes:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - tail_bytes))
                if size > tail_bytes:
                    fh.readline()            # drop the partial first line
            raw = fh.read()
    except OSError:
        return []
    events = []
    for line in raw.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and "event" in event:
            events.append(event)
    return events


def run_info(run_dir) -> RunInfo:
    """What list_runs shows for one folder."""
    run_dir = Path(run_dir)
    status = read_status(run_dir)
    events = read_events(run_dir, tail_bytes=_TAIL_BYTES)
    if not status or not status.get("status"):          # torn status.json: rebuild from events
        for event in events:
            status = fold_event(status, event)
    else:
        for event in events:                             # events newer than the status write
            if event.get("time", 0) > status.get("updated", 0):
                status = fold_event(status, event)
    state = status.get("status") or "created"
    cause = status.get("cause") or ""
    if state in ACTIVE and not pid_alive(status.get("pid"), status.get("pid_start")):
        state, cause = "failed (process died)", cause or "the training process ended without a word"
    name = status.get("name") or run_dir.name
    created = status.get("created") or _created_from_name(run_dir.name)
    return RunInfo(
        path=run_dir, name=name, status=state, step=int(status.get("step") or 0),
        total_steps=status.get("total_steps"), last_loss=status.get("last_loss"),
        eval_loss=status.get("eval_loss"), created=created, method=status.get("method") or "?",
        model=status.get("model") or "?", cause=cause, adapter_path=status.get("adapter_path") or "")


def _created_from_name(folder: str) -> str:
    try:
        return datetime.strptime(folder[:15], "%Y%m%d-%H%M%S").isoformat()
    except ValueError:
        return ""


def list_runs(base: Path | None = None) -> list[RunInfo]:
    """Every run folder (one with recipe.toml or status.json), newest first."""
    base = Path(base) if base else paths.runs_dir()
    runs = []
    if base.is_dir():
        for child in base.iterdir():
            if child.is_dir() and not child.name.startswith(".") and (
                    (child / "recipe.toml").is_file() or (child / "status.json").is_file()):
                runs.append(run_info(child))
    runs.sort(key=lambda r: (r.created, r.path.name), reverse=True)
    return runs


def list_evaluations(run_dir) -> list[dict]:
    """The task evaluations saved in a run (evals/*.json, written by `peft-studio eval --json`
    and the evaluation dialog), newest first: task, examples, metric, the adapter's score, and
    the base model's with the paired difference when it was scored too. Unreadable files are
    skipped (a half-written file from an interrupted evaluation must not hide the rest)."""
    out = []
    for path in sorted(Path(run_dir, "evals").glob("*.json"), key=lambda p: p.stat().st_mtime,
                       reverse=True):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            adapted = data.get("with_adapter", data)
            item = {"file": str(path), "task": adapted["task"], "n": adapted["n"],
                    "metric": adapted["metric"], "score": adapted["score"],
                    "ci95": adapted["ci95"], "base_score": None, "difference": None}
            if "base" in data and "difference" in data:
                item["base_score"] = data["base"]["score"]
                item["difference"] = data["difference"]
            out.append(item)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def format_evaluation(item: dict) -> str:
    """One line for an evaluation: 'task (n): 0.520 vs base 0.500, +0.020 [-0.080, +0.140]'."""
    text = f"{item['task']} ({item['n']}): {item['score']:.3f}"
    diff = item.get("difference")
    if diff and item.get("base_score") is not None:
        lo, hi = diff["ci95"]
        text += f" vs base {item['base_score']:.3f}, {diff['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
    else:
        lo, hi = item["ci95"]
        text += f" [{lo:.3f}, {hi:.3f}]"
    return text
