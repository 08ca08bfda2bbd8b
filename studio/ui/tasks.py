"""Run slow calls (imports of torch/transformers, tokenizers, model loading, generation) off the GUI
thread. Results come back as Qt signals, delivered on the GUI thread.

    run_async(fn, *args, on_done=callback, on_error=callback, on_progress=callback)

`on_error` receives the exception; its formatted traceback is on `exc.ui_traceback`. With
`on_progress`, fn is called with a `progress=` keyword: each `progress(value)` in the worker reaches
on_progress(value) on the GUI thread (streamed tokens, phases).
"""

from __future__ import annotations

import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

_POOL: QThreadPool | None = None
_ALIVE: set["_Relay"] = set()


def pool() -> QThreadPool:
    global _POOL
    if _POOL is None:
        _POOL = QThreadPool()
        _POOL.setMaxThreadCount(4)
    return _POOL


class _Signals(QObject):
    done = Signal(object)
    failed = Signal(object)
    progress = Signal(object)


class _Task(QRunnable):
    def __init__(self, fn: Callable, args: tuple, kwargs: dict) -> None:
        super().__init__()
        self.setAutoDelete(False)
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.signals = _Signals()

    def run(self) -> None:  # worker thread
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the GUI
            exc.ui_traceback = traceback.format_exc()  # type: ignore[attr-defined]
            self.signals.failed.emit(exc)
        else:
            self.signals.done.emit(result)


class _Relay(QObject):
    """Lives on the GUI thread, so the worker's signals reach it queued and callbacks run there."""

    def __init__(self, task: _Task, on_done, on_error, on_progress=None) -> None:
        super().__init__()
        self.task, self.on_done, self.on_error = task, on_done, on_error
        self.on_progress = on_progress

    @Slot(object)
    def progress(self, value) -> None:
        if self.on_progress is not None and self in _ALIVE:
            try:
                self.on_progress(value)
            except RuntimeError as exc:  # the page that asked was closed meanwhile
                if "already deleted" not in str(exc):
                    raise

    @Slot(object)
    def done(self, value) -> None:
        self._finish(self.on_done, value)

    @Slot(object)
    def failed(self, exc) -> None:
        self._finish(self.on_error, exc)

    def _finish(self, callback, value) -> None:
        _ALIVE.discard(self)
        if callback is not None:
            try:
                callback(value)
            except RuntimeError as exc:  # the page that asked was closed meanwhile
                if "already deleted" not in str(exc):
                    raise


def run_async(fn: Callable, *args: Any, on_done: Callable[[Any], None] | None = None,
              on_error: Callable[[BaseException], None] | None = None,
              on_progress: Callable[[Any], None] | None = None, **kwargs: Any) -> _Task:
    task = _Task(fn, args, kwargs)
    relay = _Relay(task, on_done, on_error, on_progress)
    if on_progress is not None:
        kwargs["progress"] = task.signals.progress.emit
        task.signals.progress.connect(relay.progress)
    task.signals.done.connect(relay.done)
    task.signals.failed.connect(relay.failed)
    _ALIVE.add(relay)
    pool().start(task)
    return task


def busy() -> int:
    """How many background tasks are still running (tests wait for 0)."""
    return len(_ALIVE)


def wait_all(msecs: int = 30000) -> bool:
    return pool().waitForDone(msecs)


def error_text(exc: BaseException) -> str:
    """What the user sees: a UserError's own text, otherwise the exception type and message."""
    from studio.errors import UserError

    if isinstance(exc, UserError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
