"""Queue page: runs waiting to train one after another (Train page → "Add to queue", or
`peft-studio queue add`). The order can change while it runs; the queue lives on disk
(studio.core.job_queue) and survives a restart: a job that was running when the app closed or
crashed shows as interrupted, and only starts again when you press Requeue.

The jobs train in their own processes, one at a time (studio.worker.queue_runner), polled by a
QTimer like the Train page's run."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QTimer, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem, QWidget,
)

from studio.errors import UserError
from studio.ui import theme
from studio.ui.widgets import Card, FlowRow, InlineMessage, Page, button, label

COLUMNS = ["#", "Name", "Method", "Status", "Step", "Run"]
TICK_MS = 500
REFRESH_EVERY = 3            # re-read the queue file every 3 ticks when idle (CLI edits appear)
STATUS_COLORS = {"queued": "idle", "interrupted": "paused"}


class QueuePage(Page):
    run_ended = Signal(str)      # a queued run ended (run folder): the Runs page refreshes
    run_started = Signal(str)

    def __init__(self, queue=None, parent: QWidget | None = None) -> None:
        super().__init__("Queue", "Runs that train one after another in the background. "
                                  "The queue is kept on disk and survives a restart.")
        from studio.core.job_queue import JobQueue

        self.queue = queue or JobQueue()
        self.runner = None
        self.jobs: list[dict] = []
        self._ticks = 0
        self.start_button = button("Start queue", kind="primary", icon_name="play",
                                   tooltip="Train the queued jobs one after another")
        self.stop_button = button("Stop after this job", icon_name="pause",
                                  tooltip="Let the running job finish, then start no other")
        self.cancel_button = button("Cancel job", kind="danger", icon_name="stop",
                                    tooltip="Cancel the running job (a checkpoint is saved)")
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.cancel_button.clicked.connect(self.cancel_current)
        for b in (self.start_button, self.stop_button, self.cancel_button):
            self.header.actions.addWidget(b)

        card = Card()
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setShowGrid(False)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setDefaultSectionSize(38)
        self.table.setMinimumHeight(38 * 5)
        header = self.table.horizontalHeader()
        for col in range(len(COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        card.body.addWidget(self.table, 1)
        self.empty = label("The queue is empty. On the Train page, set up a run and press "
                           "“Add to queue”.", "muted", wrap=True)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        card.body.addWidget(self.empty)
        actions = FlowRow()
        self.up_button = button("Move up", icon_name="arrow-up")
        self.down_button = button("Move down", icon_name="arrow-down")
        self.requeue_button = button("Requeue", icon_name="resume",
                                     tooltip="Queue an ended job again: it resumes from its "
                                             "checkpoint when it has one")
        self.remove_button = button("Remove", kind="danger", icon_name="trash",
                                    tooltip="Take the job out of the queue (its run folder stays)")
        self.clear_button = button("Clear finished", kind="ghost")
        self.up_button.clicked.connect(lambda: self._move(-1))
        self.down_button.clicked.connect(lambda: self._move(1))
        self.requeue_button.clicked.connect(self._requeue)
        self.remove_button.clicked.connect(self._remove)
        self.clear_button.clicked.connect(lambda: self._do(self.queue.clear_done))
        for b in (self.up_button, self.down_button, self.requeue_button, self.remove_button,
                  self.clear_button):
            actions.addWidget(b)
        card.body.addLayout(actions)
        self.state_line = label("", "muted", wrap=True, selectable=True)
        card.body.addWidget(self.state_line)
        self.detail = label("", "faint", wrap=True, selectable=True)
        card.body.addWidget(self.detail)
        self.message = InlineMessage()
        card.body.addWidget(self.message)
        self.filler = QWidget()              # takes the table's room while the queue is empty
        self.filler.setObjectName("Transparent")
        card.body.addWidget(self.filler, 1)
        self.content.addWidget(card, 1)

        self.timer = QTimer(self, interval=TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.timer.start()
        self.refresh()

    # ---- the queue ------------------------------------------------------------------------
    def on_show(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        try:
            jobs = self.queue.jobs()
        except UserError as err:
            self.message.show_error(str(err))
            return
        keep = self.selected_id()
        self.jobs = jobs
        self.table.blockSignals(True)
        self.table.setRowCount(len(jobs))
        for row, job in enumerate(jobs):
            total = job.get("total_steps") or job.get("steps") or "?"
            run = Path(job["run_dir"]).name if job.get("run_dir") else "—"
            cells = [str(row + 1), job.get("name", ""), job.get("method", ""), job["status"],
                     f"{job.get('step') or 0}/{total}", run]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, job["id"])
                if col == 3:
                    status = STATUS_COLORS.get(text, text)
                    item.setForeground(QColor(theme.STATUS_COLORS.get(status, theme.MUTED)))
                    item.setText(f"●  {text}")
                if col == 1 and job.get("message"):
                    item.setToolTip(job["message"])
                self.table.setItem(row, col, item)
            if job["id"] == keep:
                self.table.selectRow(row)
        self.table.blockSignals(False)
        self.table.setVisible(bool(jobs))
        self.empty.setVisible(not jobs)
        self.filler.setVisible(not jobs)
        self._update_buttons()

    def selected_id(self) -> str | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows:
            return None
        item = self.table.item(rows[0].row(), 0)
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def selected_job(self) -> dict | None:
        job_id = self.selected_id()
        return next((j for j in self.jobs if j["id"] == job_id), None)

    def select(self, job_id: str) -> None:
        for row, job in enumerate(self.jobs):
            if job["id"] == job_id:
                self.table.selectRow(row)

    def _do(self, action, *args) -> None:
        self.message.clear_message()
        try:
            action(*args)
        except UserError as err:
            self.message.show_error(str(err))
        self.refresh()

    def _move(self, delta: int) -> None:
        job_id = self.selected_id()
        if job_id:
            self._do(self.queue.move, job_id, delta)
            self.select(job_id)

    def _remove(self) -> None:
        job_id = self.selected_id()
        if job_id:
            self._do(self.queue.remove, job_id)

    def _requeue(self) -> None:
        job_id = self.selected_id()
        if job_id:
            self._do(self.queue.requeue, job_id)

    # ---- running ------------------------------------------------------------------------
    def is_running(self) -> bool:
        return self.runner is not None and self.runner.busy()

    def start(self) -> bool:
        from studio.worker.queue_runner import QueueRunner

        self.message.clear_message()
        if self.runner is None:
            self.runner = QueueRunner(self.queue, on_event=self._on_event)
        try:
            self.runner.open()
        except UserError as err:
            self.message.show_error(str(err))
            return False
        self._tick()
        return True

    def stop(self) -> None:
        if self.runner is not None:
            self.runner.stop()
            self._update_buttons()

    def cancel_current(self) -> None:
        if self.runner is not None:
            self.runner.cancel_current()

    def shutdown(self, kill: bool = False, wait_s: float = 60) -> None:
        """Window closing: the running job is cancelled (checkpoint kept) and marked interrupted,
        so the queue shows it as resumable next time; nothing else starts."""
        self.timer.stop()
        runner = self.runner
        if runner is None:
            return
        runner.stop()
        if runner.busy():
            job = runner.job
            if kill:
                job.kill()
            else:
                runner.cancel_current(interrupt=True)
            job.wait(wait_s)
            if job.is_alive():
                job.kill()
                job.wait(10)
            runner.tick()
        runner.close()

    def _on_event(self, job: dict, event: dict) -> None:
        name = event["event"]
        if name == "started":
            self.run_started.emit(event.get("run_dir") or job.get("run_dir") or "")
        elif name in ("finished", "failed", "cancelled"):
            self.run_ended.emit(job.get("run_dir") or "")
        if name == "log":
            self._live = f"step {event['step']}/{self._total or '?'} · loss {event['loss']:.4f}"
        elif name == "started":
            self._total = event["total_steps"]
            self._live = "training"
        elif name == "phase":
            self._live = f"{event['phase']} at step {event['step']}"

    _live = ""
    _total = None

    def _tick(self) -> None:
        self._ticks += 1
        runner = self.runner
        changed = False
        if runner is not None and runner.is_open:
            before = runner.current["id"] if runner.current else None
            try:
                more = runner.tick()
            except UserError as err:
                self.message.show_error(str(err))
                more = False
            after = runner.current["id"] if runner.current else None
            changed = before != after
            if not more and not runner.busy():
                runner.close()           # done: another process may run the queue now
                changed = True
        if changed or self._ticks % REFRESH_EVERY == 0 or (runner is not None and runner.busy()):
            if self.isVisible() or changed:
                self.refresh()
        self._update_state()

    def _update_state(self) -> None:
        runner = self.runner
        if runner is not None and runner.busy():
            cur = runner.current
            text = f"Training {cur['name']} ({self._live or 'loading the model…'})"
            if runner.stopping:
                text += " — the queue stops after this job."
        elif runner is not None and runner.is_open:
            text = "The queue is running: waiting for jobs."
        elif self.queue.runner_alive():
            text = "The queue is being run by another process (e.g. `peft-studio queue run`)."
        else:
            queued = sum(j["status"] == "queued" for j in self.jobs)
            text = (f"{queued} job(s) queued. Press Start queue to train them one after another."
                    if queued else "Nothing queued.")
        self.state_line.setText(text)
        job = self.selected_job()
        self.detail.setText(self._describe(job) if job else "")
        self._update_buttons()

    @staticmethod
    def _describe(job: dict) -> str:
        parts = [f"job {job['id']}", f"recipe {job.get('recipe', '')}"]
        if job.get("run_dir"):
            parts.append(f"run {job['run_dir']}")
        if job.get("message"):
            parts.append(job["message"])
        return "   ·   ".join(parts)

    def _update_buttons(self) -> None:
        busy = self.is_running()
        job = self.selected_job()
        status = job["status"] if job else None
        index = next((i for i, j in enumerate(self.jobs) if job and j["id"] == job["id"]), -1)
        self.start_button.setEnabled(not (self.runner is not None and self.runner.is_open)
                                     and any(j["status"] == "queued" for j in self.jobs))
        self.stop_button.setEnabled(busy and not self.runner.stopping)
        self.cancel_button.setEnabled(busy)
        self.up_button.setEnabled(index > 0)
        self.down_button.setEnabled(0 <= index < len(self.jobs) - 1)
        self.remove_button.setEnabled(job is not None and status != "running")
        self.requeue_button.setEnabled(status in ("finished", "failed", "cancelled", "interrupted"))
        self.clear_button.setEnabled(any(j["status"] == "finished" for j in self.jobs))
