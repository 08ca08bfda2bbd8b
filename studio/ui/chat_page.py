"""Chat page: one prompt, two answers side by side: the base model and the model with an adapter.

The model is loaded and generates in a worker thread; one (model, adapter) pair is kept loaded.
"""

from __future__ import annotations

import html
import threading
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox, QDoubleSpinBox, QFileDialog, QHBoxLayout, QPlainTextEdit, QSpinBox,
    QTextBrowser, QWidget,
)

from studio.ui import tasks, theme
from studio.ui.widgets import Card, InlineMessage, Page, add_row, button, form_layout, label

NO_ADAPTER = ""
BROWSE = "__browse__"

_loaded: dict = {}
_lock = threading.Lock()


def answer(model_path: str, adapter_dir: str, quantization: str, prompt: str, max_new_tokens: int,
           temperature: float) -> dict:
    """Worker thread: load (or reuse) the model + adapter, answer with and without the adapter."""
    from studio.core import chat

    key = (model_path, adapter_dir, quantization)
    with _lock:
        if _loaded.get("key") != key:
            _loaded.clear()
            model, tokenizer = chat.load_for_chat(model_path, adapter_dir or None, quantization or None)
            _loaded.update(key=key, model=model, tokenizer=tokenizer)
        model, tokenizer = _loaded["model"], _loaded["tokenizer"]
        if adapter_dir:
            return chat.compare_answers(model, tokenizer, prompt, max_new_tokens, temperature)
        return {"base": chat.generate(model, tokenizer, prompt, max_new_tokens, temperature), "adapter": None}


def _finished_adapters() -> list[tuple[str, str]]:
    from studio.core.runs import list_runs

    found = []
    for run in list_runs():
        for candidate in (run.adapter_path, Path(run.path) / "adapter"):
            if candidate and (Path(candidate) / "adapter_config.json").is_file():
                found.append((f"{run.name} · {run.method} · {run.created[:16].replace('T', ' ')}", str(candidate)))
                break
    return found


class _AnswerPane(Card):
    def __init__(self, title: str, color: str) -> None:
        super().__init__(title)
        self.title_label.setStyleSheet(f"color: {color};")
        self.view = QTextBrowser()
        self.view.setOpenLinks(False)
        self.body.addWidget(self.view, 1)
        self.turns: list[tuple[str, str | None]] = []
        self.render()

    def add_turn(self, prompt: str) -> None:
        self.turns.append((prompt, None))
        self.render()

    def set_answer(self, text: str) -> None:
        if self.turns:
            self.turns[-1] = (self.turns[-1][0], text)
        self.render()

    def clear(self) -> None:
        self.turns.clear()
        self.render()

    def last_answer(self) -> str | None:
        return self.turns[-1][1] if self.turns else None

    def render(self) -> None:
        if not self.turns:
            self.view.setHtml(f'<p style="color:{theme.FAINT}">Answers appear here.</p>')
            return
        parts = []
        for prompt, reply in self.turns:
            parts.append(f'<p style="color:{theme.MUTED}; margin-bottom:4px;"><b>You</b></p>'
                         f'<p style="margin-top:0;">{html.escape(prompt)}</p>')
            shown = html.escape(reply) if reply is not None else f'<i style="color:{theme.FAINT}">thinking…</i>'
            parts.append(f'<p style="color:{theme.MUTED}; margin-bottom:4px;"><b>Model</b></p>'
                         f'<p style="margin-top:0; margin-bottom:22px; white-space: pre-wrap;">{shown}</p>')
        self.view.setHtml("".join(parts))
        bar = self.view.verticalScrollBar()
        bar.setValue(bar.maximum())


