"""Generate page: a task sentence (Text-to-LoRA) or example prompts (DnD) -> a LoRA for the loaded model.

The adapter is written into a new run folder with status "finished" (studio.worker.hyper_jobs), so
the Runs and Chat pages treat it like a trained one. Generation runs in a worker thread (the first
one also loads the sentence encoder); the time shown is the generation itself, in ms. The lower
card trains your own hypernetwork as a background process (studio.ui.hyper_train_panel).
"""

from __future__ import annotations

import html

from pathlib import Path

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QLineEdit, QPlainTextEdit, QSizePolicy, QVBoxLayout, QWidget

from studio import paths
from studio.ui import tasks
from studio.ui.widgets import (
    Card, InlineMessage, Page, Segmented, StatGrid, add_row, button, compact_combo, form_layout, label,
)

BROWSE = "__browse__"
EXAMPLES = [      # (chip text, task sentence)
    ("sports plausibility", "Decide whether a sentence about sports is plausible."),
    ("review sentiment", "Classify the sentiment of a movie review as positive or negative."),
    ("day of the week", "Answer questions about dates: what day of the week a given date falls on."),
    ("arithmetic", "Solve short arithmetic word problems and give the number."),
]
KIND_TITLES = {"t2l": "Text-to-LoRA", "dnd": "DnD"}


def missing_text(kind: str) -> str:
    """What the page says when no hypernetwork of `kind` is shipped."""
    name = "t2l-smollm2-135m" if kind == "t2l" else "dnd-smollm2-135m"
    return (f"No {KIND_TITLES[kind]} hypernetwork is installed (expected "
            f"{paths.resources_dir() / 'hypernetworks' / name}). Build one with:\n"
            f"  peft-studio hyper build-library --bigbench BIG_BENCH_DIR --tasks 16 --out LIB\n"
            f"  peft-studio hyper train --library LIB --kind {kind} --steps 300 "
            f"--out {paths.resources_dir() / 'hypernetworks' / name}\n"
            f"or train your own below, or choose a hypernetwork folder in the list.")


def _list_hypernetworks() -> list[dict]:
    from studio.hyper import api

    return api.shipped_hypernetworks()


def _warm_up() -> None:
    from studio.hyper import api

    api.warm_up()


def _hypernetwork_info(folder: str) -> dict:
    from studio.worker.hyper_jobs import load_cached

    return load_cached(folder, None).info()


