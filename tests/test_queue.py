"""The job queue: order kept on disk across processes and windows, a job of a dead runner shown as
interrupted (and resumed only when requeued), and queued tiny runs on the real model training one
after another, from the CLI and from the window."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import GUI_LOAD_TIMEOUT, small_recipe
from studio.core.job_queue import JobQueue, queue_dir
from studio.core.recipe import Recipe
from studio.errors import UserError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def empty_queue():
    shutil.rmtree(queue_dir(), ignore_errors=True)
    yield
    shutil.rmtree(queue_dir(), ignore_errors=True)


def cli(*args, timeout=600, check=True):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "studio.cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=REPO)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def named(recipe, name, folder):
    recipe = recipe.copy()
    recipe.name = name
    recipe.source = recipe.save(folder / f"{name}.toml")
    return recipe


def test_order_survives_a_new_process(model_dir, tmp_path, demo_train_path, demo_eval_path):
    base = small_recipe(model_dir, tmp_path, demo_train_path, demo_eval_path, steps=2)
    queue = JobQueue()
    ids = [queue.add(named(base, n, tmp_path))["id"] for n in ("a", "b", "c", "d")]
    assert queue.move(ids[3], -2) == 1            # d before b
    queue.remove(ids[2])                          # c out, its stored recipe copy too
    assert not (queue_dir() / f"{ids[2]}.toml").exists()
    assert [j["name"] for j in JobQueue().jobs()] == ["a", "d", "b"]
    out = cli("queue", "list").stdout             # another process reads the same file
    listed = [line.split()[4] for line in out.splitlines()[1:4]]
    assert listed == ["a", "d", "b"], out
    assert all(" queued " in line for line in out.splitlines()[1:4])
    cli("queue", "move", ids[3], "down")          # d after b again, from the CLI
    assert [j["name"] for j in JobQueue().jobs()] == ["a", "b", "d"]
    # the job trains the frozen copy: editing the user's file later changes nothing
    frozen = Recipe.load(JobQueue().jobs()[0]["recipe"])
    assert frozen.training.max_steps == 2 and Path(frozen.data.path).is_absolute()
    with pytest.raises(UserError) as err:
        JobQueue().remove("no-such-job")
    assert "queue list" in err.value.fix
    data = json.loads((queue_dir() / "queue.json").read_text())
    assert data["version"] == 1 and len(data["jobs"]) == 3


def test_a_running_job_of_a_dead_runner_is_interrupted(model_dir, tmp_path, demo_train_path,
                                                        demo_eval_path):
    from studio.core import runs

    recipe = small_recipe(model_dir, tmp_path, demo_train_path, demo_eval_path, steps=2)
    queue = JobQueue()
    job = queue.add(recipe)
    run_dir = runs.create_run(recipe, base=tmp_path / "runs")
    dead = subprocess.Popen(["true"])
    dead.wait()
    status = runs.read_status(run_dir)
    runs.write_status(run_dir, {**status, "status": "running", "step": 1, "pid": dead.pid})
    data = json.loads(queue.file.read_text())
    data["jobs"][0].update(status="running", run_dir=str(run_dir), runner_pid=dead.pid)
    queue.file.write_text(json.dumps(data))
    got = JobQueue().jobs()[0]
    assert got["status"] == "interrupted" and got["step"] == 1
    assert "Requeue" in got["message"]
    assert json.loads(queue.file.read_text())["jobs"][0]["status"] == "interrupted"   # stored
    assert JobQueue().claim_next() is None        # never restarted by itself
    again = JobQueue().requeue(job["id"])         # no checkpoint: a fresh start, said so
    assert again["status"] == "queued" and not again["resume"] and "step 0" in again["message"]


def _statuses():
    return [(j["name"], j["status"]) for j in JobQueue().jobs()]


@pytest.mark.slow
def test_queue_run_trains_jobs_in_order_and_resumes_an_interrupted_one(
        model_dir, tmp_path, demo_train_path, demo_eval_path):
    from studio.core import runs

    base = small_recipe(model_dir, tmp_path, demo_train_path, demo_eval_path, n_train=8, n_eval=4,
                        steps=3)
    first, second = named(base, "first", tmp_path), named(base, "second", tmp_path)
    second.training.max_steps = 2
    second.save(second.source)
    cli("queue", "add", str(first.source), str(second.source), "--log-to", "tensorboard")
    started = time.time()
    out = cli("queue", "run").stdout
    took = time.time() - started
    assert _statuses() == [("first", "finished"), ("second", "finished")], out
    jobs = JobQueue().jobs()
    assert jobs[0]["ended"] <= jobs[1]["started"]               # one after another
    assert out.index("[first] finished") < out.index("[second] started")
    for job, steps in zip(jobs, (3, 2)):
        run_dir = Path(job["run_dir"])
        assert runs.read_status(run_dir)["status"] == "finished" and job["step"] == steps
        assert (run_dir / "adapter" / "adapter_config.json").is_file()
        assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))   # --log-to applied
    assert "2 finished" in out
    print(f"two queued runs: {took:.1f} s")

    # a runner killed mid-job (the app died): the job is interrupted, then resumed when requeued
    long = named(base, "long", tmp_path)
    long.training.max_steps, long.training.save_every = 10, 2
    long.save(long.source)
    job = JobQueue().add(Recipe.load(long.source))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    runner = subprocess.Popen([sys.executable, "-m", "studio.cli", "queue", "run"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    run_dir = None
    while time.time() < deadline:
        run_dir = JobQueue().get(job["id"]).get("run_dir")
        if run_dir and runs.latest_checkpoint(run_dir) is not None:
            break
        time.sleep(0.3)
    assert run_dir and runs.latest_checkpoint(run_dir) is not None
    child = runs.read_status(run_dir).get("pid")
    runner.kill()                                  # the runner and its training process die
    runner.wait()
    os.kill(child, signal.SIGKILL)
    while runs.pid_alive(child):
        time.sleep(0.1)
    got = JobQueue().get(job["id"])
    assert got["status"] == "interrupted" and got["step"] >= 2, got
    assert "interrupted" in cli("queue", "list").stdout
    again = JobQueue().requeue(job["id"])
    assert again["resume"] and again["run_dir"] == run_dir
    cli("queue", "run")
    done = JobQueue().get(job["id"])
    assert done["status"] == "finished" and done["run_dir"] == run_dir and done["step"] == 10
    resumed = [e for e in runs.read_events(run_dir) if e["event"] == "started"][-1]
    assert resumed["resumed_from"] >= 2


def test_window_queues_runs_and_a_new_window_sees_them(make_window, qtbot):
    window = make_window()
    page = window.train_page
    form = page.training_form
    form.editors["max_steps"].setValue(2)
    form.editors["eval_every"].setValue(0)
    form.editors["save_every"].setValue(0)
    ids = []
    for name in ("q-one", "q-two", "q-three"):
        form.editors["name"].setText(name)
        page.queue_button.click()
        assert page.message.kind() == "info", page.message.text()
        ids.append(JobQueue().jobs()[-1]["id"])
    queue_page = window.queue_page
    window.show_page("queue")
    assert [queue_page.table.item(r, 1).text() for r in range(3)] == ["q-one", "q-two", "q-three"]
    queue_page.select(ids[2])
    queue_page.up_button.click()                     # q-three before q-two
    queue_page.select(ids[0])
    queue_page.remove_button.click()                 # q-one out
    assert [j["name"] for j in JobQueue().jobs()] == ["q-three", "q-two"]

    second = make_window()                           # a restarted app reads the same queue
    second.show_page("queue")
    table = second.queue_page.table
    assert [table.item(r, 1).text() for r in range(table.rowCount())] == ["q-three", "q-two"]
    assert all("queued" in table.item(r, 3).text() for r in range(2))

    assert queue_page.start()
    assert not second.queue_page.start()            # one runner at a time
    assert "already being run" in second.queue_page.message.text()
    assert not second.queue_page.runner.is_open
    qtbot.waitUntil(lambda: "Queue: Training q-three" in window.status_job.text(),
                    timeout=GUI_LOAD_TIMEOUT)          # the status bar names the queued run
    qtbot.waitUntil(lambda: [s for _, s in _statuses()] == ["finished", "finished"],
                    timeout=GUI_LOAD_TIMEOUT)
    jobs = JobQueue().jobs()
    assert jobs[0]["ended"] <= jobs[1]["started"], jobs
    qtbot.waitUntil(lambda: not queue_page.is_running(), timeout=30_000)
    queue_page.refresh()
    assert "finished" in queue_page.table.item(0, 3).text()


def test_closing_the_window_keeps_the_running_job_as_interrupted(make_window, qtbot, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    from studio.core import runs

    window = make_window()
    form = window.train_page.training_form
    form.editors["name"].setText("q-long")
    form.editors["max_steps"].setValue(200)
    form.editors["eval_every"].setValue(0)
    form.editors["save_every"].setValue(0)
    job_id = window.train_page.add_to_queue()
    assert job_id
    page = window.queue_page
    assert page.start()
    qtbot.waitUntil(lambda: (JobQueue().get(job_id).get("step") or 0) >= 1, timeout=GUI_LOAD_TIMEOUT)
    asked = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: asked.append(a) or QMessageBox.StandardButton.Yes)
    window.close()                                   # asks, then the job checkpoints
    assert asked and "interrupted" in asked[0][2]
    job = JobQueue().get(job_id)
    assert job["status"] == "interrupted" and "Requeue" in job["message"], job
    run_dir = job["run_dir"]
    assert runs.latest_checkpoint(run_dir) is not None
    assert not page.runner.is_open                   # another window may run the queue now

    second = make_window()                           # the app started again: shown, not restarted
    second.show_page("queue")
    qtbot.wait(1500)
    assert "interrupted" in second.queue_page.table.item(0, 3).text()
    assert JobQueue().get(job_id)["status"] == "interrupted"
    second.queue_page.select(job_id)
    second.queue_page.requeue_button.click()
    again = JobQueue().get(job_id)
    assert again["status"] == "queued" and again["resume"] and again["run_dir"] == run_dir
