"""'Train your own hypernetwork': from a folder of PEFT adapters with a description each.

The job runs as a separate OS process (studio.worker.launcher.Job on a run folder made by
studio.worker.hyper_jobs.create_train_run), polled by a QTimer; its loss curves are drawn live,
and the run is listed on the Runs page like any other. When it finishes, the new hypernetwork can
be picked for generation with one click.
"""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QSizePolicy, QSpinBox, QWidget

from studio.errors import UserError
from studio.ui import theme
from studio.ui.curves import CurvesPanel
from studio.ui.widgets import (Card, InlineMessage, PathPicker, Segmented, add_row, button, compact_combo,
                               form_layout, label)

POLL_MS = 250
LAYOUT_HELP = (
    "Pick a folder with one sub-folder per task. Each holds a PEFT LoRA adapter "
    "(adapter_config.json + adapter_model.safetensors, or an adapter/ folder) and description.txt "
    "with one description of the task per line (several lines = paraphrases). Add examples.jsonl "
    "(chat format) for SFT mode and for DnD. All adapters must target the same modules of the "
    "same base model. A library made by `peft-studio hyper build-library` works as is. "
    "See docs/HYPERNETWORKS.md.")


class HyperTrainPanel(Card):
    def __init__(self, page, parent: QWidget | None = None) -> None:
        super().__init__("Train your own hypernetwork", LAYOUT_HELP, parent)
        self.page = page
        self.job = None
        self.run_dir = None
        self.final: dict | None = None
        self.timer = QTimer(self, interval=POLL_MS)
        self.timer.timeout.connect(self.poll)

        form = form_layout()
        self.library = PathPicker("folder", "Choose a folder of task adapters",
                                  placeholder="folder of PEFT adapters, one sub-folder per task")
        add_row(form, "Adapters", self.library)
        self.kind = Segmented([("t2l", "Text-to-LoRA"), ("dnd", "DnD")])
        self.kind.changed.connect(self._on_kind)
        add_row(form, "Hypernetwork", self.kind)
        row = QHBoxLayout()
        row.setSpacing(12)
        self.mode = QComboBox()
        self.mode.addItem("recon — reconstruct the library LoRAs (L1)", "recon")
        self.mode.addItem("sft — train through the base model (needs examples.jsonl)", "sft")
        compact_combo(self.mode, 14)
        row.addWidget(self.mode, 3)
        self.head = QComboBox()
        for key, text in (("S", "head S (rank-one rows, smallest)"), ("M", "head M (A|B shared)"),
                          ("L", "head L (whole A and B, largest)")):
            self.head.addItem(text, key)
        compact_combo(self.head, 10)
        row.addWidget(self.head, 2)
        self.steps = QSpinBox()
        self.steps.setRange(1, 1_000_000)
        self.steps.setValue(300)
        self.steps.setSuffix(" steps")
        theme.fix_spin(self.steps)
        row.addWidget(self.steps, 1)
        add_row(form, "Training", row)
        self.init_from = PathPicker("folder", "Choose a saved Text-to-LoRA network to start from",
                                    placeholder="optional: a saved Text-to-LoRA network of the same "
                                                "head (e.g. SFT after recon)")
        add_row(form, "Start from", self.init_from)
        self.body.addLayout(form)

        actions = QHBoxLayout()
        self.start_button = button("Start training", kind="primary", icon_name="play")
        self.start_button.clicked.connect(self.start)
        self.stop_button = button("Stop", kind="danger", icon_name="stop",
                                  tooltip="Stop after this step; the hypernetwork so far is saved")
        self.stop_button.clicked.connect(self.stop)
        self.stop_button.setEnabled(False)
        self.use_button = button("Use for generation", icon_name="generate")
        self.use_button.clicked.connect(self.use_result)
        self.use_button.hide()
        for widget in (self.start_button, self.stop_button, self.use_button):
            actions.addWidget(widget)
        actions.addStretch(1)
        self.body.addLayout(actions)
        self.status = label("", "muted", wrap=True, selectable=True)
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.body.addWidget(self.status)
        self.message = InlineMessage()
        self.body.addWidget(self.message)
        self.curves = CurvesPanel()
        self.curves.setMinimumHeight(380)
        self.curves.charts["tokens_per_s"].hide()     # hypernetwork steps have no token count
        self.body.addWidget(self.curves)

    def _on_kind(self, kind: str) -> None:
        self.mode.setEnabled(kind == "t2l")
        self.head.setEnabled(kind == "t2l")
        self.init_from.setEnabled(kind == "t2l")

    def is_running(self) -> bool:
        return self.job is not None and self.job.is_alive()

    # ---- start / stop ------------------------------------------------------------------------
    def start(self) -> bool:
        if self.is_running():
            return False
        from studio.worker.hyper_jobs import create_train_run
        from studio.worker.launcher import Job

        self.message.clear_message()
        if not self.library.path():
            self.message.show_error("Choose the folder of task adapters first.")
            return False
        try:
            run_dir = create_train_run(self.library.path(), kind=self.kind.value(),
                                       mode=self.mode.currentData(), head=self.head.currentData(),
                                       steps=self.steps.value(), model_path=self.page.model_path(),
                                       **self._options())
        except UserError as err:
            self.message.show_error(str(err))
            return False
        self.run_dir, self.final = run_dir, None
        self.curves.clear()
        self.job = Job.start(run_dir)
        self.timer.start()
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.use_button.hide()
        self.status.setText("Starting the training process…")
        self._refresh_runs()
        return True

    def _options(self) -> dict:
        start_from = self.init_from.path() if self.kind.value() == "t2l" else ""
        return {"init_from": start_from} if start_from else {}

    def stop(self) -> None:
        if self.is_running():
            self.job.cancel()
            self.status.setText("Stopping after this step…")

    def shutdown(self) -> None:
        if self.is_running():
            self.job.cancel()
            if self.job.wait(10) is None:
                self.job.kill()

    # ---- events --------------------------------------------------------------------------------
    def poll(self) -> None:
        if self.job is None:
            return
        events = self.job.poll_events()
        if events:
            self.curves.add_events(events)
            for event in events:
                self._handle(event)
        if not self.job.is_alive() and self.job.terminal_event is not None and not events:
            self.timer.stop()
            self._done()

    def _handle(self, event: dict) -> None:
        name = event.get("event")
        if name == "started":
            self.status.setText(f"Training {event.get('total_steps')} steps on "
                                f"{len(event.get('tasks') or [])} tasks…")
        elif name == "log":
            self.status.setText(f"step {event['step']}/{self.steps.value()} · loss {event['loss']:.4f}")
        elif name == "finished":
            self.final = event
        elif name == "cancelled":
            self.final = {**event, "adapter_path": event.get("checkpoint")}
        elif name == "failed":
            self.message.show_error(f"Training failed: {event.get('cause')}")

    def _done(self) -> None:
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        event = self.job.terminal_event or {}
        if event.get("event") in ("finished", "cancelled") and self.final and self.final.get("adapter_path"):
            metrics = self.final.get("metrics") or {}
            loss = metrics.get("final_loss")
            what = "Finished" if event.get("event") == "finished" else "Stopped"
            self.status.setText(f"{what}. Hypernetwork: {self.final['adapter_path']}"
                                + (f" · final loss {loss:.4f}" if isinstance(loss, (int, float)) else ""))
            self.use_button.show()
        else:
            self.status.setText("Training failed (see the message above and the run's worker.log).")
        self._refresh_runs()

    def use_result(self) -> None:
        if self.final and self.final.get("adapter_path"):
            self.page.kind.set_value(self.kind.value())
            self.page.set_hypernetwork(self.final["adapter_path"])

    def _refresh_runs(self) -> None:
        window = getattr(self.page, "window_ref", None)
        runs = getattr(window, "runs_page", None)
        if runs is not None:
            runs.refresh()
