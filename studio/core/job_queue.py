"""The job queue: runs waiting to train one after another, stored on disk. No Qt, no processes
(studio.worker.queue_runner runs them).

    queue = JobQueue()                     # data_dir()/queue/: queue.json + one recipe per job
    job = queue.add(recipe)                # a frozen copy of the recipe (absolute paths)
    queue.move(job["id"], -1); queue.remove(job["id"])
    for job in queue.jobs(): ...           # in order, each with its status

Every change is a read-modify-write of queue.json under an OS lock (queue.lock) and an atomic
replace, so the GUI and `peft-studio queue` can edit the same queue at once and a crash never
leaves half a file. A job's status: queued -> running -> finished | failed | cancelled; a job that
was running when its runner died (the app closed or crashed) reads as `interrupted` with the step
its run reached; `requeue` puts it back (resuming from its checkpoint when it has one). Nothing
restarts by itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from pathlib import Path

from studio import paths
from studio.errors import UserError
from studio.fileio import write_json_atomic

QUEUE_FILE = "queue.json"
LOCK_FILE = "queue.lock"
RUNNER_LOCK = "runner.lock"
VERSION = 1
STATUSES = ("queued", "running", "finished", "failed", "cancelled", "interrupted")
DONE = ("finished", "failed", "cancelled", "interrupted")


def queue_dir() -> Path:
    return paths.data_dir() / "queue"


def _locked(path: Path, blocking: bool = True):
    """An open file holding an OS flock on `path`; None when non-blocking and someone holds it."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError:
        fh.close()
        return None
    return fh


