"""Start and steer a training process from the GUI (or any Python code). No Qt.

    job = Job.start(run_dir)            # python -m studio.worker.child RUN_DIR in its own process
    for event in job.poll_events(): ... # parsed events, never blocks
    job.pause(); job.resume(); job.cancel()   # commands on the child's stdin
    job.kill()                          # SIGKILL; the job then reports a `failed` event

If the process ends without a finished/failed/cancelled event (killed, out of memory, crashed),
the job writes a `failed` event with the exit code/signal and the tail of worker.log, both to its
queue and to the run folder, so every run ends with a reason.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

from studio import paths
from studio.core import events

LOG_TAIL_LINES = 30


def _exit_cause(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        cause = f"the training process was killed by {name}"
        if -returncode == signal.SIGKILL:
            cause += (" (by the user, or by the system when it ran out of memory — "
                      "if you did not stop it, lower batch_size or max_length)")
        return cause
    return f"the training process exited with code {returncode} without reporting why"


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


class _HybridStart:
    """`Job.start(run_dir)` makes and starts a job; `job.start(run_dir)` starts an existing one."""

    def __get__(self, instance, owner):
        if instance is None:
            return lambda run_dir, resume=False, **kw: owner(**kw)._start(run_dir, resume)
        return instance._start


class Job:
    """One training process for one run folder."""

    start = _HybridStart()

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable
        self.run_dir: Path | None = None
        self.process: subprocess.Popen | None = None
        self.events: queue.Queue[dict] = queue.Queue()
        self.terminal_event: dict | None = None
        self._reader: threading.Thread | None = None
        self._stdin_lock = threading.Lock()

    def _start(self, run_dir, resume: bool = False) -> "Job":
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("this job is already running")
        from studio.core.runs import check_not_running

        check_not_running(run_dir)       # UserError: another process is training this run
        self.run_dir = Path(run_dir)
        self.terminal_event = None
        cmd = [self.python, "-m", "studio.worker.child", str(self.run_dir)]
        if resume:
            cmd.append("--resume")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(paths.REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        with open(self.run_dir / "worker.log", "ab") as log:
            self.process = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
                cwd=str(self.run_dir), start_new_session=True)
        self._reader = threading.Thread(target=self._read, name=f"job-{self.process.pid}",
                                        daemon=True)
        self._reader.start()
        return self

    # ---- events --------------------------------------------------------------------------
    def _read(self) -> None:
        proc = self.process
        for raw in proc.stdout:
            try:
                event = events.parse_event(raw)
            except events.MessageError:
                continue
            if event["event"] in events.TERMINAL:
                self.terminal_event = event
            self.events.put(event)
        proc.stdout.close()
        code = proc.wait()
        if self.terminal_event is None:
            event = events.failed(_exit_cause(code), _tail(self.run_dir / "worker.log"),
                                    returncode=code)
            try:
                from studio.core.runs import RunLog

                RunLog(self.run_dir).append(event)
            except OSError:
                pass
            self.terminal_event = event
            self.events.put(event)

    def poll_events(self) -> list[dict]:
        """Every event that arrived since the last call (never blocks)."""
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the process and its reader; the exit code, or None on timeout."""
        if self._reader is not None:
            self._reader.join(timeout)
            if self._reader.is_alive():
                return None
        return self.returncode

    # ---- commands ------------------------------------------------------------------------
    def _send(self, name: str) -> bool:
        if not self.is_alive():
            return False
        with self._stdin_lock:
            try:
                self.process.stdin.write(events.encode(events.command(name)).encode())
                self.process.stdin.flush()
                return True
            except (BrokenPipeError, OSError, ValueError):
                return False

    def pause(self) -> bool:
        return self._send("pause")

    def resume(self) -> bool:
        return self._send("resume")

    def cancel(self) -> bool:
        """Graceful: the child checkpoints, reports `cancelled` and exits 0."""
        return self._send("cancel")

    def kill(self) -> None:
        """Immediate SIGKILL; the reader then reports a `failed` event."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()

    def is_alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid
