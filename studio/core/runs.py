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
from studio.fileio import check_free_space, disk_full_as_user_error, slug, write_json_atomic

ACTIVE = ("running", "paused")
_TAIL_BYTES = 256 * 1024
_STEP_DIR = re.compile(r"^step-(\d+)$")
# free space a new run needs before its folder is made: the recipe, the logs and a first
# checkpoint of a small adapter (the checkpoint itself is checked again, from its real size)
RUN_MIN_FREE_BYTES = 32 * 1024 * 1024
LOCK_FILE = "train.lock"


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
    """A fresh run folder with the recipe (absolute paths) copied in; status 'created'.
    UserError (disk full) before making the folder when there is no room for a run; a folder this
    call made is removed again when writing into it fails (no empty run is left behind)."""
    check_free_space(Path(base) if base else paths.runs_dir(), RUN_MIN_FREE_BYTES)
    run_dir = new_run_dir(recipe.name, base)
    try:
        with disk_full_as_user_error(run_dir, RUN_MIN_FREE_BYTES):
            recipe.resolved().save(run_dir / "recipe.toml")
            write_status(run_dir, new_status(recipe.name, recipe.method.id,
                                             Path(recipe.model.path).name))
    except BaseException:
        for name in ("recipe.toml", "status.json"):     # only what this call wrote
            (run_dir / name).unlink(missing_ok=True)
        try:
            run_dir.rmdir()
        except OSError:
            pass
        raise
    return run_dir


def find_run(name_or_path: str | Path) -> Path:
    """A run folder from its path or its folder name under runs_dir()."""
    candidate = Path(name_or_path).expanduser()
    for path in (candidate, paths.runs_dir() / str(name_or_path)):
        if path.is_dir() and (path / "recipe.toml").is_file():
            return path
    raise UserError("no such run", path=name_or_path,
                    fix="give a run folder (see `peft-studio runs` for the list)")


def lock_holder(run_dir) -> str | None:
    """Who holds the run's training lock (the pid written in it, or "?"), or None when free.
    Probes with a non-blocking lock of its own, released at once; never creates the file."""
    import fcntl

    path = Path(run_dir) / LOCK_FILE
    if str(Path(run_dir).resolve()) in _held_locks or not path.is_file():
        return None
    try:
        with open(path, "r", encoding="utf-8") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return fh.read().strip() or "?"
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    except OSError:
        return None
    return None


def check_not_running(run_dir) -> None:
    """UserError when a live process is training this run (two would write the same folder):
    its OS lock is held, or (runs from before the lock) its status names a live pid."""
    holder = lock_holder(run_dir)
    if holder is not None:
        raise UserError(f"this run is already being trained by process {holder}", path=run_dir,
                        fix="cancel it first, or wait for it to finish")
    status = read_status(run_dir)
    if status.get("status") in ACTIVE and pid_alive(status.get("pid"), status.get("pid_start")):
        raise UserError(f"this run is still being trained by process {status['pid']}",
                        path=run_dir, fix="cancel it first, or wait for it to finish")


class RunFinished(UserError):
    """`--resume` of a run that already reached its last step (refused; the run is left as is)."""


def check_resumable(run_dir, total_steps: int) -> None:
    """RunFinished when the run finished at a step >= `total_steps` (the recipe's steps now):
    resuming would train the last steps again and overwrite its adapter."""
    status = read_status(run_dir)
    if status.get("status") != "finished":
        return
    try:
        done = int(status.get("step") or 0)
    except (TypeError, ValueError):
        return
    if done >= total_steps:
        raise RunFinished(
            f"the run is finished at step {done} of {total_steps}; resuming would train its last "
            "steps again and overwrite its adapter", path=run_dir,
            fix="to train more, clone its recipe with a larger training.max_steps (`peft-studio "
                "train` on a copy of its recipe.toml), or raise max_steps in the run's own "
                "recipe.toml and resume")


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
        status.pop("stage", None)
    elif name == "log":
        status.update(status="running", step=event.get("step"), last_loss=event.get("loss"))
        status.pop("stage", None)
    elif name == "stage":
        status.update(status="running", stage=event.get("title") or event.get("stage"))
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

        line = encode(event).encode("utf-8")
        with open(self.run_dir / "events.jsonl", "a+b") as fh:
            if fh.seek(0, os.SEEK_END) > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":       # a torn last line (power loss, full disk): the
                    line = b"\n" + line        # event starts a line of its own, not glued to it
            fh.write(line)
        self.status = fold_event(self.status, event)
        if event.get("event") in ("finished", "failed", "cancelled"):
            self.status.pop("pid", None)
        write_status(self.run_dir, self.status)


    def record_failure(self, event: dict) -> bool:
        """Append a `failed` event, as far as the disk allows: False (and nothing raised) when it
        cannot be written, so the error that ended the run is the one the user sees."""
        try:
            self.append(event)
            return True
        except OSError:
            return False


