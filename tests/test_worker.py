"""studio.worker: a real training process on the real model, steered through its stdin, killed,
crashed, and resumed; every run ends with a reason in its folder."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from studio.core import runs
from studio.core import events
from studio.worker.launcher import Job

from conftest import small_recipe

TIMEOUT = 900          # seconds; generous because CI machines may be shared and slow
STEPS = 8              # room for pause -> resume -> one more step -> cancel before the end


def wait_for(job: Job, names, seen: list, timeout=TIMEOUT) -> dict:
    """Collect events into `seen` until one named in `names` arrives; return it."""
    names = {names} if isinstance(names, str) else set(names)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in job.poll_events():
            seen.append(event)
            if event["event"] in names:
                return event
            if event["event"] in events.TERMINAL:
                raise AssertionError(f"job ended early: {event}")
        time.sleep(0.1)
    raise AssertionError(f"no {names} event within {timeout} s; got {[e['event'] for e in seen]}")


def drain(job: Job, seen: list) -> list:
    assert job.wait(TIMEOUT) is not None, "the child did not exit"
    seen += job.poll_events()
    return seen


@pytest.fixture
def run_dir(model_dir, demo_train_path, demo_eval_path, tmp_path):
    recipe = small_recipe(model_dir, tmp_path, demo_train_path, demo_eval_path, n_train=12,
                          n_eval=4, steps=STEPS, batch_size=2)
    return runs.create_run(recipe, base=tmp_path / "runs")


def test_messages_round_trip():
    event = events.log(3, 0.5, float("nan"), 1e-4, None, 10.0, 100.0, 5.0, progress=0.3)
    parsed = events.parse_event(events.encode(event))
    assert parsed["loss"] is None and parsed["progress"] == 0.3   # NaN -> null, strict JSON
    assert events.parse_command(events.encode(events.command("pause"))) == "pause"
    with pytest.raises(events.MessageError):
        events.parse_event('{"event": "log", "time": 1, "step": 1}')
    with pytest.raises(events.MessageError):
        events.parse_command('{"command": "explode"}')


def test_pause_resume_cancel_then_resume_to_finish(run_dir):
    seen: list = []
    job = Job.start(run_dir)
    started = wait_for(job, "started", seen)
    assert started["total_steps"] == STEPS and started["run_dir"] == str(run_dir)
    assert runs.read_status(run_dir)["pid"] == job.pid
    first = wait_for(job, "log", seen)
    assert job.pause()
    paused = wait_for(job, "paused", seen)
    assert paused["step"] >= first["step"]
    assert runs.read_status(run_dir)["status"] == "paused"
    assert runs.list_runs(run_dir.parent)[0].status == "paused"
    time.sleep(3)
    assert [e for e in job.poll_events() if e["event"] == "log"] == []   # no progress while paused
    assert job.is_alive()
    assert job.resume()
    resumed = wait_for(job, "resumed", seen)
    assert resumed["step"] == paused["step"]
    after = wait_for(job, "log", seen)
    assert after["step"] == paused["step"] + 1
    assert job.cancel()
    cancelled = wait_for(job, "cancelled", seen)
    drain(job, seen)
    assert job.returncode == 0
    step = cancelled["step"]
    assert step >= after["step"] and cancelled["checkpoint"].endswith(f"step-{step}")
    assert runs.latest_checkpoint(run_dir).name == f"step-{step}"
    assert runs.read_status(run_dir)["status"] == "cancelled"
    assert step < STEPS, "cancel came too late for this test to mean anything"

    # resume the cancelled run from its checkpoint to the end
    seen2: list = []
    job2 = Job.start(run_dir, resume=True)
    again = wait_for(job2, "started", seen2)
    assert again["resumed_from"] == step
    done = wait_for(job2, "finished", seen2)
    drain(job2, seen2)
    assert job2.returncode == 0 and done["step"] == STEPS
    assert [e["step"] for e in seen2 if e["event"] == "log"] == list(range(step + 1, STEPS + 1))
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    info = runs.list_runs(run_dir.parent)[0]
    assert (info.status, info.step, info.total_steps) == ("finished", STEPS, STEPS)
    # the whole history is in the run folder, in order
    logged = [e["event"] for e in runs.read_events(run_dir)]
    assert logged[0] == "started" and logged[-1] == "finished"
    assert {"paused", "resumed", "cancelled", "checkpoint"} <= set(logged)


def test_killed_child_is_marked_failed_with_log_tail(run_dir):
    seen: list = []
    job = Job.start(run_dir)
    wait_for(job, "started", seen)
    os.kill(job.pid, signal.SIGKILL)
    failed = drain(job, seen)[-1]
    assert failed["event"] == "failed" and job.returncode == -signal.SIGKILL
    assert "SIGKILL" in failed["cause"]
    assert failed["traceback_tail"].strip()          # the tail of worker.log
    assert failed["traceback_tail"] in (run_dir / "worker.log").read_text()
    status = runs.read_status(run_dir)
    assert status["status"] == "failed" and "SIGKILL" in status["cause"]
    info = runs.list_runs(run_dir.parent)[0]
    assert info.status == "failed" and "SIGKILL" in info.cause


def test_crashing_child_reports_the_cause(run_dir):
    text = (run_dir / "recipe.toml").read_text().replace('id = "lora"', 'id = "no-such-method"')
    (run_dir / "recipe.toml").write_text(text)
    seen: list = []
    job = Job.start(run_dir)
    failed = drain(job, seen)[-1]
    assert [e["event"] for e in seen] == ["failed"]
    assert job.returncode == 1 and failed["user_error"] is True
    assert "method.id" in failed["cause"] and "no-such-method" in failed["cause"]
    assert runs.read_status(run_dir)["status"] == "failed"
    assert "no-such-method" in (run_dir / "worker.log").read_text()


def test_status_of_a_run_whose_process_vanished(run_dir):
    """A run left 'running' by a process that no longer exists lists as failed."""
    log = runs.RunLog(run_dir, pid=os.getpid())
    log.append(events.started(str(run_dir), 5, 1, 2))
    log.status["pid"] = 2**22 + 12345                  # no such process
    (run_dir / "status.json").write_text(json.dumps(log.status))
    info = runs.run_info(run_dir)
    assert info.status == "failed (process died)" and info.cause


def test_a_run_being_trained_cannot_be_started_twice(run_dir, capsys):
    from studio import cli
    from studio.errors import UserError

    log = runs.RunLog(run_dir, pid=os.getpid())        # this process "is training" it
    log.append(events.started(str(run_dir), 5, 1, 2))
    with pytest.raises(UserError, match="still being trained"):
        Job.start(run_dir, resume=True)
    assert cli.main(["train", "--resume", str(run_dir)]) == 2
    assert "still being trained" in capsys.readouterr().err
