"""Rough edges a new user met in the first hour, each pinned by a test: the mouse wheel changing
unfocused settings, a one-step curve drawing nothing, learning-rate ticks in two styles, a method
switch resetting the rank."""

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


def test_curves_single_point_and_learning_rate_ticks(qtbot):
    """One logged step draws a dot (a line needs two points); the LR axis labels are all in one
    style (no "0.0001" beside "9e-05")."""
    from studio.ui.curves import CurvesPanel, SciAxis

    panel = CurvesPanel()
    qtbot.addWidget(panel)
    panel.add_events([{"event": "log", "step": 1, "loss": 2.0, "lr": 1e-4, "grad_norm": 1.0,
                       "tokens_per_s": 100.0, "memory_mb": 500.0}])
    loss = panel.charts["loss"].curves["loss"]
    assert loss.opts["symbol"] == "o" and len(loss.xData) == 1
    panel.add_events([{"event": "log", "step": 2, "loss": 1.5, "lr": 9e-5, "grad_norm": 1.0,
                       "tokens_per_s": 100.0, "memory_mb": 500.0}])
    assert loss.opts["symbol"] is None
    axis = panel.charts["lr"].plot.getPlotItem().getAxis("left")
    assert isinstance(axis, SciAxis)
    labels = axis.tickStrings([9e-5, 1e-4, 1.1e-4], 1.0, 1e-5)
    assert labels == ["9.0e-05", "1.0e-04", "1.1e-04"]


def test_switching_method_keeps_the_shared_settings_the_user_changed():
    from studio import plugins
    from studio.ui.method_panel import shared_changes

    found, _ = plugins.discover()
    lora, dora, prefix = found["lora"], found["dora"], found["prefix"]
    values = lora.validate({"r": 8, "lora_dropout": 0.1})
    carried = shared_changes(lora, dora, values)
    assert carried == {"r": 8, "lora_dropout": 0.1}           # untouched alpha keeps DoRA's default
    assert shared_changes(lora, prefix, values) == {}           # nothing in common
    assert shared_changes(None, dora, values) == {}


def test_method_panel_switch_keeps_rank(qtbot):
    from studio.ui.method_panel import MethodPanel

    panel = MethodPanel()
    qtbot.addWidget(panel)
    qtbot.waitUntil(lambda: bool(panel.plugins), timeout=120_000)
    panel.set_method("lora", {"r": 8})
    assert panel.values()["r"] == 8
    panel.set_method("dora")
    assert panel.values()["r"] == 8 and panel.method_id() == "dora"


def test_help_menu_and_status_bar(qtbot, window):
    from studio.ui.app import about_text, shipped_docs, shortcuts_text

    titles = [a.text() for a in window.help_menu.actions()]
    assert "Keyboard shortcuts" in titles and "About PEFT Studio" in titles
    docs = shipped_docs()
    assert docs and all(path.is_file() for _, path in docs)
    assert {"README", "ARCHITECTURE", "PLUGINS"} <= {title for title, _ in docs}
    assert "Ctrl+1" in shortcuts_text() and "transformers" in about_text()
    window.help_menu.actions()[0].trigger()
    assert "Ctrl+Q" in window.last_help_box.text()
    window.last_help_box.close()
    assert window.status_model.text().startswith("Model: SmolLM2")
    assert window.status_job.text() == ""                     # nothing training
