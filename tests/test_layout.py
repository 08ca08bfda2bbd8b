"""Every page works on a laptop screen: at 1024x640 (and at full size) no button's text is cut,
no label is squeezed below its text, and no page scrolls sideways. Screenshots of each page at
both sizes go to $PEFT_STUDIO_SCREENSHOTS when it is set (docs/screenshots is made this way)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtWidgets import QApplication  # noqa: E402

from conftest import layout_problems as problems  # noqa: E402

SIZES = [(1024, 640), (1440, 900)]


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


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_train_page_fits_with_the_advanced_training_settings_open(qtbot, window, size):
    """The Train page's Advanced training rows (Devices, Multi-device mode, ...) open without
    sideways scrolling or a cut label; a screenshot goes with the others."""
    from PySide6.QtWidgets import QComboBox, QLabel, QScrollArea

    window.resize(*size)
    window.show_page("train")
    form = window.train_page.training_form
    form.advanced_toggle.setChecked(True)
    for _ in range(5):
        QApplication.processEvents()
    mode = form.editors["sharding"]
    assert isinstance(mode, QComboBox) and mode.isVisible()
    assert [mode.itemText(i) for i in range(mode.count())] == ["ddp", "fsdp"]
    assert any(lab.text().startswith("Multi-device mode") and lab.isVisible()
               for lab in form.findChildren(QLabel))
    area = mode.parent()
    while not isinstance(area, QScrollArea):            # the page's scroll area holding the form
        area = area.parent()
    for _ in range(5):
        area.ensureWidgetVisible(mode)
        QApplication.processEvents()
    shots = os.environ.get("PEFT_STUDIO_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        window.grab().save(str(Path(shots) / f"train-advanced-{size[0]}x{size[1]}.png"))
    assert not problems(window.train_page), problems(window.train_page)
    # below the form: the time and memory estimate, read before starting
    estimate = window.train_page.estimate
    window.train_page.update_estimate()
    areas, parent = [], estimate.parent()
    while parent is not None:                   # the column's scroll area inside the page's
        if isinstance(parent, QScrollArea):
            areas.append(parent)
        parent = parent.parent()
    for _ in range(5):
        for scroller in areas:
            scroller.ensureWidgetVisible(estimate)
        QApplication.processEvents()
    assert estimate.isVisible() and "Memory (model): about" in estimate.text()
    if shots:
        window.grab().save(str(Path(shots) / f"train-estimate-{size[0]}x{size[1]}.png"))
    assert not problems(window.train_page), problems(window.train_page)
