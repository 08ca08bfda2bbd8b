"""The method picker (from plugin discovery) with description, paper link, capability badges, and the
hyperparameter form generated from the chosen plugin's schema; plus the training form's schema
(taken from studio.core.recipe)."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QVBoxLayout, QWidget

from studio.core.recipe import RUN_NAME_SPEC, TRAINING_SCHEMA
from studio.ui import tasks
from studio.ui.param_form import ParamForm
from studio.ui.widgets import Card, InlineMessage, badge, button, clear_layout, label

# The Train page's "Training" form: the run name and the recipe's [training] settings, rendered
# from the recipe's own schema (studio.core.recipe owns the defaults and ranges).
TRAINING_FORM: dict[str, dict] = {"name": RUN_NAME_SPEC, **TRAINING_SCHEMA}


def _discover():
    from studio.plugins import discover

    return discover()


def model_facts(model_path: str) -> dict:
    """Worker thread: what the model's weight files hold, read from the safetensors headers only
    (no weights loaded): how many bias and norm tensors it has."""
    import json
    from pathlib import Path

    from safetensors import safe_open

    folder = Path(model_path)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names = list(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}))
    else:
        names = []
        for file in sorted(folder.glob("*.safetensors")):
            with safe_open(str(file), "np") as handle:
                names.extend(handle.keys())
    return {"path": model_path, "tensors": len(names),
            "bias": sum(1 for n in names if n.endswith(".bias")),
            "norm": sum(1 for n in names if "norm" in n.lower() and n.endswith(".weight"))}


def capability_note(plugin) -> str:
    """What the user must know about a method before training it (empty when nothing)."""
    caps = plugin.capabilities
    notes = []
    if not caps.get("mergeable"):
        why = (" it trains virtual tokens / prefix activations, not changes to the weights."
               if plugin.family == "prompt" else "")
        notes.append(f"{plugin.name} cannot be merged into the base model:{why} It is saved, loaded and "
                     "exported as an adapter only (the base model plus this adapter at inference).")
    quant = getattr(plugin, "requires_quantization", None)
    if caps.get("needs_quantized_base") or quant:
        notes.append(f"{plugin.name} trains on a {quant or 'quantised'} base model: the frozen weights are "
                     "quantised when the run loads them, whatever the Model page says.")
    return "  ".join(notes)


def model_warning(plugin, facts: dict | None, values: dict) -> tuple[str, list[tuple[str, str]]]:
    """(text, [(action key, button text)]) when this method cannot work on this model as set."""
    if plugin is None or facts is None:
        return "", []
    if plugin.id == "bitfit" and facts.get("bias", 0) == 0 and not values.get("include_norms"):
        name = facts["path"].rstrip("/").split("/")[-1]
        return (f"{name} has no bias terms, so BitFit (which trains only biases) has nothing to train "
                f"here. Instead you can train the weights of its {facts.get('norm', 0)} norm layers (BitFit "
                "with 'Train norm weights'), or pick IA3 (learned scaling vectors, similarly tiny) or "
                "LoRA.", [("bitfit_norms", "Train norm weights"), ("ia3", "Use IA3"), ("lora", "Use LoRA")])
    return "", []


def shared_changes(old, new, old_values: dict) -> dict:
    """The settings a user changed on the previous method that the new one also has (same name and
    type): switching LoRA -> DoRA keeps rank 8 instead of resetting it to DoRA's default."""
    if old is None:
        return {}
    out = {}
    for name, value in old_values.items():
        spec, new_spec = old.parameters.get(name), new.parameters.get(name)
        if spec is None or new_spec is None or spec.get("type") != new_spec.get("type"):
            continue
        if value != spec.get("default"):
            out[name] = value
    return out


