"""Export a run's adapter (or any adapter folder) as an adapter, a merged model, GGUF or an
Ollama folder, and show the parity verdict and table when it is done.

Opened from the Runs page ("Export…") and from Tools > Export adapter. The export runs as a
background process of the CLI (`peft-studio export SOURCE --to DIR --format F --progress-json`),
so the window stays responsive, Cancel kills it (the export writes into a staging folder, so a
cancelled export leaves nothing at the target) and a crash there cannot take the window down.
No torch here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PySide6.QtCore import QUrl, Qt, Signal
from PySide6.QtGui import QColor, QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QFormLayout, QHBoxLayout, QHeaderView, QLabel, QProgressBar,
    QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from studio import paths
from studio.ui import theme
from studio.ui.cli_process import CliDialog, CliProcess, parse_progress
from studio.ui.widgets import InlineMessage, PathPicker, button

FORMAT_TITLES = {"adapter": "Adapter (PEFT folder + model card)",
                 "merged": "Merged model (transformers folder)",
                 "gguf": "GGUF (llama.cpp)", "ollama": "Ollama (GGUF + Modelfile)"}
PARITY_ROWS = ["Reference", "Export", "Precision", "Max |logit diff|", "Top-1 agreement",
               "Same greedy answers", "Perplexity (reference)", "Perplexity (export)", "Verdict"]
PHASE_TEXT = {"plan": "Starting …", "reference": "Measuring the adapter on its base model",
              "merging": "Merging the adapter into the base weights", "writing": "Writing files",
              "checking": "Reloading the export and comparing",
              "converting": "Converting to GGUF with llama.cpp",
              "checking gguf": "Running the GGUF in llama.cpp and comparing",
              "gguf lora": "Converting the adapter alone to a GGUF LoRA and checking it",
              "modelfile": "Writing the Ollama Modelfile", "done": "Finishing"}


def default_target(source: str, fmt: str) -> str:
    name = Path(source).name if Path(source).name != "adapter" else Path(source).parent.name
    return str(paths.data_dir() / "exports" / f"{name}-{fmt}")


class ExportDialog(CliDialog):
    exported = Signal(str)           # the export folder, once finished

    def __init__(self, parent: QWidget | None = None, source: str = "",
                 model_path: str | None = None, python: str | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export")
        self.resize(1000, 620)
        self.model_path = model_path
        self.python = python or sys.executable
        self.process: CliProcess | None = None
        self.result: dict | None = None
        self.target_path: Path | None = None
        self._log: list[str] = []
        self._stopped = False
        self._installing = False
        self._build(source)

    # ---- layout ---------------------------------------------------------------------------
    def _build(self, source: str) -> None:
        outer = QVBoxLayout(self)
        intro = QLabel("Export the adapter as it is, merged into its base model, as GGUF for "
                       "llama.cpp or as an Ollama folder. Every export is checked against the "
                       "adapter on its base model on the run's eval examples (parity report).")
        intro.setWordWrap(True)
        outer.addWidget(intro)
        form = QFormLayout()
        self.source = PathPicker("folder", "Choose a run or an adapter folder",
                                 placeholder="a run folder or an adapter folder")
        self.source.set_path(source, emit=False)
        self.source.changed.connect(lambda _p: self._refresh())
        form.addRow("Adapter", self.source)
        self.format = QComboBox()
        for key, title in FORMAT_TITLES.items():
            self.format.addItem(title, key)
        self.format.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.format.currentIndexChanged.connect(lambda _i: self._format_changed())
        form.addRow("Format", self.format)
        row = QHBoxLayout()
        row.addWidget(QLabel("Weights"))
        self.dtype = QComboBox()
        self.dtype.addItems(["fp32", "bf16", "fp16"])
        self.dtype.setToolTip("Precision of the merged weights (fp32 reproduces the adapter exactly)")
        self.dtype.currentIndexChanged.connect(lambda _i: self._refresh())
        row.addWidget(self.dtype)
        row.addSpacing(12)
        row.addWidget(QLabel("GGUF type"))
        self.quant = QComboBox()
        from studio.export.gguf import QUANT_TYPES
        self.quant.addItems(list(QUANT_TYPES))
        self.quant.setCurrentText("q8_0")
        self.quant.currentIndexChanged.connect(lambda _i: self._refresh())
        row.addWidget(self.quant)
        row.addSpacing(12)
        row.addWidget(QLabel("Parity prompts"))
        self.prompts = QSpinBox()
        self.prompts.setRange(1, 200)
        self.prompts.setValue(8)
        self.prompts.setToolTip("How many of the run's eval examples the parity report compares on")
        row.addWidget(self.prompts)
        row.addStretch(1)
        form.addRow("Options", row)
        self.target = PathPicker("folder", "Choose the export folder (new or empty)",
                                 placeholder="a new folder; a previous export there is replaced")
        self.target.set_path(default_target(source, "merged") if source else "", emit=False)
        self.target.changed.connect(lambda _p: self._refresh())
        form.addRow("Export to", self.target)
        outer.addLayout(form)
        self.estimate_line = QLabel("")
        self.estimate_line.setWordWrap(True)
        self.estimate_line.setObjectName("Muted")
        outer.addWidget(self.estimate_line)

        buttons = QHBoxLayout()
        self.run_button = button("Export", kind="primary", icon_name="save")
        self.run_button.clicked.connect(self.start)
        self.stop_button = button("Cancel", icon_name="stop")
        self.stop_button.clicked.connect(self.stop)
        self.install_button = button("Install GGUF support", icon_name="play")
        self.install_button.clicked.connect(self.install_gguf)
        self.open_button = button("Open folder", icon_name="folder")
        self.open_button.clicked.connect(self.open_folder)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        for widget in (self.run_button, self.stop_button, self.install_button):
            buttons.addWidget(widget)
        buttons.addWidget(self.progress, 1)
        buttons.addWidget(self.open_button)
        outer.addLayout(buttons)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        outer.addWidget(self.status)
        self.message = InlineMessage()
        outer.addWidget(self.message)
        self.verdict = QLabel("")
        self.verdict.setWordWrap(True)
        self.verdict.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        outer.addWidget(self.verdict)
        # one column per comparison (adapter -> export, merged -> GGUF, ...), one row per figure:
        # stays readable at 1024 px where nine columns were clipped
        self.table = QTableWidget(len(PARITY_ROWS), 0)
        self.table.setVerticalHeaderLabels(PARITY_ROWS)
        self.table.horizontalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(True)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        outer.addWidget(self.table, 1)
        self.notes = QLabel("")
        self.notes.setWordWrap(True)
        self.notes.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        outer.addWidget(self.notes)
        self._format_changed()

    # ---- state ----------------------------------------------------------------------------
    def fmt(self) -> str:
        return self.format.currentData()

    def _format_changed(self) -> None:
        source = self.source.path()
        target = self.target.path()
        if source and (not target or any(target == default_target(source, f)
                                         for f in FORMAT_TITLES)):
            self.target.set_path(default_target(source, self.fmt()), emit=False)
        self._refresh()

    def problem(self) -> str:
        """Why Export cannot start yet ('' when it can); also fills the estimate line."""
        from studio.errors import UserError
        from studio.export import api, gguf, source

        self.estimate_line.setText("")
        if not self.source.path():
            return "Choose a run folder or an adapter folder."
        if not self.target.path():
            return "Choose the folder to export into."
        try:
            adapter_dir, _run, _recipe, base = source.locate(self.source.path(), self.model_path)
            peft_type = str(source.read_adapter_config(adapter_dir).get("peft_type", "")).upper()
            if self.fmt() != "adapter" and peft_type in source.PROMPT_LEARNING:
                return (f"cannot merge {peft_type.lower()}: prompt-learning adapters have no "
                        "weights to fold in; choose the Adapter format instead.")
            plan = api.estimate(base, adapter_dir, self.fmt(), self.dtype.currentText(),
                                self.quant.currentText())
        except UserError as err:
            return str(err)
        self.estimate_line.setText(plan["text"])
        if self.fmt() in ("gguf", "ollama") and gguf.missing_tools():
            return ("GGUF export needs llama.cpp's tools, which are not installed. Install GGUF "
                    f"support ({gguf.INSTALL_COST}), or run `{gguf.INSTALL_COMMAND}`.")
        return ""

    def _refresh(self) -> None:
        self._update_buttons()

    def _update_buttons(self) -> None:
        running = self.is_running()
        problem = "" if running else self.problem()
        fmt = self.fmt()
        self.run_button.setEnabled(not running and not problem)
        self.stop_button.setEnabled(running)
        from studio.export.gguf import missing_tools
        self.install_button.setVisible(fmt in ("gguf", "ollama") and bool(missing_tools()))
        self.install_button.setEnabled(not running)
        self.dtype.setEnabled(not running and fmt == "merged")
        self.quant.setEnabled(not running and fmt in ("gguf", "ollama"))
        for widget in (self.source, self.target, self.format, self.prompts):
            widget.setEnabled(not running)
        self.open_button.setEnabled(self.target_path is not None and self.target_path.is_dir())
        if not running:
            self.run_button.setToolTip(problem)
            if problem:
                self.message.show_info(problem)
            elif self.message.kind() == "info":
                self.message.clear_message()

    # ---- running --------------------------------------------------------------------------
    def command(self) -> list[str]:
        args = ["-m", "studio.cli", "export", self.source.path(), "--to", self.target.path(),
                "--format", self.fmt(), "--parity-prompts", str(self.prompts.value()),
                "--progress-json"]
        if self.fmt() == "merged":
            args += ["--dtype", self.dtype.currentText()]
        if self.fmt() in ("gguf", "ollama"):
            args += ["--quant", self.quant.currentText()]
        if self.model_path:
            args += ["--model", self.model_path]
        return args

    def _launch(self, args: list[str], status: str) -> None:
        self.result = None
        self.table.setColumnCount(0)
        self.verdict.setText("")
        self.notes.setText("")
        self.message.clear_message()
        self.progress.setValue(0)
        self._log, self._stopped = [], False
        self.process = CliProcess(self, self.python)
        self.process.line.connect(self.handle_line)
        self.process.finished.connect(self._finished)
        self.process.failed_to_start.connect(self._failed_to_start)
        self.status.setText(status)
        self.process.start(args)
        self._update_buttons()

    def start(self) -> None:
        if self.is_running() or self.problem():
            return
        self._installing = False
        self.target_path = Path(self.target.path()).expanduser()
        self.target_path.parent.mkdir(parents=True, exist_ok=True)
        self._launch(self.command(), "Loading the model …")

    def install_gguf(self) -> None:
        if self.is_running():
            return
        self._installing = True
        self._launch(["-m", "studio.cli", "setup", "--gguf"],
                     "Installing GGUF support (builds llama.cpp: about 10 minutes) …")
        self.progress.setRange(0, 0)

    def stop(self) -> None:
        if self.is_running():
            self.status.setText("Cancelling …")
            self._stopped = True
            # SIGTERM first: the export removes its staging folder; SIGKILL after 5 s
            self.process.stop(grace_ms=5000)

    def handle_line(self, line: str) -> None:
        info = parse_progress(line)
        if info is None:
            if line.strip():
                self._log.append(line)
                if self._installing:
                    self.status.setText(line.strip()[:200])
            return
        phase = info.get("phase", "")
        if phase == "plan":
            self.estimate_line.setText(info.get("text", ""))
        from studio.export.api import phases_for
        phases = phases_for(self.fmt())
        if phase in phases:
            k = phases.index(phase)
            done, total = float(info.get("done", 0)), max(1.0, float(info.get("total", 1)))
            self.progress.setValue(int(1000 * (k + min(1.0, done / total)) / len(phases)))
            self.status.setText(f"{PHASE_TEXT.get(phase, phase)} … ({int(done)}/{int(total)})")

    def _finished(self, code: int) -> None:
        self.progress.setRange(0, 1000)
        if self._installing:
            self._installing = False
            self.status.setText("GGUF support installed." if code == 0 else
                                f"Installing GGUF support failed (exit code {code}).")
            if code != 0 and self._log:
                self.message.show_error("\n".join(self._log[-6:]))
        elif code == 0 and self.target_path is not None:
            try:
                self.show_report(json.loads((self.target_path / "parity.json").read_text(
                    encoding="utf-8")))
            except (OSError, ValueError) as exc:
                self.message.show_error(f"{self.target_path}: the parity report could not be "
                                        f"read ({exc}).")
            else:
                self.progress.setValue(1000)
                ollama = [l for l in self._log if l.startswith("register with Ollama:")]
                self.status.setText(f"Exported to {self.target_path}" +
                                    (f"\n{ollama[-1]}" if ollama else ""))
                self.exported.emit(str(self.target_path))
        else:
            self.report_failure(code, "export", "Not exported.",
                                "Cancelled: nothing was written at the target.")
        self._update_buttons()

    # ---- results --------------------------------------------------------------------------
    def show_report(self, report: dict) -> None:
        self.result = report
        verdict = report["verdict"]
        color = {"matches": theme.SUCCESS, "differs": theme.DANGER}.get(verdict, theme.WARNING)
        n = report["prompts"]
        self.verdict.setText(f"<span style='color:{color}'><b>Verdict: {verdict}</b></span> "
                             f"— {n} prompt{'s' if n != 1 else ''} from {report['examples_from']}.")
        comparisons = report["comparisons"]
        self.table.setColumnCount(len(comparisons))
        for col, c in enumerate(comparisons):
            cells = [c["reference"], c["export"], c["precision"],
                     _num(c["max_abs_logit_diff"], ".3g"), _num(c["top1_agreement"], ".2%"),
                     f"{c['identical_greedy_answers']}/{c['prompts']}",
                     _num(c["perplexity_reference"], ".4f"), _num(c["perplexity_export"], ".4f"),
                     c["verdict"]]
            for row, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(c["why"] if row == len(cells) - 1 else text)
                if row == len(cells) - 1:
                    item.setForeground(QColor({"matches": theme.SUCCESS, "differs": theme.DANGER}
                                              .get(c["verdict"], theme.WARNING)))
                self.table.setItem(row, col, item)
        self.table.resizeRowsToContents()
        self.notes.setText("\n".join([c["why"] for c in report["comparisons"]
                                      if c["verdict"] != "matches"] + report.get("notes", [])[1:]))

    def open_folder(self) -> None:
        if self.target_path is not None and self.target_path.is_dir():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.target_path)))


def _num(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def open_dialog(window, source: str = "", model_path: str | None = None) -> ExportDialog:
    """Tools > Export adapter, or the Runs page's Export… button."""
    dialog = ExportDialog(window, source=source, model_path=model_path)
    dialog.show()
    return dialog