class JobQueue:
    """One queue folder (default: data_dir()/queue)."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder else queue_dir()
        self.file = self.folder / QUEUE_FILE

    # ---- reading ------------------------------------------------------------------------
    def _read(self) -> list[dict]:
        try:
            text = self.file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        try:
            data = json.loads(text)
        except ValueError as err:
            raise UserError(f"the queue file is not valid JSON ({err})", path=self.file,
                            fix="fix it by hand, or move it away to start an empty queue "
                                "(the recipes beside it are kept)") from None
        jobs = data.get("jobs") if isinstance(data, dict) else None
        if not isinstance(jobs, list) or not all(isinstance(j, dict) and "id" in j for j in jobs):
            raise UserError("the queue file has no list of jobs", path=self.file, field="jobs",
                            fix="move it away to start an empty queue")
        return jobs

    def jobs(self) -> list[dict]:
        """The jobs in order; a `running` job whose runner is gone reads as what its run says
        (finished, or interrupted at its step)."""
        with self._edit() as jobs:
            return [dict(j) for j in jobs]

    def get(self, job_id: str) -> dict:
        for job in self.jobs():
            if job["id"] == job_id:
                return job
        raise UserError(f"no job '{job_id}' in the queue", path=self.file,
                        fix="see `peft-studio queue list` for the job ids")

    def runner_alive(self) -> bool:
        """Some process (this one included) holds the runner lock: the queue is being run."""
        fh = _locked(self.folder / RUNNER_LOCK, blocking=False)
        if fh is None:
            return True
        fh.close()
        return False

    # ---- changing -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _edit(self):
        """The job list under the queue lock; written back (atomically) when it changed."""
        lock = _locked(self.folder / LOCK_FILE)
        try:
            jobs = self._read()
            before = json.dumps(jobs, sort_keys=True)
            self._reconcile(jobs)
            yield jobs
            if json.dumps(jobs, sort_keys=True) != before:
                write_json_atomic(self.file, {"version": VERSION, "jobs": jobs})
        finally:
            lock.close()

    def _reconcile(self, jobs: list[dict]) -> None:
        """A `running` job whose runner process is gone takes the state of its run: still running
        (its training process outlived the app), finished, or interrupted at its step."""
        from studio.core.runs import ACTIVE, pid_alive, read_status

        running = [j for j in jobs if j.get("status") == "running"]
        if not running:
            return
        free = not self.runner_alive()
        for job in running:
            if not free and pid_alive(job.get("runner_pid"), job.get("runner_start")):
                continue                       # its runner is alive and steering it
            run_dir = job.get("run_dir")
            status = read_status(run_dir) if run_dir and Path(run_dir).is_dir() else {}
            if status.get("status") in ACTIVE and pid_alive(status.get("pid"), status.get("pid_start")):
                job["message"] = "its runner is gone; the training process still runs"
                continue
            job["step"] = int(status.get("step") or 0)
            if status.get("status") == "finished":
                job.update(status="finished", ended=time.time(), message="")
            else:
                job.update(status="interrupted", ended=time.time(),
                           message=f"the queue stopped while this job ran (at step {job['step']}); "
                                   "Requeue resumes it")

    def add(self, recipe, resume_run: str | Path | None = None) -> dict:
        """Queue a frozen copy of `recipe` (checked first). `resume_run`: continue that run
        folder from its checkpoint instead of making a new one."""
        recipe = recipe.resolved()
        recipe.validate()
        job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.folder.mkdir(parents=True, exist_ok=True)
        recipe_path = recipe.save(self.folder / f"{job_id}.toml")
        job = {"id": job_id, "name": recipe.name, "method": recipe.method.id,
               "steps": recipe.training.max_steps, "recipe": str(recipe_path),
               "status": "queued", "run_dir": str(resume_run) if resume_run else None,
               "resume": bool(resume_run), "added": time.time(), "started": None, "ended": None,
               "step": 0, "message": ""}
        try:
            with self._edit() as jobs:
                jobs.append(job)
        except BaseException:
            recipe_path.unlink(missing_ok=True)
            raise
        return dict(job)

    def _find(self, jobs: list[dict], job_id: str) -> int:
        for i, job in enumerate(jobs):
            if job["id"] == job_id:
                return i
        raise UserError(f"no job '{job_id}' in the queue", path=self.file,
                        fix="see `peft-studio queue list` for the job ids")

    def remove(self, job_id: str) -> dict:
        """Take a job out (not a running one); its stored recipe copy goes too (the run folder,
        if it has one, stays)."""
        with self._edit() as jobs:
            i = self._find(jobs, job_id)
            if jobs[i]["status"] == "running":
                raise UserError(f"job '{job_id}' is running", path=self.file,
                                fix="cancel it first (Queue page, or Ctrl-C in `peft-studio "
                                    "queue run`), then remove it")
            job = jobs.pop(i)
        recipe = Path(job.get("recipe") or "")
        if recipe.parent == self.folder and recipe.suffix == ".toml":
            recipe.unlink(missing_ok=True)        # our own copy, written by add()
        return job

    def move(self, job_id: str, delta: int) -> int:
        """Move a job up (delta < 0) or down; returns its new index."""
        with self._edit() as jobs:
            i = self._find(jobs, job_id)
            j = max(0, min(len(jobs) - 1, i + delta))
            jobs.insert(j, jobs.pop(i))
            return j

    def requeue(self, job_id: str) -> dict:
        """Put a job that ended (interrupted, failed, cancelled, finished) back in the queue. One
        with a run folder and a checkpoint resumes it; otherwise it starts again from step 0."""
        from studio.core.runs import latest_checkpoint

        with self._edit() as jobs:
            job = jobs[self._find(jobs, job_id)]
            if job["status"] in ("queued", "running"):
                return dict(job)
            run_dir = job.get("run_dir")
            can_resume = bool(run_dir and Path(run_dir).is_dir() and latest_checkpoint(run_dir))
            job.update(status="queued", resume=can_resume, ended=None,
                       run_dir=run_dir if can_resume else None,
                       message=(f"resumes {Path(run_dir).name} from its checkpoint" if can_resume
                                else "starts again from step 0 (no checkpoint)"))
            return dict(job)

    def clear_done(self) -> int:
        """Remove the jobs that finished; returns how many."""
        done = [j["id"] for j in self.jobs() if j["status"] == "finished"]
        for job_id in done:
            self.remove(job_id)
        return len(done)

    # ---- for the runner (studio.worker.queue_runner) ---------------------------------------
    def claim_next(self) -> dict | None:
        """The first queued job, now marked running (None when nothing is queued)."""
        with self._edit() as jobs:
            for job in jobs:
                if job["status"] == "queued":
                    from studio.core.runs import _process_start

                    job.update(status="running", started=time.time(), ended=None, message="",
                               runner_pid=os.getpid(), runner_start=_process_start(os.getpid()))
                    return dict(job)
        return None

    def update(self, job_id: str, **fields) -> dict | None:
        """Set fields of a job (None when it is no longer in the queue)."""
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"unknown job status {fields['status']!r}")
        with self._edit() as jobs:
            for job in jobs:
                if job["id"] == job_id:
                    job.update(fields)
                    return dict(job)
        return None

    @contextlib.contextmanager
    def runner_lock(self):
        """Held by the one process that runs the queue; UserError when another holds it."""
        fh = _locked(self.folder / RUNNER_LOCK, blocking=False)
        if fh is None:
            raise UserError("the queue is already being run by another process (the app's Queue "
                            "page or `peft-studio queue run`)", path=self.folder,
                            fix="let that one run it, or stop it first")
        try:
            yield
        finally:
            fh.close()
