"""The evaluation dialog (Runs page "Evaluate on task…", Tools > Evaluate on a task), driven headless.

It runs the real CLI in a background process on the shipped model with a random LoRA, reads the
saved results and shows base vs adapter with the paired difference, and every example.
"""

from __future__ import annotations

import json
import sys

import pytest

pytest.importorskip("pytestqt")

from conftest import MC_TASK, write_task  # noqa: E402

TIMEOUT = 240_000


def test_dialog_scores_adapter_against_base(qtbot, model_dir, tmp_path, random_adapter):
    from studio import paths
    from studio.ui import app as studio_app
    from studio.ui.eval_dialog import EXAMPLE_COLUMNS, EvalDialog

    studio_app.create_app()
    task = write_task(tmp_path, MC_TASK, "opposites")
    dialog = EvalDialog(adapter_dir=str(random_adapter), model_path=str(model_dir),
                        python=sys.executable)
    qtbot.addWidget(dialog)
    dialog.show()
    assert not dialog.run_button.isEnabled() and "task.json" in dialog.problem()
    dialog.task.set_path(str(task.parent))                 # a task folder is accepted too
    assert dialog.problem() == "" and dialog.run_button.isEnabled()
    dialog.limit.setValue(4)
    dialog.start()
    assert dialog.is_running() and not dialog.run_button.isEnabled()
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=TIMEOUT)
    assert dialog.result is not None, dialog.message.text() + "\n".join(dialog._log)
    assert dialog.status.text().startswith("Done. Saved:")
    saved = json.loads(dialog.out_path.read_text())
    assert dialog.out_path.parent == paths.data_dir() / "evals"   # not inside a run folder
    assert saved["difference"]["n"] == 4
    titles = [dialog.summary.item(r, 0).text() for r in range(dialog.summary.rowCount())]
    assert titles == ["Base model", "With adapter", "Adapter − base"]
    assert dialog.summary.item(0, 1).text() == f"{saved['base']['score']:.3f}"
    assert dialog.summary.item(2, 1).text() == f"{saved['difference']['mean']:+.3f}"
    assert dialog.examples.rowCount() == 4 and dialog.examples.columnCount() == len(EXAMPLE_COLUMNS)
    first = saved["with_adapter"]["results"][0]
    assert dialog.examples.item(0, 4).text().endswith(first["prediction"])
    changes = [dialog.examples.item(r, 5).text() for r in range(4)]
    want = ["" if a["score"] == b["score"] else "fixed" if a["score"] > b["score"] else "broke"
            for a, b in zip(saved["with_adapter"]["results"], saved["base"]["results"])]
    assert changes == want
    assert f"fixed {want.count('fixed')} example(s)" in dialog.verdict.text()
    assert dialog.progress.value() == 1000
    # the task is remembered for next time (in the studio's own settings file)
    again = EvalDialog(adapter_dir=str(random_adapter), python=sys.executable)
    qtbot.addWidget(again)
    assert again.task.path() == str(task.parent)


def test_dialog_names_what_is_wrong(qtbot, tmp_path):
    from studio.ui import app as studio_app
    from studio.ui.eval_dialog import EvalDialog, results_folder

    studio_app.create_app()
    dialog = EvalDialog(adapter_dir=str(tmp_path), python=sys.executable)
    qtbot.addWidget(dialog)
    assert "adapter_config.json" in dialog.problem() and str(tmp_path) in dialog.problem()
    (tmp_path / "adapter_config.json").write_text("{}")
    dialog.adapter.set_path(str(tmp_path))
    dialog.task.set_path(str(tmp_path / "nope.json"))
    assert "nope.json" in dialog.problem() and not dialog.run_button.isEnabled()
    dialog.start()                                              # refused, nothing started
    assert dialog.process is None
    from studio import paths
    run = paths.runs_dir() / "my-run"
    (run / "checkpoints" / "step-10").mkdir(parents=True)
    assert results_folder(str(run / "adapter")) == run / "evals"
    assert results_folder(str(run / "checkpoints" / "step-10")) == run / "evals"


