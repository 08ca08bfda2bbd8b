"""The task-LoRA library: reproducible task pick, descriptions kept apart, a real (tiny) build."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

BB_TGZ = Path(__file__).resolve().parents[2] / "shared" / "data" / "bigbench_tasks.tgz"
WANTED = ["fact_checker/fever", "fact_checker/politifact", "arithmetic/1_digit_multiplication",
          "sports_understanding", "hyperbaton"]


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

    train, held = resolve_tasks(bigbench, "sports_understanding,arithmetic/1_digit_multiplication",
                                "fact_checker/politifact")
    assert [Path(p).name for p in train] == ["sports_understanding", "1_digit_multiplication"]
    assert resolve_tasks(bigbench, "sports_understanding", "1") == (train[:1], held)
    with pytest.raises(UserError, match="families both trained on and held out"):
        resolve_tasks(bigbench, "fact_checker/fever", "fact_checker/politifact")
    with pytest.raises(UserError, match="not found"):
        resolve_tasks(bigbench, "no_such_task", "0")
    tr, ev = task_descriptions(load_task(bigbench / "bigbench_tasks" / "fact_checker" / "fever"),
                               "fact_checker/fever")
    assert "Is this factual claim correct? Answer true or false." in ev
    assert not set(tr) & set(ev) and len(tr) >= 5        # hand-written + BIG-bench + templates


def test_split_keeps_families_apart(bigbench, tmp_path):
    """A numbered pick tops the curated list up but never takes a task of a held-out family
    (fact_checker/fever is curated for training, politifact held out: fever is dropped)."""
    from studio.hyper.build_library import family, read_split, resolve_tasks, write_split

    train, held = resolve_tasks(bigbench, 3, "fact_checker/politifact")
    keys = [p.split("bigbench_tasks/")[1] for p in train]
    assert "fact_checker/fever" not in keys and keys and len(keys) <= 3
    assert not {family(k) for k in keys} & {"fact_checker"}
    data = write_split(bigbench, tmp_path / "split.json", 3, "fact_checker/politifact")
    assert read_split(tmp_path / "split.json")["held_out"] == ["fact_checker/politifact"]
    assert resolve_tasks(bigbench, str(tmp_path / "split.json")) == (train, held)
    assert data["held_out_families"] == ["fact_checker"]


def test_shipped_split_is_family_aware():
    """The repo's split: >= 200 training tasks, >= 20 held-out (the first network's 10 among
    them), no family on both sides, hand-written held-out descriptions for every held-out task."""
    from studio.hyper.build_library import curated, family, read_split
    from studio.paths import resources_dir

    split = read_split(resources_dir() / "hypernetworks" / "library_split.json")
    cur = curated()
    assert len(split["train"]) >= 200 and len(split["held_out"]) >= 20
    assert set(cur["held_out_tasks"][:10]) <= set(split["held_out"])
    assert not {family(k) for k in split["train"]} & {family(k) for k in split["held_out"]}
    assert len(set(split["train"])) == len(split["train"])
    for key in split["held_out"]:
        assert len(cur["descriptions"][key]["eval"]) >= 2, key


def test_build_tiny_library_on_the_real_model(bigbench, tmp_path, model_dir):
    from peft import PeftModel

    from studio.core.models import load_model
    from studio.hyper.build_library import build_library, resolve_tasks
    from studio.hyper.library import load_library

    train, held = resolve_tasks(bigbench, "sports_understanding,hyperbaton", "fact_checker/politifact")
    lines = []
    kw = dict(steps=2, batch_size=2, max_length=64, n_eval=2, checkpoint_every=1,
              log=lines.append, command="test", precision="bf16")
    # two shards (as two processes would), the second one first: one library, in list order
    first = build_library(model_dir, train, tmp_path / "lib", held_out_paths=held, shard=(1, 2), **kw)
    assert list(first["built"]) == ["sports_understanding"] and first["held_out"] == []
    res = build_library(model_dir, train, tmp_path / "lib", held_out_paths=held, shard=(0, 2), **kw)
    assert list(res["built"]) == ["fact_checker__politifact", "hyperbaton"]
    assert res["tasks"] == ["sports_understanding", "hyperbaton"]
    assert res["held_out"] == ["fact_checker__politifact"]
    assert [x for x in lines if x.startswith("[1/3]")][0] == "[1/3] fact_checker__politifact (held_out)"
    assert any("s per task over 2 built now" in line for line in lines)
    lib = load_library(tmp_path / "lib")
    assert lib.held_out == ["fact_checker__politifact"] and lib.shared_init and lib.command == "test"
    e = lib.entries[0]
    assert len(e.checkpoints()) == 2 and e.info["steps"] == 2 and e.eval_descriptions  # step 1 + final
    assert e.info["precision"] == "bf16" and e.info["seconds"] >= e.info["train_seconds"] > 0
    assert len(e.examples()) == 200 and e.prompts()[0]
    index = json.loads((tmp_path / "lib" / "library.json").read_text())
    assert index["spec"]["r"] == 4 and index["recipe"]["steps"] == 2
    base, _ = load_model(model_dir)
    PeftModel.from_pretrained(base, str(e.adapter_dir))      # a standard PEFT adapter
    # resumable: a second call skips finished tasks; a task whose description.json (written
    # last) is missing counts as unfinished and is built again
    (tmp_path / "lib" / "sports_understanding" / "description.json").unlink()
    again = build_library(model_dir, train, tmp_path / "lib", held_out_paths=held, steps=2,
                          batch_size=2, max_length=64, n_eval=2, log=lines.append)
    assert list(again["built"]) == ["sports_understanding"]
    assert any("fact_checker__politifact: already built, skipped" in line for line in lines)
