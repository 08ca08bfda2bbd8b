"""Evaluate an adapter on a BIG-bench task file: its score, the base model's on the same examples,
the paired difference with its 95% CI, and every example side by side.

Opened from the Runs page ("Evaluate on task…", for the selected run's adapter, trained or
generated) and from Tools > Evaluate on a task. The scoring runs as a background process of the
CLI (`peft-studio eval TASK --adapter DIR --against-base --json OUT --progress-json`), so the
window stays responsive, Stop ends it, and a crash there cannot take the window down. Results
are saved next to the run (evals/<task>-<time>.json). No torch here.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView, QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QHeaderView, QLabel,
    QProgressBar, QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout,
    QWidget,
)

from studio import paths
from studio.ui import theme
from studio.ui.cli_process import CliDialog, CliProcess, is_noise, parse_progress
from studio.ui.settings import ui_settings
from studio.ui.widgets import InlineMessage, PathPicker, button

SUMMARY_COLUMNS = ["", "Score", "95% CI", "Examples", "Metric"]
EXAMPLE_COLUMNS = ["#", "Input", "Answer", "Base model", "With adapter", "Change"]
MAX_EXAMPLE_ROWS = 500


def task_file(path: str) -> Path | None:
    """The task.json a user picked (the file, or a folder holding one); None if there is none."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "task.json"
    return p if p.is_file() else None


def results_folder(adapter_dir: str) -> Path:
    """evals/ in the adapter's run folder (adapter/ or checkpoints/step-N/ inside a run), else
    evals/ in the studio's data folder."""
    adapter = Path(adapter_dir).resolve()
    runs = paths.runs_dir().resolve()
    for parent in adapter.parents:
        if parent.parent == runs:
            return parent / "evals"
    return paths.data_dir() / "evals"


def sample_tasks() -> list[tuple[str, Path, str]]:
    """The BIG-bench sample tasks shipped in resources/sample_tasks: (name, task.json, kind)."""
    out = []
    for task in sorted(paths.sample_tasks_dir().glob("*/task.json")):
        try:
            first = json.loads(task.read_text(encoding="utf-8"))["examples"][0]
        except (OSError, ValueError, KeyError, IndexError):
            continue
        out.append((task.parent.name, task, "multiple choice" if "target_scores" in first else "generative"))
    return out


def run_eval_file(adapter_dir: str) -> str | None:
    """The eval data file of the run an adapter belongs to (its recipe's data.eval_path), if any."""
    if not adapter_dir:
        return None
    try:
        from studio.core.runs import load_recipe

        run = results_folder(adapter_dir).parent
        eval_path = load_recipe(run).data.eval_path if (run / "recipe.toml").is_file() else ""
    except Exception:  # noqa: BLE001 - no run, or an unreadable recipe: just no such choice
        return None
    return eval_path if eval_path and Path(eval_path).is_file() else None


