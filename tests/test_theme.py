"""The light theme and following the desktop: the desktop's colour-scheme signal switches the
palette (stylesheet, charts, icons) unless View → Theme forces one, the choice is remembered, and on
every page, in both themes, text is readable: each visible label's and button's text colour against
the background it is actually drawn on has a contrast ratio of at least 4.5 (WCAG AA).
Screenshots of each page at 1024x640 in the light theme go to $PEFT_STUDIO_SCREENSHOTS/light when
set (docs/screenshots/light is made this way)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QRect, Qt  # noqa: E402
from PySide6.QtGui import QColor, QPalette  # noqa: E402
from PySide6.QtWidgets import QAbstractButton, QApplication, QLabel  # noqa: E402

from studio.ui import theme  # noqa: E402

MIN_CONTRAST = 4.5


def luminance(color: QColor) -> float:
    def channel(v: float) -> float:
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4
    return (0.2126 * channel(color.redF()) + 0.7152 * channel(color.greenF())
            + 0.0722 * channel(color.blueF()))


def contrast(a: QColor, b: QColor) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def unreadable(window, page) -> list[str]:
    """Labels and buttons whose text colour is too close to the background drawn under them
    (the most common colour of their area in a grab of the whole window)."""
    for _ in range(5):
        QApplication.processEvents()
    image = window.grab().toImage()
    bounds = QRect(0, 0, image.width(), image.height())
    found = []
    widgets = page.findChildren(QLabel) + page.findChildren(QAbstractButton)
    for w in widgets:
        if (not w.isVisible() or not w.isEnabled() or not w.text().strip()
                or (isinstance(w, QLabel) and not w.pixmap().isNull())):
            continue
        visible = w.visibleRegion().boundingRect()
        if visible.isEmpty():
            continue
        rect = QRect(w.mapTo(window, visible.topLeft()), visible.size()).intersected(bounds)
        if rect.width() < 4 or rect.height() < 4:
            continue
        counts = Counter(image.pixel(x, y) for x in range(rect.left(), rect.right(), 2)
                         for y in range(rect.top(), rect.bottom(), 2))
        background = QColor.fromRgb(counts.most_common(1)[0][0])
        text = w.palette().color(w.foregroundRole())
        ratio = contrast(text, background)
        if ratio < MIN_CONTRAST:
            found.append(f"{type(w).__name__} '{w.text()[:40]}': {text.name()} on "
                         f"{background.name()} = {ratio:.2f}")
    return found


def flush_deleted() -> None:
    """Finish deleting the windows of earlier tests: pytest-qt deleteLater()s them, and with no
    event loop running they linger half torn down, where an application-wide style sheet change
    (a theme switch) would reach them. In the app the event loop deletes them at once."""
    import gc

    from PySide6.QtCore import QCoreApplication, QEvent

    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    gc.collect()


def restore(window) -> None:
    """Back to the default (system, and a desktop that says nothing) while the window is still
    open: later tests start from the usual dark theme."""
    theme._system_scheme["value"] = None
    window.set_theme("system")


def test_the_desktop_scheme_switches_the_palette(window):
    flush_deleted()
    try:
        check_scheme_switch(window)
    finally:
        restore(window)


def check_scheme_switch(window):
    app = QApplication.instance()
    window.set_theme("system")
    window.show_page("train")
    hints = app.styleHints()
    hints.colorSchemeChanged.emit(Qt.ColorScheme.Light)        # what the desktop sends
    assert theme.current == "light"
    assert app.palette().color(QPalette.ColorRole.Window) == QColor(theme.LIGHT["BG"])
    assert app.palette().color(QPalette.ColorRole.WindowText) == QColor(theme.LIGHT["TEXT"])
    assert theme.LIGHT["BG"] in app.styleSheet()
    from studio.ui.curves import _Chart

    plots = [c for c in window.train_page.findChildren(_Chart) if c._plot is not None]
    assert plots, "the Train page's charts were built"
    for chart in plots:
        assert chart._plot.backgroundBrush().color() == QColor(theme.LIGHT["SURFACE"])
        axis = chart._plot.getPlotItem().getAxis("left")
        assert axis.textPen().color() == QColor(theme.LIGHT["FAINT"])
    hints.colorSchemeChanged.emit(Qt.ColorScheme.Dark)
    assert theme.current == "dark"
    assert app.palette().color(QPalette.ColorRole.Window) == QColor(theme.DARK["BG"])
    assert plots[0]._plot.backgroundBrush().color() == QColor(theme.DARK["SURFACE"])

    # forced from View → Theme: the desktop's scheme no longer matters, and the choice is kept
    window.theme_actions["light"].trigger()
    assert theme.current == "light" and theme.saved_mode() == "light"
    hints.colorSchemeChanged.emit(Qt.ColorScheme.Dark)
    assert theme.current == "light"
    assert theme.apply(app) == "light"                       # a restart reads the saved choice
    window.set_theme("dark")
    assert theme.current == "dark" and window.theme_actions["dark"].isChecked()


@pytest.mark.parametrize("mode", ["light", "dark"])
def test_text_is_readable_on_every_page(window, mode):
    from studio.ui.app import PAGES

    flush_deleted()
    window.resize(1024, 640)
    window.set_theme(mode)
    shots = os.environ.get("PEFT_STUDIO_SCREENSHOTS")
    report = {}
    try:
        for key, *_ in PAGES:
            window.show_page(key)
            report[key] = unreadable(window, window.pages[key])
            if shots and mode == "light":
                folder = Path(shots) / "light"
                folder.mkdir(parents=True, exist_ok=True)
                window.grab().save(str(folder / f"{key}-1024x640.png"))
        report["sidebar"] = unreadable(window, window.sidebar)
    finally:
        restore(window)
    bad = {k: v for k, v in report.items() if v}
    assert not bad, "\n".join(f"{k}: {p}" for k, v in bad.items() for p in v)
