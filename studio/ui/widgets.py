"""Small building blocks shared by the pages: cards, headers, path pickers, inline messages, badges."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup, QFileDialog, QFormLayout, QFrame, QGridLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton,
    QScrollArea, QSizePolicy, QVBoxLayout, QWidget,
)

from studio.ui import theme

PAGE_MARGIN = 28
GAP = 16


def label(text: str = "", role: str | None = None, wrap: bool = False, selectable: bool = False) -> QLabel:
    widget = QLabel(text)
    if role:
        widget.setProperty("role", role)
    widget.setWordWrap(wrap)
    if selectable:
        widget.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return widget


def button(text: str, kind: str | None = None, icon_name: str | None = None, tooltip: str = "") -> QPushButton:
    widget = QPushButton(text)
    if kind:
        widget.setProperty("kind", kind)
    if icon_name:
        color = "#ffffff" if kind == "primary" else (theme.DANGER if kind == "danger" else theme.TEXT)
        widget.setIcon(theme.icon(icon_name, color))
    if tooltip:
        widget.setToolTip(tooltip)
    widget.setCursor(Qt.CursorShape.PointingHandCursor)
    return widget


class Card(QFrame):
    """A rounded panel with an optional title and hint line; put content in `body` (a QVBoxLayout)."""

    def __init__(self, title: str = "", hint: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Card")
        outer = QVBoxLayout(self)
        outer.setContentsMargins(18, 16, 18, 18)
        outer.setSpacing(12)
        self.header = QHBoxLayout()
        self.header.setSpacing(8)
        self.title_label = QLabel(title)
        self.title_label.setObjectName("CardTitle")
        self.header.addWidget(self.title_label)
        self.header.addStretch(1)
        outer.addLayout(self.header)          # always: pages put buttons in an untitled card's header
        if not title:
            self.title_label.hide()
        if hint:
            hint_label = QLabel(hint)
            hint_label.setObjectName("CardHint")
            hint_label.setWordWrap(True)
            outer.addWidget(hint_label)
        self.body = QVBoxLayout()
        self.body.setSpacing(10)
        outer.addLayout(self.body)

    def add_header_widget(self, widget: QWidget) -> None:
        self.header.addWidget(widget)


class PageHeader(QWidget):
    def __init__(self, title: str, subtitle: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Transparent")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 4)
        text = QVBoxLayout()
        text.setSpacing(2)
        title_label = QLabel(title)
        title_label.setObjectName("PageTitle")
        subtitle_label = QLabel(subtitle)
        subtitle_label.setObjectName("PageSubtitle")
        subtitle_label.setWordWrap(True)
        text.addWidget(title_label)
        text.addWidget(subtitle_label)
        layout.addLayout(text, 1)
        self.actions = QHBoxLayout()
        self.actions.setSpacing(8)
        layout.addLayout(self.actions)


class Page(QWidget):
    """A page: header on top, then `content` (a QVBoxLayout), scrollable when `scroll` is true."""

    def __init__(self, title: str, subtitle: str, scroll: bool = True, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.header = PageHeader(title, subtitle)
        inner = QWidget()
        inner.setObjectName("Transparent")
        self.content = QVBoxLayout(inner)
        self.content.setSpacing(GAP)
        if scroll:
            self.content.setContentsMargins(PAGE_MARGIN, 0, PAGE_MARGIN, PAGE_MARGIN)
            area = QScrollArea()
            area.setObjectName("PageScroll")
            area.setWidgetResizable(True)
            area.setFrameShape(QFrame.Shape.NoFrame)
            area.setWidget(inner)
            head = QWidget()
            head_layout = QVBoxLayout(head)
            head_layout.setContentsMargins(PAGE_MARGIN, PAGE_MARGIN - 4, PAGE_MARGIN, 12)
            head_layout.addWidget(self.header)
            outer.addWidget(head)
            outer.addWidget(area, 1)
        else:
            self.content.setContentsMargins(PAGE_MARGIN, PAGE_MARGIN - 4, PAGE_MARGIN, PAGE_MARGIN)
            self.content.insertWidget(0, self.header)
            outer.addWidget(inner, 1)


class InlineMessage(QLabel):
    """A message line that is hidden while empty: role 'error' (red box) or 'info' (grey box)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        # Both roles have the same padding and border: set one from the start so the label's
        # size hint includes them (a role set later left the box clipped to one bare line).
        self.setProperty("role", "info")
        self.hide()

    def show_error(self, text: str) -> None:
        self._show(text, "error")

    def show_info(self, text: str) -> None:
        self._show(text, "info")

    def clear_message(self) -> None:
        self.setText("")
        self.hide()

    def kind(self) -> str:
        return str(self.property("role") or "") if self.isVisibleTo(self.parentWidget()) else ""

    def _show(self, text: str, role: str) -> None:
        self.setProperty("role", role)
        self.setText(text)
        theme.repolish(self)
        self.show()


