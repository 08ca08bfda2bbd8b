"""Chat page: a real multi-turn conversation, held twice side by side: with the base model and
with the model plus an adapter. Each side keeps its own history (its own earlier answers), sent
through the chat template with the system prompt on every turn; answers stream in with tokens/s.

The model is loaded and generates in a worker thread; one (model, adapter) pair is kept loaded.
"""

from __future__ import annotations

import html
import threading
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontMetrics, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox, QDoubleSpinBox, QFileDialog, QGridLayout, QHBoxLayout, QLineEdit, QPlainTextEdit,
    QSpinBox, QTextBrowser, QWidget,
)

from studio.ui import tasks, theme
from studio.ui.widgets import (Card, InlineMessage, Page, ResponsiveRow, add_row, button,
                               compact_combo, form_layout, label)

NO_ADAPTER = ""
BROWSE = "__browse__"

_loaded: dict = {}
_lock = threading.Lock()


def answer(model_path: str, adapter_dir: str, quantization: str, base_messages: list[dict],
           adapter_messages: list[dict] | None, sampling, progress=None) -> dict:
    """Worker thread: load (or reuse) the model + adapter; answer the base conversation with the
    adapter switched off, then the adapter's conversation. progress({"pane", "text"}) streams."""
    from studio.core import chat

    key = (model_path, adapter_dir, quantization)
    with _lock:
        if _loaded.get("key") != key:
            _loaded.clear()
            model, tokenizer = chat.load_for_chat(model_path, adapter_dir or None, quantization or None)
            _loaded.update(key=key, model=model, tokenizer=tokenizer)
        model, tokenizer = _loaded["model"], _loaded["tokenizer"]

        def stream(pane):
            if progress is None:
                return None
            return lambda piece: progress({"pane": pane, "text": piece})

        with chat.with_adapter_disabled(model):
            base = chat.reply(model, tokenizer, base_messages, sampling, stream("base"))
        adapted = None
        if adapter_dir and adapter_messages is not None:
            adapted = chat.reply(model, tokenizer, adapter_messages, sampling, stream("adapter"))
        return {"base": base, "adapter": adapted}


def _finished_adapters() -> list[tuple[str, str]]:
    from studio.core.runs import list_runs

    found = []
    for run in list_runs():
        for candidate in (run.adapter_path, Path(run.path) / "adapter"):
            if candidate and (Path(candidate) / "adapter_config.json").is_file():
                found.append((f"{run.name} · {run.method} · {run.created[:16].replace('T', ' ')}", str(candidate)))
                break
    return found


def _spin(field, low, high, value, step=None, tip: str = ""):
    field.setRange(low, high)
    if step is not None:
        field.setSingleStep(step)
        field.setDecimals(2)
    field.setValue(value)
    field.setToolTip(tip)
    theme.fix_spin(field)
    return field


