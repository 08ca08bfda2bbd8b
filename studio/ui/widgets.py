"""Small building blocks shared by the pages: cards, headers, path pickers, inline messages, badges."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, QObject, QPoint, QRect, QSize, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractScrollArea, QAbstractSpinBox, QApplication, QBoxLayout, QButtonGroup, QComboBox, QFileDialog,
    QFormLayout, QFrame, QGridLayout, QHBoxLayout, QLabel, QLayout, QLineEdit, QPushButton, QScrollArea,
    QSizePolicy, QVBoxLayout, QWidget,
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
        widget.setProperty("icon_name", icon_name)      # theme.retint_icons draws it again
        widget.setIcon(theme.icon(icon_name, theme.icon_color(kind)))
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


class ResponsiveRow(QWidget):
    """Widgets side by side while there is room for all of them, stacked when there is not.

    Its minimum width is the widest child's (not their sum), so a page of such rows can shrink to
    a laptop screen: below the room the children need side by side, they go one under another
    (the page then scrolls vertically, never sideways)."""

    def __init__(self, spacing: int = GAP, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Transparent")
        self.box = QBoxLayout(QBoxLayout.Direction.LeftToRight, self)
        self.box.setContentsMargins(0, 0, 0, 0)
        self.box.setSpacing(spacing)
        self.items: list[tuple[QWidget, int]] = []

    def add(self, widget: QWidget, stretch: int = 1) -> QWidget:
        self.items.append((widget, stretch))
        self.box.addWidget(widget, stretch)
        return widget

    def side_by_side_width(self) -> int:
        shown = [w for w, _ in self.items if not w.isHidden()]
        return sum(max(w.minimumSizeHint().width(), w.minimumWidth()) for w in shown) \
            + self.box.spacing() * max(len(shown) - 1, 0)

    def minimumSizeHint(self):  # noqa: N802 - Qt's name
        hint = super().minimumSizeHint()
        widest = max((max(w.minimumSizeHint().width(), w.minimumWidth())
                      for w, _ in self.items if not w.isHidden()), default=0)
        hint.setWidth(widest)
        return hint

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        wanted = (QBoxLayout.Direction.LeftToRight if event.size().width() >= self.side_by_side_width()
                  else QBoxLayout.Direction.TopToBottom)
        if self.box.direction() != wanted:
            self.box.setDirection(wanted)
            for widget, stretch in self.items:        # stacked, each takes its natural height
                self.box.setStretchFactor(widget, stretch if wanted == QBoxLayout.Direction.LeftToRight else 0)
            self.updateGeometry()
        super().resizeEvent(event)

    def stacked(self) -> bool:
        return self.box.direction() == QBoxLayout.Direction.TopToBottom


class FlowRow(QLayout):
    """A row of buttons that wraps onto the next line when the row is too narrow for all of them
    (a run's actions on a laptop screen), instead of forcing the window wider. Items keep their
    size hints; hidden items take no room."""

    def __init__(self, parent: QWidget | None = None, spacing: int = 8) -> None:
        super().__init__(parent)
        self._items: list = []
        self._height = 0                     # the wrapped height at the width last laid out
        self.setSpacing(spacing)
        self.setContentsMargins(0, 0, 0, 0)

    def addItem(self, item) -> None:  # noqa: N802 - Qt's name
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, index: int):  # noqa: N802
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int):  # noqa: N802
        return self._items.pop(index) if 0 <= index < len(self._items) else None

    def expandingDirections(self):  # noqa: N802
        return Qt.Orientation(0)

    def hasHeightForWidth(self) -> bool:  # noqa: N802
        return True

    def heightForWidth(self, width: int) -> int:  # noqa: N802
        return self._arrange(QRect(0, 0, width, 0), move=False)

    def setGeometry(self, rect) -> None:  # noqa: N802
        super().setGeometry(rect)
        height = self._arrange(rect, move=True)
        if height != self._height:          # wrapped onto more (or fewer) lines: the minimum
            self._height = height           # height changes, so the parents must make room
            self.invalidate()

    def sizeHint(self):  # noqa: N802
        width = sum(i.sizeHint().width() for i in self._shown()) + self.spacing() * max(len(self._shown()) - 1, 0)
        height = max((i.sizeHint().height() for i in self._shown()), default=0)
        return QSize(width, height)

    def minimumSize(self):  # noqa: N802
        widest = max((i.minimumSize().width() for i in self._shown()), default=0)
        tallest = max((i.minimumSize().height() for i in self._shown()), default=0)
        return QSize(widest, max(tallest, self._height))

    def _shown(self) -> list:
        return [i for i in self._items if not (i.widget() and i.widget().isHidden())]

    def _arrange(self, rect, move: bool) -> int:
        x, y, line = rect.x(), rect.y(), 0
        for item in self._shown():
            hint = item.sizeHint()
            if x > rect.x() and x + hint.width() > rect.right() + 1:
                x, y, line = rect.x(), y + line + self.spacing(), 0
            if move:
                item.setGeometry(QRect(QPoint(x, y), hint))
            x += hint.width() + self.spacing()
            line = max(line, hint.height())
        return y + line - rect.y()


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


def compact_combo(combo: QComboBox, chars: int = 16) -> QComboBox:
    """A combo box whose minimum width is `chars` characters, not its longest item: it can shrink
    on a narrow window (the current text is elided, the open list shows items in full)."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(chars)
    combo.view().setTextElideMode(Qt.TextElideMode.ElideNone)
    return combo


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


class WheelGuard(QObject):
    """Application-wide: a spin box or combo box takes the mouse wheel only when it has focus.

    Scrolling a long form otherwise changes whatever setting passes under the pointer (seen: Steps
    went from 16 to 9 while the user scrolled). An unfocused one passes the wheel to the scroll
    area around it, so the page scrolls as the user meant. Installed once by the app."""

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() != QEvent.Type.Wheel:
            return False
        field = obj if isinstance(obj, (QAbstractSpinBox, QComboBox)) else None
        if field is None and isinstance(obj, QWidget) and isinstance(obj.parentWidget(), QAbstractSpinBox):
            field = obj.parentWidget()              # the line edit inside a spin box
        if field is None or field.hasFocus():
            return False
        area = field.parentWidget()
        while area is not None and not isinstance(area, QAbstractScrollArea):
            area = area.parentWidget()
        if area is not None:
            QApplication.sendEvent(area.verticalScrollBar(), event)
        return True                                  # the field itself never sees it


def guard_wheel(app: QApplication) -> WheelGuard:
    """Install the WheelGuard on the application (idempotent); returns it."""
    guard = getattr(app, "_studio_wheel_guard", None)
    if guard is None:
        guard = WheelGuard(app)
        app.installEventFilter(guard)
        app._studio_wheel_guard = guard
    return guard
