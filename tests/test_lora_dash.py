"""LoRA-Dash on the real SmolLM2-135M: the switch at step t, the chosen directions, training, save/load, merge.

One short run (t=3, s=4, q_proj+v_proj, 8 steps on a fixed batch) is shared by the tests; what they
check is recomputed here independently from the frozen weights and the LoRA matrices.
"""

from __future__ import annotations

import json

import pytest
import torch

from studio import paths
from studio.errors import UserError

T, S, STEPS = 3, 4, 8
PARAMS = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": "q_proj,v_proj",
          "pre_launch_steps": T, "num_directions": S}
TEXTS = ["The date today is March 3, 2024. In ISO format that is 2024-03-03.",
         "Tomorrow is July 14, 1999, which is written 1999-07-14 in ISO format."]


@pytest.fixture(scope="module")
def plugin():
    from studio.plugins import load_plugin_folder
    return load_plugin_folder(paths.builtin_plugins_dir() / "lora_dash", kind="builtin")


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from studio.core.models import load_tokenizer
    return load_tokenizer(model_dir)


@pytest.fixture(scope="module")
def batch(tokenizer):
    enc = tokenizer(TEXTS, return_tensors="pt", padding=True)
    labels = enc["input_ids"].clone()
    labels[enc["attention_mask"] == 0] = -100
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}


def fresh_base(model_dir):
    from studio.core.models import load_model
    model, _tok = load_model(model_dir, dtype="float32", device="cpu")
    return model


def logits_of(model, batch):
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    model.train(was_training)
    return out


def independent_top(layer):
    """Top-S directions from W and dW = scale * B A, computed without studio.plugins.lora_dash."""
    W = layer.base_layer.weight.detach().float()
    dW = (layer.lora_B["default"].weight @ layer.lora_A["default"].weight).detach().float()
    dW = dW * layer.scaling["default"]
    U, sigma, Vh = torch.linalg.svd(W, full_matrices=False)
    rates = torch.diagonal(U.T @ dW @ Vh.T).abs() / sigma
    return rates, U, Vh.T