class SamplingFields(QWidget):
    """How answers are decoded (max tokens, temperature, top-p, top-k, repetition penalty) as a
    small grid, `columns` settings a row; `sampling()` is the studio.core.chat.Sampling. The
    Chat page and the Compare page's same-prompt chat use it."""

    def __init__(self, columns: int = 2, max_new_tokens: int = 96) -> None:
        super().__init__()
        self.setObjectName("Transparent")
        gen = QGridLayout(self)
        gen.setContentsMargins(0, 0, 0, 0)
        gen.setHorizontalSpacing(8)
        from studio.core.chat import SAMPLING_SCHEMA as S      # the one source of the ranges

        def spin(name, widget, value=None, step=None):
            spec = S[name]
            return _spin(widget, spec["minimum"], spec["maximum"],
                         spec["default"] if value is None else value, step, spec["help"])

        self.max_new_tokens = spin("max_new_tokens", QSpinBox(), max_new_tokens)
        self.temperature = spin("temperature", QDoubleSpinBox(), step=0.1)
        self.top_p = spin("top_p", QDoubleSpinBox(), step=0.05)
        self.top_k = spin("top_k", QSpinBox())
        self.repetition_penalty = spin("repetition_penalty", QDoubleSpinBox(), step=0.05)
        for i, (text, field) in enumerate((("Max tokens", self.max_new_tokens),
                                           ("Temperature", self.temperature), ("Top-p", self.top_p),
                                           ("Top-k", self.top_k),
                                           ("Repetition", self.repetition_penalty))):
            name = label(text, "muted")
            name.setToolTip(field.toolTip())
            gen.addWidget(name, i // columns, (i % columns) * 2)
            gen.addWidget(field, i // columns, (i % columns) * 2 + 1)

    def sampling(self):
        from studio.core.chat import Sampling

        return Sampling(max_new_tokens=self.max_new_tokens.value(),
                        temperature=self.temperature.value(), top_p=self.top_p.value(),
                        top_k=self.top_k.value(), repetition_penalty=self.repetition_penalty.value())


class _AnswerPane(Card):
    """One side of the chat: its conversation (user and its own assistant turns) and the view."""

    def __init__(self, title: str, color) -> None:
        super().__init__(title)
        self.color = color                  # () -> the title's colour in the theme in force
        self.title_label.setStyleSheet(f"color: {color()};")
        self.title_label.setMinimumWidth(40)
        self.full_title = title
        self.view = QTextBrowser()
        self.view.setOpenLinks(False)
        self.view.setMinimumHeight(200)
        self.body.addWidget(self.view, 1)
        self.turns: list[dict] = []         # {"prompt", "reply" (None while generating), "stats"}
        self.render()

    def on_theme_changed(self, _palette: str = "") -> None:
        self.title_label.setStyleSheet(f"color: {self.color()};")
        self.render()

    def set_title(self, text: str) -> None:
        """Long adapter names are elided to the pane's width (full name in the tooltip)."""
        self.full_title = text
        self.title_label.setToolTip(text)
        self._elide()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        metrics = QFontMetrics(self.title_label.font())
        width = max(self.width() - 40, 60)
        self.title_label.setText(metrics.elidedText(self.full_title, Qt.TextElideMode.ElideMiddle, width))

    def history(self) -> list[dict]:
        """The finished turns as chat messages (what the next prompt is sent after)."""
        out = []
        for turn in self.turns:
            if turn["reply"] is not None:
                out += [{"role": "user", "content": turn["prompt"]},
                        {"role": "assistant", "content": turn["reply"]}]
        return out

    def add_turn(self, prompt: str) -> None:
        self.turns.append({"prompt": prompt, "reply": None, "partial": "", "stats": None})
        self.render()

    def add_text(self, piece: str) -> None:
        if self.turns and self.turns[-1]["reply"] is None:
            self.turns[-1]["partial"] += piece
            self.render()

    def set_answer(self, text: str, stats: dict | None = None) -> None:
        if self.turns:
            self.turns[-1].update(reply=text, stats=stats)
        self.render()

    def drop_unanswered(self) -> None:
        """A failed turn leaves no half answer in the history."""
        if self.turns and self.turns[-1]["reply"] is None:
            self.turns.pop()
        self.render()

    def clear(self) -> None:
        self.turns.clear()
        self.render()

    def last_answer(self) -> str | None:
        return self.turns[-1]["reply"] if self.turns else None

    def render(self) -> None:
        if not self.turns:
            self.view.setHtml(f'<p style="color:{theme.FAINT}">Answers appear here. Each turn is '
                              f'sent with the conversation so far.</p>')
            return
        parts = []
        for turn in self.turns:
            parts.append(f'<p style="color:{theme.MUTED}; margin-bottom:4px;"><b>You</b></p>'
                         f'<p style="margin-top:0;">{html.escape(turn["prompt"])}</p>')
            if turn["reply"] is not None:
                shown = html.escape(turn["reply"])
            elif turn["partial"]:
                shown = html.escape(turn["partial"]) + f'<span style="color:{theme.FAINT}"> ▍</span>'
            else:
                shown = f'<i style="color:{theme.FAINT}">thinking…</i>'
            stats = turn.get("stats") or {}
            note = ""
            if stats.get("tokens"):
                rate = stats.get("tokens_per_s")
                note = (f'<br><span style="color:{theme.FAINT}; font-size:small;">{stats["tokens"]} '
                        f'tokens' + (f' · {rate:.1f} tokens/s' if rate else '') + '</span>')
            parts.append(f'<p style="color:{theme.MUTED}; margin-bottom:4px;"><b>Model</b></p>'
                         f'<p style="margin-top:0; margin-bottom:22px; white-space: pre-wrap;">{shown}{note}</p>')
        self.view.setHtml("".join(parts))
        bar = self.view.verticalScrollBar()
        bar.setValue(bar.maximum())


class ChatPage(Page):
    def __init__(self, model_page, parent: QWidget | None = None) -> None:
        super().__init__("Chat", "Hold the same conversation with the base model and with the model "
                                 "plus your adapter.")
        self.model_page = model_page
        self.busy = False
        self.conversation_adapter = ""      # the adapter the conversation on screen was held with

        setup = Card()
        row = ResponsiveRow()
        form_box = QWidget()
        form_box.setObjectName("Transparent")
        form = form_layout()
        form_box.setLayout(form)
        self.model_label = label("", None)
        add_row(form, "Base model", self.model_label)
        self.adapter = QComboBox()
        compact_combo(self.adapter, 22)
        self.adapter.activated.connect(self._on_adapter_chosen)
        add_row(form, "Adapter", self.adapter)
        self.system = QLineEdit()
        self.system.setPlaceholderText("Optional, e.g. “You are a concise assistant.” (sent on every turn)")
        add_row(form, "System prompt", self.system,
                "Sent first in every turn through the model's chat template (both sides).")
        row.add(form_box, 3)
        self.decoding = SamplingFields()
        self.max_new_tokens = self.decoding.max_new_tokens      # the answer length (tests set it)
        row.add(self.decoding, 2)
        setup.body.addWidget(row)
        self.content.addWidget(setup)

        answers = QHBoxLayout()
        answers.setSpacing(16)
        self.base_pane = _AnswerPane("Base model", lambda: theme.SERIES["loss"])
        self.adapter_pane = _AnswerPane("With adapter", lambda: theme.ACCENT_HOVER)
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
        self.clear_button = button("Clear history", kind="ghost")
        self.clear_button.setToolTip("Start a new conversation on both sides")
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
        if adapter != self.conversation_adapter and (self.base_pane.turns or self.adapter_pane.turns):
            # answers given with another adapter must not appear under this one's name
            self._clear()
            self._set_status("New adapter: a new conversation started.")
        self.conversation_adapter = adapter
        self.adapter_pane.setEnabled(bool(adapter))
        self.adapter_pane.set_title(
            f"With adapter · {self.adapter.currentText().split(' · ')[0]}" if adapter else "With adapter (none chosen)")

    def _update_model_label(self) -> None:
        path = self.model_page.model_path()
        quant = self.model_page.quantization()
        self.model_label.setText(f"{Path(path).name or '—'}" + (f"  ({quant})" if quant else ""))
        self.model_label.setToolTip(path)

    # ---- asking ---------------------------------------------------------------------------
    def sampling(self):
        return self.decoding.sampling()

    def send(self) -> None:
        from studio.core.chat import conversation

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
        system = self.system.text()
        base_messages = conversation(self.base_pane.history(), prompt, system)
        adapter_messages = conversation(self.adapter_pane.history(), prompt, system) if adapter else None
        self.last_request = {"base": base_messages, "adapter": adapter_messages}
        self.busy = True
        self.send_button.setEnabled(False)
        self._set_status("Loading the model and generating…")
        self.prompt.clear()
        self.base_pane.add_turn(prompt)
        if adapter:
            self.adapter_pane.add_turn(prompt)
        tasks.run_async(answer, model_path, adapter, self.model_page.quantization(), base_messages,
                        adapter_messages, self.sampling(),
                        on_done=self._on_answer, on_error=self._on_error, on_progress=self._on_piece)

    def _on_piece(self, info: dict) -> None:
        pane = self.base_pane if info["pane"] == "base" else self.adapter_pane
        self._set_status("Generating with the adapter…" if info["pane"] == "adapter" else "Generating…")
        pane.add_text(info["text"])

    def _on_answer(self, result: dict) -> None:
        self.busy = False
        self.send_button.setEnabled(True)
        self._set_status("")
        base = result["base"]
        self.base_pane.set_answer(base["text"], base)
        if result.get("adapter") is not None:
            self.adapter_pane.set_answer(result["adapter"]["text"], result["adapter"])

    def _on_error(self, exc: BaseException) -> None:
        self.busy = False
        self.send_button.setEnabled(True)
        self._set_status("")
        self.base_pane.drop_unanswered()
        self.adapter_pane.drop_unanswered()
        self.message.show_error(tasks.error_text(exc))

    def _set_status(self, text: str) -> None:
        self.status.setText(text)
        self.status.setVisible(bool(text))

    def _clear(self) -> None:
        self.base_pane.clear()
        self.adapter_pane.clear()
