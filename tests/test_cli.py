"""`peft-studio` on the command line: recipe new -> train -> runs -> train --resume, on the real
model; user errors print one line and exit 2 without a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from studio import cli
from studio.core import runs
from studio.core.recipe import Recipe


def peft_studio(*args, timeout=300) -> subprocess.CompletedProcess:
    """The real console entry point in a fresh process."""
    return subprocess.run([sys.executable, "-m", "studio.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def test_recipe_new_train_runs_and_resume(tmp_path, capsys, model_dir, demo_train_path,
                                          demo_eval_path):
    out = tmp_path / "mine.toml"
    assert cli.main(["recipe", "new", str(out), "--model", str(model_dir)]) == 0
    assert "wrote" in capsys.readouterr().out
    recipe = Recipe.load(out).validate()
    assert recipe.method.id == "lora" and recipe.data.path == str(demo_train_path)
    assert cli.main(["recipe", "new", str(out)]) == 2            # refuses to overwrite
    assert "already exists" in capsys.readouterr().err

    # shrink it to a few seconds of CPU work: 8 examples, 2 steps, checkpoint after step 1
    lines = demo_train_path.read_text().splitlines()[:8]
    (tmp_path / "few.jsonl").write_text("\n".join(lines) + "\n")
    recipe.data.path, recipe.data.eval_path = "few.jsonl", ""
    recipe.data.eval_fraction, recipe.data.max_length = 0.25, 64
    recipe.method.params.update(r=4, target_modules="q_proj,v_proj")
    recipe.training.max_steps, recipe.training.batch_size = 2, 2
    recipe.training.save_every, recipe.training.eval_every = 1, 0
    recipe.save(out)

    runs_dir = tmp_path / "runs"
    assert cli.main(["train", str(out), "--runs-dir", str(runs_dir), "--precision", "fp32"]) == 0
    printed = capsys.readouterr().out
    assert "started: 2 steps" in printed and "step 1/2  loss" in printed
    assert "trained on cpu, fp32" in printed        # --precision: the run's recipe says so too
    assert "step 2/2" in printed and "finished at step 2" in printed and "ETA" in printed
    (run_dir,) = [p for p in runs_dir.iterdir() if p.is_dir()]
    assert f"run: {run_dir}" in printed
    for name in ("recipe.toml", "events.jsonl", "status.json", "eval.json",
                 "adapter/adapter_model.safetensors", "checkpoints/step-1/progress.json"):
        assert (run_dir / name).exists(), name
    assert runs.read_status(run_dir)["status"] == "finished"
    # the copied recipe is self-contained: relative data path made absolute
    assert Recipe.load(run_dir / "recipe.toml").data.path == str((tmp_path / "few.jsonl").resolve())
    assert Recipe.load(run_dir / "recipe.toml").training.precision == "fp32"

    assert cli.main(["runs", "--runs-dir", str(runs_dir)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split()[:3] == ["RUN", "STATUS", "STEP"]
    assert run_dir.name in listing[1] and "finished" in listing[1] and "2/2" in listing[1]

    # a finished run is not silently retrained: resume refuses it ...
    assert cli.main(["train", "--resume", str(run_dir)]) == 2
    assert "finished" in capsys.readouterr().err
    # ... until its recipe asks for more steps: then it continues from its last checkpoint
    longer = Recipe.load(run_dir / "recipe.toml")
    longer.training.max_steps = 3
    longer.save(run_dir / "recipe.toml")
    assert cli.main(["train", "--resume", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    assert "resumed from step 1" in printed and "step 3/3" in printed
    assert "step 1/3" not in printed and "finished at step 3" in printed
    events = [e["event"] for e in runs.read_events(run_dir)]
    assert events.count("started") == 2 and events[-1] == "finished"


def test_bad_recipe_exits_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    recipe = Recipe.default()
    recipe.training.learning_rate = -1.0
    recipe.save(bad)
    result = peft_studio("train", bad, "--runs-dir", tmp_path / "runs")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {bad}, field 'training.learning_rate'") and "Fix:" in line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())

    broken = tmp_path / "broken.toml"
    broken.write_text("name = 'x'\n[training\nmax_steps = 3\n")
    result = peft_studio("train", broken)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "broken.toml, line 2" in result.stderr
    result = peft_studio("train", "--resume", tmp_path / "no-such-run")
    assert result.returncode == 2 and "no such run" in result.stderr


def test_methods_and_runs_when_empty(tmp_path, capsys):
    assert cli.main(["methods"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert {"lora", "qlora"} <= set(names)
    assert cli.main(["methods", "--sources"]) == 0
    out = capsys.readouterr().out
    assert "from: built in (" in out and out.count("from: ") == out.count("\n") // 2
    assert cli.main(["runs", "--runs-dir", str(tmp_path)]) == 0
    assert "no runs yet" in capsys.readouterr().out


def test_extension_modules_register_subcommands(monkeypatch, capsys):
    """studio/cli/<group>.py modules add their own subcommands; a broken one is skipped."""
    import types

    good = types.ModuleType("studio.cli.zz_good")

    def register(subparsers):
        p = subparsers.add_parser("zz-hello", help="test command")
        p.add_argument("who")
        p.set_defaults(func=lambda args: print(f"hello {args.who}") or 0)

    good.register = register
    bad = types.ModuleType("studio.cli.zz_bad")        # no register(): reported, skipped
    monkeypatch.setitem(sys.modules, good.__name__, good)
    monkeypatch.setitem(sys.modules, bad.__name__, bad)
    real = cli.command_modules()
    monkeypatch.setattr(cli, "command_modules", lambda: real + ["zz_bad", "zz_good"])
    assert cli.main(["zz-hello", "world"]) == 0
    captured = capsys.readouterr()
    assert "hello world" in captured.out and "studio.cli.zz_bad skipped" in captured.err