@pytest.fixture(scope="module")
def run(model_dir, plugin, batch):
    """Train 8 steps; record what happens around the switch."""
    from studio.plugins import lora_dash

    torch.manual_seed(0)
    model = plugin.apply(fresh_base(model_dir), PARAMS, {"max_steps": STEPS})
    assert plugin.optimizer_param_groups(model, PARAMS, 2e-3) is None  # nothing special before the switch
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3,
                                  weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0 - i / (2 * STEPS))
    messages: list[str] = []
    callbacks = plugin.callbacks(model, PARAMS, {"log": messages.append})
    rec = {"losses": [], "has_dash": {}, "infos": {}, "delta_grads": {}, "groups": {}}
    model.train()
    for step in range(1, STEPS + 1):
        loss = model(**batch).loss
        loss.backward()
        rec["delta_grads"][step] = [None if p.grad is None else p.grad.detach().clone()
                                    for p in lora_dash.dash_parameters(model)]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        rec["losses"].append(loss.item())
        if step == T:
            rec["logits_before_switch"] = logits_of(model, batch)
            rec["trainable_before"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        for cb in callbacks:
            info = cb.on_step_end(step, model, optimizer)
            if info is not None:
                rec["infos"][step] = info
        rec["has_dash"][step] = lora_dash.has_dash(model)
        rec["groups"][step] = [(g["lr"], g["weight_decay"], len(g["params"])) for g in optimizer.param_groups]
        if step == T:
            rec["logits_after_switch"] = logits_of(model, batch)
            rec["independent"] = {name: independent_top(layer) for name, layer in lora_dash.lora_layers(model)}
            rec["deltas_at_switch"] = {n: d.delta.detach().clone() for n, d in lora_dash.dash_terms(model).items()}
    rec.update(model=model, optimizer=optimizer, messages=messages)
    return rec


def test_switch_happens_exactly_at_step_t(run):
    assert [run["has_dash"][s] for s in range(1, STEPS + 1)] == [s >= T for s in range(1, STEPS + 1)]
    assert list(run["infos"]) == [T]
    info = run["infos"][T]
    assert info["layers"] == 60 and info["directions_per_layer"] == S and info["new_parameters"] == 60 * S
    assert len(run["messages"]) == 1 and f"step {T}" in run["messages"][0]
    for step in range(1, T + 1):  # no dash coefficients existed, so none got a gradient
        assert run["delta_grads"][step] == []


def test_optimizer_trains_the_coefficients_in_the_first_group(run):
    """They join the LoRA group (same lr/weight decay, and a scheduler made before keeps working)."""
    assert all(len(run["groups"][step]) == 1 for step in run["groups"])
    for step in range(1, T):
        assert run["groups"][step][0][2] == 120  # lora_A + lora_B of 60 layers
    for step in range(T, STEPS + 1):
        assert run["groups"][step][0][2] == 120 + 60
    held = {id(p) for p in run["optimizer"].param_groups[0]["params"]}
    from studio.plugins import lora_dash
    assert all(id(p) in held for p in lora_dash.dash_parameters(run["model"]))
    assert run["groups"][STEPS][0][0] < run["groups"][T][0][0]  # the schedule went on after the switch


def test_exactly_s_directions_and_they_are_the_top_by_change_rate(run):
    from studio.plugins import lora_dash
    terms = lora_dash.dash_terms(run["model"])
    assert len(terms) == 60 and set(terms) == set(run["independent"])
    for name, dash in terms.items():
        rates, U, V = run["independent"][name]
        assert dash.U.shape == (U.shape[0], S) and dash.V.shape == (V.shape[0], S)
        assert dash.delta.shape == (S,) and len(set(dash.indices)) == S
        chosen = torch.tensor(dash.indices)
        others = torch.ones_like(rates, dtype=torch.bool)
        others[chosen] = False
        assert rates[chosen].min() >= rates[others].max() * (1 - 1e-4), name
        assert rates[chosen].min() > 0
        # the stored vectors are those singular directions (up to sign)
        assert torch.allclose((U[:, chosen] * dash.U).sum(0).abs(), torch.ones(S), atol=1e-4)
        assert torch.allclose((V[:, chosen] * dash.V).sum(0).abs(), torch.ones(S), atol=1e-4)
    # the picks differ between layers: it is the data that decides, not a fixed index
    assert len({tuple(sorted(d.indices)) for d in terms.values()}) > 1


def test_delta_starts_at_zero_so_logits_do_not_jump(run):
    assert all(torch.count_nonzero(d) == 0 for d in run["deltas_at_switch"].values())
    diff = (run["logits_after_switch"] - run["logits_before_switch"]).abs().max().item()
    assert diff == 0.0


def test_delta_gets_gradients_and_moves(run):
    from studio.plugins import lora_dash
    grads = run["delta_grads"][T + 1]
    assert len(grads) == 60 and all(g is not None for g in grads)
    assert sum(int(g.abs().sum() > 0) for g in grads) == 60
    deltas = [p.detach() for p in lora_dash.dash_parameters(run["model"])]
    assert all(d.abs().max() > 0 for d in deltas)


def test_loss_goes_down(run):
    losses = run["losses"]
    assert losses[-1] < 0.8 * losses[0], losses
    assert losses[-1] < losses[T], losses  # still going down in the dash phase


def test_save_load_reproduces_logits_and_merge_matches(run, plugin, model_dir, batch, tmp_path_factory):
    from safetensors import safe_open

    model = run["model"]
    out = tmp_path_factory.mktemp("dash-adapter")
    plugin.save(model, out)
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all("lora_A" in k or "lora_B" in k for k in keys)  # standard peft adapter, no dash
    meta = json.loads((out / "lora_dash.json").read_text())
    assert meta["pre_launch_steps"] == T and meta["num_directions"] == S and len(meta["layers"]) == 60
    with safe_open(str(out / "lora_dash.safetensors"), "pt") as f:
        assert len(list(f.keys())) == 3 * 60

    expected = logits_of(model, batch)
    loaded = plugin.load(fresh_base(model_dir), out)
    got = logits_of(loaded, batch)
    assert (got - expected).abs().max().item() <= 1e-6

    # the dash terms matter: without them the logits are measurably different
    from studio.plugins import lora_dash
    for dash in lora_dash.dash_terms(loaded).values():
        dash.merged = True
    without = logits_of(loaded, batch)
    for dash in lora_dash.dash_terms(loaded).values():
        dash.merged = False
    dash_effect = (without - expected).abs().max().item()
    assert dash_effect > 1e-3

    merged = plugin.merge(loaded)
    assert not lora_dash.has_dash(merged) and not hasattr(merged, "peft_config")
    merged_diff = (logits_of(merged, batch) - expected).abs().max().item()
    print(f"merge max |logit diff| = {merged_diff:.3g} (dash terms alone move logits by {dash_effect:.3g})")
    assert merged_diff < 1e-3 < dash_effect


def test_resumed_model_gets_matching_optimizer_groups(run, plugin, model_dir, tmp_path_factory):
    """A checkpoint saved in the dash phase reloads trainable, and its optimizer state fits it."""
    from studio.plugins import lora_dash
    out = tmp_path_factory.mktemp("dash-ckpt")
    plugin.save(run["model"], out)
    resumed = plugin.load(fresh_base(model_dir), out, is_trainable=True)
    groups = plugin.optimizer_param_groups(resumed, PARAMS, 2e-3)
    assert len(groups) == 1 and len(groups[0]["params"]) == 120 + 60
    assert all(p.requires_grad for p in groups[0]["params"])
    optimizer = torch.optim.AdamW(groups, lr=2e-3, weight_decay=0.01)
    optimizer.load_state_dict(run["optimizer"].state_dict())
    # each coefficient got its own saved Adam state back (the layouts line up)
    old = run["optimizer"].state
    for p_old, p_new in zip(lora_dash.dash_parameters(run["model"]), lora_dash.dash_parameters(resumed)):
        assert torch.equal(p_old.detach(), p_new.detach())
        assert torch.equal(old[p_old]["exp_avg"], optimizer.state[p_new]["exp_avg"])


def test_save_before_switch_is_plain_lora(model_dir, plugin, batch, tmp_path):
    model = plugin.apply(fresh_base(model_dir), PARAMS, {})
    plugin.save(model, tmp_path)
    meta = json.loads((tmp_path / "lora_dash.json").read_text())
    assert meta["installed"] is False and not (tmp_path / "lora_dash.safetensors").exists()
    loaded = plugin.load(fresh_base(model_dir), tmp_path)
    from studio.plugins import lora_dash
    assert not lora_dash.has_dash(loaded)
    assert torch.equal(logits_of(loaded, batch), logits_of(model, batch))


def test_manifest_and_bad_input(plugin, tmp_path):
    assert plugin.capabilities["mergeable"] and plugin.capabilities["callbacks"]
    defaults = plugin.defaults()
    assert defaults["pre_launch_steps"] == 100 and defaults["num_directions"] == 8
    with pytest.raises(UserError) as err:
        plugin.validate({"pre_launch_steps": 0})
    assert err.value.field == "pre_launch_steps"
    with pytest.raises(UserError) as err:
        plugin.validate({"num_directions": 0})
    assert err.value.field == "num_directions"
    with pytest.raises(UserError) as err:
        plugin.load(None, tmp_path)
    assert "lora_dash.json" in str(err.value)
    (tmp_path / "lora_dash.json").write_text("{not json")
    with pytest.raises(UserError):
        plugin.load(None, tmp_path)


def test_too_many_directions_is_a_user_error():
    from peft import LoraConfig, get_peft_model
    from studio.plugins import lora_dash
    net = torch.nn.Sequential(torch.nn.Linear(6, 4))
    model = get_peft_model(net, LoraConfig(r=2, target_modules=["0"]))
    with pytest.raises(UserError) as err:
        lora_dash.install_dash(model, 5)
    assert err.value.field == "num_directions"
