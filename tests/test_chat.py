"""studio.core.chat on the real SmolLM2-135M-Instruct with a real (freshly initialised) LoRA."""

from __future__ import annotations

import json

import pytest
import torch

from studio.core.chat import (build_prompt, compare_answers, generate, load_for_chat,
                              with_adapter_disabled)
from studio.core.models import load_model
from studio.errors import UserError

PROMPT = "What is the capital of France?"


def _randomise_lora(model, seed=0, std=0.2):
    """A fresh LoRA has B = 0 (a no-op); give B values so the adapter changes the answers.

    std 0.05 left "Paris" in place for some random A matrices (A comes from the global RNG, so
    the result depended on which tests ran first); 0.2 changes the answer for every seed tried."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)


@pytest.fixture(scope="module")
def base(model_dir):
    return load_model(model_dir)


@pytest.fixture(scope="module")
def adapter_dir(model_dir, tmp_path_factory):
    """A saved LoRA (all linear layers, r=8) with non-zero B, made on its own copy of the model."""
    from peft import LoraConfig, get_peft_model

    model, _ = load_model(model_dir)
    torch.manual_seed(0)  # lora_A's initialisation
    # q/v alone, even with large random B, leaves "Paris" in place: adapt every linear layer
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    _randomise_lora(peft_model)
    out = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(out)
    return out


def test_prompt_uses_chat_template(base):
    _, tokenizer = base
    text = build_prompt(tokenizer, PROMPT)
    assert text.endswith("<|im_start|>assistant\n") and "<|im_start|>user\nWhat is" in text
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = build_prompt(tokenizer, messages)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    with pytest.raises(UserError, match="messages"):
        build_prompt(tokenizer, [{"role": "user"}])


def test_generate_returns_only_new_text(base):
    model, tokenizer = base
    answer = generate(model, tokenizer, PROMPT, max_new_tokens=16)
    assert "Paris" in answer
    assert "capital of France?" not in answer and "<|im_end|>" not in answer
    # Greedy is deterministic; a chat list gives the same answer as a bare prompt.
    assert generate(model, tokenizer, [{"role": "user", "content": PROMPT}],
                    max_new_tokens=16) == answer
    # max_new_tokens is honoured.
    short = generate(model, tokenizer, "Write a long poem about the sea.", max_new_tokens=5)
    assert 0 < len(tokenizer(short, add_special_tokens=False)["input_ids"]) <= 6


def test_sampling_varies(base):
    model, tokenizer = base
    torch.manual_seed(0)
    answers = {generate(model, tokenizer, "Tell me a story.", max_new_tokens=12, temperature=1.5)
               for _ in range(3)}
    assert len(answers) > 1


def test_plain_model_with_adapter_disabled_is_unchanged(base):
    model, tokenizer = base
    with with_adapter_disabled(model) as inner:
        assert inner is model


def test_compare_answers_with_fresh_lora(model_dir, base):
    from peft import LoraConfig, get_peft_model

    base_answer = generate(*base, PROMPT, max_new_tokens=20)
    model, tokenizer = load_model(model_dir)
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16,
                                                  target_modules="all-linear"))
    # B = 0 at initialisation: the adapter is a no-op and both answers match.
    untouched = compare_answers(peft_model, tokenizer, PROMPT, max_new_tokens=20)
    assert untouched["base"] == untouched["adapter"] == base_answer
    _randomise_lora(peft_model)
    result = compare_answers(peft_model, tokenizer, PROMPT, max_new_tokens=20)
    assert result["base"] == base_answer           # the adapter really was switched off
    assert result["adapter"] != result["base"]
    # The adapter is back on after the block.
    assert generate(peft_model, tokenizer, PROMPT, max_new_tokens=20) == result["adapter"]


def test_load_for_chat_with_adapter(model_dir, base, adapter_dir):
    model, tokenizer = load_for_chat(model_dir, adapter_dir)
    from peft import PeftModel

    assert isinstance(model, PeftModel) and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    result = compare_answers(model, tokenizer, PROMPT, max_new_tokens=20)
    assert result["base"] == generate(*base, PROMPT, max_new_tokens=20)
    assert result["adapter"] != result["base"]


def test_load_for_chat_without_adapter(model_dir):
    model, tokenizer = load_for_chat(model_dir)
    assert "Paris" in generate(model, tokenizer, PROMPT, max_new_tokens=16)


def test_adapter_folder_errors(model_dir, tmp_path):
    with pytest.raises(UserError, match="adapter folder does not exist"):
        load_for_chat(model_dir, tmp_path / "missing")
    with pytest.raises(UserError, match="not a PEFT adapter"):
        load_for_chat(model_dir, tmp_path)
    (tmp_path / "adapter_config.json").write_text("{broken")
    with pytest.raises(UserError, match="adapter_config.json could not be read"):
        load_for_chat(model_dir, tmp_path)


def test_adapter_for_another_base_model(model_dir, tmp_path):
    """A LoRA saved on a smaller Llama (same module names, other shapes) must not load."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    other = LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2))
    other.name_or_path = "/somewhere/TinyLlama-other"     # what from_pretrained would set
    lora = get_peft_model(other, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())[
        "base_model_name_or_path"] == "/somewhere/TinyLlama-other"
    with pytest.raises(UserError, match="adapter made for another base model") as err:
        load_for_chat(model_dir, tmp_path)
    text = str(err.value)
    assert "TinyLlama-other" in text and str(tmp_path) in text and "Fix:" in text


