"""Packed (padding-free) batches give the padded batch's loss and gradients on the real model."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def lora_model(model_dir):
    import torch
    from peft import LoraConfig, get_peft_model

    from studio.core.models import load_model

    model, tokenizer = load_model(model_dir)
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                        init_lora_weights=False)        # non-zero B: the adapter matters
    return get_peft_model(model, config), tokenizer


def _items(tokenizer):
    from studio.core.data import Example, tokenize_example

    convs = [("What is 2+2?", "4"), ("Name a colour of the sky on a clear day, please.", "Blue."),
             ("Translate 'chat' from French.", "cat"), ("Say hi", "Hello! How can I help you today?")]
    return [tokenize_example(Example(messages=[{"role": "user", "content": q},
                                               {"role": "assistant", "content": a}]), tokenizer, 128)
            for q, a in convs]


def test_packed_loss_and_gradients_equal_the_padded_batch(lora_model):
    import torch

    from studio.core.data import collate
    from studio.core.packing import can_pack, pack, packed_loss

    model, tokenizer = lora_model
    items = _items(tokenizer)
    assert len({len(i["input_ids"]) for i in items}) > 1            # really ragged
    packed = pack(items)
    n_trained = sum(sum(1 for y in i["labels"][1:] if y != -100) for i in items)
    assert packed["keep"].numel() == packed["targets"].numel() == n_trained
    assert packed["input_ids"].shape[1] == sum(len(i["input_ids"]) for i in items)

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.requires_grad]

    padded = model(**collate(items, tokenizer.pad_token_id)).loss
    g_padded = grads(padded)
    ours = packed_loss(model, packed)
    g_ours = grads(ours)
    assert abs(float(padded) - float(ours)) < 1e-4
    assert max(float((a - b).abs().max()) for a, b in zip(g_padded, g_ours)) < 1e-4
    assert can_pack(model)
    # a row with nothing trained gives a zero that backward() accepts
    empty = pack([{"input_ids": items[0]["input_ids"], "labels": [-100] * len(items[0]["input_ids"])}])
    loss = packed_loss(model, empty)
    assert float(loss) == 0.0
    loss.backward()
    model.zero_grad()


def test_prompt_learning_models_are_not_packed(model_dir):
    from peft import PromptTuningConfig, get_peft_model

    from studio.core.models import load_model
    from studio.core.packing import can_pack

    model, _ = load_model(model_dir)
    pt = get_peft_model(model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    assert not can_pack(pt)


def _train(model_dir, tmp_path, demo_train_path, demo_eval_path, **training):
    from conftest import small_recipe
    from studio.core import runs
    from studio.core.training import run_training

    tmp_path.mkdir(parents=True, exist_ok=True)
    recipe = small_recipe(model_dir, tmp_path, demo_train_path, demo_eval_path, n_train=16,
                          n_eval=4, steps=4, **training)
    recipe.data.max_length = 256           # the demo examples' own lengths (they vary)
    run_dir = runs.create_run(recipe, base=tmp_path / "runs")
    seen = []
    metrics = run_training(runs.load_recipe(run_dir), run_dir, seen.append)
    return seen, metrics


def test_a_padding_free_run_matches_a_padded_run(model_dir, tmp_path, demo_train_path,
                                                  demo_eval_path):
    """Same data, same seed: the packed run's losses follow the padded run's (step 1 identical
    up to float error; the rest within noise), and it reports trained tokens/s and no padding."""
    # fp32: this compares the batching, not bf16 rounding (which follows the batch's layout)
    packed, m_packed = _train(model_dir, tmp_path / "a", demo_train_path, demo_eval_path,
                              packing=True, precision="fp32")
    padded, m_padded = _train(model_dir, tmp_path / "b", demo_train_path, demo_eval_path,
                              packing=False, precision="fp32", group_by_length=False)
    assert next(e for e in packed if e["event"] == "started")["packing"] is True
    assert next(e for e in padded if e["event"] == "started")["packing"] is False
    la = [e["loss"] for e in packed if e["event"] == "log"]
    lb = [e["loss"] for e in padded if e["event"] == "log"]
    assert len(la) == len(lb) == 4
    assert abs(la[0] - lb[0]) < 1e-4
    assert max(abs(a - b) for a, b in zip(la, lb)) < 0.02 * max(lb)
    assert abs(m_packed["eval_loss"] - m_padded["eval_loss"]) < 0.01 * m_padded["eval_loss"]
    logs_a = [e for e in packed if e["event"] == "log"]
    logs_b = [e for e in padded if e["event"] == "log"]
    assert all(e["padding"] == 0.0 and e["trained_tokens_per_s"] > 0 for e in logs_a)
    assert any(e["padding"] > 0.0 for e in logs_b)            # the demo data's lengths vary


def test_chunked_loss_equals_the_plain_loss_and_gradient(lora_model):
    """Many trained positions (every token of every example): the output layer and the loss in
    chunks of 7 positions give the plain packed loss and its gradients."""
    from studio.core.packing import _plain_head, pack, packed_loss

    model, tokenizer = lora_model
    items = [{"input_ids": i["input_ids"], "labels": i["input_ids"]} for i in _items(tokenizer)]
    packed = pack(items)
    assert packed["keep"].numel() > 7 * 5
    assert _plain_head(model)[0] is not None            # SmolLM2: a plain (tied) output layer

    def run(**kw):
        model.zero_grad()
        loss = packed_loss(model, packed, **kw)
        loss.backward()
        return float(loss), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    plain, g_plain = run(chunk=10**9)
    chunked, g_chunked = run(chunk=7)
    assert abs(plain - chunked) < 1e-5 * max(1.0, abs(plain))
    scale = max(float(g.abs().max()) for g in g_plain)
    assert max(float((a - b).abs().max()) for a, b in zip(g_plain, g_chunked)) < 1e-4 * max(1.0, scale)
    assert model.get_base_model().get_output_embeddings() is _plain_head(model)[0]   # restored
    model.zero_grad()


def test_length_grouped_batches_cut_padding_and_keep_every_example():
    """training.group_by_length (padded batches): each example once per epoch, full batches but
    the last, the longest batch first, the same order again for the same seed and epoch (resume
    from a batch index), and far less padding than the plain shuffle."""
    import random

    from studio.core.data import iter_batches
    from studio.core.packing import padding_waste

    rng = random.Random(3)
    items = [{"input_ids": list(range(rng.choice([8, 20, 60, 200]) + rng.randrange(8))), "n": n}
             for n in range(403)]
    grouped = list(iter_batches(items, 4, 7, 2, group_by_length=True))
    plain = list(iter_batches(items, 4, 7, 2))
    assert sorted(x["n"] for b in grouped for x in b) == list(range(403))
    assert [len(b) for b in grouped] == [4] * 100 + [3]
    longest = max(len(x["input_ids"]) for x in items)
    assert max(len(x["input_ids"]) for x in grouped[0]) == longest
    again = list(iter_batches(items, 4, 7, 2, start=37, group_by_length=True))
    assert [[x["n"] for x in b] for b in again] == [[x["n"] for x in b] for b in grouped[37:]]
    assert [[x["n"] for x in b] for b in grouped] != [[x["n"] for x in b] for b in
                                                       iter_batches(items, 4, 7, 3, group_by_length=True)]
    waste = lambda batches: sum(padding_waste(b) for b in batches) / len(batches)  # noqa: E731
    assert waste(grouped) < 0.25 * waste(plain), (waste(grouped), waste(plain))
