"""A settings form generated from a plugin's parameter schema (the manifest's `parameters` block).

integer -> QSpinBox, number -> NumberSpinBox (accepts 2e-4), boolean -> QCheckBox,
string with enum -> QComboBox, string -> QLineEdit. Ranges come from minimum/maximum, tooltips from
help, labels from title; parameters marked "advanced" are folded under a toggle.
"""

from __future__ import annotations

import math
import re

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QAbstractSpinBox, QCheckBox, QComboBox, QDoubleSpinBox, QLabel, QLineEdit,
    QPushButton, QSpinBox, QVBoxLayout, QWidget,
)

from studio.errors import UserError
from studio.schema import coerce_value
from studio.ui import theme
from studio.ui.widgets import InlineMessage, add_row, form_layout

INT_LIMIT = 2_147_483_647
NUMBER_LIMIT = 1e12
_NUMBER_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_PARTIAL_RE = re.compile(r"^[+-]?(\d*\.?\d*)([eE][+-]?\d*)?$")


class NumberSpinBox(QDoubleSpinBox):
    """A double spin box that shows and accepts scientific notation (learning rates like 2e-4)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setDecimals(12)
        self.setStepType(QAbstractSpinBox.StepType.AdaptiveDecimalStepType)
        self.setKeyboardTracking(False)

    def textFromValue(self, value: float) -> str:  # noqa: N802 - Qt override
        if value == 0:
            return "0"
        magnitude = abs(value)
        if magnitude < 1e-3 or magnitude >= 1e6:
            mantissa, exponent = f"{value:.4e}".split("e")
            mantissa = mantissa.rstrip("0").rstrip(".")
            return f"{mantissa}e{int(exponent)}"
        return f"{value:.6g}"

    def valueFromText(self, text: str) -> float:  # noqa: N802
        try:
            return float(text.strip())
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int):  # noqa: D401
        stripped = text.strip()
        if _NUMBER_RE.match(stripped):
            value = float(stripped)
            if self.minimum() <= value <= self.maximum():
                return QValidator.State.Acceptable, text, pos
            return QValidator.State.Intermediate, text, pos
        if stripped == "" or _PARTIAL_RE.match(stripped):
            return QValidator.State.Intermediate, text, pos
        return QValidator.State.Invalid, text, pos

    def stepBy(self, steps: int) -> None:  # noqa: N802
        value = self.value()
        if value != 0 and (abs(value) < 1e-3 or self.singleStep() == 0):
            # small values (learning rates) step by their own order of magnitude
            magnitude = 10 ** math.floor(math.log10(abs(value)))
            self.setValue(value + steps * magnitude)
            return
        super().stepBy(steps)


class IntSpinBox(QSpinBox):
    """A spin box that lets an out-of-range number stand while typed (so the form can say why it
    is refused) instead of silently swallowing the keystroke; focus-out restores the last value."""

    def validate(self, text: str, pos: int):  # noqa: D401 - Qt override
        stripped = text.strip()
        if re.fullmatch(r"[+-]?\d+", stripped):
            value = int(stripped)
            state = (QValidator.State.Acceptable if self.minimum() <= value <= self.maximum()
                     else QValidator.State.Intermediate)
            return state, text, pos
        if stripped in ("", "+", "-"):
            return QValidator.State.Intermediate, text, pos
        return QValidator.State.Invalid, text, pos


def check_value(name: str, spec: dict, value) -> str | None:
    """Why `value` is not allowed for this parameter (None when it is), in the shared checker's words."""
    try:
        coerce_value(spec, value, field=name)
    except UserError as err:
        fix = err.fix or ""
        return f"{_title(name, spec)}: {err.message} {fix[:1].upper()}{fix[1:]}".rstrip()
    return None


def _title(name: str, spec: dict) -> str:
    return spec.get("title") or name.replace("_", " ").capitalize()


