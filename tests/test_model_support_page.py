"""The Model page tells the user which row of the checked-families table (studio.core.families,
docs/MODELS.md) their model falls in, and what will not work, before they train; the card fits
at 1024x640 and 1440x900."""

from __future__ import annotations

import json
import os
import shutil

import pytest

pytest.importorskip("pytestqt")

from conftest import layout_problems  # noqa: E402

SIZES = [(1024, 640), (1440, 900)]


@pytest.fixture
def page(qtbot):
    from PySide6.QtWidgets import QMainWindow

    from studio.ui import app as studio_app
    from studio.ui import tasks
    from studio.ui.model_page import ModelPage

    studio_app.create_app()
    window = QMainWindow()
    page = ModelPage()
    window.setCentralWidget(page)
    qtbot.addWidget(window)
    window.show()
    yield page
    tasks.wait_all(60_000)


def _load(qtbot, page, folder):
    page.set_model_path(str(folder))
    qtbot.waitUntil(lambda: not page.is_loading(), timeout=120_000)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_support_card_for_a_family_with_limits(qtbot, page, tiny_family, size):
    from studio.core.families import SUPPORT

    _load(qtbot, page, tiny_family("qwen3_moe"))
    assert page.info is not None and page.info.model_type == "qwen3_moe"
    assert page.support["row"] == "qwen3_moe"
    assert page.support_badge.text() == "checked, with limits"
    text = page.support_problems.text()
    for problem in SUPPORT["qwen3_moe"].problems():
        assert problem in text
    assert "4-bit (QLoRA): partly" in text and "GGUF export" in text
    assert page.support_template.text().startswith("Chat template: ChatML with <think> (Qwen3), "
                                                   "as checked for this family")
    page.window().resize(*size)
    qtbot.wait(50)
    assert page.support_problems.isVisible()
    assert not layout_problems(page), layout_problems(page)
    shots = os.environ.get("PEFT_STUDIO_SCREENSHOTS")
    if shots:
        from PySide6.QtWidgets import QScrollArea
        page.findChild(QScrollArea).ensureWidgetVisible(page.support_problems)
        qtbot.wait(50)
        page.window().grab().save(f"{shots}/model-support-{size[0]}x{size[1]}.png")


def test_support_card_per_family_and_unknown(qtbot, page, tiny_family, model_dir, tmp_path):
    _load(qtbot, page, tiny_family("gemma2"))
    assert page.support["row"] == "gemma2"
    assert page.support_title.text().startswith("Gemma 2: ")
    assert "Gemma turns, as checked for this family" in page.support_template.text()
    assert "system" in page.support_template.text()            # the folding is explained

    _load(qtbot, page, model_dir)                  # the default model: Llama layout, ChatML
    assert page.support["row"] == "llama3"
    assert page.support_template.text() == "Chat template: ChatML, checked with Qwen2.5."

    # a causal LM transformers knows, outside the matrix: said so, not hidden
    other = tmp_path / "other"
    shutil.copytree(tiny_family("qwen2_5"), other)
    config = json.loads((other / "config.json").read_text())
    config.update(model_type="starcoder2", architectures=["Starcoder2ForCausalLM"])
    (other / "config.json").write_text(json.dumps(config))
    _load(qtbot, page, other)
    assert page.info is not None and page.support["row"] is None
    assert page.support_badge.text() == "not checked"
    assert "not in the checked matrix" in page.support_title.text()
    assert "Data page's preview" in page.support_problems.text()

    page.set_model_path(str(tmp_path / "missing"))       # a bad folder clears the card
    qtbot.waitUntil(lambda: not page.is_loading(), timeout=60_000)
    assert page.support is None and page.support_title.text() == ""


def test_model_check_command(tiny_family, tmp_path):
    """`peft-studio models check FOLDER`, typed as a user types it, in a fresh process."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "studio.cli", "models", "check", *args],
                              capture_output=True, text=True, timeout=300, env=env, cwd=str(repo))

    proc = run(str(tiny_family("phi3")))
    assert proc.returncode == 0, proc.stderr
    assert "Phi3ForCausalLM (model_type phi3)" in proc.stdout
    assert "Phi-3 / Phi-3.5 mini: everything checked works" in proc.stdout
    assert "Chat template: Phi-3 turns, as checked for this family" in proc.stdout
    assert "qkv_proj" in proc.stdout
    proc = run(str(tiny_family("qwen3_moe")), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["support"]["row"] == "qwen3_moe" and data["info"]["model_type"] == "qwen3_moe"
    assert any(p.startswith("4-bit (QLoRA): partly") for p in data["support"]["problems"])
    proc = run(str(tmp_path / "nothing-here"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
