"""Every page works on a laptop screen: at 1024x640 (and at full size) no button's text is cut,
no label is squeezed below its text, and no page scrolls sideways. Screenshots of each page at
both sizes go to $PEFT_STUDIO_SCREENSHOTS when it is set (docs/screenshots is made this way)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtWidgets import QAbstractButton, QApplication, QLabel, QScrollArea  # noqa: E402

SIZES = [(1024, 640), (1440, 900)]


def problems(page) -> list[str]:
    found = []
    for area in page.findChildren(QScrollArea):
        if area.isVisible() and area.horizontalScrollBar().maximum() > 0:
            found.append(f"scrolls sideways by {area.horizontalScrollBar().maximum()} px "
                         f"({area.objectName() or type(area.widget()).__name__})")
    for b in page.findChildren(QAbstractButton):
        if b.isVisible() and b.text() and b.width() + 1 < b.sizeHint().width():
            found.append(f"button '{b.text()}' cut: {b.width()} px for {b.sizeHint().width()}")
    for lab in page.findChildren(QLabel):
        if (lab.isVisible() and lab.text() and not lab.wordWrap() and lab.pixmap().isNull()
                and "<" not in lab.text() and lab.width() + 1 < lab.sizeHint().width()):
            found.append(f"label '{lab.text()[:40]}' cut: {lab.width()} px for {lab.sizeHint().width()}")
    return found


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_page_fits(qtbot, window, size):
    from studio.ui.app import PAGES

    window.resize(*size)
    shots = os.environ.get("PEFT_STUDIO_SCREENSHOTS")
    report = {}
    for key, *_ in PAGES:
        window.show_page(key)
        for _ in range(5):
            QApplication.processEvents()
        page = window.pages[key]
        report[key] = problems(page)
        if (window.width(), window.height()) != size:    # the page forces a larger window
            report[key].insert(0, f"the window cannot be {size[0]}x{size[1]}: this page needs "
                                  f"{page.minimumSizeHint().width()}x{page.minimumSizeHint().height()}"
                                  f" (window {window.width()}x{window.height()})")
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            window.grab().save(str(Path(shots) / f"{key}-{size[0]}x{size[1]}.png"))
    report["sidebar"] = problems(window.sidebar)      # page and tool names fit the fixed sidebar
    bad = {k: v for k, v in report.items() if v}
    assert not bad, "\n".join(f"{k}: {p}" for k, v in bad.items() for p in v)
