"""Train page: method + settings on the left; Start/Pause/Resume/Cancel, progress and live curves on
the right. Training runs in a separate OS process (studio.worker.launcher.Job), polled by a QTimer,
so a crash, an out-of-memory kill or a hung step never takes the window down."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QTimer, Qt, Signal
from PySide6.QtWidgets import (
    QFrame, QHBoxLayout, QPlainTextEdit, QProgressBar, QScrollArea, QSplitter, QVBoxLayout,
    QWidget,
)

from studio.errors import UserError
from studio.ui import theme
from studio.ui.curves import CurvesPanel
from studio.ui.method_panel import TRAINING_FORM, MethodPanel
from studio.ui.param_form import ParamForm
from studio.ui.train_recipe import RecipeActions
from studio.ui.widgets import Card, FlowRow, InlineMessage, Page, badge, button, human_count, human_duration, label

POLL_MS = 250
FINAL_STATES = ("finished", "failed", "cancelled")
BADGE_ROLES = {"finished": "badge-ok", "failed": "badge-warn", "paused": "badge-warn",
               "running": "badge-accent", "starting": "badge-accent", "cancelling": "badge-warn"}


NEXT_STEPS = [
    ("chat", "Chat with it", "chat", "Ask it questions next to the base model"),
    ("evaluate", "Evaluate on a task…", "evaluate", "Score it and the base model on a task file"),
    ("export", "Export…", "save", "Adapter with model card, merged model, GGUF or Ollama, with a "
                                  "parity report"),
    ("runs", "See in Runs", "runs", "The run's curves, settings and files"),
]


def notify(widget, title: str, text: str) -> None:
    """A desktop notification when the window is not in front (tray message where the desktop has
    a tray, else the taskbar alert)."""
    from PySide6.QtWidgets import QApplication, QSystemTrayIcon

    window = widget.window()
    if window.isActiveWindow():
        return
    if QSystemTrayIcon.isSystemTrayAvailable():
        tray = getattr(window, "_tray", None)
        if tray is None:
            tray = QSystemTrayIcon(window.windowIcon(), window)
            window._tray = tray
        tray.show()
        tray.showMessage(title, text)
    QApplication.alert(window)


class TrainPage(RecipeActions, Page):
    run_started = Signal(str)     # run folder
    run_ended = Signal(str)
    queued = Signal(str)          # job id: this setup was added to the queue
    next_step = Signal(str, str)  # (action: "chat" | "evaluate" | "runs" | "export", adapter folder)

    def __init__(self, model_page, data_page, parent: QWidget | None = None) -> None:
        super().__init__("Train", "Pick a method, set it up, and watch it learn. Every run is saved and resumable.")
        self.model_page, self.data_page = model_page, data_page
        self.job = None
        self.run_dir: Path | None = None
        self.state = "idle"
        self.total_steps: int | None = None
        self.step = 0
        self.last_event: dict | None = None
        self._cancel_requested_at: float | None = None
        self.timer = QTimer(self, interval=POLL_MS)
        self.timer.timeout.connect(self.poll)

        load_button = button("Load recipe…", icon_name="folder")
        load_button.clicked.connect(self._load_recipe_dialog)
        self.save_button = button("Save recipe…", icon_name="save",
                                  tooltip="Write this setup as a TOML recipe: `peft-studio train RECIPE` replays it.")
        self.save_button.clicked.connect(self._save_recipe_dialog)
        self.header.actions.addWidget(load_button)
        self.header.actions.addWidget(self.save_button)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.setChildrenCollapsible(False)
        splitter.setHandleWidth(16)
        left_inner = QWidget()
        left_inner.setObjectName("Transparent")
        left = QVBoxLayout(left_inner)
        left.setContentsMargins(0, 0, 10, 0)
        left.setSpacing(16)
        self.method_panel = MethodPanel()
        self.method_panel.method_changed.connect(self._on_method_changed)
        self.model_page.model_changed.connect(self.method_panel.set_model)
        if self.model_page.info is not None:
            self.method_panel.set_model(self.model_page.info)
        left.addWidget(self.method_panel)
        training_card = Card("Training")
        self.training_form = ParamForm(TRAINING_FORM)
        training_card.body.addWidget(self.training_form)
        self._auto_name = True
        self.training_form.editors["name"].textEdited.connect(lambda _t: setattr(self, "_auto_name", False))
        self.data_page.settings_changed.connect(self._on_method_changed)
        self.estimate = label("", "faint", wrap=True)
        self.estimate.setToolTip("Time: from the newest finished run on the same model on this "
                                 "machine (or another model's, scaled by the parameter counts) and "
                                 "the data's mean token length. Memory: modelled for the longest "
                                 "batch, against what is free now.")
        training_card.body.addWidget(self.estimate)
        self.training_form.changed.connect(self.update_estimate)
        self.data_page.settings_changed.connect(self.update_estimate)
        self.data_page.stats_changed.connect(self.update_estimate)
        self.model_page.model_changed.connect(lambda _info: self.update_estimate())
        left.addWidget(training_card)
        left.addStretch(1)
        scroll = QScrollArea()
        scroll.setObjectName("PageScroll")
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(left_inner)
        scroll.setMinimumWidth(420)
        scroll.setMinimumHeight(420)
        splitter.addWidget(scroll)

        right_inner = QWidget()
        right_inner.setObjectName("Transparent")
        right = QVBoxLayout(right_inner)
        right.setContentsMargins(0, 0, 0, 0)
        right.setSpacing(16)
        run_card = Card("Run")
        self.state_badge = badge("idle")
        run_card.add_header_widget(self.state_badge)
        controls = FlowRow()              # wraps on a narrow window instead of widening it
        self.start_button = button("Start training", kind="primary", icon_name="play")
        self.pause_button = button("Pause", icon_name="pause")
        self.resume_button = button("Resume", icon_name="play")
        self.cancel_button = button("Cancel", kind="danger", icon_name="stop",
                                    tooltip="Stop after the current step and save a checkpoint")
        self.start_button.clicked.connect(self.start)
        self.pause_button.clicked.connect(self.pause)
        self.resume_button.clicked.connect(self.resume)
        self.cancel_button.clicked.connect(self.cancel)
        self.queue_button = button("Add to queue", icon_name="queue",
                                   tooltip="Queue this setup as a run that trains after the ones "
                                           "before it (Queue page)")
        self.queue_button.clicked.connect(self.add_to_queue)
        for widget in (self.start_button, self.queue_button, self.pause_button, self.resume_button,
                       self.cancel_button):
            controls.addWidget(widget)
        run_card.body.addLayout(controls)
        progress_row = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFixedHeight(10)
        self.progress_label = label("", "muted")
        self.progress_label.setMinimumWidth(150)
        self.progress_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.progress_label)
        run_card.body.addLayout(progress_row)
        self.status_line = label("Ready. Press Start to train on the model and data you chose.", "muted", wrap=True,
                                 selectable=True)
        run_card.body.addWidget(self.status_line)
        self.message = InlineMessage()
        run_card.body.addWidget(self.message)
        # what to do with a finished adapter, offered where the run ends
        self.next_steps = FlowRow()
        self.next_buttons: dict[str, object] = {}
        for action, text, icon_name, tip in NEXT_STEPS:
            b = button(text, icon_name=icon_name, tooltip=tip)
            b.clicked.connect(lambda _c=False, a=action: self._next(a))
            b.hide()
            self.next_steps.addWidget(b)
            self.next_buttons[action] = b
        run_card.body.addLayout(self.next_steps)
        # an out-of-memory failure offers the usual fix as one click
        self.retry_checkpointing = button(
            "Retry with gradient checkpointing", kind="primary",
            tooltip="Start the same settings again as a new run with gradient checkpointing on: "
                    "activations are recomputed in the backward pass (much less memory, ~30% slower)")
        self.retry_checkpointing.clicked.connect(self.retry_with_checkpointing)
        self.retry_checkpointing.hide()
        run_card.body.addWidget(self.retry_checkpointing)
        self.log_tail = QPlainTextEdit()
        self.log_tail.setReadOnly(True)
        self.log_tail.setFont(theme.mono_font(8.5))
        self.log_tail.setMaximumHeight(150)
        self.log_tail.hide()
        run_card.body.addWidget(self.log_tail)
        right.addWidget(run_card)
        self.curves = CurvesPanel()
        self.curves.set_placeholder("no steps yet")
        right.addWidget(self.curves, 1)
        splitter.addWidget(right_inner)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([440, 900])
        self.content.addWidget(splitter, 1)
        self._set_state("idle")

    # ---- running --------------------------------------------------------------------------
    def is_running(self) -> bool:
        """A training process is alive for this page (ended or killed processes do not count)."""
        return (self.job is not None and self.job.is_alive()
                and self.state not in FINAL_STATES + ("idle",))

    def start(self) -> bool:
        if self.is_running():
            return False
        recipe = self.checked_recipe()
        if recipe is None:
            return False
        from studio.core.runs import create_run

        run_dir = create_run(recipe)
        return self._launch(run_dir, resume=False, total=recipe.training.max_steps or None)

    def add_to_queue(self) -> str | None:
        """Queue a frozen copy of this setup (Queue page); the job id, or None when invalid."""
        recipe = self.checked_recipe()
        if recipe is None:
            return None
        from studio.core.job_queue import JobQueue

        try:
            job = JobQueue().add(recipe)
        except UserError as err:
            self.show_user_error(err)
            return None
        position = len(JobQueue().jobs())
        self.message.show_info(f"“{job['name']}” added to the queue (#{position}). The Queue page "
                               f"trains the queued runs one after another.")
        self.queued.emit(job["id"])
        return job["id"]

    def resume_run(self, run_dir: str | Path) -> bool:
        """Continue a stopped run from its last checkpoint (Runs page → Resume)."""
        from studio.core.runs import load_recipe, read_events

        if self.is_running():
            self.message.show_error("A run is already going; wait for it to end or cancel it first.")
            return False
        self.clear_errors()
        try:
            self.apply_recipe(load_recipe(run_dir))
        except UserError as err:
            self.message.show_error(str(err))
            return False
        history = read_events(run_dir)
        self.curves.load_events(history)
        started = self._launch(Path(run_dir), resume=True, total=None, keep_curves=True)
        # while the model loads, show where the run resumes, not "step 0"
        steps = [e.get("step") for e in history if e.get("event") in ("log", "checkpoint", "cancelled")]
        totals = [e.get("total_steps") for e in history if e.get("event") == "started"]
        self.step = max((int(x) for x in steps if isinstance(x, int)), default=0)
        self.total_steps = next((int(x) for x in reversed(totals) if isinstance(x, int)), None)
        self._update_progress()
        return started

    def update_estimate(self, *_args) -> None:
        """'Estimate: about 4 min for 60 steps ...' from this machine's last run on the model (or
        another model's, scaled), and the modelled memory for the largest batch against what is
        free, with what auto checkpointing will do."""
        from types import SimpleNamespace

        from studio.core.estimate import estimate_text, last_measurement, memory_text, quick_device
        from studio.core.training_parts import frozen_dtype

        values = self.training_form.values()
        model = self.model_page.model_path() if hasattr(self.model_page, "model_path") else ""
        info = getattr(self.model_page, "info", None)
        stats = getattr(self.data_page, "last_stats", None)
        max_length = int(self.data_page.settings().get("max_length") or 256)
        known = bool(stats and stats.get("count"))
        length = min(stats["mean"], max_length) if known else max_length / 2
        batch = int(values.get("batch_size") or 1)
        per_step = length * batch * int(values.get("grad_accum") or 1)
        try:
            measured = last_measurement(Path(model).name, any_model=True) if model else None
        except OSError:
            measured = None
        lines = [estimate_text(int(values.get("max_steps") or 0), per_step, measured, known,
                               Path(model).name if model else "",
                               getattr(info, "num_parameters", None))]
        if info is not None:
            device, free = quick_device(), None
            precision = values.get("precision") or "auto"
            if device == "cuda":
                # torch is not loaded in the GUI: a GPU's bf16 support and free memory are read
                # when the run starts; the estimate assumes a bf16 GPU
                precision = "bf16" if precision == "auto" else precision
                free = 0.0
            quant = self.model_page.quantization() or None
            training = SimpleNamespace(precision=precision,
                                       frozen_bf16=bool(values.get("frozen_bf16", True)))
            longest = min(int(stats["max"]), max_length) if known else max_length
            lines.append(memory_text(info, quant, frozen_dtype(training, device, quant, "float32"),
                                     batch * longest, device,
                                     checkpointing=bool(values.get("gradient_checkpointing")),
                                     auto=bool(values.get("auto_checkpointing", True)),
                                     free_mb=free))
        self.estimate.setText("\n".join(x for x in lines if x))

    def retry_with_checkpointing(self) -> bool:
        """After an out-of-memory failure: the same settings, gradient checkpointing on, a new run."""
        self.retry_checkpointing.hide()
        self.training_form.set_values({"gradient_checkpointing": True})
        self.message.show_info("Gradient checkpointing is on; starting again as a new run.")
        return self.start()

    def clone_run(self, run_dir: str | Path) -> bool:
        """Runs → "Clone settings to Train": this page gets the run's model, data, method and
        training settings, under a new name, ready to change and start."""
        from studio.core.runs import load_recipe

        if self.is_running():
            self.message.show_error("A run is going; its settings are locked until it ends.")
            return False
        self.clear_errors()
        try:
            recipe = load_recipe(run_dir)
        except UserError as err:
            self.message.show_error(str(err))
            return False
        recipe.name = f"{recipe.name}-2"
        self.apply_recipe(recipe)
        self.message.show_info(f"Settings of {Path(run_dir).name} loaded as “{recipe.name}”: change "
                               f"what you like and press Start.")
        return True

    def _launch(self, run_dir: Path, resume: bool, total: int | None, keep_curves: bool = False) -> bool:
        from studio.worker.launcher import Job

        if not keep_curves:
            self.curves.clear()
        self.run_dir = Path(run_dir)
        self.total_steps, self.step, self.last_event = total, 0, None
        self._cancel_requested_at = None
        self.log_tail.hide()
        self.job = Job.start(self.run_dir, resume=resume)
        self._set_state("starting")
        self.status_line.setText(f"{'Resuming' if resume else 'Starting'}: loading the model in the training "
                                 f"process…   {self.run_dir}")
        self._update_progress()
        self.timer.start()
        self.run_started.emit(str(self.run_dir))
        return True

    def pause(self) -> None:
        if self.job is not None and self.state in ("running", "starting") and self.job.pause():
            self.status_line.setText("Pausing after the current step…")

    def resume(self) -> None:
        if self.job is not None and self.state == "paused" and self.job.resume():
            self.status_line.setText("Resuming…")

    def cancel(self) -> None:
        if self.job is None or not self.is_running():
            return
        if self.state == "cancelling":
            self.kill()
            return
        if self.job.cancel():
            self._cancel_requested_at = time.monotonic()
            self._set_state("cancelling")
            self.status_line.setText("Cancelling: saving a checkpoint after the current step…")

    def kill(self) -> None:
        """Stop the training process at once (no checkpoint); the run is then marked failed."""
        if self.job is not None:
            self.job.kill()

    def shutdown(self) -> None:
        """Window closing: ask the child to cancel (it checkpoints and exits on its own)."""
        if self.job is not None and self.is_running():
            self.job.cancel()
        self.timer.stop()

    # ---- events ---------------------------------------------------------------------------
    def poll(self) -> None:
        if self.job is None:
            self.timer.stop()
            return
        events = self.job.poll_events()
        if events:
            self.curves.add_events(events)
            for event in events:
                self._handle(event)
        if self.state in FINAL_STATES:
            self.timer.stop()
            self.run_ended.emit(str(self.run_dir))

    def _handle(self, event: dict) -> None:
        kind = event.get("event")
        self.last_event = event
        if kind == "started":
            self.total_steps = event.get("total_steps") or self.total_steps
            self.step = int(event.get("resumed_from") or 0)
            trainable, total = event.get("trainable_params"), event.get("total_params")
            share = f" ({100 * trainable / total:.2f}%)" if trainable and total else ""
            device = f" on {event['device']}" if event.get("device") else ""
            if event.get("precision"):                  # as resolved: never "auto"
                device += f", {event['precision']}"
                if event.get("frozen_dtype") == "bfloat16" and event["precision"] == "bf16":
                    device += " (base weights held in bf16)"
            self.status_line.setText(f"Training {human_count(trainable)} of {human_count(total)} parameters{share}"
                                     f"{device}.   {self.run_dir}")
            if event.get("warnings"):
                self.message.show_info("Note: " + " ".join(event["warnings"]))
            self._set_state("running" if self.state != "cancelling" else "cancelling")
        elif kind == "log":
            self.step = int(event.get("step") or self.step)
            self._update_progress(event)
        elif kind == "phase":
            self._show_phase(event)
        elif kind == "eval":
            self.status_line.setText(f"Eval loss {event.get('eval_loss', float('nan')):.4f} at step {event.get('step')}.")
        elif kind == "checkpoint":
            self.status_line.setText(f"Checkpoint saved at step {event.get('step')}: {event.get('path')}")
        elif kind == "paused":
            self._set_state("paused")
            self.status_line.setText(f"Paused at step {event.get('step')}. Resume continues exactly here.")
        elif kind == "resumed":
            self._set_state("running")
            self.status_line.setText(f"Resumed at step {event.get('step')}.")
        elif kind == "cancelled":
            self._set_state("cancelled")
            checkpoint = event.get("checkpoint")
            self.status_line.setText(f"Cancelled at step {event.get('step')}."
                                     + (f" Checkpoint: {checkpoint} (Runs → Resume continues it)." if checkpoint else ""))
        elif kind == "finished":
            self.step = int(event.get("step") or self.step)
            self._set_state("finished")
            metrics = event.get("metrics") or {}
            loss = metrics.get("eval_loss", metrics.get("train_loss"))
            extra = f"  Final eval loss {loss:.4f}." if isinstance(loss, (int, float)) else ""
            self.status_line.setText(f"Finished at step {self.step}.{extra}  Adapter: {event.get('adapter_path')}")
            self._update_progress()
            self.finished_adapter = event.get("adapter_path") or ""
            for b in self.next_buttons.values():
                b.show()
            notify(self, "Training finished", f"{self.run_dir.name if self.run_dir else 'The run'}: "
                                              f"step {self.step}.{extra}")
        elif kind == "failed":
            self._set_state("failed")
            self.status_line.setText("The training process stopped.")
            cause = event.get("cause") or "unknown cause"
            self.message.show_error(f"Training failed: {cause}")
            if "out of memory" in cause.lower() and not self.training_form.values().get(
                    "gradient_checkpointing"):
                self.retry_checkpointing.show()
            tail = event.get("traceback_tail") or self._worker_log_tail()
            if tail:
                self.log_tail.setPlainText(tail)
                self.log_tail.show()

    def _next(self, action: str) -> None:
        if getattr(self, "finished_adapter", ""):
            self.next_step.emit(action, self.finished_adapter)

    def _show_phase(self, event: dict) -> None:
        """Between logged steps: 'Evaluating… 3/10 batches' / 'Saving a checkpoint…', so a long
        evaluation is not mistaken for a stalled run; 'training' puts the step status back."""
        phase, step = event.get("phase"), event.get("step")
        if phase == "evaluating":
            done, total = event.get("done"), event.get("total")
            count = f" {done}/{total} batches" if total else ""
            self.status_line.setText(f"Evaluating at step {step}…{count}")
            self.progress_label.setText(f"{step}/{self.total_steps or '?'} · evaluating{count}")
        elif phase == "saving":
            self.status_line.setText(f"Saving a checkpoint at step {step}…")
            self.progress_label.setText(f"{step}/{self.total_steps or '?'} · saving")
        else:
            self.status_line.setText(f"Training: step {step} of {self.total_steps or '?'}.")

    def _worker_log_tail(self) -> str:
        if self.run_dir is None:
            return ""
        try:
            text = (self.run_dir / "worker.log").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-30:])

    def _update_progress(self, event: dict | None = None) -> None:
        total = self.total_steps or 0
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(min(self.step, total) if total else 0)
        parts = [f"Step {self.step} / {total}" if total else f"Step {self.step}"]
        if event is not None:
            if isinstance(event.get("tokens_per_s"), (int, float)):
                rate = f"{event['tokens_per_s']:,.0f} tok/s"
                if isinstance(event.get("trained_tokens_per_s"), (int, float)):
                    rate += f" ({event['trained_tokens_per_s']:,.0f} trained)"
                parts.append(rate)
            if isinstance(event.get("padding"), (int, float)) and event["padding"] > 0:
                parts.append(f"padding {event['padding']:.0%}")
            if self.state in ("running", "starting"):
                parts.append(f"ETA {human_duration(event.get('eta_s'))}")
        self.progress_label.setText("   ·   ".join(parts))

    def _set_state(self, state: str) -> None:
        self.state = state
        self.state_badge.setText(state)
        self.state_badge.setProperty("role", BADGE_ROLES.get(state, "badge"))
        theme.repolish(self.state_badge)
        running = state in ("starting", "running", "paused", "cancelling")
        if state != "failed":
            self.retry_checkpointing.hide()
        if state != "finished":
            for b in self.next_buttons.values():
                b.hide()
        # a run trains with the settings it started with: lock them so no one thinks an edit applies
        self.method_panel.setEnabled(not running)
        self.training_form.setEnabled(not running)
        self.method_panel.setToolTip("Locked while a run trains: its settings are fixed when it starts."
                                     if running else "")
        self.start_button.setEnabled(not running)
        self.pause_button.setEnabled(state in ("starting", "running"))
        self.resume_button.setEnabled(state == "paused")
        self.cancel_button.setEnabled(running)
        self.queue_button.setEnabled(not running)
        self.cancel_button.setText("Force stop" if state == "cancelling" else "Cancel")
        self.cancel_button.setToolTip("Kill the training process now (no checkpoint)" if state == "cancelling"
                                      else "Stop after the current step and save a checkpoint")
        self.save_button.setEnabled(True)
