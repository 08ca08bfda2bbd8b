"""Hypernetwork building blocks on the real SmolLM2-135M: adapter files, init, scaling, gradients.

One model load per module (fixture); every check is against plain peft / plain torch maths.
"""

from __future__ import annotations

import json

import pytest
import torch

from studio.hyper.targets import (canonical_factors, check_base_model, read_adapter,
                                  spec_from_model, write_adapter)


@pytest.fixture(scope="module")
def base(model_dir):
    from studio.core.models import load_model

    model, tok = load_model(model_dir)
    return model, tok


@pytest.fixture(scope="module")
def spec(base, model_dir):
    return spec_from_model(base[0], modules=("q_proj", "v_proj"), r=4, alpha=8.0,
                           base_model=str(model_dir))


def _random_lora(spec, seed=0, scale=0.05):
    g = torch.Generator().manual_seed(seed)
    return {(layer, m): (torch.randn(spec.r, spec.in_features[m], generator=g) * scale,
                         torch.randn(spec.out_features[m], spec.r, generator=g) * scale)
            for layer, m in spec.keys}


def test_spec_reads_real_shapes(spec):
    assert spec.num_layers == 30 and spec.hidden_size == 576
    assert spec.in_features == {"q_proj": 576, "v_proj": 576}
    assert spec.out_features["q_proj"] == 576 and spec.out_features["v_proj"] == 192  # 3 KV heads


def test_write_adapter_loads_with_plain_peft_and_equals_factors(base, spec, model_dir, tmp_path):
    from peft import PeftModel

    model, tok = base
    lora = _random_lora(spec)
    out = write_adapter(spec, lora, tmp_path / "gen", base_model=str(model_dir))
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 8.0 and sorted(cfg["target_modules"]) == ["q_proj", "v_proj"]
    peft_model = PeftModel.from_pretrained(model, str(out))
    try:
        params = dict(peft_model.named_parameters())
        for layer, m in [(0, "q_proj"), (17, "v_proj"), (29, "q_proj")]:
            a, b = lora[(layer, m)]
            assert torch.equal(params[spec.live_key(layer, m, "A")].detach(), a)
            assert torch.equal(params[spec.live_key(layer, m, "B")].detach(), b)
        # the forward pass really uses it: logits differ from the base model's
        ids = tok("The capital of France is", return_tensors="pt").input_ids
        with torch.no_grad():
            with_adapter = peft_model(input_ids=ids).logits
            with peft_model.disable_adapter():
                plain = peft_model(input_ids=ids).logits
        assert (with_adapter - plain).abs().max() > 1e-3
        # and equals base weight + scaling * B A merged by hand on one layer
        lin = peft_model.base_model.model.model.layers[3].self_attn.q_proj
        x = torch.randn(2, 576)
        a, b = lora[(3, "q_proj")]
        expect = x @ (lin.base_layer.weight + spec.scaling * b @ a).T
        assert torch.allclose(lin(x), expect, atol=1e-4)
    finally:
        peft_model.unload()
    assert read_adapter(out, spec)[(5, "v_proj")][1].equal(lora[(5, "v_proj")][1])


def test_canonical_factors_reproduce_the_update():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(8, 64, generator=g), torch.randn(48, 8, generator=g)
    a4, b4 = canonical_factors(a, b, 8)
    assert torch.allclose(b4 @ a4, b @ a, atol=1e-4)
    # deterministic under the factor ambiguity B A = (B G)(G^-1 A)
    gmat = torch.randn(8, 8, generator=g) + 3 * torch.eye(8)
    a_g, b_g = canonical_factors(torch.linalg.solve(gmat, a), b @ gmat, 8)
    assert torch.allclose(a_g, a4, atol=1e-3) and torch.allclose(b_g, b4, atol=1e-3)
    # rank cut = best rank-2 approximation (Eckart-Young): error equals the dropped singular values
    a2, b2 = canonical_factors(a, b, 2)
    s = torch.linalg.svdvals(b @ a)
    assert torch.allclose(torch.linalg.norm(b @ a - b2 @ a2), s[2:].norm(), rtol=1e-3)
    # rank padding: a rank-2 update asked for rank 4 gets zero components
    a_pad, b_pad = canonical_factors(a[:2], b[:, :2], 4)
    assert a_pad.shape == (4, 64) and torch.all(b_pad[:, 2:] == 0)