class PathPicker(QWidget):
    """A line edit with a Browse button; emits `changed(str)` when the user commits a path."""

    changed = Signal(str)

    def __init__(self, mode: str = "file", caption: str = "Choose", name_filter: str = "",
                 placeholder: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Transparent")
        self.mode, self.caption, self.name_filter = mode, caption, name_filter
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        self.edit.setClearButtonEnabled(True)
        self.edit.editingFinished.connect(lambda: self.changed.emit(self.path()))
        self.browse = button("Browse…", icon_name="folder")
        self.browse.clicked.connect(self._browse)
        layout.addWidget(self.edit, 1)
        layout.addWidget(self.browse)

    def path(self) -> str:
        return self.edit.text().strip()

    def set_path(self, path: str | Path, emit: bool = True) -> None:
        self.edit.setText(str(path))
        if emit:
            self.changed.emit(self.path())

    def _browse(self) -> None:
        start = self.path() or str(Path.home())
        if self.mode == "folder":
            chosen = QFileDialog.getExistingDirectory(self, self.caption, start)
        else:
            chosen, _ = QFileDialog.getOpenFileName(self, self.caption, start, self.name_filter)
        if chosen:
            self.set_path(chosen)


class Segmented(QWidget):
    """A row of exclusive toggle buttons (a modern radio group). `value()` returns the chosen key."""

    changed = Signal(str)

    def __init__(self, options: list[tuple[str, str]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Transparent")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        self.group = QButtonGroup(self)
        self.group.setExclusive(True)
        self.buttons: dict[str, QPushButton] = {}
        for key, text in options:
            btn = button(text, kind="segment")
            btn.setCheckable(True)
            self.group.addButton(btn)
            self.buttons[key] = btn
            layout.addWidget(btn)
            btn.toggled.connect(lambda on, k=key: on and self.changed.emit(k))
        layout.addStretch(1)
        if options:
            self.buttons[options[0][0]].setChecked(True)

    def value(self) -> str:
        for key, btn in self.buttons.items():
            if btn.isChecked():
                return key
        return ""

    def set_value(self, key: str) -> None:
        if key in self.buttons:
            self.buttons[key].setChecked(True)


class StatGrid(QWidget):
    """A grid of small 'key above value' cells."""

    def __init__(self, keys: list[tuple[str, str]], columns: int = 4, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Transparent")
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setHorizontalSpacing(24)
        layout.setVerticalSpacing(14)
        self.values: dict[str, QLabel] = {}
        for index, (key, title) in enumerate(keys):
            cell = QVBoxLayout()
            cell.setSpacing(2)
            cell.addWidget(label(title.upper(), "key"))
            value = label("—", "value", selectable=True)
            cell.addWidget(value)
            layout.addLayout(cell, index // columns, index % columns)
            self.values[key] = value
        for col in range(columns):
            layout.setColumnStretch(col, 1)

    def set(self, key: str, text: str) -> None:
        self.values[key].setText(text)

    def clear(self) -> None:
        for value in self.values.values():
            value.setText("—")


def form_layout() -> QFormLayout:
    form = QFormLayout()
    form.setContentsMargins(0, 0, 0, 0)
    form.setHorizontalSpacing(16)
    form.setVerticalSpacing(10)
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    return form


def add_row(form: QFormLayout, text: str, field, tooltip: str = "") -> QLabel:
    """A muted caption, vertically centred on its field (QFormLayout aligns captions to the top)."""
    caption = label(text, "muted")
    caption.setToolTip(tooltip)
    caption.setMinimumHeight(32)          # the height of a styled input
    caption.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    form.addRow(caption, field)
    return caption


def badge(text: str, role: str = "badge") -> QLabel:
    widget = label(text, role)
    widget.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Fixed)
    return widget


def clear_layout(layout) -> None:
    while layout.count():
        item = layout.takeAt(0)
        if item.widget() is not None:
            widget = item.widget()
            widget.hide()                 # gone now, not only when the event loop gets to it
            widget.setParent(None)
            widget.deleteLater()
        elif item.layout() is not None:
            clear_layout(item.layout())


def human_count(n: int | float | None) -> str:
    if n is None:
        return "—"
    n = float(n)
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)}"


def human_mb(mb: float | None) -> str:
    if mb is None:
        return "—"
    if mb >= 1024:
        return f"{mb / 1024:.1f} GB"
    return f"{mb:.0f} MB"


def human_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "—"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"