def test_model_without_template_is_asked_as_it_was_trained(base):
    """No chat template: the prompt uses the same User:/Assistant: fallback as training did."""
    import copy

    from studio.core.data import Example, render_preview

    _, tokenizer = base
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    prompt = build_prompt(plain, "What is 2+2?")
    assert prompt == "User: What is 2+2?\nAssistant:"
    trained_text = "".join(t for t, _ in render_preview(Example(messages=[
        {"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]), plain))
    assert trained_text.startswith(prompt)


def test_reply_streams_the_same_text_it_returns(base):
    from studio.core.chat import Sampling, reply

    model, tokenizer = base
    pieces = []
    result = reply(model, tokenizer, PROMPT, Sampling(max_new_tokens=16), on_text=pieces.append)
    assert len(pieces) > 1                                  # it arrived in pieces, as generated
    assert "".join(pieces).strip() == result["text"] and "Paris" in result["text"]
    assert 0 < result["tokens"] <= 16 and result["tokens_per_s"] > 0
    assert result["text"] == generate(model, tokenizer, PROMPT, max_new_tokens=16)


def test_multi_turn_conversation_goes_through_the_template(base):
    """The second turn is answered with the first turn (and its own answer) in the prompt."""
    from studio.core.chat import conversation, reply

    model, tokenizer = base
    first = reply(model, tokenizer, conversation([], "My name is Ada. Say hello.", "Be brief."))
    history = [{"role": "user", "content": "My name is Ada. Say hello."},
               {"role": "assistant", "content": first["text"]}]
    messages = conversation(history, "What is my name?", "Be brief.")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    text = build_prompt(tokenizer, messages)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert f"<|im_start|>assistant\n{first['text']}<|im_end|>" in text
    assert text.endswith("<|im_start|>user\nWhat is my name?<|im_end|>\n<|im_start|>assistant\n")
    second = reply(model, tokenizer, messages)
    alone = reply(model, tokenizer, conversation([], "What is my name?", "Be brief."))
    # it read the history: the same question answered differently after the first turn (the
    # 135M model does not recall the name, but it keeps the persona it took in its first answer)
    assert second["text"] != alone["text"]


def test_sampling_options():
    from types import SimpleNamespace

    from studio.core.chat import Sampling

    tok = SimpleNamespace(pad_token_id=None, eos_token_id=2)
    greedy = Sampling(max_new_tokens=5, top_k=40, repetition_penalty=1.3).options(tok)
    assert greedy["do_sample"] is False and greedy["top_k"] is None
    assert greedy["repetition_penalty"] == 1.3 and greedy["pad_token_id"] == 2
    sampled = Sampling(temperature=0.7, top_p=0.9, top_k=40).options(tok)
    assert (sampled["do_sample"], sampled["temperature"], sampled["top_p"], sampled["top_k"]) == \
        (True, 0.7, 0.9, 40)
    assert "repetition_penalty" not in sampled


def test_cli_chat_holds_a_conversation_from_stdin(model_dir, adapter_dir):
    """`peft-studio chat` without a prompt reads one turn per line and answers each, on both sides."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "studio.cli", "chat", "--model", str(model_dir),
                           "--adapter", str(adapter_dir), "--max-new-tokens", "12",
                           "--system", "Be brief."],
                          input=f"{PROMPT}\nAnd of Italy?\n", capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert [line.split(":")[0] for line in lines] == ["base", "adapter", "base", "adapter"]
    assert "Paris" in lines[0]
