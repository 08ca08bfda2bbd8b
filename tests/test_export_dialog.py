"""The export dialog (Runs page "Export…", Tools > Export an adapter), driven headless: it runs
the real CLI in a background process on a tiny real run and shows the parity verdict and table.

Set PEFT_STUDIO_SCREENSHOTS=1 to also save the finished dialog at 1024x640 and at full size to
docs/screenshots/export-dialog*.png.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from conftest import small_recipe  # noqa: E402

TIMEOUT = 900_000
SHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"


@pytest.fixture(scope="module")
def tiny_run(model_dir, demo_train_path, demo_eval_path, tmp_path_factory):
    from studio.core import runs
    from studio.core.training import run_training

    tmp = tmp_path_factory.mktemp("dialog-run")
    recipe = small_recipe(model_dir, tmp, demo_train_path, demo_eval_path, n_train=8, n_eval=4,
                          steps=2)
    run_dir = runs.create_run(recipe)          # under runs_dir(), where the Runs page looks
    run_training(runs.load_recipe(run_dir), run_dir, runs.RunLog(run_dir).append)
    return run_dir


def test_dialog_runs_a_merged_export_and_shows_the_verdict(qtbot, tiny_run, tmp_path):
    from studio.ui import app as studio_app
    from studio.ui.export_dialog import PARITY_ROWS, ExportDialog

    studio_app.create_app()
    dialog = ExportDialog(source=str(tiny_run), python=sys.executable)
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.fmt() == "adapter"
    assert dialog.target.path().endswith(f"{tiny_run.name}-adapter")
    dialog.format.setCurrentIndex(dialog.format.findData("merged"))
    assert dialog.target.path().endswith(f"{tiny_run.name}-merged")   # follows the format
    target = tmp_path / "merged"
    dialog.target.set_path(str(target))
    dialog.prompts.setValue(1)
    assert dialog.problem() == "" and dialog.run_button.isEnabled()
    assert "MB of free disk" in dialog.estimate_line.text()
    assert dialog.dtype.isEnabled() and not dialog.quant.isEnabled()
    dialog.start()
    assert dialog.is_running() and dialog.stop_button.isEnabled()
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=TIMEOUT)
    assert dialog.result is not None, dialog.message.text() + "\n".join(dialog._log[-20:])
    assert "Verdict: matches" in dialog.verdict.text()
    # one column per comparison, one row per figure
    assert dialog.table.columnCount() == 1 and dialog.table.rowCount() == len(PARITY_ROWS)
    assert dialog.table.item(PARITY_ROWS.index("Verdict"), 0).text() == "matches"
    assert dialog.table.item(PARITY_ROWS.index("Same greedy answers"), 0).text() == "1/1"
    assert (target / "model.safetensors").is_file() and dialog.open_button.isEnabled()
    assert dialog.progress.value() == 1000
    if os.environ.get("PEFT_STUDIO_SCREENSHOTS"):
        SHOTS.mkdir(parents=True, exist_ok=True)
        dialog.resize(1024, 640)
        qtbot.wait(200)
        dialog.grab().save(str(SHOTS / "export-dialog.png"))
        dialog.resize(1440, 900)
        qtbot.wait(200)
        dialog.grab().save(str(SHOTS / "export-dialog-full.png"))


def test_dialog_names_what_is_wrong(qtbot, tmp_path, tiny_run):
    from studio.ui.export_dialog import ExportDialog

    dialog = ExportDialog(source=str(tmp_path), python=sys.executable)
    qtbot.addWidget(dialog)
    assert "neither a run nor an adapter folder" in dialog.problem()
    assert not dialog.run_button.isEnabled()
    dialog.source.set_path(str(tiny_run))
    dialog.format.setCurrentIndex(dialog.format.findData("gguf"))
    from studio.export.gguf import missing_tools
    if missing_tools():
        assert "Install GGUF support" in dialog.problem() or "GGUF" in dialog.problem()
        assert dialog.install_button.isVisibleTo(dialog)
    else:
        assert dialog.problem() == ""


def test_runs_page_export_button(qtbot, tiny_run):
    from studio.ui import app as studio_app
    from studio.ui.runs_page import RunsPage

    studio_app.create_app()
    page = RunsPage()
    qtbot.addWidget(page)
    page.show()
    page.refresh()                                   # loads in a background task
    qtbot.waitUntil(lambda: any(Path(r.path) == tiny_run for r in page.runs), timeout=30_000)
    assert page.select_run(tiny_run)
    qtbot.waitUntil(lambda: page.export_button.isEnabled(), timeout=30_000)
    page._export()
    assert page.export_dialog.source.path() == str(tiny_run)
    page.export_dialog.close()
