"""The training process: `python -m studio.worker.child RUN_DIR [--resume]`.

Reads RUN_DIR/recipe.toml and trains. Every event goes to stdout as one JSON line (for the parent)
and to RUN_DIR/events.jsonl + status.json (for anyone reading later). Commands arrive on stdin, one
JSON line each: {"command": "pause" | "resume" | "cancel"}. SIGTERM counts as cancel.
Exit code 0 after finished/cancelled, 1 after failed (the `failed` event says why).

Anything else the libraries print goes to stderr (worker.log), so stdout carries events only.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

from studio.errors import UserError
from studio.core import events

TRACEBACK_LINES = 25


class EventSink:
    """Writes events to the private stdout channel and to the run folder."""

    def __init__(self, run_dir: Path, channel) -> None:
        from studio.core.runs import RunLog

        self.log = RunLog(run_dir, pid=os.getpid())
        self.channel = channel
        self.lock = threading.Lock()

    def __call__(self, event: dict) -> None:
        with self.lock:
            if event.get("event") == "failed":
                self.log.record_failure(event)    # a full disk must not hide why the run ended
            else:
                self.log.append(event)
            if self.channel is not None:
                try:
                    self.channel.write(events.encode(event))
                    self.channel.flush()
                except (BrokenPipeError, OSError, ValueError):
                    self.channel = None       # parent gone: keep training, the run folder has it


def read_commands(stream, control) -> None:
    """Stdin reader thread: apply commands until EOF (a closed stdin does not stop training)."""
    for line in stream:
        if not line.strip():
            continue
        try:
            name = events.parse_command(line)
        except events.MessageError as err:
            print(f"ignored input: {err}", file=sys.stderr, flush=True)
            continue
        getattr(control, name)()


def describe_failure(err: BaseException) -> tuple[str, str]:
    """(cause, traceback tail) for a failed event."""
    if isinstance(err, UserError):
        return str(err), ""
    tail = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    tail = "\n".join(tail.rstrip().splitlines()[-TRACEBACK_LINES:])
    cause = f"{type(err).__name__}: {err}".strip()
    if "out of memory" in str(err).lower():
        cause += (" — the model, batch or sequences do not fit in memory. Fix: lower "
                  "training.batch_size or data.max_length, turn on gradient_checkpointing, or "
                  "load the model in 4bit.")
    return cause, tail


def quiet_library_noise() -> None:
    """bitsandbytes warns at import that an optional hub kernel is missing; CPU 4-bit works
    without it (and the hub is not reachable anyway), so keep it out of the user's output."""
    import logging

    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def _private_stdout():
    """Duplicate the real stdout for events and point fd 1 at stderr for everything else."""
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "w", encoding="utf-8", buffering=1)


def _refuse(channel, err: BaseException) -> int:
    """Report a refusal to the parent only (stdout channel + stderr), not to the run folder."""
    cause, tail = describe_failure(err)
    print(tail or cause, file=sys.stderr, flush=True)
    try:
        channel.write(events.encode(events.failed(cause, tail, user_error=isinstance(err, UserError))))
        channel.flush()
    except (OSError, ValueError):
        pass
    return 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio.worker.child")
    parser.add_argument("run_dir")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    quiet_library_noise()
    channel = _private_stdout()
    from studio.core.runs import RunFinished, lock_run

    try:
        lock_run(run_dir)          # held until this process ends (the OS releases it on a crash)
    except (UserError, OSError) as err:
        # another process trains this run: its status and events are not ours to touch
        return _refuse(channel, err)
    emit = EventSink(run_dir, channel)
    try:
        from studio.core.recipe import Recipe
        from studio.core.training import Control, run_training

        control = Control()
        threading.Thread(target=read_commands, args=(sys.stdin, control), daemon=True,
                         name="commands").start()
        signal.signal(signal.SIGTERM, lambda *_: control.cancel())
        from studio.worker.hyper_jobs import is_hyper_run, run_hyper_job

        if is_hyper_run(run_dir):                   # a hypernetwork training run (Generate page)
            run_hyper_job(run_dir, emit, control)
            return 0
        from studio.transfer.pipeline import is_transfer_run, run_transfer

        if is_transfer_run(run_dir):                # stages, then training on the target model
            run_transfer(run_dir, emit, control, resume=args.resume)
            return 0
        recipe = Recipe.load(run_dir / "recipe.toml")
        run_training(recipe, run_dir, emit, control, resume=args.resume)
    except RunFinished as err:    # refused before training: the run stays finished
        return _refuse(channel, err)
    except BaseException as err:  # noqa: BLE001 - every failure becomes a `failed` event
        cause, tail = describe_failure(err)
        print(tail or cause, file=sys.stderr, flush=True)
        emit(events.failed(cause, tail, user_error=isinstance(err, UserError)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