class ChatPage(Page):
    def __init__(self, model_page, parent: QWidget | None = None) -> None:
        super().__init__("Chat", "Ask the same question to the base model and to the model with your adapter.",
                         scroll=False)
        self.model_page = model_page
        self.busy = False

        setup = Card()
        row = QHBoxLayout()
        row.setSpacing(16)
        form = form_layout()
        self.model_label = label("", None)
        add_row(form, "Base model", self.model_label)
        self.adapter = QComboBox()
        self.adapter.setMinimumWidth(380)
        self.adapter.activated.connect(self._on_adapter_chosen)
        add_row(form, "Adapter", self.adapter)
        row.addLayout(form, 3)
        gen = form_layout()
        self.max_new_tokens = QSpinBox()
        self.max_new_tokens.setRange(1, 4096)
        self.max_new_tokens.setValue(96)
        theme.fix_spin(self.max_new_tokens)
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 2.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setDecimals(2)
        theme.fix_spin(self.temperature)
        self.temperature.setToolTip("0 = greedy (the same answer every time)")
        add_row(gen, "Max new tokens", self.max_new_tokens)
        add_row(gen, "Temperature", self.temperature)
        row.addLayout(gen, 1)
        setup.body.addLayout(row)
        self.content.addWidget(setup)

        answers = QHBoxLayout()
        answers.setSpacing(16)
        self.base_pane = _AnswerPane("Base model", theme.SERIES["loss"])
        self.adapter_pane = _AnswerPane("With adapter", theme.ACCENT_HOVER)
        answers.addWidget(self.base_pane, 1)
        answers.addWidget(self.adapter_pane, 1)
        self.content.addLayout(answers, 1)

        ask = Card()
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("Type a prompt, e.g. “Rewrite this date as YYYY-MM-DD: 14 March 2021”  (Ctrl+Enter sends)")
        self.prompt.setFixedHeight(76)
        ask_row = QHBoxLayout()
        ask_row.addWidget(self.prompt, 1)
        buttons = QHBoxLayout()
        self.send_button = button("Send", kind="primary", icon_name="send")
        self.send_button.clicked.connect(self.send)
        self.clear_button = button("Clear", kind="ghost")
        self.clear_button.clicked.connect(self._clear)
        buttons.addWidget(self.clear_button)
        buttons.addWidget(self.send_button)
        ask_row.addLayout(buttons)
        ask.body.addLayout(ask_row)
        self.status = label("", "faint")
        self.status.hide()
        self.message = InlineMessage()
        ask.body.addWidget(self.message)
        ask.body.addWidget(self.status)
        self.content.addWidget(ask)
        QShortcut(QKeySequence("Ctrl+Return"), self.prompt, activated=self.send)

        self.adapter.addItem("None — base model only", NO_ADAPTER)
        self.adapter.addItem("Choose an adapter folder…", BROWSE)
        model_page.model_changed.connect(lambda _info: self._update_model_label())
        model_page.quantization_changed.connect(lambda _q: self._update_model_label())
        self._update_model_label()

    # ---- adapters -------------------------------------------------------------------------
    def on_show(self) -> None:
        """The window shows this page."""
        self.refresh_adapters()

    def refresh_adapters(self) -> None:
        tasks.run_async(_finished_adapters, on_done=self._fill_adapters)

    def _fill_adapters(self, found: list[tuple[str, str]]) -> None:
        current = self.adapter_dir()
        self.adapter.blockSignals(True)
        self.adapter.clear()
        self.adapter.addItem("None — base model only", NO_ADAPTER)
        for text, path in found:
            self.adapter.addItem(text, path)
            self.adapter.setItemData(self.adapter.count() - 1, path, Qt.ItemDataRole.ToolTipRole)
        if current and self.adapter.findData(current) < 0:
            self.adapter.addItem(Path(current).parent.name + " / " + Path(current).name, current)
        self.adapter.addItem("Choose an adapter folder…", BROWSE)
        self.adapter.setCurrentIndex(max(self.adapter.findData(current), 0))
        self.adapter.blockSignals(False)
        self._update_panes()

    def set_adapter(self, adapter_dir: str) -> None:
        index = self.adapter.findData(adapter_dir)
        if index < 0:
            self.adapter.insertItem(self.adapter.count() - 1, Path(adapter_dir).parent.name, adapter_dir)
            index = self.adapter.findData(adapter_dir)
        self.adapter.setCurrentIndex(index)
        self._update_panes()
        self.refresh_adapters()

    def adapter_dir(self) -> str:
        data = self.adapter.currentData()
        return data if data and data != BROWSE else ""

    def _on_adapter_chosen(self, index: int) -> None:
        if self.adapter.itemData(index) == BROWSE:
            folder = QFileDialog.getExistingDirectory(self, "Choose an adapter folder")
            if folder:
                self.set_adapter(folder)
            else:
                self.adapter.setCurrentIndex(0)
        self._update_panes()

    def _update_panes(self) -> None:
        adapter = self.adapter_dir()
        self.adapter_pane.setEnabled(bool(adapter))
        self.adapter_pane.title_label.setText(
            f"With adapter · {self.adapter.currentText().split(' · ')[0]}" if adapter else "With adapter (none chosen)")

    def _update_model_label(self) -> None:
        path = self.model_page.model_path()
        quant = self.model_page.quantization()
        self.model_label.setText(f"{Path(path).name or '—'}" + (f"  ({quant})" if quant else ""))
        self.model_label.setToolTip(path)

    # ---- asking ---------------------------------------------------------------------------
    def send(self) -> None:
        prompt = self.prompt.toPlainText().strip()
        if self.busy:
            return
        if not prompt:
            self.message.show_error("Type a prompt first.")
            return
        model_path = self.model_page.model_path()
        if self.model_page.info is None:
            self.message.show_error("The base model is not usable: fix it on the Model page first.")
            return
        self.message.clear_message()
        adapter = self.adapter_dir()
        self.busy = True
        self.send_button.setEnabled(False)
        self._set_status("Loading the model and generating…")
        self.base_pane.add_turn(prompt)
        if adapter:
            self.adapter_pane.add_turn(prompt)
        tasks.run_async(answer, model_path, adapter, self.model_page.quantization(), prompt,
                        self.max_new_tokens.value(), self.temperature.value(),
                        on_done=self._on_answer, on_error=self._on_error)

    def _on_answer(self, result: dict) -> None:
        self.busy = False
        self.send_button.setEnabled(True)
        self._set_status("")
        self.base_pane.set_answer(result["base"])
        if result.get("adapter") is not None:
            self.adapter_pane.set_answer(result["adapter"])

    def _on_error(self, exc: BaseException) -> None:
        self.busy = False
        self.send_button.setEnabled(True)
        self._set_status("")
        self.base_pane.set_answer("(no answer)")
        if self.adapter_dir():
            self.adapter_pane.set_answer("(no answer)")
        self.message.show_error(tasks.error_text(exc))

    def _set_status(self, text: str) -> None:
        self.status.setText(text)
        self.status.setVisible(bool(text))

    def _clear(self) -> None:
        self.base_pane.clear()
        self.adapter_pane.clear()
