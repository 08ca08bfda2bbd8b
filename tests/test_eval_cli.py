"""`peft-studio eval`: any BIG-bench task.json, on the real shipped model, with and without an adapter."""

from __future__ import annotations

import json

import pytest

from conftest import MC_TASK, write_task
from studio import cli

GEN_TASK = {
    "name": "capitals",
    "description": "Name the capital city of a country",
    "examples": [
        {"input": "What is the capital of France?", "target": "Paris"},
        {"input": "What is the capital of Italy?", "target": ["Rome", "Roma"]},
    ],
}


def test_multiple_choice_with_ci_and_json(model_dir, tmp_path, capsys):
    task = write_task(tmp_path, MC_TASK, "opposites")
    out = tmp_path / "res.json"
    assert cli.main(["eval", str(task), "--model", str(model_dir), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "accuracy:" in text and "95% CI" in text and "6 examples" in text
    res = json.loads(out.read_text())
    assert res["metric"] == "multiple_choice_grade" and res["n"] == 6
    lo, hi = res["ci95"]
    assert lo <= res["score"] <= hi
    # A real model finds these opposites far more likely than nonsense words.
    assert res["score"] >= 5 / 6, [r["prediction"] for r in res["results"]]
    assert all(len(r["logprobs"]) == 2 for r in res["results"])
    assert not any(MC_TASK["description"] in r["prompt"] for r in res["results"])


def test_description_in_prompt_and_limit(model_dir, tmp_path, capsys):
    task = write_task(tmp_path, MC_TASK, "opposites")
    out = tmp_path / "res.json"
    assert cli.main(["eval", str(task), "--model", str(model_dir), "--description-in-prompt",
                     "--limit", "3", "--json", str(out)]) == 0
    assert "description in prompt" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["n"] == 3
    assert all(r["prompt"].startswith(MC_TASK["description"]) for r in res["results"])


def test_generative_exact_match_and_rouge(model_dir, tmp_path, capsys):
    task = write_task(tmp_path, GEN_TASK, "capitals")
    out = tmp_path / "gen.json"
    assert cli.main(["eval", str(task), "--model", str(model_dir), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "exact match:" in text and "ROUGE-L:" in text
    res = json.loads(out.read_text())
    assert res["metric"] == "exact_match" and res["n"] == 2
    paris = res["results"][0]
    assert "Paris" in paris["prediction"]
    assert paris["rouge_l"] > 0
    assert paris["exact_match"] == float(paris["prediction"].strip() == "Paris")


def test_adapter_changes_the_scores(model_dir, tmp_path, random_adapter, capsys):
    task = write_task(tmp_path, MC_TASK, "opposites")
    base_out, lora_out = tmp_path / "base.json", tmp_path / "lora.json"
    assert cli.main(["eval", str(task), "--model", str(model_dir), "--json", str(base_out)]) == 0
    assert cli.main(["eval", str(task), "--model", str(model_dir), "--adapter", str(random_adapter),
                     "--json", str(lora_out)]) == 0
    capsys.readouterr()
    base = json.loads(base_out.read_text())["results"]
    lora = json.loads(lora_out.read_text())
    assert lora["adapter"] == str(random_adapter)
    diffs = [abs(a - b) for rb, rl in zip(base, lora["results"])
             for a, b in zip(rb["logprobs"], rl["logprobs"])]
    assert max(diffs) > 0.1


@pytest.mark.parametrize("args, needle", [
    (["eval", "MISSING/task.json"], "task file not found"),
    (["eval", "NODESC", "--description-in-prompt"], "no description"),
    (["eval", "BADJSON"], "not valid JSON"),
])
def test_user_errors_exit_2(tmp_path, capsys, args, needle):
    nodesc = write_task(tmp_path, {**GEN_TASK, "description": ""}, "nodesc")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    subst = {"MISSING/task.json": str(tmp_path / "missing" / "task.json"),
             "NODESC": str(nodesc), "BADJSON": str(bad)}
    assert cli.main([subst.get(a, a) for a in args]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_against_base_pairs_the_same_examples(model_dir, tmp_path, random_adapter, capsys):
    """--against-base: base and adapter on the same examples; the difference and its CI come from
    the per-example pairs, and the base half equals a plain run without the adapter."""
    task = write_task(tmp_path, MC_TASK, "opposites")
    both, alone = tmp_path / "both.json", tmp_path / "alone.json"
    assert cli.main(["eval", str(task), "--model", str(model_dir), "--adapter", str(random_adapter),
                     "--against-base", "--progress-json", "--json", str(both)]) == 0
    text = capsys.readouterr().out
    assert "base model:" in text and "with the adapter:" in text and "adapter - base" in text
    progress = [json.loads(line[len("@progress "):]) for line in text.splitlines()
                if line.startswith("@progress ")]
    assert progress and progress[-1]["done"] == progress[-1]["total"]
    assert cli.main(["eval", str(task), "--model", str(model_dir), "--json", str(alone)]) == 0
    capsys.readouterr()
    res, plain = json.loads(both.read_text()), json.loads(alone.read_text())
    assert [x for r in res["base"]["results"] for x in r["logprobs"]] == pytest.approx(
        [x for r in plain["results"] for x in r["logprobs"]], abs=1e-4)
    diffs = [a["score"] - b["score"] for a, b in zip(res["with_adapter"]["results"],
                                                     res["base"]["results"])]
    d = res["difference"]
    assert d["n"] == 6 and d["mean"] == pytest.approx(sum(diffs) / 6)
    assert d["ci95"][0] <= d["mean"] <= d["ci95"][1]
    changed = [abs(a - b) for ra, rb in zip(res["with_adapter"]["results"], res["base"]["results"])
               for a, b in zip(ra["logprobs"], rb["logprobs"])]
    assert max(changed) > 0.1                       # the adapter really was on for the second half


def test_against_base_needs_an_adapter(tmp_path, capsys):
    task = write_task(tmp_path, MC_TASK, "opposites")
    assert cli.main(["eval", str(task), "--against-base"]) == 2
    assert "--adapter" in capsys.readouterr().err


def test_eval_on_a_data_file_and_the_shipped_samples(model_dir, demo_eval_path, capsys):
    """A run's eval data (chat .jsonl) is scored like a generative task; the shipped sample tasks
    load and cover both kinds."""
    from studio import paths
    from studio.core.bigbench import load_task

    task = load_task(demo_eval_path)
    assert not task.is_multiple_choice and len(task.examples) > 10
    assert task.examples[0].targets[0] and task.examples[0].input
    assert cli.main(["eval", str(demo_eval_path), "--model", str(model_dir), "--limit", "3"]) == 0
    assert "exact match" in capsys.readouterr().out
    kinds = {load_task(p).is_multiple_choice for p in paths.sample_tasks_dir().glob("*/task.json")}
    assert kinds == {True, False}
