"""Kill drill: SIGKILL a real training process (`python -m studio.cli train RECIPE`) at a random
moment after its first checkpoint, `train --resume` it, and compare the final eval loss with an
uninterrupted run of the same recipe. A few kills by default, many with -m slow."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import small_recipe
from drills.conftest import only_run
from studio import paths

STEPS = 6


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(paths.REPO_ROOT), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def _train(*argv, kill_after: float | None = None) -> tuple[int, str]:
    """Run the CLI; with kill_after, SIGKILL it that many seconds after its first checkpoint."""
    proc = subprocess.Popen([sys.executable, "-m", "studio.cli", "train", *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=_env())
    out = []
    for line in proc.stdout:
        out.append(line)
        if kill_after is not None and line.startswith("checkpoint:"):
            time.sleep(kill_after)
            proc.send_signal(signal.SIGKILL)
            break
    proc.stdout.close()
    return proc.wait(timeout=600), "".join(out)


def _eval_loss(run_dir) -> float:
    return json.loads((run_dir / "eval.json").read_text())["eval_loss"]


@pytest.fixture(scope="module")
def reference(model_dir, tmp_path_factory, demo_train_path, demo_eval_path):
    """The recipe and the eval loss of its uninterrupted run."""
    tmp = tmp_path_factory.mktemp("kills")
    recipe = small_recipe(model_dir, tmp, demo_train_path, demo_eval_path, steps=STEPS,
                          save_every=1, n_train=16, n_eval=4)
    code, out = _train(recipe.source, "--runs-dir", tmp / "reference")
    assert code == 0, out
    return recipe, _eval_loss(only_run(tmp / "reference"))


def _kill_and_resume(reference, tmp_path, seed: int) -> dict:
    from studio.core import runs

    recipe, expected = reference
    delay = random.Random(seed).uniform(0.0, 4.0)
    code, out = _train(recipe.source, "--runs-dir", tmp_path, kill_after=delay)
    run_dir = only_run(tmp_path)
    killed = code == -signal.SIGKILL
    if killed:
        assert runs.run_info(run_dir).status.startswith("failed (process died)")
        code, out = _train("--resume", run_dir)
    assert code == 0, out
    loss = _eval_loss(run_dir)
    print(f"\nkill after {delay:.2f} s: killed={killed}, eval loss {loss:.6f} vs {expected:.6f}")
    assert abs(loss - expected) < 1e-4
    assert runs.run_info(run_dir).status == "finished"
    return {"killed": killed, "loss": loss}


@pytest.mark.parametrize("seed", [1, 2])
def test_kill_then_resume_matches_an_uninterrupted_run(reference, tmp_path, seed):
    _kill_and_resume(reference, tmp_path, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(10, 30))
def test_many_kills(reference, tmp_path, seed):
    _kill_and_resume(reference, tmp_path, seed)