def make_editor(spec: dict) -> QWidget:
    """One input widget for one parameter spec, set to its default."""
    ptype, default = spec["type"], spec.get("default")
    if "enum" in spec:
        editor = QComboBox()
        for choice in spec["enum"]:
            editor.addItem(str(choice), choice)
        index = editor.findData(default)
        editor.setCurrentIndex(max(index, 0))
    elif ptype == "integer":
        editor = IntSpinBox()
        editor.setRange(int(max(spec.get("minimum", -INT_LIMIT), -INT_LIMIT)),
                        int(min(spec.get("maximum", INT_LIMIT), INT_LIMIT)))
        editor.setSingleStep(int(spec.get("step", 1)))
        editor.setValue(int(default))
        editor.setKeyboardTracking(False)
        theme.fix_spin(editor)
    elif ptype == "number":
        editor = NumberSpinBox()
        editor.setRange(float(spec.get("minimum", -NUMBER_LIMIT)), float(spec.get("maximum", NUMBER_LIMIT)))
        if "step" in spec:
            editor.setStepType(QAbstractSpinBox.StepType.DefaultStepType)
            editor.setSingleStep(float(spec["step"]))
        editor.setValue(float(default))
        theme.fix_spin(editor)
    elif ptype == "boolean":
        editor = QCheckBox()
        editor.setChecked(bool(default))
        editor.setMinimumHeight(32)          # centred on its caption like the other inputs
    else:
        editor = QLineEdit(str(default))
    if isinstance(editor, (QSpinBox, QDoubleSpinBox, QComboBox, QLineEdit)):
        editor.setMinimumWidth(150)
    help_text = spec.get("help") or spec.get("description") or ""
    if help_text:
        editor.setToolTip(help_text)
    return editor


def editor_value(editor: QWidget):
    if isinstance(editor, QComboBox):
        return editor.currentData()
    if isinstance(editor, QSpinBox):
        return editor.value()
    if isinstance(editor, QDoubleSpinBox):
        return editor.value()
    if isinstance(editor, QCheckBox):
        return editor.isChecked()
    return editor.text()


def set_editor_value(editor: QWidget, value) -> None:
    if isinstance(editor, QComboBox):
        index = editor.findData(value)
        if index < 0:
            index = editor.findText(str(value))
        if index >= 0:
            editor.setCurrentIndex(index)
    elif isinstance(editor, QSpinBox):
        editor.setValue(int(value))
    elif isinstance(editor, QDoubleSpinBox):
        editor.setValue(float(value))
    elif isinstance(editor, QCheckBox):
        editor.setChecked(bool(value))
    else:
        editor.setText(",".join(value) if isinstance(value, (list, tuple)) else str(value))


def _changed_signal(editor: QWidget):
    if isinstance(editor, QComboBox):
        return editor.currentIndexChanged
    if isinstance(editor, (QSpinBox, QDoubleSpinBox)):
        return editor.valueChanged
    if isinstance(editor, QCheckBox):
        return editor.toggled
    return editor.textChanged


def set_invalid(editor: QWidget, invalid: bool) -> None:
    if bool(editor.property("invalid")) != invalid:
        editor.setProperty("invalid", invalid)
        theme.repolish(editor)


