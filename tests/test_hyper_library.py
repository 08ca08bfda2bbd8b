"""The task-LoRA library: reproducible task pick, descriptions kept apart, a real (tiny) build."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

BB_TGZ = Path(__file__).resolve().parents[2] / "shared" / "data" / "bigbench_tasks.tgz"
WANTED = ["fact_checker/fever", "fact_checker/politifact", "arithmetic/1_digit_multiplication",
          "sports_understanding"]


@pytest.fixture(scope="module")
def bigbench(tmp_path_factory):
    if not BB_TGZ.is_file():
        pytest.skip("BIG-bench task files (../shared/data/bigbench_tasks.tgz) not on this machine")
    root = tmp_path_factory.mktemp("bb")
    with tarfile.open(BB_TGZ) as tar:
        members = [m for m in tar.getmembers()
                   if any(m.name.endswith(f"bigbench_tasks/{w}/task.json") for w in WANTED)]
        tar.extractall(root, members=members, filter="data")
    return root


def test_curated_descriptions_keep_eval_apart():
    from studio.hyper.build_library import curated

    cur = curated()
    assert not set(cur["train_tasks"]) & set(cur["held_out_tasks"])
    for key in cur["train_tasks"] + cur["held_out_tasks"]:
        d = cur["descriptions"][key]
        assert len(d["eval"]) >= 2 and not set(d["eval"]) & set(d["train"]), key
        if key in cur["train_tasks"]:
            assert len(d["train"]) >= 3, key


def test_resolve_tasks_is_reproducible_and_checks_overlap(bigbench):
    from studio.errors import UserError
    from studio.hyper.build_library import resolve_tasks, task_descriptions
    from studio.core.bigbench import load_task

    train, held = resolve_tasks(bigbench, "fact_checker/fever,sports_understanding",
                                "fact_checker/politifact")
    assert [Path(p).name for p in train] == ["fever", "sports_understanding"]
    assert resolve_tasks(bigbench, "fact_checker/fever", "1") == (train[:1], held)
    with pytest.raises(UserError, match="both trained on and held out"):
        resolve_tasks(bigbench, "fact_checker/fever", "fact_checker/fever")
    with pytest.raises(UserError, match="not found"):
        resolve_tasks(bigbench, "no_such_task", "0")
    tr, ev = task_descriptions(load_task(train[0]), "fact_checker/fever")
    assert "Is this factual claim correct? Answer true or false." in ev
    assert not set(tr) & set(ev) and len(tr) >= 5        # hand-written + BIG-bench + templates


@pytest.mark.slow
def test_build_tiny_library_on_the_real_model(bigbench, tmp_path, model_dir):
    from peft import PeftModel

    from studio.core.models import load_model
    from studio.hyper.build_library import build_library, resolve_tasks
    from studio.hyper.library import load_library

    train, held = resolve_tasks(bigbench, "fact_checker/fever,arithmetic/1_digit_multiplication",
                                "fact_checker/politifact")
    res = build_library(model_dir, train, tmp_path / "lib", held_out_paths=held, steps=2,
                        batch_size=1, max_length=64, n_eval=2, checkpoint_every=1,
                        log=lambda *a: None, command="test")
    assert res["tasks"] == ["fever", "1_digit_multiplication"] and res["held_out"] == ["politifact"]
    lib = load_library(tmp_path / "lib")
    assert lib.held_out == ["politifact"] and lib.shared_init and lib.command == "test"
    e = lib.entries[0]
    assert len(e.checkpoints()) == 2 and e.info["steps"] == 2 and e.eval_descriptions
    assert len(e.examples()) == 200 and e.prompts()[0]
    index = json.loads((tmp_path / "lib" / "library.json").read_text())
    assert index["spec"]["r"] == 4 and index["recipe"]["steps"] == 2
    base, _ = load_model(model_dir)
    PeftModel.from_pretrained(base, str(e.adapter_dir))      # a standard PEFT adapter
    # resumable: a second call skips finished tasks
    again = build_library(model_dir, train, tmp_path / "lib", held_out_paths=held, steps=2,
                          log=lambda *a: None)
    assert again["built"] == {}
