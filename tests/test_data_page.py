"""The Data page as a new user meets it: the detected format named, a clean state when the path is
cleared, the demo data one click away, whole-number histogram ticks, and fix hints that fit the
file at hand."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402

from studio.core.data import detect_file_format, load_examples  # noqa: E402
from studio.errors import UserError  # noqa: E402


def _wait(qtbot, page):
    qtbot.waitUntil(lambda: not page.is_loading(), timeout=120_000)


def test_format_badge_clear_and_demo_button(qtbot, window, tmp_path):
    page = window.data_page
    _wait(qtbot, page)
    assert "· chat" in page.count_badge.text()                 # the detected format, by name

    page.picker.set_path("")
    _wait(qtbot, page)
    assert page.result is None and page.count_badge.text() == "no file"
    assert "demo data" in page.error.text() and page.error.property("role") != "error"
    assert page.preview.toPlainText() == "" and len(page.bars.opts["height"]) == 0

    qtbot.mouseClick(page.demo_button, Qt.MouseButton.LeftButton)
    _wait(qtbot, page)
    assert page.result is not None and page.result["count"] > 100

    alpaca = tmp_path / "two.jsonl"
    alpaca.write_text("\n".join(json.dumps({"instruction": f"say {w}", "output": w})
                                for w in ("hi", "yo")) + "\n")
    page.set_data_path(alpaca)
    _wait(qtbot, page)
    assert "2 examples · alpaca" in page.count_badge.text()
    ticks = page.histogram.getPlotItem().getAxis("left")._tickLevels[0]
    assert all(float(value).is_integer() for value, _ in ticks)    # no 0.1 .. 1.1 for 2 examples


def test_detected_format_and_fix_hints(tmp_path):
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "a"},
                                             {"role": "assistant", "content": "b"}]}) + "\n")
    assert detect_file_format(chat) == "chat"
    broken = tmp_path / "broken.jsonl"
    broken.write_text('["not", "an", "object"]\n')
    with pytest.raises(UserError) as err:
        load_examples(broken)
    fix = err.value.fix or ""
    assert "write records like" not in fix                 # not an alpaca example for a chat file
    assert all(f"{name} (" in fix for name in ("alpaca", "chat", "sharegpt", "text"))
