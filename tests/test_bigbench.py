"""BIG-bench task files: loading, prompt conventions, metrics, and evaluation on the real model."""

from __future__ import annotations

import json
import math

import pytest

from studio.core import bigbench as bb
from studio.errors import UserError

MC_TASK = {
    "name": "colour_of_things",
    "description": "Say what colour a common thing is",
    "task_prefix": "Answer with a colour.",
    "example_input_prefix": "\nThing: ",
    "example_output_prefix": "\nColour: ",
    "append_choices_to_input": "false",
    "examples": [
        {"input": "the sky on a clear day", "target_scores": {"blue": 1, "green": 0, "red": 0}},
        {"input": "fresh grass", "target_scores": {"blue": 0, "green": 1, "red": 0}},
        {"input": "a ripe tomato", "target_scores": {"blue": 0, "green": 0, "red": 1}},
        {"input": "snow", "target_scores": {"white": 1, "black": 0}},
    ],
}
GEN_TASK = {
    "name": "capitals",
    "description": "Name the capital city of a country",
    "examples": [
        {"input": "What is the capital of France?", "target": ["Paris", "Paris."]},
        {"input": "What is the capital of Italy?", "target": "Rome"},
    ],
}


def write(tmp_path, data, name="task.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


# ------------------------------------------------------------------ loading
def test_load_task_reads_conventions(tmp_path):
    task = bb.load_task(write(tmp_path, MC_TASK))
    assert task.name == "colour_of_things" and task.is_multiple_choice
    assert task.append_choices is False              # the string "false" counts as false
    assert task.input_prefix == "\nThing: " and task.output_prefix == "\nColour: "
    gen = bb.load_task(write(tmp_path, GEN_TASK, "gen.json"))
    assert not gen.is_multiple_choice
    assert gen.examples[0].targets == ["Paris", "Paris."]
    assert gen.input_prefix == bb.DEFAULT_INPUT_PREFIX      # BIG-bench defaults when absent
    assert bb.load_task(tmp_path / "task.json").path.name == "task.json"
    assert bb.load_task(tmp_path).name == "colour_of_things"   # a folder holding task.json


@pytest.mark.parametrize("data, field", [
    ({"description": "x"}, "examples"),
    ({"examples": [{"target": "a"}]}, "examples[0]"),
    ({"examples": [{"input": "q"}]}, "examples[0]"),
    ({"examples": [{"input": "q", "target_scores": {"a": 1}}]}, "examples[0].target_scores"),
    ({"examples": [{"input": "q", "target": 3}]}, "examples[0].target"),
    ({"examples": [{"input": "q", "target": "a"},
                   {"input": "r", "target_scores": {"a": 1, "b": 0}}]}, "examples"),
])
def test_malformed_task_names_file_and_field(tmp_path, data, field):
    path = write(tmp_path, data)
    with pytest.raises(UserError) as err:
        bb.load_task(path)
    assert err.value.field == field
    assert str(path) in str(err.value) and "Fix:" in str(err.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        bb.load_task(tmp_path / "nope.json")
    with pytest.raises(UserError, match="not valid JSON"):
        bb.load_task(write(tmp_path, "{broken"))


def test_prompt_formatting():
    task = bb.parse_task(MC_TASK)
    ex = task.examples[0]
    assert bb.format_input(task, ex) == "Answer with a colour.\nThing: the sky on a clear day\nColour: "
    task.append_choices = True
    text = bb.format_input(task, ex)
    assert text.count(task.choice_prefix) == 3 and all(c in text for c in ("blue", "green", "red"))
    plain = bb.format_input(task, ex, with_prefixes=False)
    assert plain.startswith("Answer with a colour.\nthe sky") and "Colour:" not in plain
    gen = bb.parse_task(GEN_TASK)
    assert bb.format_input(gen, gen.examples[1]) == "\nQ: What is the capital of Italy?\nA: "


def test_task_to_examples_chat_format():
    from studio.core.data import Example

    exs = bb.task_to_examples(bb.parse_task(MC_TASK), n=2, offset=1)
    assert len(exs) == 2 and all(isinstance(e, Example) for e in exs)
    assert [m["role"] for m in exs[0].messages] == ["user", "assistant"]
    assert exs[0].messages[1]["content"] == "green" and "fresh grass" in exs[0].messages[0]["content"]
    assert bb.task_to_examples(bb.parse_task(GEN_TASK))[0].messages[1]["content"] == "Paris"


# ------------------------------------------------------------------ metrics
def test_rouge_l():
    assert bb.rouge_l("the cat sat", "the cat sat") == 1.0
    assert bb.rouge_l("dog", "the cat sat") == 0.0
    assert bb.rouge_l("a b c d", "a c d e") == pytest.approx(0.75)       # LCS a c d
    assert bb.rouge_l("a b", "a b c d") == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert bb.rouge_l("", "") == 1.0 and bb.rouge_l("", "x") == 0.0


def test_bootstrap_ci():
    assert bb.bootstrap_ci([1.0] * 20) == (1.0, 1.0)
    values = [1, 0] * 30
    lo, hi = bb.bootstrap_ci(values, n=1000, seed=3)
    assert lo < 0.5 < hi and (lo, hi) == bb.bootstrap_ci(values, n=1000, seed=3)
    assert 0.2 < hi - lo < 0.35                    # ~ 2 * 1.96 * sqrt(.25 / 60) = 0.25
    lo2, hi2 = bb.bootstrap_ci([1, 0] * 300, n=1000, seed=3)
    assert hi2 - lo2 < (hi - lo) / 2
    assert all(math.isnan(v) for v in bb.bootstrap_ci([]))


def test_postprocess_stop_string_and_regex():
    task = bb.parse_task(GEN_TASK)
    task.stop_string = "\n"
    assert bb.postprocess(task, " Paris\nand more") == "Paris"
    task.output_regex = r"[-+]?\d+"
    assert bb.postprocess(task, "the answer is 42.") == "42"


# ------------------------------------------------------------------ real model
@pytest.fixture(scope="module")
def model_and_tokenizer(model_dir):
    import torch

    from studio.core.models import load_model

    torch.manual_seed(0)
    return load_model(model_dir)


def test_choice_logprobs_match_a_manual_forward(model_and_tokenizer):
    import torch

    model, tok = model_and_tokenizer
    ctx, cont = "The capital of France is", " Paris"
    (lp, n), (lp2, _) = bb.choice_logprobs(model, tok, [(ctx, cont), (ctx + " ", "Rome")],
                                           batch_size=2)
    ids_ctx = tok(ctx, add_special_tokens=False)["input_ids"]
    ids = ids_ctx + tok(cont, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
    manual = sum(float(logp[i - 1, ids[i]]) for i in range(len(ids_ctx), len(ids)))
    assert n == len(ids) - len(ids_ctx)
    assert lp == pytest.approx(manual, abs=1e-3)   # batched + padded = unbatched
    assert lp > lp2                                 # " Paris" beats " Rome" (trailing space moved)


def test_shared_context_scoring_equals_one_row_per_pair(model_and_tokenizer):
    """The prompt-cache path (one context pass per example) gives the padded path's numbers:
    one- and multi-token choices, more choices than a batch, two examples, an empty context."""
    model, tok = model_and_tokenizer
    q1, q2 = "Question: what is 12 times 7?\nAnswer:", "The sky on a clear day is"
    choices = [" 84", " 74", " eighty-four", " 1 2 x 7", " 96", " none of these answers"]
    pairs = [(q1, c) for c in choices] + [(q2, " blue"), (q2, " green and yellow")] + [("", "Hi")]
    shared = bb.choice_logprobs(model, tok, pairs, batch_size=4, share_context=True)
    padded = bb.choice_logprobs(model, tok, pairs, batch_size=4, share_context=False)
    assert [n for _, n in shared] == [n for _, n in padded]
    assert max(n for _, n in shared) > 1
    for (a, _), (b, _) in zip(shared, padded):
        assert a == pytest.approx(b, abs=1e-3)
    assert len({round(a, 3) for a, _ in shared}) == len(shared)   # real, distinct scores


def test_prompt_learning_adapters_score_without_the_shared_cache(model_and_tokenizer):
    """Prefix tuning brings its own past_key_values: scoring must not mix in a prompt cache."""
    from peft import PrefixTuningConfig, get_peft_model

    model, tok = model_and_tokenizer
    assert not bb._is_prompt_learning(model)
    peft_model = get_peft_model(model, PrefixTuningConfig(task_type="CAUSAL_LM",
                                                          num_virtual_tokens=4))
    assert bb._is_prompt_learning(peft_model)       # (prefix tuning leaves `model` untouched)
    pairs = [("The capital of France is", " Paris"), ("The capital of France is", " Rome")]
    got = bb.choice_logprobs(peft_model, tok, pairs)
    want = bb.choice_logprobs(peft_model, tok, pairs, share_context=False)
    assert [a for a, _ in got] == pytest.approx([a for a, _ in want], abs=1e-4)


def test_evaluate_multiple_choice_on_real_model(tmp_path, model_and_tokenizer):
    model, tok = model_and_tokenizer
    path = write(tmp_path, MC_TASK)
    res = bb.evaluate_task_file(model, tok, path, max_examples=4, seed=0)
    assert res["n"] == 4 and res["metric"] == "multiple_choice_grade"
    assert res["chat_format"] is True                  # SmolLM2 has a chat template
    assert res["accuracy"] == pytest.approx(sum(r["score"] for r in res["results"]) / 4)
    for r in res["results"]:
        assert r["prediction"] == r["choices"][max(range(len(r["choices"])),
                                                   key=lambda j: r["logprobs"][j])]
    lo, hi = res["ci95"]
    assert 0 <= lo <= res["accuracy"] <= hi <= 1
    plain = bb.evaluate_task_file(model, tok, path, max_examples=4, chat=False)
    assert plain["chat_format"] is False and plain["results"][0]["prompt"].endswith("\nColour: ")
    print("colour task accuracy (chat, plain):", res["accuracy"], plain["accuracy"])


def test_evaluate_peft_model_with_zero_lora_equals_base(tmp_path, model_and_tokenizer):
    from peft import LoraConfig, get_peft_model

    model, tok = model_and_tokenizer
    path = write(tmp_path, MC_TASK)
    base = bb.evaluate_task_file(model, tok, path, max_examples=2)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    try:
        wrapped = bb.evaluate_task_file(peft_model, tok, path, max_examples=2)
    finally:
        peft_model.unload()
    for a, b in zip(base["results"], wrapped["results"]):
        assert a["logprobs"] == pytest.approx(b["logprobs"], abs=1e-4)


def test_evaluate_generative_on_real_model(tmp_path, model_and_tokenizer):
    model, tok = model_and_tokenizer
    res = bb.evaluate_task_file(model, tok, write(tmp_path, GEN_TASK), max_examples=2,
                                max_new_tokens=8)
    assert res["metric"] == "exact_match" and res["n"] == 2
    for r in res["results"]:
        assert 0.0 <= r["rouge_l"] <= 1.0 and r["exact_match"] in (0.0, 1.0)
        assert r["exact_match"] <= r["rouge_l"]
    print("capitals:", [r["prediction"] for r in res["results"]], res["exact_match"], res["rouge_l"])
