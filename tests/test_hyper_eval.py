"""benchmarks/hyper_eval.py end to end on a miniature library (real model, real task files).

The library here has random LoRAs and an untrained hypernetwork, so the numbers mean nothing;
the test checks the harness: held-out examples only, every condition scored on the same
examples, paired CIs, generation timing, and a report naming what was and was not shown.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from studio.core import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

TASKS = {
    "colours": ("Say what colour a common thing is.", [
        ("What colour is the sky on a clear day?", "blue", ["blue", "red"]),
        ("What colour is fresh grass?", "green", ["green", "purple"]),
        ("What colour is snow?", "white", ["white", "black"]),
        ("What colour is a ripe banana?", "yellow", ["yellow", "blue"]),
        ("What colour is coal?", "black", ["black", "white"]),
        ("What colour is a ripe tomato?", "red", ["red", "green"]),
    ]),
    "opposites": ("Give the opposite of a word.", [
        ("What is the opposite of hot?", "cold", ["cold", "warm"]),
        ("What is the opposite of up?", "down", ["down", "left"]),
        ("What is the opposite of big?", "small", ["small", "large"]),
        ("What is the opposite of day?", "night", ["night", "noon"]),
        ("What is the opposite of open?", "closed", ["closed", "wide"]),
        ("What is the opposite of yes?", "no", ["no", "maybe"]),
    ]),
    "capitals": ("Name the capital city of a country.", [
        ("What is the capital of France?", "Paris", ["Paris", "Lyon"]),
        ("What is the capital of Italy?", "Rome", ["Rome", "Milan"]),
        ("What is the capital of Spain?", "Madrid", ["Madrid", "Seville"]),
        ("What is the capital of Japan?", "Tokyo", ["Tokyo", "Osaka"]),
        ("What is the capital of Germany?", "Berlin", ["Berlin", "Munich"]),
        ("What is the capital of Egypt?", "Cairo", ["Cairo", "Giza"]),
    ]),
}
HELD_OUT = ["capitals"]


def _mini_library(model_dir, root: Path) -> Path:
    """The build-library layout: 2 training tasks + 1 held-out, random rank-2 q/v LoRAs."""
    import torch
    from peft import get_peft_model

    from studio.core.bigbench import task_to_examples, load_task
    from studio.core.models import load_model
    from studio.hyper.targets import spec_from_model

    model, _ = load_model(model_dir)
    spec = spec_from_model(model, r=2, alpha=4.0, base_model=str(model_dir))
    for i, (name, (desc, rows)) in enumerate(TASKS.items()):
        src = root / "bb" / name
        src.mkdir(parents=True)
        (src / "task.json").write_text(json.dumps({"name": name, "description": desc, "examples": [
            {"input": q, "target_scores": {c: float(c == a) for c in choices}} for q, a, choices in rows]}))
        folder = root / "lib" / name
        folder.mkdir(parents=True)
        task = load_task(src / "task.json")
        with open(folder / "examples.jsonl", "w") as fh:
            for ex in task_to_examples(task, 2, offset=2):
                fh.write(json.dumps({"messages": ex.messages}) + "\n")
        torch.manual_seed(i)
        pm = get_peft_model(model, spec.lora_config())
        with torch.no_grad():
            for pname, p in pm.named_parameters():
                if "lora_B" in pname:
                    p.normal_(0, 0.05)
        pm.save_pretrained(str(folder / "adapter"))
        model = pm.unload()
        (folder / "description.json").write_text(json.dumps({
            "task": name, "key": name, "description": desc, "train_descriptions": [desc, "Task: " + desc],
            "eval_descriptions": ["Please " + desc[0].lower() + desc[1:]], "source": str(src / "task.json"),
            "steps": 2, "train_examples": 2, "eval_examples": 2}))
    (root / "lib" / "library.json").write_text(json.dumps({
        "base_model": str(model_dir), "spec": spec.to_dict(), "shared_init": False,
        "tasks": [n for n in TASKS if n not in HELD_OUT], "held_out": HELD_OUT}))
    return root / "lib"


@pytest.mark.slow
def test_harness_on_a_mini_library(model_dir, tmp_path, make_t2l):
    import hyper_eval

    library = _mini_library(model_dir, tmp_path)
    t2l = make_t2l(tmp_path / "t2l")
    out, js = tmp_path / "report.md", tmp_path / "res.json"
    code = hyper_eval.main(["--library", str(library), "--t2l", str(t2l), "--t2l-second", str(t2l),
                            "--limit", "3",
                            "--mt-steps", "2", "--work", str(tmp_path / "work"),
                            "--out", str(out), "--json", str(js)])
    assert code == 0
    res = json.loads(js.read_text())
    row = res["rows"]["capitals"]
    # Only examples no LoRA trained on: the first 2 (eval) and those after the 2 training ones.
    assert row["n"] == 3
    assert abs(row["majority"] - 1 / 3) < 1e-9            # three different capitals
    assert row["description"].startswith("Please")           # the held-out paraphrase
    assert row["nearest"] in ("colours", "opposites")
    for cond in ("base", "base_desc", "multitask", "nearest", "t2l", "t2l_second", "oracle",
                 "t2l_shuffled", "t2l_random"):
        c = row["conditions"][cond]
        assert len(c["scores"]) == 3 and c["ci95"][0] <= c["score"] <= c["ci95"][1], cond
    # the oracle is the held-out task's own library LoRA, scored on the same examples as the base
    # model: scoring that adapter and the plain base model again here gives the harness's numbers
    oracle = row["conditions"]["oracle"]
    own = library / "capitals" / "adapter"
    assert Path(oracle["adapter"]).resolve() == own.resolve()
    assert oracle["adapter_mb"] == hyper_eval.adapter_mb(own) > 0
    from studio.core.models import load_model
    from studio.hyper.library import load_library

    entry = next(e for e in load_library(library).held_out_entries if e.name == "capitals")
    task, _ = hyper_eval.eval_task(entry, None, 3)
    assert len(task.examples) == row["n"]
    base, tokenizer = load_model(model_dir)
    scores, _, base = hyper_eval.score(base, tokenizer, task, own)
    assert scores == oracle["scores"]
    assert hyper_eval.score(base, tokenizer, task, None)[0] == row["conditions"]["base"]["scores"]
    assert res["gen"]["t2l"][0]["seconds"] > 0
    # the same network given twice emits the same LoRA: identical scores
    assert row["conditions"]["t2l_second"]["scores"] == row["conditions"]["t2l"]["scores"]
    # one held-out task: no pairs to compare, so no sensitivity line (and no crash)
    assert res["sensitivity"]["t2l"] is None
    # the same run split into processes (here one task: one child process) merges to the same rows
    js2 = tmp_path / "res2.json"
    assert hyper_eval.main(["--library", str(library), "--t2l", str(t2l), "--t2l-second", str(t2l),
                            "--limit", "3", "--mt-steps", "2", "--work", str(tmp_path / "work"),
                            "--out", str(tmp_path / "r2.md"), "--json", str(js2),
                            "--parallel", "2"]) == 0
    row2 = json.loads(js2.read_text())["rows"]["capitals"]
    for cond, c in row["conditions"].items():
        assert row2["conditions"][cond]["scores"] == c["scores"], cond
    text = out.read_text()
    for needle in ("## Scores", "Text-to-LoRA", "multi-task LoRA", "oracle per-task LoRA",
                   "## Paired differences", "## What was and was not shown", "hyper_eval.py",
                   "(always the most common answer)"):
        assert needle in text


def test_paired_and_stratified_statistics():
    from hyper_eval_report import _verdict

    a = [[1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 1.0, 1.0, 1.0]]
    b = [[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0, 0.0, 1.0]]
    lo, hi = stats.stratified_ci(a)
    mean_a = (3 / 4 + 5 / 6) / 2                 # mean of task means, not of pooled examples
    assert lo <= mean_a <= hi and 0 <= lo and hi <= 1
    mean, dlo, dhi = stats.paired(a, b)
    assert mean == pytest.approx(mean_a - (1 / 4 + 2 / 6) / 2)
    assert dlo <= mean <= dhi
    assert stats.paired(a, a) == (0.0, 0.0, 0.0)
    assert _verdict(0.1, 0.02, 0.2).startswith("better")
    assert _verdict(-0.1, -0.2, -0.01).startswith("worse")
    assert _verdict(0.05, -0.02, 0.1).startswith("no difference")


def test_parallel_split_balances_and_merge_keeps_library_order():
    import hyper_eval

    groups = hyper_eval.split_tasks({"a": 10.0, "b": 6.0, "c": 5.0, "d": 1.0}, 2)
    assert sorted(sum(groups, [])) == ["a", "b", "c", "d"]
    assert sorted(groups) == [["a", "d"], ["b", "c"]]        # loads 11 and 11
    assert hyper_eval.split_tasks({"a": 1.0}, 4) == [["a"]]   # no empty processes

    def part(names, mt):
        return {"rows": {n: {"task": n, "conditions": {}} for n in names},
                "gen": {"t2l": [{"seconds": len(names)}], "dnd": []},
                "mt_steps": 8 if mt else None, "mt_info": {"steps": 8} if mt else None}

    merged = hyper_eval.merge_results([part(["c", "a"], False), part(["b"], True)],
                                      order=["a", "b", "c"])
    assert list(merged["rows"]) == ["a", "b", "c"]
    assert [g["seconds"] for g in merged["gen"]["t2l"]] == [2, 1]
    assert merged["mt_steps"] == 8 and merged["mt_info"] == {"steps": 8}


def test_input_sensitivity_tells_one_lora_for_all_from_distinct_ones(tmp_path):
    """Cosine ~1 when a generator emits the same update for every task; lower for distinct ones."""
    import torch
    from safetensors.torch import save_file

    import hyper_eval
    from studio.hyper.targets import LoraSpec

    spec = LoraSpec(modules=["q_proj"], num_layers=2,
                    path_templates={"q_proj": "model.layers.{layer}.self_attn.q_proj"},
                    in_features={"q_proj": 8}, out_features={"q_proj": 6}, r=2)
    gen = torch.Generator().manual_seed(0)

    def write(name, scale_noise):
        shared = torch.ones(6, 2)
        tensors = {}
        for layer, m in spec.keys:
            tensors[spec.saved_key(layer, m, "A")] = torch.ones(2, 8)
            tensors[spec.saved_key(layer, m, "B")] = shared + scale_noise * torch.randn(6, 2, generator=gen)
        (tmp_path / name).mkdir()
        save_file(tensors, str(tmp_path / name / "adapter_model.safetensors"))
        return tmp_path / name

    same = hyper_eval.input_sensitivity([write(f"s{i}", 0.0) for i in range(3)], spec)
    distinct = hyper_eval.input_sensitivity([write(f"d{i}", 3.0) for i in range(3)], spec)
    assert same["mean_cos"] == pytest.approx(1.0) and same["spread"] == pytest.approx(0.0, abs=1e-6)
    assert distinct["mean_cos"] < 0.9 and distinct["spread"] > 0.2 and distinct["n"] == 3
    assert hyper_eval.input_sensitivity([tmp_path / "s0"], spec) is None


def test_balanced_accuracy_gives_nothing_for_leaning_to_the_common_label():
    """A model that answers 'true' everywhere scores 0.69 accuracy on a 69%-true task but 0.5
    balanced; the label-adjusted comparison then shows no gain over one answering 'false'."""
    labels = ["true"] * 69 + ["false"] * 31
    always_true = [1.0] * 69 + [0.0] * 31
    always_false = [0.0] * 69 + [1.0] * 31
    assert stats.balanced_accuracy(always_true, labels) == 0.5
    assert stats.balanced_accuracy(always_false, labels) == 0.5
    reads = [1.0] * 60 + [0.0] * 9 + [1.0] * 25 + [0.0] * 6   # right on most of both classes
    assert stats.balanced_accuracy(reads, labels) == pytest.approx((60 / 69 + 25 / 31) / 2)
    assert stats.is_classification(labels)
    assert not stats.is_classification([str(i) for i in range(100)])   # arithmetic answers

    def row(a, b, answers):
        return {"answers": answers, "conditions": {"a": {"scores": a}, "b": {"scores": b}}}

    rows = [row(always_true, always_false, labels)]
    mean, lo, hi = stats.adjusted_paired(rows, "a", "b")
    assert mean == 0.0 and lo <= 0.0 <= hi                   # plain accuracy would say +0.38
    mean, lo, hi = stats.adjusted_paired(rows + [row(reads, always_false, labels)], "a", "b")
    assert mean == pytest.approx((0.5 - 0.5 + stats.balanced_accuracy(reads, labels) - 0.5) / 2)
    assert lo > 0                                           # reading the claims does show
    # tasks without a fixed label set keep plain accuracy
    nums = [str(i) for i in range(40)]
    mean, _, _ = stats.adjusted_paired([row([1.0] * 40, [0.0] * 40, nums)], "a", "b")
    assert mean == 1.0


def test_report_without_the_base_condition(tmp_path):
    """--conditions t2l,t2l_shuffled (no base): the report still renders, the '− base' cells say —."""
    from hyper_eval_report import write_report

    labels = ["yes"] * 6 + ["no"] * 4
    row = {"task": "yn", "n": 10, "majority": 0.6, "answers": labels, "description": "d",
           "description_kind": "held-out paraphrase", "nearest": "x", "nearest_similarity": 0.5,
           "shuffled_description": "s", "metric": "multiple_choice_grade",
           "conditions": {c: {"score": 0.5, "ci95": [0.2, 0.8], "scores": [1.0, 0.0] * 5,
                              "adapter": None, "adapter_mb": 0.0, "chance": 0.5}
                          for c in ("t2l", "t2l_shuffled")}}
    gen = dict(row, task="gen", answers=[str(i) for i in range(10)], metric="exact_match")
    gen["conditions"] = {c: dict(v, rouge_scores=[0.5] * 10) for c, v in row["conditions"].items()}
    result = {"rows": {"yn": row, "gen": gen}, "gen": {}, "command": "python benchmarks/hyper_eval.py",
              "model": "m", "library": "lib", "train_tasks": ["x"], "limit": 10, "mt_steps": None}
    out = tmp_path / "r.md"
    write_report(result, out)
    text = out.read_text()
    assert "balanced accuracy" in text and "ROUGE-L" in text and "| — |" in text
