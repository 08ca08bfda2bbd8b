"""Model page: pick a model folder, see what it is, choose quantisation, see a memory estimate."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QListWidget, QListWidgetItem, QPushButton, QWidget

from studio import paths
from studio.errors import UserError
from studio.ui import tasks, theme
from studio.ui.widgets import Card, InlineMessage, Page, PathPicker, Segmented, StatGrid, badge, button, human_count, human_mb, label

QUANT_OPTIONS = [("", "None (full precision)"), ("4bit", "4-bit NF4"), ("8bit", "8-bit")]
QUANT_HINTS = {
    "": "Weights stay in float32. Fastest on CPU and the most exact; the most memory.",
    "4bit": "QLoRA-style: frozen weights packed to 4-bit NormalFloat via bitsandbytes; adapters train in full precision.",
    "8bit": "Frozen weights stored as int8 via bitsandbytes: about a quarter of the float32 memory.",
}


def _read_info(path: str):
    """(ModelInfo, its row of the checked-families table) for a folder; off the GUI thread."""
    from studio.core.families import describe
    from studio.core.models import check_model_folder

    info = check_model_folder(path)
    return info, describe(info.model_type, info.path)


def _import_gguf(path: str):
    from studio.core.models import import_gguf

    return import_gguf(path, log=lambda line: None)


def _fetch_extra(key: str, progress):
    from studio.core.models import fetch_extra_model

    return fetch_extra_model(key, log=progress)


def _prepare_default():
    from studio.core.models import ensure_default_model

    return ensure_default_model(log=lambda *a, **k: None)


class ModelPage(Page):
    """Emits `model_changed(info or None)` after a folder was checked, `quantization_changed(str)`."""

    model_changed = Signal(object)
    quantization_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Model", "The base model your adapter trains on. It stays frozen; only the adapter learns.")
        self.info = None
        self._request = 0
        self._request_pending = False

        folder_card = Card("Model folder", "A local Hugging Face causal language model: config.json, tokenizer and weights.")
        self.picker = PathPicker("folder", "Choose a model folder", placeholder="/path/to/model-folder")
        self.picker.changed.connect(self.set_model_path)
        folder_card.body.addWidget(self.picker)
        row = QHBoxLayout()
        self.prepare_button = button("Prepare default model", kind="primary")
        self.prepare_button.setToolTip("Convert the bundled SmolLM2-135M-Instruct (GGUF) into a model folder, once.")
        self.prepare_button.clicked.connect(self._prepare)
        self.prepare_button.hide()
        row.addWidget(self.prepare_button)
        self.import_button = button("Import GGUF…", icon_name="folder",
                                    tooltip="Convert a .gguf model file (llama, mistral, qwen2/3, "
                                            "gemma2/3, phi3, ...) once into a model folder here")
        self.import_button.clicked.connect(self._import_dialog)
        row.addWidget(self.import_button)
        from studio.core.models import EXTRA_MODELS

        self.get_buttons: dict[str, QPushButton] = {}       # a second real model, on request only
        for key, entry in EXTRA_MODELS.items():
            get = button(f"Get {entry['short']}", icon_name="arrow-down",
                         tooltip=f"{entry['title']}: about {entry['download_mb']} MB from the "
                                 f"package index, converted once into a {entry['folder_mb']} MB "
                                 f"model folder here (peft-studio models get {key})")
            get.clicked.connect(lambda _c=False, k=key: self.fetch_model(k))
            self.get_buttons[key] = get
            row.addWidget(get)
        row.addStretch(1)
        folder_card.body.addLayout(row)
        self.error = InlineMessage()
        folder_card.body.addWidget(self.error)
        self.content.addWidget(folder_card)

        installed_card = Card("Models on this machine", f"Folders in {paths.models_dir()}. Click one to use it.")
        self.installed = QListWidget()
        self.installed.setMaximumHeight(120)
        self.installed.itemClicked.connect(lambda item: self.set_model_path(item.data(Qt.ItemDataRole.UserRole)))
        installed_card.body.addWidget(self.installed)
        self.content.addWidget(installed_card)
        self.refresh_installed()

        info_card = Card("About this model")
        self.status_badge = badge("not loaded")
        info_card.add_header_widget(self.status_badge)
        self.grid = StatGrid([
            ("architecture", "Architecture"), ("model_type", "Model type"), ("layers", "Layers"),
            ("hidden", "Hidden size"), ("params", "Parameters"), ("vocab", "Vocabulary"),
            ("chat_template", "Chat template"), ("dtype", "Stored dtype"),
        ])
        info_card.body.addWidget(self.grid)
        self.content.addWidget(info_card)

        support_card = Card("What works with this model", "From the studio's model matrix: "
                            "tiny models of each family run through training, merging, 4-bit and "
                            "export (docs/MODELS.md).")
        self.support_badge = badge("—")
        support_card.add_header_widget(self.support_badge)
        self.support_title = label("", "value", wrap=True)
        self.support_template = label("", "muted", wrap=True)
        self.support_problems = label("", wrap=True)
        for widget in (self.support_title, self.support_template, self.support_problems):
            support_card.body.addWidget(widget)
        self.content.addWidget(support_card)
        self.support = None

        quant_card = Card("Quantisation", "How the frozen base weights are held in memory while training.")
        self.quant = Segmented(QUANT_OPTIONS)
        self.quant.changed.connect(self._on_quant)
        quant_card.body.addWidget(self.quant)
        self.quant_hint = label(QUANT_HINTS[""], "muted", wrap=True)
        quant_card.body.addWidget(self.quant_hint)
        self.memory = StatGrid([
            ("weights", "Frozen weights"), ("optimizer", "Adapter + optimiser"),
            ("activations", "Activations"), ("total", "Estimated total"),
        ])
        quant_card.body.addWidget(label("ESTIMATED TRAINING MEMORY (batch 4 × 128 tokens, ~1% trainable)", "faint"))
        quant_card.body.addWidget(self.memory)
        self.content.addWidget(quant_card)
        self.content.addStretch(1)

    def on_theme_changed(self, _palette: str = "") -> None:
        """The theme changed: the list's icons in the new muted colour."""
        for row in range(self.installed.count()):
            item = self.installed.item(row)
            if item.data(Qt.ItemDataRole.UserRole):
                item.setIcon(theme.icon("model", theme.MUTED))

    def refresh_installed(self) -> None:
        self.installed.clear()
        default = paths.default_model_dir()
        folders = sorted(p for p in paths.models_dir().iterdir() if p.is_dir() and not p.name.startswith("."))
        for folder in folders:
            tag = "   (default)" if folder == default else ""
            item = QListWidgetItem(theme.icon("model", theme.MUTED), f"{folder.name}{tag}")
            item.setData(Qt.ItemDataRole.UserRole, str(folder))
            item.setToolTip(str(folder))
            self.installed.addItem(item)
        from studio.core.models import extra_model_ready

        for key, get in self.get_buttons.items():
            get.setVisible(not extra_model_ready(key))
        if not folders:
            item = QListWidgetItem("No models yet. Use Browse…, or Prepare default model.")
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            self.installed.addItem(item)
        self.installed.setFixedHeight(min(120, 14 + 34 * max(1, len(folders))))

    # ---- API used by other pages and tests ----------------------------------------------------
    def model_path(self) -> str:
        return self.picker.path()

    def quantization(self) -> str:
        return self.quant.value()

    def set_quantization(self, value: str) -> None:
        self.quant.set_value(value or "")

    def is_loading(self) -> bool:
        return self._request_pending

    def set_model_path(self, path: str) -> None:
        path = str(path).strip()
        if (self.info is not None and path and not self._request_pending
                and Path(path).resolve() == Path(self.info.path).resolve()):
            return        # the model already loaded (a recipe or a cloned run naming it again)
        if self.picker.path() != path:
            self.picker.set_path(path, emit=False)
        self._request += 1
        request = self._request
        self._request_pending = True
        self.info = None
        self.error.clear_message()
        self.prepare_button.hide()
        self._set_badge("checking…", "badge")
        if not path:
            self._show_error("Choose a model folder.")
            return
        tasks.run_async(_read_info, path,
                        on_done=lambda result: self._on_info(request, *result),
                        on_error=lambda exc: self._on_info_error(request, exc, path))

    # ---- results --------------------------------------------------------------------------
    def _on_info(self, request: int, info, support=None) -> None:
        if request != self._request:
            return
        self._request_pending = False
        self._show_support(support)
        self.info = info
        self.error.clear_message()
        self.grid.set("architecture", info.architecture.replace("ForCausalLM", ""))
        self.grid.set("model_type", info.model_type)
        self.grid.set("layers", str(info.num_layers))
        self.grid.set("hidden", str(info.hidden_size))
        self.grid.set("params", human_count(info.num_parameters))
        self.grid.set("vocab", f"{info.vocab_size:,}")
        self.grid.set("chat_template", "yes" if info.has_chat_template else "no (plain text)")
        self.grid.set("dtype", info.torch_dtype or "—")
        self._set_badge("ready", "badge-ok")
        self._update_memory()
        self.model_changed.emit(info)

    def _show_support(self, support: dict | None) -> None:
        """Which row of the checked-families table this model falls in, and what will not work
        (before the user trains)."""
        self.support = support
        if not support:
            self.support_badge.setText("—")
            for widget in (self.support_title, self.support_template, self.support_problems):
                widget.setText("")
            return
        problems = support["problems"]
        if support["row"] is None:
            text, role = "not checked", "badge-warn"
        elif any(not p.startswith("GGUF") for p in problems):
            text, role = "checked, with limits", "badge-warn"
        else:
            text, role = "checked", "badge-ok"
        self.support_badge.setText(text)
        self.support_badge.setProperty("role", role)
        theme.repolish(self.support_badge)
        self.support_title.setText(support["title"])
        self.support_template.setText(support["template_text"])
        self.support_problems.setText(
            "What will not work, or only partly:\n" + "\n".join(f"• {p}" for p in problems)
            if problems else "Everything the matrix checks works for this family.")

    def _on_info_error(self, request: int, exc: BaseException, path: str) -> None:
        if request != self._request:
            return
        self._request_pending = False
        self._show_error(tasks.error_text(exc))
        if Path(path) == paths.default_model_dir() and not paths.default_model_dir().exists():
            self.prepare_button.show()
        self.model_changed.emit(None)

    def _show_error(self, text: str) -> None:
        self._request_pending = False
        self.info = None
        self._show_support(None)
        self.grid.clear()
        self.memory.clear()
        self._set_badge("not usable", "badge-warn")
        self.error.show_error(text)

    def _set_badge(self, text: str, role: str) -> None:
        self.status_badge.setText(text)
        self.status_badge.setProperty("role", role)
        theme.repolish(self.status_badge)

    def _on_quant(self, value: str) -> None:
        self.quant_hint.setText(QUANT_HINTS[value])
        self._update_memory()
        self.quantization_changed.emit(value)

    def _update_memory(self) -> None:
        if self.info is None:
            self.memory.clear()
            return
        from studio.core.models import estimate_memory

        est = estimate_memory(self.info, self.quantization() or None, tokens_per_step=512)
        self.memory.set("weights", human_mb(est["weights_mb"]))
        self.memory.set("optimizer", human_mb(est["gradients_mb"] + est["optimizer_mb"]))
        self.memory.set("activations", human_mb(est["activations_mb"]))
        self.memory.set("total", human_mb(est["total_mb"]))

    def _import_dialog(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self, "Import a GGUF model", str(Path.home()),
                                              "GGUF models (*.gguf);;All files (*)")
        if path:
            self.import_gguf(path)

    def import_gguf(self, path: str) -> None:
        """Convert `path` in the background (the window stays usable), then use the new folder."""
        from studio.core.models import gguf_architecture

        try:
            architecture = gguf_architecture(path)       # a wrong file is named at once
        except UserError as err:
            self.error.show_error(str(err))
            return
        self.import_button.setEnabled(False)
        self.error.show_info(f"Converting {Path(path).name} ({architecture}) into a model folder, "
                             "once: this reads and writes every weight (a minute or more)…")
        tasks.run_async(_import_gguf, path, on_done=self._imported, on_error=self._import_failed)

    def _imported(self, folder) -> None:
        self.import_button.setEnabled(True)
        self.error.show_info(f"Imported: {folder}")
        self.refresh_installed()
        self.set_model_path(str(folder))

    def _import_failed(self, exc: BaseException) -> None:
        self.import_button.setEnabled(True)
        self.error.show_error(tasks.error_text(exc))

    def fetch_model(self, key: str) -> None:
        """Download (pip) and convert one of the extra models in the background, then use it."""
        from studio.core.models import EXTRA_MODELS

        entry = EXTRA_MODELS[key]
        self.get_buttons[key].setEnabled(False)
        self.error.show_info(f"Getting {entry['short']}: about {entry['download_mb']} MB, then a "
                             "conversion into a model folder (a minute or two)…")
        tasks.run_async(_fetch_extra, key, on_done=lambda folder, k=key: self._fetched(k, folder),
                        on_error=lambda exc, k=key: self._fetch_failed(k, exc),
                        on_progress=lambda line: self.error.show_info(str(line)))

    def _fetched(self, key: str, folder) -> None:
        self.get_buttons[key].setEnabled(True)
        self.error.show_info(f"Ready: {folder}")
        self.refresh_installed()
        self.set_model_path(str(folder))

    def _fetch_failed(self, key: str, exc: BaseException) -> None:
        self.get_buttons[key].setEnabled(True)
        self.error.show_error(tasks.error_text(exc))

    def _prepare(self) -> None:
        self.prepare_button.setEnabled(False)
        self.error.show_info("Converting the bundled model (about 20 seconds)…")
        tasks.run_async(_prepare_default, on_done=self._prepared, on_error=self._prepare_failed)

    def _prepared(self, path) -> None:
        self.prepare_button.setEnabled(True)
        self.refresh_installed()
        self.set_model_path(str(path))

    def _prepare_failed(self, exc: BaseException) -> None:
        self.prepare_button.setEnabled(True)
        self.error.show_error(tasks.error_text(exc))