def lock_run(run_dir):
    """Take the run's training lock (an OS lock on RUN_DIR/train.lock) for this process's life;
    returns the open lock file: keep it (closing it releases the lock). The OS drops the lock
    when the process dies, so a crash never leaves a stale lock. UserError when another process
    holds it."""
    import fcntl

    key = str(Path(run_dir).resolve())
    if key in _held_locks:                 # this process holds it already
        return _held_locks[key]
    path = Path(run_dir) / LOCK_FILE
    fh = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        holder = fh.read().strip() or "?"
        fh.close()
        raise UserError(f"this run is already being trained by process {holder}", path=run_dir,
                        fix="wait for it to finish, or cancel it (Runs page, or kill that "
                            "process) before starting it again") from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    _held_locks[key] = fh
    return fh


def unlock_run(run_dir, lock=None) -> None:
    """Release this process's training lock on the run (the CLI's in-process train, when done)."""
    fh = _held_locks.pop(str(Path(run_dir).resolve()), None) or lock
    if fh is not None:
        fh.close()


_held_locks: dict[str, object] = {}     # keeps each lock file open for the process's life


def read_events(run_dir, tail_bytes: int | None = None, head_bytes: int | None = None) -> list[dict]:
    """The run's events; torn or corrupt lines (e.g. the last one after a crash) are skipped.
    `head_bytes`: only the whole lines in the file's first bytes (the started event)."""
    path = Path(run_dir) / "events.jsonl"
    try:
        with open(path, "rb") as fh:
            if head_bytes:
                raw = fh.read(head_bytes)
                raw = raw[:raw.rfind(b"\n") + 1]
            elif tail_bytes:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - tail_bytes))
                if size > tail_bytes:
                    fh.readline()            # drop the partial first line
            if not head_bytes:
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
    state = _field(status, "status", str, "") or "created"
    cause = _field(status, "cause", str, "")
    if state in ACTIVE and not pid_alive(status.get("pid"), status.get("pid_start")):
        state, cause = "failed (process died)", cause or "the training process ended without a word"
    created = _created_from_name(run_dir.name)
    return RunInfo(
        path=run_dir, name=_field(status, "name", str, "") or run_dir.name,
        status=state, step=_field(status, "step", int, 0),
        total_steps=_field(status, "total_steps", int, None),
        last_loss=_field(status, "last_loss", float, None),
        eval_loss=_field(status, "eval_loss", float, None),
        created=_field(status, "created", str, "") or created,
        method=_field(status, "method", str, "") or "?", model=_field(status, "model", str, "") or "?",
        cause=cause, adapter_path=_field(status, "adapter_path", str, "") or "")


class _BadField(ValueError):
    pass


def _field(status: dict, key: str, kind, default):
    """status[key] as `kind` (default when missing / null); _BadField naming the key otherwise."""
    value = status.get(key)
    if value is None:
        return default
    if kind is str and isinstance(value, str):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise _BadField(f"status.json: '{key}' is {json.dumps(value)[:40]}, not "
                    f"{ {str: 'text', int: 'a whole number', float: 'a number'}[kind] }")


def unreadable_run(run_dir, reason: str) -> RunInfo:
    """What list_runs shows for a run folder whose files cannot be read (the others still show)."""
    run_dir = Path(run_dir)
    return RunInfo(path=run_dir, name=run_dir.name, status="unreadable", step=0, total_steps=None,
                   last_loss=None, eval_loss=None, created=_created_from_name(run_dir.name),
                   method="?", model="?", cause=f"unreadable: {reason}")


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
                try:
                    runs.append(run_info(child))
                except Exception as err:    # noqa: BLE001 - one bad run never hides the others
                    reason = str(err) if isinstance(err, _BadField) else (
                        f"{type(err).__name__}: {err}")
                    runs.append(unreadable_run(child, reason))
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
            if _evaluation_ok(item):
                out.append(item)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return out


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _interval(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(map(_number, value))


def _evaluation_ok(item: dict) -> bool:
    """The fields format_evaluation shows have their types (a hand-edited or foreign file with
    "score": "high" is skipped like a torn one, instead of breaking the Runs page later)."""
    diff = item["difference"]
    return (isinstance(item["task"], str) and _number(item["n"]) and _number(item["score"])
            and _interval(item["ci95"])
            and (diff is None or (isinstance(diff, dict) and _number(diff.get("mean"))
                                  and _interval(diff.get("ci95"))
                                  and _number(item["base_score"]))))


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
