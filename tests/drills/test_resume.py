"""Drills 3 and 6: two trainers of one run (an OS lock decides), `--resume` of a finished run, and
an events.jsonl whose last line was torn by a power loss."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import small_recipe
from drills.conftest import cli, events_of, only_run, status_of
from studio import paths

HOLD = ("import sys, time; from studio.core import runs; runs.lock_run(sys.argv[1]); "
        "print('locked', flush=True); time.sleep(120)")


@pytest.fixture
def recipe(model_dir, tmp_path, demo_train_path, demo_eval_path):
    return small_recipe(model_dir, tmp_path, demo_train_path, demo_eval_path, steps=2,
                        save_every=1, n_train=8, n_eval=4)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(paths.REPO_ROOT), env.get("PYTHONPATH", "")])
    return env


def test_second_trainer_is_refused_and_a_dead_holder_frees_the_run(recipe, tmp_path, capsys):
    from studio.core import runs

    run_dir = runs.create_run(recipe, base=tmp_path / "runs")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE,
                              text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = (run_dir / "status.json").read_bytes()
        code, out, err = cli(capsys, "train", "--resume", run_dir)
        assert code == 2 and f"already being trained by process {holder.pid}" in err
        assert "Traceback" not in err
        # the worker child (GUI) is refused the same way, and touches nothing in the run
        child = subprocess.run([sys.executable, "-m", "studio.worker.child", str(run_dir),
                                "--resume"], capture_output=True, text=True, env=_env(),
                               timeout=300)
        assert child.returncode == 1
        failed = json.loads(child.stdout.strip().splitlines()[-1])
        assert failed["event"] == "failed" and f"process {holder.pid}" in failed["cause"]
        assert (run_dir / "status.json").read_bytes() == before
        assert not (run_dir / "events.jsonl").exists()
        # the GUI's launcher asks the lock first and starts no child at all
        from studio.errors import UserError
        from studio.worker.launcher import Job

        with pytest.raises(UserError, match=f"already being trained by process {holder.pid}"):
            Job.start(run_dir, resume=True)
        assert not (run_dir / "worker.log").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    runs.lock_run(run_dir)              # the OS dropped the dead holder's lock: no stale lock
    runs.unlock_run(run_dir)


def test_resume_of_a_finished_run_is_refused_unless_steps_were_raised(recipe, tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    code, out, err = cli(capsys, "train", recipe.source, "--runs-dir", runs_dir)
    assert code == 0, err
    run_dir = only_run(runs_dir)
    adapter = run_dir / "adapter" / "adapter_model.safetensors"
    stamp, n_events = adapter.stat().st_mtime_ns, len(events_of(run_dir))

    code, out, err = cli(capsys, "train", "--resume", run_dir)
    assert code == 2 and "finished at step 2 of 2" in err and "max_steps" in err
    assert status_of(run_dir)["status"] == "finished"
    assert adapter.stat().st_mtime_ns == stamp and len(events_of(run_dir)) == n_events

    text = (run_dir / "recipe.toml").read_text().replace("max_steps = 2", "max_steps = 3")
    (run_dir / "recipe.toml").write_text(text)
    code, out, err = cli(capsys, "train", "--resume", run_dir)
    assert code == 0, err
    assert status_of(run_dir)["status"] == "finished" and status_of(run_dir)["step"] == 3


def test_torn_last_event_line_does_not_swallow_the_next_event(tmp_path):
    from studio.core import events, runs

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    log = runs.RunLog(run_dir)
    log.append(events.log(step=1, epoch=0.1, loss=2.0, lr=1e-3, grad_norm=1.0, tokens_per_s=1.0,
                          memory_mb=1.0, eta_s=1.0, progress=0.5))
    with open(run_dir / "events.jsonl", "ab") as fh:        # power loss mid-line
        fh.write(b'{"event": "log", "step": 2, "lo')
    log.append(events.started(str(run_dir), 4, 10, 100, resumed_from=1))
    found = [e["event"] for e in runs.read_events(run_dir)]
    assert found == ["log", "started"]
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    assert len(lines) == 3 and lines[1].endswith('"lo') and json.loads(lines[2])["event"] == "started"
    assert runs.run_info(run_dir).step == 1