class MethodPanel(QWidget):
    """Emits `loaded()` once plugins are discovered and `method_changed(id)` on each choice."""

    loaded = Signal()
    method_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Transparent")
        self.plugins: dict = {}
        self.problems: list[str] = []
        self.form: ParamForm | None = None
        self._values: dict[str, dict] = {}      # edits kept per method while switching
        self._current: str | None = None
        self.facts: dict | None = None          # model_facts() of the chosen model
        self._facts_request = 0
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(16)

        method_card = Card("Method")
        self.combo = QComboBox()
        self.combo.setMinimumWidth(220)
        self.combo.addItem("Finding methods…")
        self.combo.setEnabled(False)
        self.combo.currentIndexChanged.connect(self._on_choice)
        method_card.body.addWidget(self.combo)
        self.description = label("", None, wrap=True)
        method_card.body.addWidget(self.description)
        self.badges = QHBoxLayout()
        self.badges.setSpacing(6)
        method_card.body.addLayout(self.badges)
        self.origin = label("", "faint", wrap=True, selectable=True)
        method_card.body.addWidget(self.origin)
        self.paper = label("", "muted")
        self.paper.setOpenExternalLinks(True)
        method_card.body.addWidget(self.paper)
        self.note = InlineMessage()
        method_card.body.addWidget(self.note)
        self.warning = InlineMessage()
        method_card.body.addWidget(self.warning)
        self.warning_actions = QHBoxLayout()
        self.warning_actions.setSpacing(8)
        method_card.body.addLayout(self.warning_actions)
        self.problems_message = InlineMessage()
        method_card.body.addWidget(self.problems_message)
        layout.addWidget(method_card)

        self.form_card = Card("Method settings", "Hover a setting for what it does.")
        self.form_holder = QVBoxLayout()
        self.form_card.body.addLayout(self.form_holder)
        layout.addWidget(self.form_card)

        tasks.run_async(_discover, on_done=self._on_plugins, on_error=self._on_discover_error)

    # ---- discovery ------------------------------------------------------------------------
    def _on_plugins(self, found) -> None:
        self.plugins, self.problems = found
        self.combo.blockSignals(True)
        self.combo.clear()
        ordered = sorted(self.plugins.values(), key=lambda p: (p.family != "low-rank", p.family, p.name.lower()))
        family = None
        for plugin in ordered:
            if family is not None and plugin.family != family:
                self.combo.insertSeparator(self.combo.count())
            family = plugin.family
            self.combo.addItem(f"{plugin.name}   ·  {plugin.family}", plugin.id)
        self.combo.setEnabled(bool(self.plugins))
        self.combo.blockSignals(False)
        if self.problems:
            self.problems_message.show_info(f"{len(self.problems)} plugin(s) skipped: " + "; ".join(self.problems[:3]))
        if not self.plugins:
            self.description.setText("No method plugins were found.")
        wanted = self._current if self._current in self.plugins else ("lora" if "lora" in self.plugins else None)
        self._current = None
        if wanted:
            self.set_method(wanted)
        elif self.combo.count():
            self._on_choice(0)
        self.loaded.emit()

    def _on_discover_error(self, exc: BaseException) -> None:
        self.combo.clear()
        self.combo.addItem("No methods")
        self.problems_message.show_error(f"Finding methods failed: {tasks.error_text(exc)}")
        self.loaded.emit()

    # ---- the model the method will train ------------------------------------------------------
    def set_model(self, info) -> None:
        """Slot for ModelPage.model_changed: some methods depend on what the model holds."""
        self._facts_request += 1
        request = self._facts_request
        self.facts = None
        self._update_warning()
        if info is None:
            return
        tasks.run_async(model_facts, str(info.path),
                        on_done=lambda facts: self._on_facts(request, facts),
                        on_error=lambda _exc: None)      # unreadable headers: no warning, training says

    def _on_facts(self, request: int, facts: dict) -> None:
        if request == self._facts_request:
            self.facts = facts
            self._update_warning()

    def _update_warning(self) -> None:
        text, actions = model_warning(self.plugin(), self.facts, self.values())
        clear_layout(self.warning_actions)
        if not text:
            self.warning.clear_message()
            return
        self.warning.show_error(text)
        for key, caption in actions:
            action = button(caption, kind="primary" if not self.warning_actions.count() else None)
            action.setObjectName(f"warning_{key}")
            action.clicked.connect(lambda _c=False, k=key: self._warning_action(k))
            self.warning_actions.addWidget(action)
        self.warning_actions.addStretch(1)

    def _warning_action(self, key: str) -> None:
        if key == "bitfit_norms" and self.form is not None and "include_norms" in self.form.editors:
            self.form.set_values({"include_norms": True})
        elif key in self.plugins:
            self.set_method(key)
        self._update_warning()

    def blocking_problem(self) -> str:
        """The warning text when the chosen method cannot train on this model as set (Start refuses)."""
        return model_warning(self.plugin(), self.facts, self.values())[0]

    def is_loaded(self) -> bool:
        return bool(self.plugins) or self.problems_message.isVisibleTo(self)

    # ---- choosing -------------------------------------------------------------------------
    def method_id(self) -> str | None:
        return self.combo.currentData()

    def plugin(self):
        return self.plugins.get(self.method_id() or "")

    def set_method(self, method_id: str, values: dict | None = None) -> None:
        if values is not None:
            self._values[method_id] = dict(values)
        if not self.plugins:
            self._current = method_id
            return
        index = self.combo.findData(method_id)
        if index < 0:
            return
        if index == self.combo.currentIndex():
            self._on_choice(index)
        else:
            self.combo.setCurrentIndex(index)

    def _on_choice(self, index: int) -> None:
        method_id = self.combo.itemData(index)
        plugin = self.plugins.get(method_id)
        if plugin is None:
            return
        carried: dict = {}
        if self.form is not None and self._current and self._current != method_id:
            self._values[self._current] = self.form.values()
            carried = shared_changes(self.plugins.get(self._current), plugin, self._values[self._current])
        self._current = method_id
        self.description.setText(plugin.description)
        clear_layout(self.badges)
        self.badges.addWidget(badge(plugin.family, "badge-accent"))
        caps = plugin.capabilities
        self.badges.addWidget(badge("mergeable", "badge-ok") if caps.get("mergeable") else badge("adapter-only"))
        if caps.get("needs_quantized_base") or getattr(plugin, "requires_quantization", None):
            self.badges.addWidget(badge(f"needs {getattr(plugin, 'requires_quantization', None) or 'quantized'} base",
                                        "badge-warn"))
        if caps.get("optimizer_groups"):
            self.badges.addWidget(badge("custom optimiser groups"))
        if caps.get("callbacks"):
            self.badges.addWidget(badge("training callbacks"))
        origin = str(plugin.source).split(":", 1)[0]
        if origin != "builtin":
            tag = badge({"user": "user plugin", "ep": "installed plugin", "entry-point": "installed plugin"}
                        .get(origin, "extra plugin"))
            tag.setToolTip(str(plugin.source))
            self.badges.addWidget(tag)
        self.badges.addStretch(1)
        self.origin.setText(f"Loaded from: {plugin.origin}")
        self.paper.setText(f'Paper: <a href="{plugin.paper}">{plugin.paper}</a>' if plugin.paper else "")
        note = capability_note(plugin)
        if note:
            self.note.show_info(note)
        else:
            self.note.clear_message()
        clear_layout(self.form_holder)
        self.form = ParamForm(plugin.parameters)
        wanted = {**self._values.get(method_id, {}), **carried}
        if wanted:
            self.form.set_values(wanted)
        self.form.changed.connect(self._update_warning)
        self.form_holder.addWidget(self.form)
        self.form_card.title_label.setText(f"{plugin.name} settings")
        self._update_warning()
        self.method_changed.emit(method_id)

    def values(self) -> dict:
        return self.form.values() if self.form is not None else {}
