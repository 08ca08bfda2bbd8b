"""Transfer to another base model (Trans-LoRA): pick the target, optionally real examples or a
task sentence, check the plan, then watch the stages and the training curve.

Opened from the Runs page ("Transfer to another base…") and Tools > Transfer adapter. The plan is
checked off the GUI thread as the fields change (studio.transfer.plan.check_transfer: no model is
loaded); Start makes a run folder on the target model and runs it in the worker process
(studio.worker.launcher.Job), so the window survives anything the job does and Cancel keeps what
the finished stages wrote (Runs → Resume continues). No torch here.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QTimer, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox, QDialog, QGridLayout, QHBoxLayout, QLabel, QLineEdit, QProgressBar,
    QScrollArea, QSpinBox, QVBoxLayout, QWidget,
)

from studio import paths
from studio.transfer.plan import SEEDS_MINIMUM_FOR_FILTER, TRANSFER_SCHEMA
from studio.ui import tasks
from studio.ui.curves import CurvesPanel
from studio.ui.param_form import ParamForm
from studio.ui.widgets import InlineMessage, PathPicker, add_row, button, form_layout

STAGE_ROWS = [("seeds", "Real prompts"), ("generate", "Synthetic prompts"),
              ("filter", "Discriminator filter"), ("teach", "Teacher answers (source + adapter)"),
              ("train", "Training the new adapter on the target")]
POLL_MS = 300
MARKS = {"waiting": "○", "running": "◐", "done": "●", "failed": "✕"}


def model_choices(exclude: str = "") -> list[str]:
    """The model folders in the data folder (imported, fetched, the default one)."""
    folder = paths.models_dir()
    if not folder.is_dir():
        return []
    found = []
    for child in sorted(folder.iterdir()):
        if child.is_dir() and not child.name.startswith(".") and (child / "config.json").is_file():
            if not exclude or child.resolve() != Path(exclude).resolve():
                found.append(str(child))
    return found


def _check(adapter, target, seeds, task, settings):
    from studio.transfer.plan import check_transfer

    return check_transfer(adapter, target, seeds_file=seeds or None, task=task,
                          settings=settings)


def plan_text(plan: dict) -> str:
    s = plan["settings"]
    n = len(plan["seeds"])
    seeds = (f"{n} real prompt{'s' if n != 1 else ''} from {plan['seeds_from']}" if n
             else "no real prompts: the task description alone")
    filtering = s["filter"] and n >= SEEDS_MINIMUM_FOR_FILTER
    steps = [f"Source: {Path(plan['source']['adapter']).parent.name} on "
             f"{Path(plan['source']['model']).name}  →  target: {Path(plan['target']).name}",
             f"Seeds: {seeds}.",
             f"The {s['generator']} model writes "
             f"{int(s['prompts'] * (s['candidates'] if s['filter'] else 1))} prompts; "
             + (f"the discriminator keeps the {s['prompts']} most real-looking."
                if filtering else f"the first {s['prompts']} usable ones are kept (no filter)."),
             f"Memory: about {plan['memory']['need_mb']:,} MB"
             + (f" of {plan['memory']['free_mb']:,} MB free." if plan["memory"].get("free_mb")
                else ".")]
    steps += [f"Note: {n}." for n in plan.get("notes") or []]
    return "\n".join(steps)


class TransferDialog(QDialog):
    run_created = Signal(str)          # the transfer's run folder, once started
    transferred = Signal(str)          # the new adapter, once finished
    chat_requested = Signal(str)       # "Chat with it": the new adapter

    def __init__(self, parent: QWidget | None = None, source: str = "",
                 python: str | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Transfer to another base model")
        self.resize(980, 680)
        self.python = python
        self.plan: dict | None = None
        self.job = None
        self.run_dir: Path | None = None
        self.adapter_path = ""
        self.state = "idle"
        self._request = 0
        self._build(source)
        self.timer = QTimer(self, interval=POLL_MS)
        self.timer.timeout.connect(self.poll)
        self._check_timer = QTimer(self, singleShot=True, interval=350)
        self._check_timer.timeout.connect(self.check)
        self.schedule_check()

    # ---- layout -----------------------------------------------------------------------------
    def _build(self, source: str) -> None:
        outer = QVBoxLayout(self)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        body = QWidget()
        layout = QVBoxLayout(body)
        intro = QLabel("Move an adapter to another base model without its training data: the "
                       "target model writes task prompts from a few real ones, a discriminator "
                       "keeps those that look real, the adapter on its own base answers them, and "
                       "a new LoRA learns those answers on the target. The result is a run on the "
                       "target: curves, chat, export and compare work on it.")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        form = form_layout()
        captions = []
        self.source = PathPicker("folder", "Choose a run or an adapter folder",
                                 placeholder="a run folder or an adapter folder")
        self.source.set_path(source, emit=False)
        self.source.changed.connect(lambda _p: self._source_changed())
        captions.append(add_row(form, "Adapter", self.source))
        target_row = QHBoxLayout()
        self.target = QComboBox()
        self.target.setEditable(True)
        self.target.setMinimumContentsLength(24)
        self.target.lineEdit().setPlaceholderText("the new base model's folder")
        self.target.currentTextChanged.connect(lambda _t: self.schedule_check())
        self.target_browse = PathPicker("folder", "Choose the target model folder")
        self.target_browse.edit.hide()
        self.target_browse.changed.connect(self._target_chosen)
        target_row.addWidget(self.target, 1)
        target_row.addWidget(self.target_browse)
        target_box = QWidget()
        target_box.setLayout(target_row)
        target_row.setContentsMargins(0, 0, 0, 0)
        captions.append(add_row(form, "Target model", target_box))
        self.seeds = PathPicker("file", "Real task examples", "Data (*.jsonl *.json *.csv)",
                                placeholder="empty: the run's evaluation examples")
        self.seeds.changed.connect(lambda _p: self.schedule_check())
        captions.append(add_row(form, "Real examples", self.seeds))
        self.task = QLineEdit()
        self.task.setPlaceholderText("the task in a sentence (needed when there are no real "
                                     "examples)")
        self.task.textChanged.connect(lambda _t: self.schedule_check())
        captions.append(add_row(form, "Task description", self.task))
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 100)
        self.epochs.setValue(3)
        self.epochs.setSuffix(" epoch(s)")
        captions.append(add_row(form, "Training on the target", self.epochs))
        layout.addLayout(form)
        self.settings = ParamForm(TRANSFER_SCHEMA)
        self.settings.changed.connect(self.schedule_check)
        self.settings.align_with(captions)        # one caption column for both forms
        layout.addWidget(self.settings)
        self.plan_label = QLabel("")
        self.plan_label.setWordWrap(True)
        self.plan_label.setObjectName("Muted")
        self.plan_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.plan_label)
        self.message = InlineMessage()
        layout.addWidget(self.message)

        self.stages = QWidget()
        grid = QGridLayout(self.stages)
        grid.setContentsMargins(0, 6, 0, 0)
        self.rows: dict[str, dict] = {}
        for r, (key, title) in enumerate(STAGE_ROWS):
            mark, name, bar, text = QLabel(MARKS["waiting"]), QLabel(title), QProgressBar(), QLabel("")
            bar.setRange(0, 1)
            bar.setValue(0)
            bar.setTextVisible(True)
            bar.setMaximumWidth(180)
            text.setWordWrap(True)
            text.setObjectName("Muted")
            text.setTextInteractionFlags(Qt.TextSelectableByMouse)
            grid.addWidget(mark, r, 0)
            grid.addWidget(name, r, 1)
            grid.addWidget(bar, r, 2)
            grid.addWidget(text, r, 3)
            self.rows[key] = {"mark": mark, "name": name, "bar": bar, "text": text}
        grid.setColumnStretch(3, 1)
        self.stages.hide()
        layout.addWidget(self.stages)
        self.curves = CurvesPanel()
        self.curves.setMinimumHeight(220)
        self.curves.hide()
        layout.addWidget(self.curves, 1)
        scroll.setWidget(body)
        outer.addWidget(scroll, 1)

        buttons = QHBoxLayout()
        self.status = QLabel("")
        self.status.setObjectName("Muted")
        self.status.setWordWrap(True)
        buttons.addWidget(self.status, 1)
        self.start_button = button("Start transfer", kind="primary", icon_name="play")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = button("Cancel", icon_name="stop",
                                    tooltip="Stop after the current batch; what is written stays "
                                            "(Runs → Resume continues)")
        self.cancel_button.clicked.connect(self.cancel)
        self.chat_button = button("Chat with it", icon_name="chat")
        self.chat_button.clicked.connect(lambda: self.chat_requested.emit(self.adapter_path))
        self.chat_button.hide()
        self.close_button = button("Close")
        self.close_button.clicked.connect(self.close)
        for b in (self.start_button, self.cancel_button, self.chat_button, self.close_button):
            buttons.addWidget(b)
        outer.addLayout(buttons)
        self._source_changed(check=False)
        self._update_buttons()

    def _source_changed(self, check: bool = True) -> None:
        current = self.target.currentText()
        source_model = ""
        try:
            from studio.core import runs

            recipe = runs.load_recipe(self.source.path()) if self.source.path() else None
            source_model = recipe.model.path if recipe else ""
        except Exception:   # noqa: BLE001 - an adapter folder or a bad path: the check says so
            pass
        self.target.blockSignals(True)
        self.target.clear()
        self.target.addItems(model_choices(exclude=source_model))
        if current:
            self.target.setCurrentText(current)
        self.target.blockSignals(False)
        if check:
            self.schedule_check()

    def _target_chosen(self, path: str) -> None:
        if path:
            self.target.setCurrentText(path)

    # ---- checking ---------------------------------------------------------------------------
    def schedule_check(self) -> None:
        if self.state in ("idle", "ready", "refused"):
            self._check_timer.start()

    def check(self) -> None:
        if not self.source.path() or not self.target.currentText().strip():
            self.plan = None
            self.state = "idle"
            self.plan_label.setText("Choose the adapter and the target model.")
            self._update_buttons()
            return
        self._request += 1
        request = self._request
        self.plan_label.setText("Checking…")
        tasks.run_async(_check, self.source.path(), self.target.currentText().strip(),
                        self.seeds.path(), self.task.text(), self.settings.values(),
                        on_done=lambda plan: self._checked(request, plan, None),
                        on_error=lambda err: self._checked(request, None, err))

    def _checked(self, request: int, plan: dict | None, err: BaseException | None) -> None:
        if request != self._request or self.state not in ("idle", "ready", "refused"):
            return
        self.plan = plan
        if plan is None:
            self.state = "refused"
            self.plan_label.setText("")
            self.message.show_error(str(err))
        else:
            self.state = "ready"
            self.message.clear_message()
            self.plan_label.setText(plan_text(plan))
        self._update_buttons()

    def _update_buttons(self) -> None:
        running = self.state in ("running", "cancelling")
        self.start_button.setEnabled(self.state == "ready")
        self.cancel_button.setEnabled(self.state == "running")
        for w in (self.source, self.target, self.target_browse, self.seeds, self.task,
                  self.epochs, self.settings):
            w.setEnabled(not running and self.state not in ("finished",))

    # ---- running ----------------------------------------------------------------------------
    def start(self) -> None:
        from studio.errors import UserError
        from studio.transfer.plan import create_transfer_run
        from studio.worker.launcher import Job

        if self.plan is None:
            return
        writer = "source" if self.plan["settings"].get("generator") == "source" else "target"
        self.rows["generate"]["name"].setText(f"Synthetic prompts ({writer} writes)")
        try:
            self.run_dir = create_transfer_run(self.plan, training={"epochs": self.epochs.value(),
                                                                    "max_steps": 0})
            self.job = Job(python=self.python) if self.python else Job()
            self.job.start(self.run_dir)
        except (UserError, OSError) as err:
            self.message.show_error(str(err))
            return
        self.state = "running"
        self.stages.show()
        self.curves.show()
        self.curves.clear()
        self.curves.set_placeholder("The curve starts when training does (after the stages).")
        self.status.setText(f"Running in {self.run_dir}")
        self.run_created.emit(str(self.run_dir))
        self._update_buttons()
        self.timer.start()

    def cancel(self) -> None:
        if self.job is not None and self.state == "running":
            self.job.cancel()
            self.state = "cancelling"
            self.status.setText("Cancelling after the current batch…")
            self._update_buttons()

    def _set_row(self, key: str, state: str, done=None, total=None, text: str | None = None):
        row = self.rows[key]
        row["mark"].setText(MARKS[state])
        if total:
            row["bar"].setRange(0, int(total))
            row["bar"].setValue(int(done or 0))
        elif state == "done":
            row["bar"].setRange(0, 1)
            row["bar"].setValue(1)
        if text is not None:
            row["text"].setText(text)

    def poll(self) -> None:
        if self.job is None:
            return
        events = self.job.poll_events()
        if events:
            self.curves.add_events(events)
        for event in events:
            self.handle(event)

    def handle(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "stage" and event.get("stage") in self.rows:
            key = event["stage"]
            if event.get("state") == "done":
                self._set_row(key, "done", text=event.get("message", ""))
            else:
                self._set_row(key, "running", event.get("done"), event.get("total"),
                              text=None if event.get("total") else "working…")
        elif kind == "started":
            for key, _title in STAGE_ROWS[:-1]:
                if self.rows[key]["mark"].text() != MARKS["done"]:
                    self._set_row(key, "done")
            self._set_row("train", "running", 0, event.get("total_steps"),
                          f"{event.get('train_examples', '?')} examples, "
                          f"{event.get('total_steps')} steps on {event.get('device', '?')}")
        elif kind == "log":
            bar = self.rows["train"]["bar"]
            bar.setValue(int(event.get("step") or 0))
        elif kind == "finished":
            self.state = "finished"
            self.adapter_path = event.get("adapter_path") or ""
            self._set_row("train", "done", text=f"finished: {self.adapter_path}")
            self.status.setText("Done. The new adapter is a run on the target model (Runs page).")
            self.chat_button.show()
            self.timer.stop()
            self.transferred.emit(self.adapter_path)
        elif kind in ("failed", "cancelled"):
            self.state = kind
            running = [k for k, _t in STAGE_ROWS if self.rows[k]["mark"].text() == MARKS["running"]]
            for key in running:
                self._set_row(key, "failed" if kind == "failed" else "waiting")
            if kind == "failed":
                self.message.show_error(f"The transfer failed: {event.get('cause')}")
                self.status.setText("Stopped. What the finished stages wrote is kept.")
            else:
                self.status.setText("Cancelled. Runs → Resume continues from what is written.")
            self.timer.stop()
        self._update_buttons()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        # the job is a run like any other: it goes on (Runs page) unless cancelled here
        self.timer.stop()
        super().closeEvent(event)


def open_dialog(window, source: str = "") -> TransferDialog:
    """Tools > Transfer adapter, or the Runs page's "Transfer to another base…"."""
    dialog = TransferDialog(window, source=source)
    if hasattr(window, "_chat_with"):
        dialog.chat_requested.connect(window._chat_with)
    dialog.show()
    return dialog