def _short(text, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class EvalDialog(CliDialog):
    evaluated = Signal(str)        # the results file, once an evaluation finished and was shown
    def __init__(self, parent: QWidget | None = None, adapter_dir: str = "",
                 model_path: str | None = None, python: str | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Evaluate on a task")
        self.resize(1100, 760)
        self.model_path = model_path
        self.python = python or sys.executable
        self.process: CliProcess | None = None
        self.out_path: Path | None = None
        self.result: dict | None = None
        self._log: list[str] = []
        self._stopped = False
        self._hint = ""
        self._build(adapter_dir)

    def _on_sample(self, index: int) -> None:
        path = self.samples.itemData(index)
        if path:
            self.task.set_path(path)
            self._update_buttons()

    # ---- layout ---------------------------------------------------------------------------
    def _build(self, adapter_dir: str) -> None:
        outer = QVBoxLayout(self)
        intro = QLabel("Score an adapter on any BIG-bench-format task.json: multiple choice by "
                       "the log-likelihood of each choice, generative by exact match. The base "
                       "model is scored on the same examples, so the difference comes with a "
                       "paired 95% confidence interval.")
        intro.setWordWrap(True)
        outer.addWidget(intro)

        form = QFormLayout()
        self.adapter = PathPicker("folder", "Choose an adapter folder",
                                  placeholder="a run's adapter/ folder or a generated adapter")
        self.adapter.set_path(adapter_dir, emit=False)
        self.adapter.changed.connect(lambda _p: self._update_buttons())
        self.adapter.edit.textChanged.connect(lambda _t: self._update_buttons())
        form.addRow("Adapter", self.adapter)
        self.task = PathPicker("file", "Choose a BIG-bench task.json",
                               "BIG-bench task or data file (task.json *.json *.jsonl *.csv);;All files (*)",
                               placeholder="…/bigbench_tasks/<task>/task.json")
        last = ui_settings().value("eval/last_task", "")
        if last and task_file(str(last)):
            self.task.set_path(str(last), emit=False)
        self.task.changed.connect(lambda _p: self._update_buttons())
        self.task.edit.textChanged.connect(lambda _t: self._update_buttons())
        form.addRow("Task file", self.task)
        self.samples = QComboBox()
        self.samples.addItem("Pick a shipped sample task or the run's own eval data…", "")
        for name, path, kind in sample_tasks():
            self.samples.addItem(f"{name}  ({kind})", str(path))
        run_eval = run_eval_file(adapter_dir)
        if run_eval:
            self.samples.addItem(f"This run's eval data ({Path(run_eval).name}, exact match)", run_eval)
        self.samples.activated.connect(self._on_sample)
        form.addRow("Samples", self.samples)
        row = QHBoxLayout()
        self.limit = QSpinBox()
        self.limit.setRange(0, 100000)
        self.limit.setValue(50)
        self.limit.setToolTip("How many examples to score (0 = all). Each is scored twice: base "
                              "and adapter.")
        row.addWidget(self.limit)
        self.against_base = QCheckBox("also score the base model (paired difference)")
        self.against_base.setChecked(True)
        row.addWidget(self.against_base)
        row.addStretch(1)
        form.addRow("Examples", row)
        outer.addLayout(form)

        buttons = QHBoxLayout()
        self.run_button = button("Evaluate", kind="primary", icon_name="play")
        self.run_button.clicked.connect(self.start)
        self.stop_button = button("Stop", icon_name="stop")
        self.stop_button.clicked.connect(self.stop)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.progress, 1)
        outer.addLayout(buttons)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        outer.addWidget(self.status)
        self.message = InlineMessage()
        outer.addWidget(self.message)

        self.summary = self._table(SUMMARY_COLUMNS)
        self.summary.horizontalHeader().setStretchLastSection(True)
        self.summary.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.summary.setSizeAdjustPolicy(QAbstractItemView.SizeAdjustPolicy.AdjustToContents)
        outer.addWidget(self.summary)
        self.verdict = QLabel("")
        self.verdict.setWordWrap(True)
        outer.addWidget(self.verdict)
        self.examples = self._table(EXAMPLE_COLUMNS)
        self.examples.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        outer.addWidget(self.examples, 1)
        self._update_buttons()

    @staticmethod
    def _table(columns: list[str]) -> QTableWidget:
        table = QTableWidget(0, len(columns))
        table.setHorizontalHeaderLabels(columns)
        table.verticalHeader().setVisible(False)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setWordWrap(False)
        header = table.horizontalHeader()
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        for col in range(len(columns)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        return table

    # ---- state ----------------------------------------------------------------------------
    def problem(self) -> str:
        """Why Evaluate cannot start yet ('' when it can)."""
        adapter = self.adapter.path()
        if not adapter:
            return "Choose the adapter to evaluate."
        if not (Path(adapter).expanduser() / "adapter_config.json").is_file():
            return (f"{adapter}: not an adapter folder (no adapter_config.json). Pick a run's "
                    "adapter/ folder or a generated adapter.")
        if not self.task.path():
            return "Choose a BIG-bench task.json (any task folder of bigbench_tasks, or your own)."
        if task_file(self.task.path()) is None:
            return f"{self.task.path()}: no such task file. Pick a task.json."
        return ""

    def _update_buttons(self) -> None:
        running = self.is_running()
        problem = self.problem()
        self.run_button.setEnabled(not running and not problem)
        self.stop_button.setEnabled(running)
        for widget in (self.adapter, self.task, self.limit, self.against_base):
            widget.setEnabled(not running)
        if not running:
            self.run_button.setToolTip(problem)
            # the status line shows what is missing, but never hides how the last run ended
            hint = problem if problem and (self.adapter.path() or self.task.path()) else \
                "" if problem else "Ready."
            if self.status.text() in ("", "Ready.", self._hint):
                self.status.setText(hint)
            self._hint = hint

    # ---- running --------------------------------------------------------------------------
    def command(self) -> list[str]:
        task = task_file(self.task.path())
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        folder = results_folder(self.adapter.path())
        name = task.parent.name if task.name == "task.json" else task.stem
        self.out_path = folder / f"{name}-{stamp}.json"
        args = ["-m", "studio.cli", "eval", str(task), "--adapter", self.adapter.path(),
                "--limit", str(self.limit.value()), "--json", str(self.out_path),
                "--progress-json"]
        if self.against_base.isChecked():
            args.append("--against-base")
        if self.model_path:
            args += ["--model", self.model_path]
        return args

    def start(self) -> None:
        if self.is_running() or self.problem():
            return
        ui_settings().setValue("eval/last_task", self.task.path())
        self.result = None
        self.summary.setRowCount(0)
        self.examples.setRowCount(0)
        self.verdict.setText("")
        self.message.clear_message()
        self.progress.setValue(0)
        self._log, self._stopped = [], False
        args = self.command()
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self.process = CliProcess(self, self.python)
        self.process.line.connect(self.handle_line)
        self.process.finished.connect(self._finished)
        self.process.failed_to_start.connect(self._failed_to_start)
        self.status.setText("Loading the model …")
        self.process.start(args)
        self._update_buttons()

    def stop(self) -> None:
        if self.is_running():
            self.status.setText("Stopping …")
            self._stopped = True
            self.process.stop()

    def handle_line(self, line: str) -> None:
        info = parse_progress(line)
        if info is None:
            if not is_noise(line):
                self._log.append(line)
            return
        done, total = float(info.get("done", 0)), max(1.0, float(info.get("total", 1)))
        self.progress.setValue(int(1000 * min(1.0, done / total)))
        if info.get("phase") == "loaded":
            self.status.setText("Scoring …")
        else:
            which = ("the base model" if self.against_base.isChecked() and done < total / 2
                     else "the adapter")
            self.status.setText(f"Scoring {which} … {100 * done / total:.0f}%")

    def _finished(self, code: int) -> None:
        if code == 0 and self.out_path is not None and self.out_path.is_file():
            try:
                self.show_result(json.loads(self.out_path.read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:
                self.message.show_error(f"{self.out_path}: the results could not be read ({exc}).")
            else:
                self.progress.setValue(1000)
                self.status.setText(f"Done. Saved: {self.out_path}")
                self.evaluated.emit(str(self.out_path))
        else:
            self.report_failure(code, "evaluation", "Not started.", "Stopped.")
        self._update_buttons()

    # ---- results --------------------------------------------------------------------------
    def show_result(self, result: dict) -> None:
        """Fill the tables from a `peft-studio eval --json` file (with or without the base)."""
        self.result = result
        parts = [("Base model", result["base"]), ("With adapter", result["with_adapter"])] \
            if "with_adapter" in result else [("With adapter", result)]
        self.summary.setRowCount(0)
        for title, res in parts:
            lo, hi = res["ci95"]
            metric = "accuracy" if res["metric"] == "multiple_choice_grade" else "exact match"
            if res.get("chance") is not None:
                metric += f" (chance {res['chance']:.2f})"
            self._add_row(self.summary, [title, f"{res['score']:.3f}", f"{lo:.3f} – {hi:.3f}",
                                         str(res["n"]), metric])
        diff = result.get("difference")
        if diff:
            lo, hi = diff["ci95"]
            self._add_row(self.summary, ["Adapter − base", f"{diff['mean']:+.3f}",
                                         f"{lo:+.3f} – {hi:+.3f}", str(diff["n"]), "paired"])
            color = theme.SUCCESS if lo > 0 else theme.DANGER if hi < 0 else theme.MUTED
            verdict = diff["verdict"][:1].upper() + diff["verdict"][1:]
            self.verdict.setText(f"<span style='color:{color}'><b>{verdict}"
                                 f"</b></span> on these {diff['n']} examples of "
                                 f"{result['with_adapter']['task']}.")
        self.summary.setFixedHeight(self.summary.horizontalHeader().sizeHint().height()
                                    + self.summary.verticalHeader().length()
                                    + 2 * self.summary.frameWidth() + 4)
        adapted = result["with_adapter"]["results"] if diff else result["results"]
        base = result["base"]["results"] if diff else [None] * len(adapted)
        self.examples.setRowCount(0)
        for i, (b, a) in enumerate(zip(base, adapted)):
            if i >= MAX_EXAMPLE_ROWS:
                break
            change = "" if b is None or b["score"] == a["score"] else \
                "fixed" if a["score"] > b["score"] else "broke"
            cells = [str(i + 1), _short(a.get("input", "")), _short(a.get("answer", ""), 60),
                     self._verdict_cell(b), self._verdict_cell(a), change]
            self._add_row(self.examples, cells)
            row = self.examples.rowCount() - 1
            for col, res in ((3, b), (4, a)):
                if res is not None:
                    item = self.examples.item(row, col)
                    item.setForeground(QColor(theme.SUCCESS if res["score"] > 0 else theme.DANGER))
            if change:
                item = self.examples.item(row, 5)
                item.setForeground(QColor(theme.SUCCESS if change == "fixed" else theme.DANGER))
                font = item.font()
                font.setBold(True)
                item.setFont(font)
        fixed = sum(self.examples.item(r, 5).text() == "fixed" for r in range(self.examples.rowCount()))
        broke = sum(self.examples.item(r, 5).text() == "broke" for r in range(self.examples.rowCount()))
        if diff:
            self.verdict.setText(self.verdict.text() + f" The adapter fixed {fixed} example(s) the "
                                 f"base model got wrong and broke {broke} it got right.")

    @staticmethod
    def _verdict_cell(res: dict | None) -> str:
        if res is None:
            return "—"
        return ("✓ " if res["score"] > 0 else "✗ ") + _short(res.get("prediction", ""), 50)

    @staticmethod
    def _add_row(table: QTableWidget, cells: list[str]) -> None:
        r = table.rowCount()
        table.insertRow(r)
        for c, text in enumerate(cells):
            item = QTableWidgetItem(text)
            item.setToolTip(text)
            table.setItem(r, c, item)


def open_dialog(window, adapter_dir: str = "", model_path: str | None = None) -> EvalDialog:
    """Tools > Evaluate on a task, or the Runs page's button for the selected run."""
    if model_path is None:
        try:
            model_path = window.model_page.model_path() or None
        except Exception:  # noqa: BLE001 - the dialog also works without the model page
            model_path = None
    dialog = EvalDialog(window, adapter_dir=adapter_dir, model_path=model_path)
    dialog.show()
    return dialog