@pytest.mark.parametrize("head", ["L", "M", "S"])
def test_t2l_step0_emits_standard_lora_init(spec, head):
    from studio.hyper.text_to_lora import T2LConfig, TextToLoRA

    torch.manual_seed(0)
    net = TextToLoRA(T2LConfig(spec=spec.to_dict(), head=head, hidden=64)).eval()
    lora = net.emit(torch.nn.functional.normalize(torch.randn(2, 384), dim=-1))[0]
    bound = 1 / 576 ** 0.5
    for key in [(0, "q_proj"), (29, "v_proj")]:
        a, b = lora[key]
        assert a.shape == (4, 576) and b.shape == (spec.out_features[key[1]], 4)
        assert torch.count_nonzero(b) == 0                  # B = 0: the adapter starts as a no-op
        assert a.abs().max() <= bound * 1.5                 # kaiming-uniform range of peft's A
        assert a.std() > bound * 0.3                        # ... and not collapsed
    a0, a1 = lora[(0, "q_proj")][0].flatten(), lora[(1, "q_proj")][0].flatten()
    corr = torch.corrcoef(torch.stack([a0, a1]))[0, 1]
    assert abs(corr) < 0.2                                  # independent A per layer, like peft


def test_generated_adapter_scaling_and_dtype(spec, model_dir, tmp_path):
    from studio.hyper import api
    from studio.hyper.text_to_lora import T2LConfig, TextToLoRA

    class FakeEncoderFree:      # a fixed embedding: this test is about the files, not the encoder
        def embed(self, texts):
            return torch.nn.functional.normalize(torch.ones(len(texts), 384), dim=-1)

    rs_spec = spec.to_dict() | {"use_rslora": True, "alpha": 8.0}
    net = TextToLoRA(T2LConfig(spec=rs_spec, head="S", hidden=32))
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["torch_dtype"] = cfg["dtype"] = "bfloat16"
    res = api.generate(api.Hypernetwork("t2l", net, tmp_path / "hn"), tmp_path / "a",
                       description="Answer questions about dates.", base_model=cfg,
                       encoder=FakeEncoderFree())
    saved = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert saved["use_rslora"] is True and saved["lora_alpha"] == 8.0 and saved["r"] == 4
    from safetensors.torch import load_file

    tensors = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16} and res["dtype"] == "bfloat16"
    assert len(tensors) == 2 * 2 * 30
    # a base model of another shape is refused with a clear message
    from studio.errors import UserError

    with pytest.raises(UserError, match="30-layer"):
        check_base_model(net.spec, {"num_hidden_layers": 24, "hidden_size": 576})


def test_sft_gradient_reaches_the_hypernetwork(base, spec):
    from studio.core.data import Example, collate, tokenize_example
    from studio.hyper.functional import GeneratedLoraModel
    from studio.hyper.text_to_lora import T2LConfig, TextToLoRA

    model, tok = base
    torch.manual_seed(0)
    net = TextToLoRA(T2LConfig(spec=spec.to_dict(), head="M", hidden=32, dropout=0.0))
    runner = GeneratedLoraModel(model, spec)
    try:
        ex = Example(messages=[{"role": "user", "content": "2+2?"},
                               {"role": "assistant", "content": "4"}])
        batch = collate([tokenize_example(ex, tok, 64)], tok.pad_token_id)
        lora = net.emit(torch.nn.functional.normalize(torch.randn(1, 384), dim=-1))[0]
        loss = runner.loss(lora, batch)
        with torch.no_grad():        # B = 0 at init: the generated LoRA is a no-op
            base_loss = runner.model.get_base_model()(**batch).loss
        assert torch.allclose(loss, base_loss, atol=1e-5)
        emb = torch.nn.functional.normalize(torch.randn(1, 384), dim=-1)
        opt = torch.optim.SGD(net.parameters(), lr=1e-2)
        loss.backward()     # B = 0: like a LoRA at init only the B-emitting weights get gradient
        assert net.head.weight.grad.abs().sum() > 0
        opt.step()
        opt.zero_grad()
        loss2 = runner.loss(net.emit(emb)[0], batch)
        loss2.backward()    # one step later the gradient reaches every layer of the hypernetwork
        grads = {n: p.grad for n, p in net.named_parameters()}
        assert all(g is not None and g.abs().sum() > 0 for g in grads.values()), \
            [n for n, g in grads.items() if g is None or g.abs().sum() == 0]
        assert all(p.grad is None for p in runner.model.parameters())     # base stays frozen
    finally:
        runner.unwrap()


def test_dnd_output_shapes_and_init(spec):
    from studio.hyper.dnd import DnDConfig, DnDGenerator

    torch.manual_seed(0)
    gen = DnDGenerator(DnDConfig(spec=spec.to_dict(), n_prompts=4, max_tokens=8,
                                 stages=[[8, 8, 64]], latent=16))
    loras = gen(torch.randn(3, 4, 8, 384))
    assert len(loras) == 3
    for layer, m in spec.keys:
        a, b = loras[1][(layer, m)]
        assert a.shape == (4, 576) and b.shape == (spec.out_features[m], 4)
        assert torch.count_nonzero(b) == 0
    assert not torch.allclose(loras[0][(0, "q_proj")][0], loras[1][(0, "q_proj")][0])
