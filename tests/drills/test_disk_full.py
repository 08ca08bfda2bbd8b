"""Drill 2: a full disk while training. Every case must end in one clear line ("disk full at PATH:
about N MB needed, M MB free"), exit code 2, the run marked failed with that cause, no temp
files left, and nothing the user wrote touched. The real cases run on a 40 MB tmpfs."""

from __future__ import annotations

import errno

import pytest

from conftest import small_recipe
from drills.conftest import cli, events_of, fill, only_run, status_of, temp_leftovers


@pytest.fixture
def recipe(model_dir, tmp_path, demo_train_path, demo_eval_path):
    return small_recipe(model_dir, tmp_path, demo_train_path, demo_eval_path, steps=4,
                        save_every=2, n_train=16, n_eval=4)


def assert_failed_cleanly(run_dir, err: str, code: int):
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error: ")]   # (not the
    assert len(lines) == 1 and "disk full at" in lines[0], err          # libraries' progress bars)
    assert "MB free" in lines[0] and "Traceback" not in err
    status = status_of(run_dir)
    assert status["status"] == "failed" and "disk full at" in status["cause"]
    assert events_of(run_dir)[-1]["event"] == "failed"
    assert "disk full at" in events_of(run_dir)[-1]["cause"]
    assert temp_leftovers(run_dir) == []


def test_checkpoint_torch_save_failure_is_a_message(recipe, tmp_path, capsys, monkeypatch):
    """torch.save's own disk-full error (no errno, just 'enforce fail at inline_container.cc')."""
    import torch

    from studio.core import checkpoints

    real_save = torch.save

    def failing_save(obj, f, *a, **k):
        if str(f).endswith("optimizer.pt"):
            with open(f, "wb") as fh:                  # the half-written file it would leave
                fh.write(b"\0" * 1000)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos "
                               "39321600 vs 39321492")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(checkpoints.torch, "save", failing_save)
    runs_dir = tmp_path / "runs"
    code, out, err = cli(capsys, "train", recipe.source, "--runs-dir", runs_dir)
    run_dir = only_run(runs_dir)
    assert_failed_cleanly(run_dir, err, code)
    assert not (run_dir / "checkpoints" / "step-2").exists()


def test_status_write_enospc_is_a_message(recipe, tmp_path, capsys, monkeypatch):
    """OSError(ENOSPC) from a plain write (eval.json at the end)."""
    from studio.core import training

    def full(path, obj, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(training, "write_json_atomic", full)
    runs_dir = tmp_path / "runs"
    code, out, err = cli(capsys, "train", recipe.source, "--runs-dir", runs_dir)
    assert_failed_cleanly(only_run(runs_dir), err, code)


def test_new_run_on_a_full_disk_leaves_no_folder(recipe, tmpfs, capsys, monkeypatch):
    runs_dir = tmpfs / "runs"
    runs_dir.mkdir()
    mine = fill(tmpfs, 1_000_000)                     # the user's own file: must survive
    code, out, err = cli(capsys, "train", recipe.source, "--runs-dir", runs_dir)
    assert code == 2 and "disk full at" in err and "MB needed" in err and "Traceback" not in err
    assert list(runs_dir.iterdir()) == []             # no empty run folder
    # without the check in front, the write itself meets the full disk: still no folder
    from studio.core import runs

    monkeypatch.setattr(runs, "RUN_MIN_FREE_BYTES", 0)
    fill(tmpfs, 0)
    code, out, err = cli(capsys, "train", recipe.source, "--runs-dir", runs_dir)
    assert code == 2 and "disk full at" in err and "Traceback" not in err
    assert list(runs_dir.iterdir()) == [] and mine.is_file()
    assert temp_leftovers(runs_dir) == []


def test_real_full_disk_then_resume_finishes(recipe, tmpfs, capsys, monkeypatch):
    """On a real 40 MB file system: the second checkpoint does not fit (the check in front says
    so); resume on the still-full disk fails the same way; once space is freed, resume finishes
    from the kept checkpoint."""
    from studio.core import checkpoints

    runs_dir = tmpfs / "runs"
    state = {"filled": None}
    real_save = checkpoints.save_checkpoint

    def save_then_fill(run_dir, step, **kw):           # the disk fills up after checkpoint 2
        path = real_save(run_dir, step, **kw)
        state["filled"] = state["filled"] or fill(tmpfs, 3_000_000)
        return path

    monkeypatch.setattr(checkpoints, "save_checkpoint", save_then_fill)
    recipe.training.max_steps, recipe.training.save_every = 6, 2
    recipe.save(recipe.source)
    code, out, err = cli(capsys, "train", recipe.source, "--runs-dir", runs_dir)
    run_dir = only_run(runs_dir)
    assert_failed_cleanly(run_dir, err, code)
    assert "MB needed" in err
    assert [s for s, _ in checkpoints.list_checkpoints(run_dir)] == [2]

    monkeypatch.setattr(checkpoints, "save_checkpoint", real_save)
    code, out, err = cli(capsys, "train", "--resume", run_dir)          # still full
    assert_failed_cleanly(run_dir, err, code)

    state["filled"].unlink()                            # the user frees space
    code, out, err = cli(capsys, "train", "--resume", run_dir)
    assert code == 0, err
    assert status_of(run_dir)["status"] == "finished" and status_of(run_dir)["step"] == 6
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    assert temp_leftovers(run_dir) == []


def test_real_enospc_inside_the_checkpoint_write(recipe, tmpfs, capsys, monkeypatch):
    """The check in front bypassed: torch.save / safetensors meet the real full disk mid-write."""
    from studio.core import checkpoints, runs

    monkeypatch.setattr(checkpoints, "check_free_space", lambda *a, **k: None)
    monkeypatch.setattr(runs, "RUN_MIN_FREE_BYTES", 0)
    runs_dir = tmpfs / "runs"
    runs_dir.mkdir()
    fill(tmpfs, 2_500_000)            # room for the run's small files, not for a checkpoint
    code, out, err = cli(capsys, "train", recipe.source, "--runs-dir", runs_dir)
    run_dir = only_run(runs_dir)
    assert_failed_cleanly(run_dir, err, code)
    assert not (run_dir / "checkpoints" / "step-2").exists()


def test_checkpoint_estimate_without_an_earlier_checkpoint(model_dir, tmp_path):
    """No checkpoint yet: the estimate comes from the trainable parameter count."""
    import torch

    from studio.core.checkpoints import BYTES_PER_TRAINABLE, checkpoint_bytes_needed

    model = torch.nn.Linear(1000, 1000)               # 1,001,000 trainable parameters
    needed = checkpoint_bytes_needed(tmp_path, model)
    assert needed >= BYTES_PER_TRAINABLE * 1_001_000
    assert checkpoint_bytes_needed(tmp_path, model, adapter_only=True) < needed
