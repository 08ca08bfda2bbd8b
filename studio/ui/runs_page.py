"""Runs page: every past run (the run folders are the database), its curves, and what to do with it."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import QTimer, QUrl, Qt, Signal
from PySide6.QtGui import QColor, QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView, QHeaderView, QMessageBox, QSplitter, QTableWidget, QTableWidgetItem,
    QWidget,
)

from studio import paths
from studio.ui import tasks, theme
from studio.ui.curves import CurvesPanel
from studio.ui.widgets import Card, FlowRow, InlineMessage, Page, badge, button, label

COLUMNS = ["Name", "Method", "Status", "Steps", "Loss", "Eval loss", "Started"]


def _load_runs():
    from studio.core.runs import list_runs

    return list_runs()


def _load_events(run_dir: str):
    from studio.core.runs import read_events

    return read_events(run_dir)


def _load_evaluations(run_dir: str):
    from studio.core.runs import list_evaluations

    return list_evaluations(run_dir)


def run_settings(run_dir: str) -> str:
    """Worker thread: one line of the run's settings from its recipe.toml (method and its
    parameters, learning rate, steps, batch, max length, data file)."""
    from studio.core.runs import load_recipe

    recipe = load_recipe(run_dir)
    params = "  ".join(f"{k}={v}" for k, v in recipe.method.params.items())
    t = recipe.training
    steps = f"{t.max_steps} steps" if t.max_steps else f"{t.epochs} epochs"
    return (f"{recipe.method.id}: {params}   ·   lr {t.learning_rate:g} ({t.lr_scheduler}), {steps}, "
            f"batch {t.batch_size}×{t.grad_accum}, max length {recipe.data.max_length}   ·   "
            f"data {Path(recipe.data.path).name}")


def status_color(status: str) -> str:
    return theme.STATUS_COLORS.get(status.split(" ")[0], theme.MUTED)


def _fmt_loss(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "—"


def _fmt_time(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).strftime("%d %b %Y · %H:%M")
    except (TypeError, ValueError):
        return iso or "—"


class RunsPage(Page):
    resume_requested = Signal(str)     # run folder
    chat_requested = Signal(str)       # adapter folder
    clone_requested = Signal(str)      # run folder: its settings to the Train page
    compare_requested = Signal(list)   # run folders to put side by side on the Compare page

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Runs", "Every training run on this machine, with its curves. Runs survive restarts.")
        self.runs: list = []
        self.selected = None
        self.evaluations: list = []
        self._request = 0
        self._loading = False
        refresh = button("Refresh", icon_name="resume")
        refresh.clicked.connect(self.refresh)
        self.header.actions.addWidget(refresh)

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.setChildrenCollapsible(False)
        table_card = Card()
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setShowGrid(False)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setDefaultSectionSize(38)
        self.table.setMinimumHeight(38 * 5)         # the header and four runs, even on a laptop
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in range(1, len(COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.table.itemSelectionChanged.connect(self._on_select)
        self.empty = label("No runs yet. Start one on the Train page; it will be listed here.", "muted")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        table_card.body.addWidget(self.table, 1)
        table_card.body.addWidget(self.empty)
        splitter.addWidget(table_card)

        detail = Card()
        self.title = label("Select a run", None)
        self.title.setObjectName("CardTitle")
        self.status_badge = badge("")
        self.status_badge.hide()
        detail.header.insertWidget(0, self.title)
        detail.header.insertWidget(1, self.status_badge)
        detail.title_label.hide()
        self.resume_button = button("Resume", icon_name="play", tooltip="Continue from the last checkpoint")
        self.open_button = button("Open folder", icon_name="folder")
        self.chat_button = button("Chat with adapter", icon_name="chat")
        self.eval_button = button("Evaluate on task…", icon_name="evaluate",
                                  tooltip="Score this adapter and the base model on a BIG-bench "
                                          "task file, with a paired confidence interval")
        self.export_button = button("Export…", icon_name="save",
                                    tooltip="Export this adapter, merged model, GGUF or Ollama "
                                            "folder, with a parity report")
        self.transfer_button = button("Transfer to another base…", icon_name="transfer",
                                      tooltip="Move this adapter to another base model: synthetic "
                                              "prompts, a discriminator filter, the adapter's "
                                              "answers, a new LoRA on the target (Trans-LoRA)")
        self.delete_button = button("Delete", kind="danger", icon_name="trash")
        self.clone_button = button("Clone settings to Train", icon_name="train",
                                   tooltip="Start a new run from this run's model, data and settings")
        self.clone_button.clicked.connect(lambda: self.selected is not None and
                                          self.clone_requested.emit(str(self.selected.path)))
        self.actions = FlowRow()          # wraps on a narrow window instead of widening it
        for widget, slot in ((self.resume_button, self._resume), (self.open_button, self._open),
                             (self.chat_button, self._chat), (self.eval_button, self._evaluate),
                             (self.export_button, self._export),
                             (self.transfer_button, self._transfer),
                             (self.delete_button, self._delete)):
            widget.clicked.connect(slot)
            self.actions.addWidget(widget)
        self.actions.addWidget(self.clone_button)
        self.compare_button = button("Compare", icon_name="compare",
                                     tooltip="Put the selected runs side by side on the Compare page "
                                             "(Ctrl/Shift-click to select several)")
        self.compare_button.clicked.connect(
            lambda: self.compare_requested.emit([str(r.path) for r in self.selected_runs()]))
        self.actions.addWidget(self.compare_button)
        detail.body.addLayout(self.actions)
        self.detail_line = label("", "muted", wrap=True, selectable=True)
        detail.body.addWidget(self.detail_line)
        self.settings_line = label("", "faint", wrap=True, selectable=True)
        self.settings_line.setToolTip("The run's settings (its recipe.toml)")
        detail.body.addWidget(self.settings_line)
        self.evals_line = label("", "muted", wrap=True, selectable=True)
        self.evals_line.setToolTip("Task evaluations saved in this run (Evaluate on task…)")
        self.evals_line.hide()
        detail.body.addWidget(self.evals_line)
        self.message = InlineMessage()
        detail.body.addWidget(self.message)
        self.curves = CurvesPanel()
        detail.body.addWidget(self.curves, 1)
        splitter.addWidget(detail)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 5)
        splitter.setSizes([260, 560])
        self.content.addWidget(splitter, 1)

        self.confirm = self._confirm_dialog     # tests replace this to answer the dialog
        self._auto = QTimer(self, interval=3000)
        self._auto.timeout.connect(self._auto_refresh)
        self._auto.start()
        self._update_buttons()

    # ---- data -----------------------------------------------------------------------------
    def on_show(self) -> None:
        """The window shows this page."""
        self.refresh()

    def refresh(self) -> None:
        self._request += 1
        request = self._request
        self._loading = True
        tasks.run_async(_load_runs, on_done=lambda runs: self._on_runs(request, runs),
                        on_error=lambda exc: self._on_runs_error(request, exc))

    def is_loading(self) -> bool:
        return self._loading

    def _auto_refresh(self) -> None:
        """Every 3 s while shown: runs started from the Train page, the CLI or another window
        appear, and a running run's step and losses move, without pressing Refresh."""
        if self.isVisible() and not self._loading:
            self.refresh()

    def _on_runs_error(self, request: int, exc: BaseException) -> None:
        if request == self._request:
            self._loading = False
            self.message.show_error(tasks.error_text(exc))

    def _on_runs(self, request: int, runs: list) -> None:
        if request != self._request:
            return
        self._loading = False
        keep = str(self.selected.path) if self.selected is not None else None
        self.runs = runs
        self.table.blockSignals(True)
        self.table.setRowCount(len(runs))
        for row, run in enumerate(runs):
            total = f"/{run.total_steps}" if run.total_steps else ""
            cells = [run.name, run.method, run.status, f"{run.step}{total}", _fmt_loss(run.last_loss),
                     _fmt_loss(run.eval_loss), _fmt_time(run.created)]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, str(run.path))
                if col == 2:
                    item.setForeground(QColor(status_color(run.status)))
                    item.setText(f"●  {text}")
                if col == 0:
                    item.setToolTip(str(run.path))
                self.table.setItem(row, col, item)
        self.table.blockSignals(False)
        self.empty.setVisible(not runs)
        self.table.setVisible(bool(runs))
        row = next((i for i, r in enumerate(runs) if str(r.path) == keep), 0 if runs else -1)
        if row >= 0:
            self.table.selectRow(row)
            self._on_select()
        else:
            self.selected = None
            self._show_run(None)

    def select_run(self, run_dir: str | Path) -> bool:
        for row, run in enumerate(self.runs):
            if Path(run.path) == Path(run_dir):
                self.table.selectRow(row)
                return True
        return False

    def selected_runs(self) -> list:
        rows = sorted({index.row() for index in self.table.selectedIndexes()})
        return [self.runs[i] for i in rows if i < len(self.runs)]

    def _on_select(self) -> None:
        rows = {index.row() for index in self.table.selectedIndexes()}
        run = self.runs[min(rows)] if rows and min(rows) < len(self.runs) else None
        old = self.selected
        # reload the curves for another run, or for the same run when it moved on since
        changed = (run is None or old is None or run.path != old.path or run.step != old.step
                   or run.status != old.status)
        self.selected = run
        self._show_run(run, reload_curves=changed or run.status in ("running", "paused"))

    def _show_run(self, run, reload_curves: bool = True) -> None:
        self.message.clear_message()
        if run is None:
            self.title.setText("Select a run")
            self.status_badge.hide()
            self.detail_line.setText("")
            self.detail_line.hide()           # no empty lines between the buttons and the charts
            self.settings_line.hide()
            self.evals_line.hide()
            self.curves.clear()
            self.curves.set_placeholder("no run selected")
            self._update_buttons()
            return
        self.title.setText(run.name)
        self.status_badge.setText(run.status)
        role = {"finished": "badge-ok", "failed": "badge-warn"}.get(run.status.split(" ")[0], "badge")
        self.status_badge.setProperty("role", role)
        theme.repolish(self.status_badge)
        self.status_badge.show()
        parts = [f"{run.method} on {run.model}", f"step {run.step}" + (f" of {run.total_steps}" if run.total_steps else ""),
                 str(run.path)]
        self.detail_line.setText("   ·   ".join(parts))
        self.detail_line.show()
        if run.cause:
            self.message.show_error(f"Failed: {run.cause}")
        if reload_curves:
            path = str(run.path)
            tasks.run_async(_load_events, path, on_done=lambda events: self._on_events(path, events))
            tasks.run_async(run_settings, path, on_done=lambda text: self._on_settings(path, text),
                            on_error=lambda exc: self._on_settings(path, ""))
            self.load_evaluations()
        self._update_buttons()

    def load_evaluations(self) -> None:
        """Show the selected run's saved task evaluations (read off the GUI thread)."""
        if self.selected is None:
            return
        path = str(self.selected.path)
        tasks.run_async(_load_evaluations, path, on_done=lambda items: self._on_evals(path, items))

    def _on_evals(self, path: str, items: list) -> None:
        if self.selected is None or str(self.selected.path) != path:
            return
        from studio.core.runs import format_evaluation

        self.evaluations = items
        if items:
            shown = [format_evaluation(item) for item in items[:3]]
            more = f"   ·   {len(items) - 3} more in evals/" if len(items) > 3 else ""
            self.evals_line.setText("Evaluated on   " + "   ·   ".join(shown) + more)
        self.evals_line.setVisible(bool(items))

    def _on_settings(self, path: str, text: str) -> None:
        if self.selected is not None and str(self.selected.path) == path:
            self.settings_line.setText(text)
            self.settings_line.setVisible(bool(text))

    def _on_events(self, path: str, events: list) -> None:
        if self.selected is not None and str(self.selected.path) == path:
            self.curves.set_placeholder("no steps yet")
            self.curves.load_events(events)

    def _update_buttons(self) -> None:
        run = self.selected
        active = run is not None and run.status in ("running", "paused")
        self.resume_button.setEnabled(run is not None and not active and run.status != "finished"
                                      and self._checkpoint(run) is not None)
        self.open_button.setEnabled(run is not None)
        has_adapter = run is not None and self.adapter_dir(run) is not None
        self.chat_button.setEnabled(has_adapter)
        self.eval_button.setEnabled(has_adapter and not active)
        self.export_button.setEnabled(has_adapter and not active)
        self.transfer_button.setEnabled(has_adapter and not active)
        self.delete_button.setEnabled(run is not None and not active)
        self.delete_button.setToolTip("Stop the run before deleting it" if active else "")
        self.clone_button.setEnabled(run is not None)
        self.compare_button.setEnabled(any(self.adapter_dir(r) for r in self.selected_runs()))

    @staticmethod
    def _checkpoint(run):
        from studio.core.runs import latest_checkpoint

        try:
            return latest_checkpoint(run.path)
        except Exception:  # noqa: BLE001 - a damaged folder just has no resumable checkpoint
            return None

    @staticmethod
    def adapter_dir(run) -> str | None:
        for candidate in (run.adapter_path, Path(run.path) / "adapter"):
            if candidate and (Path(candidate) / "adapter_config.json").is_file():
                return str(candidate)
        return None

    # ---- actions --------------------------------------------------------------------------
    def _resume(self) -> None:
        if self.selected is not None:
            self.resume_requested.emit(str(self.selected.path))

    def _open(self) -> None:
        if self.selected is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.selected.path)))

    def _chat(self) -> None:
        adapter = self.adapter_dir(self.selected) if self.selected is not None else None
        if adapter:
            self.chat_requested.emit(adapter)

    def _evaluate(self) -> None:
        from studio.ui.eval_dialog import EvalDialog

        adapter = self.adapter_dir(self.selected) if self.selected is not None else None
        if adapter:
            model = self.selected.model if self.selected.model and Path(
                self.selected.model).is_dir() else None
            self.eval_dialog = EvalDialog(self.window(), adapter_dir=adapter, model_path=model)
            self.eval_dialog.evaluated.connect(lambda _path: self.load_evaluations())
            self.eval_dialog.show()

    def _export(self) -> None:
        from studio.ui.export_dialog import ExportDialog

        if self.selected is not None and self.adapter_dir(self.selected):
            self.export_dialog = ExportDialog(self.window(), source=str(self.selected.path))
            self.export_dialog.show()

    def _transfer(self) -> None:
        from studio.ui.transfer_dialog import TransferDialog

        if self.selected is not None and self.adapter_dir(self.selected):
            self.transfer_dialog = TransferDialog(self.window(), source=str(self.selected.path))
            self.transfer_dialog.run_created.connect(lambda _run: self.refresh())
            self.transfer_dialog.transferred.connect(lambda _adapter: self.refresh())
            self.transfer_dialog.chat_requested.connect(self.chat_requested.emit)
            self.transfer_dialog.show()

    def _delete(self) -> None:
        run = self.selected
        if run is None:
            return
        if not self.confirm("Delete run", f"Delete the run '{run.name}' and all its checkpoints?\n\n{run.path}"):
            return
        target = Path(run.path).resolve()
        if paths.runs_dir().resolve() not in target.parents:
            self.message.show_error(f"{target}: not inside the runs folder, so it was not deleted.")
            return
        try:
            shutil.rmtree(target)
        except OSError as exc:
            self.message.show_error(f"{target}: could not delete ({exc}).")
            return
        self.selected = None
        self.refresh()

    def _confirm_dialog(self, title: str, text: str) -> bool:
        answer = QMessageBox.question(self, title, text,
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes
