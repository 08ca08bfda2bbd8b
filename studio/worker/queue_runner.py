"""Run the job queue: its jobs one after another, each in its own training process. No Qt.

    runner = QueueRunner(JobQueue(), on_event=print_it)
    runner.open()                 # takes the queue's runner lock (UserError if another process has it)
    while runner.tick():          # call every ~0.5 s (the GUI from a QTimer, the CLI in a loop)
        time.sleep(0.5)
    runner.close()

tick() reads the current job's events (studio.core.events, from studio.worker.launcher.Job), writes
each job's status and step to the queue file as it changes, and starts the next queued job when
the current one ends. stop() lets the current job finish and starts no more; cancel_current()
cancels it (checkpoint kept). A job's training process outlives a crash of the runner; the queue
then shows the job by what its run says (studio.core.job_queue).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from studio.core import events
from studio.core.job_queue import JobQueue
from studio.errors import UserError
from studio.worker.launcher import Job

TERMINAL_STATUS = {"finished": "finished", "failed": "failed", "cancelled": "cancelled"}


class QueueRunner:
    def __init__(self, queue: JobQueue | None = None,
                 on_event: Callable[[dict, dict], None] | None = None,
                 runs_base: str | Path | None = None, python: str | None = None) -> None:
        self.queue = queue or JobQueue()
        self.on_event = on_event or (lambda job, event: None)
        self.runs_base = Path(runs_base) if runs_base else None
        self.python = python
        self.current: dict | None = None      # the queue entry being trained
        self.job: Job | None = None
        self.stopping = False                 # finish the current job, start no more
        self.interrupting = False             # the current job is cancelled because we close
        self._lock = None
        self._pending: dict = {}
        self._written_at = 0.0

    # ---- life --------------------------------------------------------------------------
    def open(self) -> "QueueRunner":
        if self._lock is None:
            lock = self.queue.runner_lock()
            lock.__enter__()               # UserError when another process runs the queue
            self._lock = lock
        self.stopping = False
        return self

    def close(self) -> None:
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None

    @property
    def is_open(self) -> bool:
        return self._lock is not None

    def busy(self) -> bool:
        return self.job is not None

    def stop(self) -> None:
        """Finish the current job and start no other."""
        self.stopping = True

    def cancel_current(self, interrupt: bool = False) -> None:
        """Cancel the job being trained (it checkpoints). interrupt=True marks it interrupted
        (resumable) instead of cancelled: the queue stopped, not the user's choice for the job."""
        self.interrupting = interrupt
        if self.job is not None:
            self.job.cancel()

    # ---- the loop ------------------------------------------------------------------------
    def tick(self) -> bool:
        """One round: events of the current job, then the next job when idle. True while there
        is (or may be) more to do: a job runs, or jobs are queued and we are not stopping."""
        if self.job is not None:
            self._drain()
        if self.job is None and not self.stopping and self.is_open:
            self._start_next()
        return self.job is not None or (not self.stopping and self._has_queued())

    def _has_queued(self) -> bool:
        return any(j["status"] == "queued" for j in self.queue.jobs())

    def _start_next(self) -> None:
        from studio.core import runs
        from studio.core.recipe import Recipe

        while True:
            entry = self.queue.claim_next()
            if entry is None:
                return
            try:
                if entry.get("resume") and entry.get("run_dir"):
                    run_dir = Path(entry["run_dir"])
                else:
                    recipe = Recipe.load(entry["recipe"]).validate()
                    run_dir = runs.create_run(recipe, base=self.runs_base)
                self.queue.update(entry["id"], run_dir=str(run_dir))
                entry["run_dir"] = str(run_dir)
                job = Job(python=self.python)
                job.start(run_dir, resume=bool(entry.get("resume")))
            except UserError as err:          # a bad recipe or a missing file: this job only
                failed = self.queue.update(entry["id"], status="failed", ended=time.time(),
                                           message=str(err))
                self.on_event(failed or entry, events.failed(str(err), "", user_error=True))
                continue
            self.current, self.job, self.interrupting, self._pending = entry, job, False, {}
            return

    def _drain(self) -> None:
        entry, job, pending = self.current, self.job, self._pending
        for event in job.poll_events():
            self.on_event(entry, event)
            name = event["event"]
            if name == "started":
                pending["total_steps"] = event["total_steps"]
            elif name in ("log", "finished", "cancelled"):
                pending["step"] = event["step"]
            if name == "failed":
                pending["message"] = event.get("cause", "")
            if name in TERMINAL_STATUS:
                pending.update(status=TERMINAL_STATUS[name], ended=time.time())
                if name == "cancelled" and self.interrupting:
                    pending.update(status="interrupted",
                                   message=f"stopped with the queue at step {event['step']}; "
                                           "Requeue resumes it")
        now = time.monotonic()
        # a status change is written at once, the step at most every 2 s
        if pending and ("status" in pending or now - self._written_at >= 2.0):
            self.queue.update(entry["id"], **pending)
            self._written_at = now
            ended = "status" in pending
            self._pending = {}
            if ended:
                job.wait(30)
                self.current, self.job = None, None

    def run_all(self, poll_s: float = 0.5) -> None:
        """Run until the queue is empty (or stop() was called and the current job ended)."""
        self.open()
        try:
            while self.tick():
                time.sleep(poll_s)
        finally:
            self.close()
