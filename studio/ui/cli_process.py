"""A `python -m studio.cli ...` child process for dialogs: output arrives line by line.

Used by the compare-methods and evaluation dialogs, which run the CLI in the background so the
window stays responsive and a crash there cannot take it down. No torch here.
"""

from __future__ import annotations


from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, Signal
from PySide6.QtWidgets import QDialog

from studio import paths


from studio.core.events import PROGRESS_PREFIX, parse_progress  # noqa: F401 - the dialogs read these

_NOISE = ("warnings.warn(", "FutureWarning", "UserWarning", "DeprecationWarning", "it/s]", "s/it]",
          "Loading weights", "Loading checkpoint shards", "Converting and de-quantizing")


def is_noise(line: str) -> bool:
    """Library chatter a dialog's log should not show: Python warnings, tqdm progress bars."""
    text = line.strip()
    return not text or "%|" in text or any(marker in text for marker in _NOISE)


class CliProcess(QObject):
    line = Signal(str)          # one line of merged stdout/stderr, without its newline
    finished = Signal(int)      # exit code, after the last line
    failed_to_start = Signal()

    def __init__(self, parent: QObject | None, python: str) -> None:
        super().__init__(parent)
        self.python = python
        self._buffer = b""
        self.process = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        env.insert("PYTHONPATH", str(paths.REPO_ROOT) + (
            ":" + env.value("PYTHONPATH") if env.value("PYTHONPATH") else ""))
        self.process.setProcessEnvironment(env)
        self.process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        self.process.readyReadStandardOutput.connect(self._read)
        self.process.finished.connect(self._finished)
        self.process.errorOccurred.connect(self._error)

    def start(self, args: list[str]) -> None:
        self.process.start(self.python, args)

    def is_running(self) -> bool:
        return self.process.state() != QProcess.ProcessState.NotRunning

    def stop(self, grace_ms: int = 0) -> None:
        """SIGTERM and up to `grace_ms` to finish (0: SIGKILL at once)."""
        if not self.is_running():
            return
        if grace_ms > 0:
            self.process.terminate()
            if self.process.waitForFinished(grace_ms):
                return
        self.process.kill()
        self.process.waitForFinished(10000)

    def _read(self) -> None:
        self._buffer += bytes(self.process.readAllStandardOutput())
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            self.line.emit(raw.decode("utf-8", errors="replace").rstrip("\r"))

    def _finished(self, code: int, _status) -> None:
        self._read()
        if self._buffer:
            self.line.emit(self._buffer.decode("utf-8", errors="replace").rstrip("\r"))
            self._buffer = b""
        self.finished.emit(code)

    def _error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self.failed_to_start.emit()


class CliDialog(QDialog):
    """Base of the dialogs that run the CLI in the background (`self.process`): closing the
    dialog stops the process. Subclasses have `python`, `status`, `stop()`, `_update_buttons()`."""

    process: CliProcess | None = None

    def is_running(self) -> bool:
        return self.process is not None and self.process.is_running()

    def _failed_to_start(self) -> None:
        self.status.setText(f"Could not start {self.python}")
        self._update_buttons()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        self.stop()
        super().closeEvent(event)

    def reject(self) -> None:
        self.stop()
        super().reject()

    def report_failure(self, code: int, what: str, refused: str, stopped: str) -> None:
        """What a child that did not succeed means, for subclasses with `_log`, `_stopped`,
        `message`: exit 2 is a refusal (its error line), a stop says so, else the log tail."""
        if code == 2:
            errors = [line for line in self._log if line.startswith("error")]
            self.message.show_error((errors or self._log or ["invalid settings"])[-1])
            self.status.setText(refused)
        elif self._stopped:
            self.status.setText(stopped)
        else:
            self.status.setText(f"The {what} process failed (exit code {code}).")
            if self._log:
                self.message.show_error("\n".join(self._log[-6:]))
