"""The event protocol: every message between a training process and its parent: events (child -> parent, also
appended to the run's events.jsonl) and commands (parent -> child on stdin). One JSON object per
line. No Qt, no torch.

Events carry "event" and "time" (Unix seconds) plus their fields:
  started    run_dir, total_steps, trainable_params, total_params   (+ resumed_from, device, ...)
  log        step, epoch, loss, lr, grad_norm, tokens_per_s, memory_mb, eta_s  (+ progress 0..1;
             lr is the rate the step used; memory_mb: CUDA peak, or the process RSS on CPU;
             tokens: the examples' tokens, no padding, gone through since step 0, a resume
             included: the "tokens seen" axis of the Compare page)
  eval       step, eval_loss
  checkpoint step, path
  paused     step
  resumed    step
  cancelled  step, checkpoint
  finished   step, adapter_path, metrics
  failed     cause, traceback_tail
  phase      phase ("training" | "evaluating" | "saving"), step  (+ done, total while it lasts):
             what the run is doing between logged steps, so a long evaluation is not silence
  stage      stage, state ("running" | "done")  (+ done, total, title, summary): a step of work
             before training starts, e.g. a transfer's seeds / generate / filter / teach
Commands: {"command": "pause" | "resume" | "cancel"}.

Also the one machine-readable progress line a CLI command prints for the GUI (``--progress-json``):
``PROGRESS_PREFIX`` + a JSON object, written by ``progress_line`` and read by ``parse_progress``.
This module is in core (not the worker) so the training loop, the hypernetwork trainer and the
worker all speak it without importing each other.
"""

from __future__ import annotations

import json
import math
import time

REQUIRED: dict[str, tuple[str, ...]] = {
    "started": ("run_dir", "total_steps", "trainable_params", "total_params"),
    "log": ("step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s", "memory_mb", "eta_s"),
    "eval": ("step", "eval_loss"),
    "checkpoint": ("step", "path"),
    "paused": ("step",),
    "resumed": ("step",),
    "cancelled": ("step", "checkpoint"),
    "finished": ("step", "adapter_path", "metrics"),
    "failed": ("cause", "traceback_tail"),
    "phase": ("phase", "step"),
    "stage": ("stage", "state"),
}
PHASES = ("training", "evaluating", "saving")
EVENTS = tuple(REQUIRED)
TERMINAL = frozenset({"finished", "failed", "cancelled"})
COMMANDS = ("pause", "resume", "cancel")


class MessageError(ValueError):
    """A line that is not a valid event or command."""


PROGRESS_PREFIX = "@progress "


def progress_line(info: dict) -> str:
    """One ``@progress {...}`` line (no newline) for a CLI command's --progress-json output."""
    return PROGRESS_PREFIX + json.dumps(info, default=str)


def event(name: str, **fields) -> dict:
    """Any event: its name, the time now and its fields (the helpers below add the checks)."""
    return {"event": name, "time": time.time(), **fields}


def parse_progress(line: str) -> dict | None:
    """The JSON of an '@progress {...}' line; None for any other line (or a garbled one)."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    try:
        info = json.loads(line[len(PROGRESS_PREFIX):])
    except ValueError:
        return None
    return info if isinstance(info, dict) else None





def started(run_dir: str, total_steps: int, trainable_params: int, total_params: int,
            **extra) -> dict:
    return event("started", run_dir=str(run_dir), total_steps=int(total_steps),
                  trainable_params=int(trainable_params), total_params=int(total_params), **extra)


def log(step: int, epoch: float, loss: float, lr: float, grad_norm: float | None,
        tokens_per_s: float, memory_mb: float, eta_s: float, **extra) -> dict:
    return event("log", step=int(step), epoch=round(float(epoch), 4), loss=float(loss),
                  lr=float(lr), grad_norm=None if grad_norm is None else float(grad_norm),
                  tokens_per_s=round(float(tokens_per_s), 1), memory_mb=round(float(memory_mb), 1),
                  eta_s=round(float(eta_s), 1), **extra)


def eval_result(step: int, eval_loss: float, **extra) -> dict:
    return event("eval", step=int(step), eval_loss=float(eval_loss), **extra)


def checkpoint(step: int, path: str) -> dict:
    return event("checkpoint", step=int(step), path=str(path))


def paused(step: int) -> dict:
    return event("paused", step=int(step))


def resumed(step: int) -> dict:
    return event("resumed", step=int(step))


def cancelled(step: int, checkpoint: str | None) -> dict:
    return event("cancelled", step=int(step),
                  checkpoint=None if checkpoint is None else str(checkpoint))


def finished(step: int, adapter_path: str, metrics: dict) -> dict:
    return event("finished", step=int(step), adapter_path=str(adapter_path), metrics=dict(metrics))


def failed(cause: str, traceback_tail: str = "", **extra) -> dict:
    return event("failed", cause=str(cause), traceback_tail=str(traceback_tail), **extra)


def phase(name: str, step: int, done: int | None = None, total: int | None = None) -> dict:
    if name not in PHASES:
        raise MessageError(f"unknown phase {name!r} (expected one of {', '.join(PHASES)})")
    extra = {} if total is None else {"done": int(done or 0), "total": int(total)}
    return event("phase", phase=name, step=int(step), **extra)


STAGE_STATES = ("running", "done")


def stage(name: str, state: str, done: int | None = None, total: int | None = None,
          **extra) -> dict:
    if state not in STAGE_STATES:
        raise MessageError(f"unknown stage state {state!r} (expected one of "
                           f"{', '.join(STAGE_STATES)})")
    counts = {} if total is None else {"done": int(done or 0), "total": int(total)}
    return event("stage", stage=str(name), state=state, **counts, **extra)


def command(name: str) -> dict:
    if name not in COMMANDS:
        raise MessageError(f"unknown command {name!r} (expected one of {', '.join(COMMANDS)})")
    return {"command": name}


def _clean(value):
    """NaN/inf floats become None so every line is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def encode(message: dict) -> str:
    """One line of strict JSON with a trailing newline."""
    return json.dumps(_clean(message), ensure_ascii=False, allow_nan=False) + "\n"


def validate_event(message: dict) -> dict:
    if not isinstance(message, dict):
        raise MessageError("an event must be a JSON object")
    name = message.get("event")
    if name not in REQUIRED:
        raise MessageError(f"unknown event {name!r}")
    missing = [key for key in REQUIRED[name] if key not in message]
    if missing:
        raise MessageError(f"{name} event lacks {', '.join(missing)}")
    if not isinstance(message.get("time"), (int, float)):
        raise MessageError(f"{name} event has no time")
    return message


def parse_event(line: str | bytes) -> dict:
    """A checked event from one line; MessageError when it is not one."""
    try:
        message = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MessageError(f"not JSON: {err}") from None
    return validate_event(message)


def parse_command(line: str | bytes) -> str:
    """The command name from one line; MessageError when it is not one."""
    try:
        message = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MessageError(f"not JSON: {err}") from None
    if not isinstance(message, dict) or message.get("command") not in COMMANDS:
        raise MessageError(f"not a command: {str(line).strip()[:80]}")
    return message["command"]