class ParamForm(QWidget):
    """The form for one method. `values()` gives {name: value}; `show_error(field, text)` marks one."""

    changed = Signal()

    def __init__(self, parameters: dict, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Transparent")
        self.parameters = parameters
        self.editors: dict[str, QWidget] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        basic = [(n, s) for n, s in parameters.items() if not s.get("advanced")]
        advanced = [(n, s) for n, s in parameters.items() if s.get("advanced")]
        if not parameters:
            empty = QLabel("This method has no settings.")
            empty.setProperty("role", "muted")
            layout.addWidget(empty)
        layout.addWidget(self._form(basic))
        self.advanced_toggle: QPushButton | None = None
        self.advanced_box: QWidget | None = None
        if advanced:
            self.advanced_toggle = QPushButton(f"Advanced ({len(advanced)})")
            self.advanced_toggle.setProperty("kind", "ghost")
            self.advanced_toggle.setCheckable(True)
            self.advanced_toggle.setCursor(Qt.CursorShape.PointingHandCursor)
            self.advanced_toggle.setStyleSheet("text-align: left; padding-left: 2px;")
            self.advanced_box = self._form(advanced)
            self.advanced_box.setVisible(False)
            self.advanced_toggle.toggled.connect(self._toggle_advanced)
            self._toggle_advanced(False)
            layout.addWidget(self.advanced_toggle)
            layout.addWidget(self.advanced_box)
        self.message = InlineMessage()
        layout.addWidget(self.message)
        self._align_captions()

    def _captions(self) -> list[QLabel]:
        return [label for label in self.findChildren(QLabel) if label.property("role") == "muted"
                and label.parent() is not None and label.parent().objectName() == "Transparent"]

    def align_with(self, others: list[QLabel]) -> None:
        """Captions of a form above this one (made with widgets.add_row): one width for all."""
        self._align_captions(list(others))

    def _align_captions(self, others: list[QLabel] = ()) -> None:
        """The basic and the Advanced rows are two forms: give their captions one width so the
        fields line up."""
        captions = self._captions() + list(others)
        if captions:
            width = max(label.sizeHint().width() for label in captions)
            for label in captions:
                label.setMinimumWidth(width)

    def _toggle_advanced(self, on: bool) -> None:
        assert self.advanced_box is not None and self.advanced_toggle is not None
        self.advanced_box.setVisible(on)
        self.advanced_toggle.setIcon(theme.icon("chevron-down" if on else "chevron-right", theme.MUTED))

    def on_theme_changed(self, _palette: str = "") -> None:
        if self.advanced_toggle is not None:
            self._toggle_advanced(self.advanced_toggle.isChecked())

    def _form(self, items: list[tuple[str, dict]]) -> QWidget:
        box = QWidget()
        box.setObjectName("Transparent")
        form = form_layout()
        box.setLayout(form)
        for name, spec in items:
            editor = make_editor(spec)
            editor.setObjectName(f"param_{name}")
            add_row(form, _title(name, spec), editor, spec.get("help") or spec.get("description") or "")
            self.editors[name] = editor
            _changed_signal(editor).connect(lambda *_a, n=name: self._on_edit(n))
            if isinstance(editor, (QSpinBox, QDoubleSpinBox)):
                editor.lineEdit().textEdited.connect(lambda text, n=name: self._check_typed(n, text))
        return box

    def _check_typed(self, name: str, text: str) -> None:
        """Typed text outside the range: mark the field and say what is allowed (focus-out keeps
        the last valid value)."""
        editor = self.editors[name]
        stripped = text.strip()
        if not stripped or stripped in ("+", "-") or stripped.endswith(("e", "E", "-", "+", ".")):
            return
        problem = check_value(name, self.parameters[name], stripped)
        if problem:
            self.show_error(name, f"{problem} Keeping {editor_value(editor)}.")
            editor.setFocus()
        elif bool(editor.property("invalid")):
            set_invalid(editor, False)
            self.message.clear_message()

    def _on_edit(self, name: str) -> None:
        set_invalid(self.editors[name], False)
        if self.message.isVisible():
            self.message.clear_message()
        self.changed.emit()

    def values(self) -> dict:
        return {name: editor_value(editor) for name, editor in self.editors.items()}

    def set_values(self, values: dict) -> list[str]:
        """Fill the form; a value the schema does not allow is refused (the field keeps its value)
        and the message says why. Returns the problems."""
        problems = []
        first = None
        for name, value in values.items():
            if name not in self.editors:
                continue
            problem = check_value(name, self.parameters[name], value)
            if problem:
                problems.append(problem)
                first = first or name
                continue
            set_editor_value(self.editors[name], value)
        if problems:
            self.show_error(first, "  ".join(problems))
        return problems

    def check(self) -> str | None:
        """The first problem with the current values (None when all are allowed)."""
        for name, value in self.values().items():
            problem = check_value(name, self.parameters[name], value)
            if problem:
                return problem
        return None

    def show_error(self, field: str | None, text: str) -> None:
        """Mark the named parameter (unfolding Advanced if needed) and show the message."""
        editor = self.editors.get(field or "")
        if editor is not None:
            set_invalid(editor, True)
            if self.advanced_box is not None and self.advanced_box.isAncestorOf(editor):
                self.advanced_toggle.setChecked(True)
            editor.setFocus()
        self.message.show_error(text)

    def clear_errors(self) -> None:
        for editor in self.editors.values():
            set_invalid(editor, False)
        self.message.clear_message()