def test_stop_ends_the_evaluation_process(qtbot, tmp_path):
    from studio.ui import app as studio_app
    from studio.ui.eval_dialog import EvalDialog

    studio_app.create_app()
    (tmp_path / "adapter_config.json").write_text("{}")
    task = tmp_path / "task.json"
    task.write_text(json.dumps(MC_TASK))
    dialog = EvalDialog(adapter_dir=str(tmp_path), python=sys.executable)
    qtbot.addWidget(dialog)
    dialog.task.set_path(str(task))
    dialog.start()
    assert dialog.is_running() and dialog.stop_button.isEnabled()
    dialog.stop()
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=30_000)
    qtbot.waitUntil(lambda: dialog.status.text() == "Stopped.", timeout=10_000)
    assert dialog.run_button.isEnabled() and dialog.result is None


def test_runs_page_lists_a_runs_saved_evaluations(qtbot, model_dir, demo_train_path):
    """Evaluations saved in a run's evals/ show under its details, newest first; a half-written
    file (an interrupted evaluation) is skipped, not fatal."""
    import os
    import time

    from studio.core.recipe import DataSection, MethodSection, ModelSection, Recipe
    from studio.core.runs import create_run, format_evaluation, list_evaluations
    from studio.ui import app as studio_app
    from studio.ui import tasks
    from studio.ui.runs_page import RunsPage

    studio_app.create_app()
    recipe = Recipe(name="evaluated", model=ModelSection(path=str(model_dir)),
                    data=DataSection(path=str(demo_train_path)), method=MethodSection(id="lora"))
    run_dir = create_run(recipe)
    evals = run_dir / "evals"
    evals.mkdir()

    def result(task, score):
        return {"task": task, "n": 50, "metric": "multiple_choice_grade", "score": score,
                "ci95": [score - 0.1, score + 0.1], "results": []}

    (evals / "old.json").write_text(json.dumps(result("plain_task", 0.4)))
    os.utime(evals / "old.json", (time.time() - 100, time.time() - 100))
    (evals / "new.json").write_text(json.dumps({
        "base": result("units", 0.5), "with_adapter": result("units", 0.52),
        "difference": {"mean": 0.02, "ci95": [-0.08, 0.14], "n": 50, "verdict": "no difference"}}))
    (evals / "broken.json").write_text('{"base": {"task": ')
    items = list_evaluations(run_dir)
    assert [i["task"] for i in items] == ["units", "plain_task"]
    assert format_evaluation(items[0]) == "units (50): 0.520 vs base 0.500, +0.020 [-0.080, +0.140]"
    assert format_evaluation(items[1]) == "plain_task (50): 0.400 [0.300, 0.500]"

    page = RunsPage()
    qtbot.addWidget(page)
    page.show()
    page.refresh()
    qtbot.waitUntil(lambda: any(r.path == run_dir for r in page.runs), timeout=30_000)
    page.select_run(run_dir)
    qtbot.waitUntil(lambda: page.evals_line.isVisible(), timeout=30_000)
    assert "units (50): 0.520 vs base 0.500" in page.evals_line.text()
    assert page.evals_line.text().index("units") < page.evals_line.text().index("plain_task")
    tasks.wait_all(30_000)


def test_dialog_offers_the_shipped_samples(qtbot):
    from studio.ui.eval_dialog import EvalDialog

    dialog = EvalDialog()
    qtbot.addWidget(dialog)
    names = [dialog.samples.itemText(i) for i in range(dialog.samples.count())]
    assert any(n.startswith("sports_understanding") for n in names)
    assert any("generative" in n for n in names) and any("multiple choice" in n for n in names)
    dialog._on_sample(1)
    assert dialog.task.path().endswith("task.json")
