"""Scrolling a form with the mouse wheel never changes a setting that does not have focus; the page
scrolls instead. A focused field still takes the wheel (issue: Steps went from 16 to 9 while the
user scrolled)."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication, QComboBox, QScrollArea, QSpinBox, QVBoxLayout, QWidget

from studio.ui.app import create_app


def _wheel(widget, steps: int = -1) -> None:
    centre = QPointF(widget.rect().center())
    event = QWheelEvent(centre, QPointF(widget.mapToGlobal(centre.toPoint())), QPoint(0, 0),
                        QPoint(0, 120 * steps), Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                        Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def test_unfocused_fields_ignore_the_wheel_and_the_page_scrolls(qtbot):
    create_app()                                   # installs the guard, as the real app does
    area = QScrollArea()
    inner = QWidget()
    layout = QVBoxLayout(inner)
    spin, combo = QSpinBox(), QComboBox()
    spin.setRange(0, 100)
    spin.setValue(16)
    combo.addItems(["cosine", "linear", "constant"])
    layout.addWidget(spin)
    layout.addWidget(combo)
    for _ in range(40):                            # a long form: the area can scroll
        layout.addWidget(QSpinBox())
    area.setWidget(inner)
    area.resize(300, 200)
    qtbot.addWidget(area)
    area.show()
    qtbot.waitExposed(area)
    bar = area.verticalScrollBar()
    assert bar.maximum() > 0 and bar.value() == 0

    _wheel(spin.lineEdit())                       # the pointer is over the spin box's text
    _wheel(spin)
    _wheel(combo)
    assert spin.value() == 16 and combo.currentIndex() == 0
    assert bar.value() > 0                        # the wheel went to the page instead

    spin.setFocus()
    if spin.hasFocus():                           # the offscreen platform may not hand out focus
        _wheel(spin, steps=1)
        assert spin.value() == 17
