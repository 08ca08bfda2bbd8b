"""Method comparison: `peft-studio compare-methods` for real on the shipped model (2 methods, a few
steps, each in its own training process), its input checks, and the GUI dialog that runs it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from studio import cli
from studio.worker import method_compare
from studio.core.recipe import Recipe
from studio.errors import UserError

REPO = Path(__file__).resolve().parent.parent
STEPS = 2


def _run_cli(args: list[str], timeout: int = 1800) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "studio.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO))
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()                 # SIGTERM: the CLI also ends its training process
        out, err = proc.communicate(timeout=60)
        pytest.fail(f"compare-methods did not finish in {timeout} s:\n{out[-2000:]}\n{err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def compared(tmp_path_factory, model_dir):
    """One real comparison: LoRA and IA3, 2 steps each, eval loss and accuracy on 3 examples."""
    tmp = tmp_path_factory.mktemp("compare")
    out = tmp / "table.md"
    proc = _run_cli(["compare-methods", "--methods", "lora,ia3", "--steps", str(STEPS),
                     "--eval-limit", "3", "--runs-dir", str(tmp / "runs"), "--out", str(out),
                     "--progress-json"])
    print(proc.stdout[-3000:], proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stderr
    return {"out": out, "data": json.loads(out.with_suffix(".json").read_text()),
            "stdout": proc.stdout, "runs": tmp / "runs"}


def test_compare_command_produces_a_table_with_real_numbers(compared):
    rows = {r["method"]: r for r in compared["data"]["rows"]}
    assert list(rows) == ["lora", "ia3"]
    for method, row in rows.items():
        run_dir = Path(row["run_dir"])
        assert run_dir.parent == compared["runs"] and (run_dir / "events.jsonl").is_file()
        assert row["status"] == "finished" and row["steps_done"] == STEPS, row
        assert row["trainable_params"] > 0 and 0 < row["trainable_pct"] < 5
        assert row["wall_s"] > 1 and row["peak_memory_mb"] > 100
        assert math.isfinite(row["train_loss"]) and math.isfinite(row["eval_loss"])
        assert 0.0 <= row["accuracy"] <= 1.0
        adapter = run_dir / "adapter"
        on_disk = sum(p.stat().st_size for p in adapter.rglob("*") if p.is_file()) / 2**20
        assert row["adapter_mb"] == pytest.approx(on_disk) and on_disk > 0
    # LoRA r=16 on all 7 linear layers of the 30 blocks (hidden 576, kv 192, mlp 1536)
    assert rows["lora"]["trainable_params"] == 30 * 16 * (2 * 1152 + 2 * 768 + 3 * 2112)
    # IA3: one vector per k, v (192 each) and down_proj input (1536) per block
    assert rows["ia3"]["trainable_params"] == 30 * (192 + 192 + 1536)
    assert rows["ia3"]["adapter_mb"] < rows["lora"]["adapter_mb"] / 50
    assert rows["ia3"]["learning_rate"] == 3e-3 and rows["lora"]["learning_rate"] == 2e-4
    assert 0.0 <= compared["data"]["base_accuracy"] <= 1.0


def test_report_has_the_command_and_the_table(compared):
    text = compared["out"].read_text()
    command = text.split("```bash\n")[1].split("\n```")[0]
    assert command.startswith("peft-studio compare-methods --methods lora,ia3 --steps 2")
    assert "--progress-json" not in command and f"--out {compared['out']}" in command
    assert "evaluated on `dates_eval-first3.jsonl`" in text and "Machine: " in text
    assert "Partial" not in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| Method | Status | LR | Trainable params")
    assert table[1].startswith("| base model (no adapter) |")
    lora = next(line for line in table if line.startswith("| lora |"))
    assert "| finished |" in lora and "4,884,480" in lora
    progress = [json.loads(line[len("@progress "):]) for line in compared["stdout"].splitlines()
                if line.startswith("@progress ")]
    assert [p["phase"] for p in progress if p["phase"] in ("done", "finished")] == \
        ["done", "done", "finished"]
    assert max(p["step"] for p in progress if p.get("method") == "ia3") == STEPS


def test_dialog_shows_the_rows_from_the_command_output(qtbot, compared):
    from studio.ui.compare_dialog import CompareDialog
    dialog = CompareDialog()
    qtbot.addWidget(dialog)
    for line in compared["stdout"].splitlines():
        dialog.handle_line(line)
    assert dialog.table.rowCount() == 2
    assert dialog.table.item(0, 0).text() == "lora" and dialog.table.item(1, 0).text() == "ia3"
    assert dialog.table.item(0, 2).text() == "4,884,480"
    assert dialog.progress.value() == 1000
    assert "Base model accuracy" in dialog.status.text()


def test_dialog_builds_the_cli_command(qtbot, tmp_path):
    from studio import paths
    from studio.ui.compare_dialog import CompareDialog
    dialog = CompareDialog(model_path=str(tmp_path / "m"), data_path=str(paths.demo_data_path()))
    qtbot.addWidget(dialog)
    assert {"lora", "dora", "ia3", "lora_dash", "prompt", "bitfit"} <= set(dialog.checks)
    dialog._check_all(False)
    assert not dialog.run_button.isEnabled()
    dialog.checks["vera"].setChecked(True)
    dialog.checks["lora"].setChecked(True)
    dialog.steps.setValue(7)
    args = dialog.command()
    assert args[:3] == ["-m", "studio.cli", "compare-methods"]
    assert args[args.index("--methods") + 1].split(",") == [m for m in dialog.checks
                                                          if m in ("vera", "lora")]
    assert args[args.index("--steps") + 1] == "7" and "--progress-json" in args
    assert args[args.index("--model") + 1] == str(tmp_path / "m")
    assert "--data" not in args                      # the demo data: the recipe finds its eval file
    assert dialog.run_button.isEnabled() and not dialog.stop_button.isEnabled()
    assert not dialog.use_train_settings.isEnabled()  # no Train page recipe given


def test_dialog_uses_the_train_page_settings_and_names_the_base_phase(qtbot, model_dir):
    from studio.core.recipe import Recipe
    from studio.ui.cli_process import is_noise
    from studio.ui.compare_dialog import CompareDialog

    recipe = Recipe.default(model_path=model_dir)
    recipe.training.batch_size, recipe.data.max_length = 2, 96
    dialog = CompareDialog(recipe=recipe)
    qtbot.addWidget(dialog)
    assert dialog.use_train_settings.isChecked()
    args = dialog.command()
    saved = Recipe.load(args[args.index("--recipe") + 1])
    assert (saved.training.batch_size, saved.data.max_length) == (2, 96)
    dialog.use_train_settings.setChecked(False)
    assert "--recipe" not in dialog.command()
    dialog.handle_line('@progress {"phase": "base"}')
    assert "base model" in dialog.status.text()
    for noise in ("  warnings.warn(", "Loading weights: 100%|##########| 272/272 [00:00<00:00]",
                  "/x/modeling_utils.py:3312: FutureWarning: deprecated"):
        dialog.handle_line(noise)
        assert is_noise(noise)
    assert "warn" not in dialog.log.toPlainText() and "Loading" not in dialog.log.toPlainText()
    assert not is_noise("[lora] training 40 steps ...")


def test_bad_input_is_a_user_error_before_any_training(capsys):
    assert cli.main(["compare-methods", "--methods", "lora,no_such_method", "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "unknown method(s): no_such_method" in err and "Traceback" not in err
    assert "lora_dash" in err                        # the fix lists what exists
    assert cli.main(["compare-methods", "--methods", "lora", "--lr", "fast"]) == 2
    assert "--lr 'fast'" in capsys.readouterr().err
    assert cli.main(["compare-methods", "--methods", "lora", "--set", "lora.r"]) == 2
    assert "METHOD.PARAM=VALUE" in capsys.readouterr().err
    assert cli.main(["compare-methods", "--methods", "lora", "--set", "lora.r=0"]) == 2
    err = capsys.readouterr().err
    assert "field 'r'" in err and "from 1 to 512" in err
    assert cli.main(["compare-methods", "--methods", "lora", "--set", "dora.r=4"]) == 2
    assert "not being compared" in capsys.readouterr().err
    assert cli.main(["compare-methods", "--methods", "lora", "--out", "x.txt"]) == 2


def test_method_recipe_fits_the_budget_and_uses_suggested_rates():
    base = Recipe.default()
    recipe, notes = method_compare.method_recipe(base, "lora_dash", 20)
    assert recipe.method.params["pre_launch_steps"] == 10 and "pre_launch_steps=10" in notes[0]
    assert recipe.training.max_steps == 20 and recipe.method.id == "lora_dash"
    recipe, notes = method_compare.method_recipe(base, "lora_dash", 400)
    assert recipe.method.params["pre_launch_steps"] == 100 and not notes
    recipe, _ = method_compare.method_recipe(base, "prompt", 20)
    assert recipe.training.learning_rate == 3e-2
    recipe, _ = method_compare.method_recipe(base, "prompt", 20, learning_rate="recipe")
    assert recipe.training.learning_rate == base.training.learning_rate
    recipe, _ = method_compare.method_recipe(base, "lora", 20, learning_rate=1e-3)
    assert recipe.training.learning_rate == 1e-3
    recipe, notes = method_compare.method_recipe(base, "bitfit", 20, overrides={"include_norms": "true"})
    assert recipe.method.params["include_norms"] == "true" and notes == ["include_norms=true"]
    recipe.validate()
    assert recipe.method_params()["include_norms"] is True
    with pytest.raises(UserError):
        method_compare.compare_methods(base, ["lora"], 0)


def test_tools_menu_entry_opens_the_dialog(qtbot):
    from PySide6.QtWidgets import QWidget

    from studio.ui import app
    from studio.ui.compare_dialog import CompareDialog
    (entry,) = [t for t in app.TOOLS if t[0].startswith("Compare methods")]
    window = QWidget()                 # stands in for the main window; the pages are optional
    qtbot.addWidget(window)
    dialog = entry[2](window)
    assert isinstance(dialog, CompareDialog) and dialog.isVisible()
    assert dialog.parent() is window
    dialog.close()