class GeneratePage(Page):
    generated = Signal(str)        # run folder of the new adapter

    def __init__(self, window=None, parent: QWidget | None = None) -> None:
        super().__init__("Generate", "Describe a task in one sentence and get a LoRA for the loaded "
                         "model in well under a second: no training. Text-to-LoRA reads the "
                         "sentence; DnD reads example prompts of the task.")
        self.window_ref = window
        self.busy = False
        self.result: dict | None = None
        self.shipped: list[dict] = []
        self.last_error = ""
        self._warmed = False

        card = Card("Task")
        self.kind = Segmented([("t2l", "Text-to-LoRA · a sentence"), ("dnd", "DnD · example prompts")])
        self.kind.changed.connect(self._on_kind)
        card.body.addWidget(self.kind)
        self.description = QPlainTextEdit()
        self.description.setPlaceholderText("e.g. " + EXAMPLES[0][1])
        self.description.setFixedHeight(70)
        card.body.addWidget(self.description)
        self.examples_row = QHBoxLayout()
        self.examples_row.setSpacing(6)
        self.examples_row.addWidget(label("Try:", "faint"))
        for text, sentence in EXAMPLES:
            chip = button(text, kind="segment", tooltip=sentence)
            chip.clicked.connect(lambda _c=False, t=sentence: self.description.setPlainText(t))
            self.examples_row.addWidget(chip)
        self.examples_row.addStretch(1)
        card.body.addLayout(self.examples_row)
        self.prompts = QPlainTextEdit()
        self.prompts.setPlaceholderText("One example input of the task per line, e.g.\n"
                                        "Is the following sentence plausible? \"Messi scored a touchdown.\"\n"
                                        "Is the following sentence plausible? \"LeBron hit a three-pointer.\"")
        self.prompts.setFixedHeight(110)
        self.prompts.hide()
        card.body.addWidget(self.prompts)

        form = form_layout()
        self.hypernet = QComboBox()
        compact_combo(self.hypernet, 24)
        self.hypernet.activated.connect(self._on_hypernet_chosen)
        box = QVBoxLayout()
        box.setSpacing(4)
        box.addWidget(self.hypernet)
        self.hypernet_info = label("", "faint", wrap=True)
        box.addWidget(self.hypernet_info)
        add_row(form, "Hypernetwork", box)
        self.name = QLineEdit()
        self.name.setPlaceholderText("optional run name (default: from the task)")
        add_row(form, "Run name", self.name)
        self.model_label = label("", None)
        add_row(form, "Base model", self.model_label)
        card.body.addLayout(form)
        row = QHBoxLayout()
        self.generate_button = button("Generate adapter", kind="primary", icon_name="generate")
        self.generate_button.clicked.connect(self.generate)
        row.addWidget(self.generate_button)
        self.status = label("", "faint")
        row.addWidget(self.status, 1)
        card.body.addLayout(row)
        self.message = InlineMessage()
        card.body.addWidget(self.message)
        self.content.addWidget(card)

        self.result_card = Card("Generated adapter")
        self.stats = StatGrid([("ms", "Generation time"), ("parts", "Encode · emit · write"),
                               ("size", "Adapter size"), ("kind", "Generator")], columns=4)
        self.result_card.body.addWidget(self.stats)
        self.result_path = label("", "muted", wrap=True, selectable=True)
        self.result_path.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.result_card.body.addWidget(self.result_path)
        self.nearest_label = label("", "muted", wrap=True)
        self.nearest_label.setToolTip("The network's training tasks whose descriptions are most "
                                      "similar to yours (cosine of sentence embeddings). Far from "
                                      "all of them, the generated adapter is a guess.")
        self.nearest_label.hide()
        self.result_card.body.addWidget(self.nearest_label)
        actions = QHBoxLayout()
        self.chat_button = button("Open in Chat", kind="primary", icon_name="chat")
        self.chat_button.clicked.connect(self.open_in_chat)
        self.eval_button = button("Evaluate on task…", icon_name="evaluate",
                                  tooltip="Score the generated adapter and the base model on a "
                                          "BIG-bench task file, with a paired confidence interval")
        self.eval_button.clicked.connect(self.evaluate)
        self.runs_button = button("Show in Runs", icon_name="runs")
        self.runs_button.clicked.connect(self._show_runs)
        self.folder_button = button("Open folder", icon_name="folder")
        self.folder_button.clicked.connect(self._open_folder)
        for widget in (self.chat_button, self.eval_button, self.runs_button, self.folder_button):
            actions.addWidget(widget)
        actions.addStretch(1)
        self.result_card.body.addLayout(actions)
        self.result_card.hide()
        self.content.addWidget(self.result_card)

        from studio.ui.hyper_train_panel import HyperTrainPanel

        self.train_panel = HyperTrainPanel(self)
        self.content.addWidget(self.train_panel)
        self.content.addStretch(1)

        model_page = self._model_page()
        if model_page is not None and hasattr(model_page, "model_changed"):
            model_page.model_changed.connect(lambda _info: self._update_model_label())
        self._update_model_label()
        self.refresh_hypernetworks()

    # ---- context ---------------------------------------------------------------------------
    def _model_page(self):
        return getattr(self.window_ref, "model_page", None) or \
            (getattr(self.window_ref, "pages", {}) or {}).get("model")

    def model_path(self) -> str:
        page = self._model_page()
        info = getattr(page, "info", None)
        return str(info.path) if info is not None else str(paths.default_model_dir())

    def _update_model_label(self) -> None:
        self.model_label.setText(Path(self.model_path()).name)

    def on_show(self) -> None:
        self._update_model_label()
        self._maybe_warm()

    def _maybe_warm(self) -> None:
        """Load the sentence encoder (seconds) once the page is shown, so Generate is quick."""
        if not self._warmed and self.hypernetwork_dir() and self.isVisible():
            self._warmed = True
            tasks.run_async(_warm_up, on_error=lambda _exc: None)

    # ---- hypernetworks -----------------------------------------------------------------------
    def refresh_hypernetworks(self) -> None:
        tasks.run_async(_list_hypernetworks, on_done=self._fill_hypernetworks,
                        on_error=lambda exc: self.message.show_error(tasks.error_text(exc)))

    def _fill_hypernetworks(self, found: list[dict]) -> None:
        self.shipped = found
        self._fill_combo()

    def _fill_combo(self, select: str | None = None, keep: bool = True) -> None:
        kind = self.kind.value()
        current = select or (self.hypernetwork_dir() if keep else "")
        self.hypernet.blockSignals(True)
        self.hypernet.clear()
        for h in self.shipped:
            if h["kind"] == kind:
                self.hypernet.addItem(f"{h['name']}  (shipped)", h["path"])
        if current and self.hypernet.findData(current) < 0 and Path(current).is_dir():
            self.hypernet.addItem(Path(current).name, current)
        self.hypernet.addItem("Choose a hypernetwork folder…", BROWSE)
        self.hypernet.setCurrentIndex(max(0, self.hypernet.findData(current)) if current else 0)
        self.hypernet.blockSignals(False)
        self._on_hypernet_changed()

    def hypernetwork_dir(self) -> str:
        data = self.hypernet.currentData()
        return "" if data in (None, BROWSE) else str(data)

    def _on_hypernet_chosen(self, index: int) -> None:
        if self.hypernet.itemData(index) == BROWSE:
            folder = QFileDialog.getExistingDirectory(self, "Choose a hypernetwork folder")
            if folder:
                self.set_hypernetwork(folder)
                return
            self.hypernet.setCurrentIndex(0)
        self._on_hypernet_changed()

    def set_hypernetwork(self, folder: str) -> None:
        self._fill_combo(select=str(folder))

    def _on_hypernet_changed(self) -> None:
        folder = self.hypernetwork_dir()
        self.hypernet_info.setText("")
        if not folder:
            self.generate_button.setEnabled(False)
            self.message.show_error(missing_text(self.kind.value()))
            return
        self.message.clear_message()
        self.generate_button.setEnabled(not self.busy)
        self._maybe_warm()
        tasks.run_async(_hypernetwork_info, folder, on_done=self._show_info,
                        on_error=lambda exc: self.hypernet_info.setText(tasks.error_text(exc)))

    def _show_info(self, info: dict) -> None:
        trained = info.get("trained_on") or []
        parts = [f"{KIND_TITLES.get(info['kind'], info['kind'])}",
                 f"head {info['head']}" if info.get("head") else "",
                 f"LoRA r={info['r']} α={info['alpha']:g} on {', '.join(info['modules'])}",
                 f"{info['params'] / 1e6:.1f} M parameters",
                 f"trained on {len(trained)} tasks" if trained else "",
                 f"{info['steps']} steps" if info.get("steps") else ""]
        self.hypernet_info.setText(" · ".join(p for p in parts if p))

    def _on_kind(self, kind: str) -> None:
        self.description.setVisible(kind == "t2l")
        for i in range(self.examples_row.count()):
            widget = self.examples_row.itemAt(i).widget()
            if widget is not None:
                widget.setVisible(kind == "t2l")
        self.prompts.setVisible(kind == "dnd")
        self._fill_combo(keep=False)

    # ---- generate ----------------------------------------------------------------------------
    def generate(self) -> bool:
        if self.busy:
            return False
        from studio.worker.hyper_jobs import generate_run

        kind = self.kind.value()
        folder = self.hypernetwork_dir()
        if not folder:
            self.message.show_error(missing_text(kind))
            return False
        description = self.description.toPlainText().strip()
        prompts = [line for line in self.prompts.toPlainText().splitlines() if line.strip()]
        if kind == "t2l" and not description:
            self.message.show_error("Describe the task in a sentence first, e.g. “" + EXAMPLES[0][1] + "”")
            return False
        if kind == "dnd" and not prompts:
            self.message.show_error("Paste a few example inputs of the task, one per line.")
            return False
        self.busy = True
        self.last_error = ""
        self.message.clear_message()
        self.generate_button.setEnabled(False)
        self.status.setText("Generating… (the first time also loads the sentence encoder)")
        tasks.run_async(generate_run, self.model_path(), kind=kind, description=description,
                        prompts=prompts, hypernetwork=folder, name=self.name.text(),
                        on_done=self._on_generated, on_error=self._on_failed)
        return True

    def _on_generated(self, res: dict) -> None:
        self.busy = False
        self.result = res
        self.generate_button.setEnabled(True)
        warm = f" (sentence encoder loaded first: {res['warm_up_s']:.1f} s)" if res["warm_up_s"] > 0.5 else ""
        self.status.setText(f"Done in {res['ms']:.0f} ms{warm}.")
        self.stats.set("ms", f"{res['ms']:.0f} ms")
        self.stats.set("parts", f"{res['encode_ms']:.0f} · {res['emit_ms']:.0f} · {res['write_ms']:.0f} ms")
        self.stats.set("size", f"{res['size_mb']:.2f} MB")
        self.stats.set("kind", KIND_TITLES.get(res["kind"], res["kind"]))
        self.result_path.setText(f"{res['name']}\nAdapter: {res['adapter_dir']}")
        self.result_card.show()
        if res.get("notice"):
            self.message.show_info("Note: " + res["notice"])
        self.show_nearest(res.get("nearest") or [])
        self.generated.emit(res["run_dir"])

    def show_nearest(self, nearest: list[dict]) -> None:
        """Say which learned tasks the sentence is closest to (and warn when it is far)."""
        from studio.hyper.nearest import FAR

        if not nearest:
            self.nearest_label.hide()
            return
        def short(text: str, limit: int = 110) -> str:
            return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"

        rows = "".join(f"<br>&nbsp;&nbsp;{html.escape(n['task'])} &nbsp;<b>{n['similarity']:.2f}</b>"
                       f" &nbsp;<i>“{html.escape(short(n['description']))}”</i>" for n in nearest)
        text = f"Closest tasks this network learned:{rows}"
        far = nearest[0]["similarity"] < FAR
        if far:
            text += (f"<br><b>Far from every task it learned</b> (best similarity below {FAR}): "
                     "expect the adapter to change little. Train a LoRA for this task instead.")
        self.nearest_label.setText(text)
        self.nearest_label.setProperty("far", far)
        self.nearest_label.show()

    def _on_failed(self, exc: BaseException) -> None:
        self.busy = False
        self.generate_button.setEnabled(bool(self.hypernetwork_dir()))
        self.status.setText("")
        self.last_error = tasks.error_text(exc)
        self.message.show_error(self.last_error)

    # ---- result actions ------------------------------------------------------------------------
    def open_in_chat(self) -> None:
        if not self.result or self.window_ref is None:
            return
        self.window_ref.show_page("chat")
        chat = getattr(self.window_ref, "chat_page", None) or self.window_ref.pages["chat"]
        chat.set_adapter(self.result["adapter_dir"])

    def evaluate(self):
        """The evaluation dialog on the generated adapter (and this page's base model)."""
        from studio.ui.eval_dialog import EvalDialog

        if not self.result:
            return None
        self.eval_dialog = EvalDialog(self.window(), adapter_dir=self.result["adapter_dir"],
                                      model_path=self.model_path() or None)
        self.eval_dialog.show()
        return self.eval_dialog

    def _show_runs(self) -> None:
        if self.window_ref is not None:
            self.window_ref.show_page("runs")

    def _open_folder(self) -> None:
        if self.result:
            QDesktopServices.openUrl(QUrl.fromLocalFile(self.result["run_dir"]))

    def shutdown(self) -> None:
        self.train_panel.shutdown()

