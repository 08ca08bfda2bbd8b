"""The architecture and chat-template matrix (issue 16): tiny real-shaped models of each family
people bring (tests/tiny_families.py), run through the studio's own code paths.

Per family: the data preview's trained-token marking (only assistant content and its end-of-turn
token, single and multi-turn, with and without a system message, the family's quirks); every
method plugin applies, trains, saves, reloads with plain peft and merges with parity; 4-bit
loading; generation stops at the family's end-of-turn token; a merged export with parity (GGUF
when llama.cpp is installed). Every claim of studio.core.families.SUPPORT (the table on the Model
page and in docs/MODELS.md) is checked here: a "yes" must work, a "no" must fail the way it says.

Default run: marking, generation stop and LoRA for every family, the other cells for a few;
`-m slow`: every plugin on every family, 4-bit and export for all.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

import tiny_families  # noqa: E402
from studio.core import families as support  # noqa: E402
from studio.core.data import (Example, end_of_turn_token_ids, prompt_text, render,  # noqa: E402
                              render_preview, tokenize_example)
from studio.errors import UserError  # noqa: E402

FAMILIES = list(tiny_families.FAMILIES)
FAST_EXTRA = {"gemma2", "phi3"}          # families whose slower cells also run by default

SYSTEM = "Answer in one short sentence."
CASES = {
    "single": [{"role": "user", "content": "What is two plus two?"},
               {"role": "assistant", "content": "It is four."}],
    "system": [{"role": "system", "content": SYSTEM},
               {"role": "user", "content": "What is two plus two?"},
               {"role": "assistant", "content": "It is four."}],
    "multi": [{"role": "user", "content": "Name a colour."},
              {"role": "assistant", "content": "Blue."},
              {"role": "user", "content": "Another one?"},
              {"role": "assistant", "content": "Green, then."}],
    "multi_system": [{"role": "system", "content": SYSTEM},
                     {"role": "user", "content": "Name a colour."},
                     {"role": "assistant", "content": "Blue."},
                     {"role": "user", "content": "Another one?"},
                     {"role": "assistant", "content": "Green, then."}],
}


def _fast(keys):
    return [k if k in FAST_EXTRA else pytest.param(k, marks=pytest.mark.slow) for k in keys]


@pytest.fixture(scope="module")
def tokenizers(tiny_family):
    from studio.core.models import load_tokenizer

    cache = {}

    def get(key):
        if key not in cache:
            cache[key] = load_tokenizer(tiny_family(key))
        return cache[key]

    return get


# ---- trained-token marking ----------------------------------------------------------------------

def _expected_trained(family, messages) -> list[str]:
    """What each assistant turn must train: its content and the end-of-turn token, plus what the
    template writes between the assistant header and the content (Qwen3's empty think block on
    the answer after the last user message)."""
    answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    out = []
    for i in answers:
        think = family.template == "qwen3" and i == len(messages) - 1
        out.append(("<think>\n\n</think>\n\n" if think else "") + messages[i]["content"]
                   + family.end_of_turn)
    return out


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("key", FAMILIES)
def test_trained_tokens_are_the_answers(key, case, tokenizers):
    family = tiny_families.FAMILIES[key]
    tokenizer = tokenizers(key)
    messages = CASES[case]
    pieces = render_preview(Example(messages=messages), tokenizer)
    trained = [text.lstrip(" ") for text, on in pieces if on]
    untrained = "".join(text for text, on in pieces if not on)
    assert trained == _expected_trained(family, messages), pieces
    # nothing else is trained, nothing of the prompt is lost (a system message the template
    # cannot take is folded into the first user turn)
    for m in messages:
        if m["role"] != "assistant":
            assert m["content"] in untrained, f"{m['role']} message missing from {untrained!r}"
    assert "".join(text for text, _ in pieces) == render(messages, tokenizer)
    # what chat sends for the last answer (the generation prompt) is exactly the text training
    # put before it; for one turn the token ids agree too (the prompt is tokenized alone in chat;
    # in a multi-turn example the earlier turns are tokenized piece by piece, which the tiny
    # models' GPT-2-style vocabulary splits differently around "\n\n")
    item = tokenize_example(Example(messages=messages), tokenizer, max_length=4096)
    prompt = prompt_text(messages[:-1], tokenizer)
    if not (key == "mistral" and case == "multi_system"):
        assert render(messages, tokenizer).startswith(prompt)
    else:   # Mistral's template puts the system prompt before the *last* user turn when chatting;
        # training (where the template would drop it) has it folded into the first one
        assert SYSTEM in prompt.rsplit("[INST]", 1)[1]
    if case in ("single", "system"):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        assert item["input_ids"][:len(prompt_ids)] == prompt_ids
        assert all(t == -100 for t in item["labels"][:len(prompt_ids)])
        assert item["labels"][len(prompt_ids)] != -100
    labelled = [t for t in item["labels"] if t != -100]
    eot = tokenizer.convert_tokens_to_ids(family.end_of_turn)
    assert labelled.count(eot) == len(trained) and labelled[-1] == eot
    assert tokenizer.decode(labelled).replace(" ", "") == "".join(trained).replace(" ", "")
    assert support.claim(key, "marking").ok


def test_family_quirks(tokenizers):
    """The templates' own habits stay out of the trained tokens: Llama 3's date block, Qwen2.5's
    default system prompt; Gemma 2 refuses a system role, Mistral v0.3 drops it from any
    conversation that ends with an answer: both get it folded into the first user turn."""
    single = CASES["single"]

    def untrained(key, messages):
        return "".join(t for t, on in render_preview(Example(messages=messages), tokenizers(key))
                       if not on)

    assert "Cutting Knowledge Date" in untrained("llama3", single)
    assert "You are Qwen, created by Alibaba Cloud" in untrained("qwen2_5", single)
    assert "You are Qwen" not in untrained("qwen2_5", CASES["system"])
    with_system = CASES["system"]
    assert f"<start_of_turn>user\n{SYSTEM}\n\nWhat is two plus two?" in untrained("gemma2", with_system)
    assert f"[INST] {SYSTEM}\n\nWhat is two plus two?[/INST]" in untrained("mistral", with_system)
    # Qwen3: an earlier answer written with its reasoning is trained on its visible part
    reasoning = [{"role": "user", "content": "Name a colour."},
                 {"role": "assistant", "content": "<think>\nPick one.\n</think>\n\nBlue."},
                 {"role": "user", "content": "Another one?"},
                 {"role": "assistant", "content": "Green, then."}]
    pieces = render_preview(Example(messages=reasoning), tokenizers("qwen3"))
    assert [t for t, on in pieces if on] == ["Blue.<|im_end|>",
                                             "<think>\n\n</think>\n\nGreen, then.<|im_end|>"]
    # a generation prompt for chatting keeps the template's own system handling
    assert prompt_text(CASES["system"][:2], tokenizers("mistral")).endswith(
        f"[INST] {SYSTEM}\n\nWhat is two plus two?[/INST]")


@pytest.mark.parametrize("key", FAMILIES)
def test_end_of_turn_is_one_token(key, tokenizers):
    family = tiny_families.FAMILIES[key]
    tokenizer = tokenizers(key)
    eot = tokenizer.convert_tokens_to_ids(family.end_of_turn)
    assert eot in end_of_turn_token_ids(tokenizer)


# ---- generation stops at the end-of-turn token --------------------------------------------------

def _memorise(model, tokenizer, messages, steps=150):
    """Teach the tiny random model one answer (full fine-tuning, a second or two)."""
    item = tokenize_example(Example(messages=messages), tokenizer, max_length=256)
    ids = torch.tensor([item["input_ids"]])
    labels = torch.tensor([item["labels"]])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if loss.item() < 0.02:
            break
    model.eval()
    return loss.item()


@pytest.mark.parametrize("key", [k if k in FAST_EXTRA else pytest.param(
    k, marks=pytest.mark.slow) for k in FAMILIES])
def test_generation_stops_at_end_of_turn(key, tiny_family):
    from studio.core.chat import reply
    from studio.core.models import load_model

    family = tiny_families.FAMILIES[key]
    model, tokenizer = load_model(tiny_family(key), device="cpu")
    torch.manual_seed(0)
    loss = _memorise(model, tokenizer, CASES["single"])
    assert loss < 0.05, f"the tiny model did not learn its one answer (loss {loss:.3f})"
    # the folder's generation config names only the tokenizer's eos
    configured = model.generation_config.eos_token_id
    assert configured == tokenizer.eos_token_id
    out = reply(model, tokenizer, CASES["single"][:1])
    answer = tokenizer(_expected_trained(family, CASES["single"])[0], add_special_tokens=False)
    assert out["text"].endswith("It is four."), out
    assert out["tokens"] == len(answer["input_ids"]), (
        f"{out['tokens']} tokens generated for a {len(answer['input_ids'])}-token answer: it did "
        f"not stop at {family.end_of_turn}")
    assert support.claim(key, "generation_stop").ok


# ---- method plugins -----------------------------------------------------------------------------

# method -> (params, learning rate, steps); every other parameter is the plugin's default
METHODS = {
    "lora": ({"r": 4}, 5e-3, 3), "dora": ({"r": 4}, 5e-3, 3), "rslora": ({"r": 4}, 5e-3, 3),
    "pissa": ({"r": 4, "lora_alpha": 4}, 1e-3, 3), "olora": ({"r": 4, "lora_alpha": 4}, 1e-3, 3),
    "loraplus": ({"r": 4}, 5e-4, 3), "lora_fa": ({"r": 4}, 5e-3, 3),
    "adalora": ({"init_r": 4, "target_r": 2}, 5e-3, 4), "vera": ({"r": 16}, 5e-2, 3),
    "ia3": ({}, 5e-2, 3), "prefix": ({"num_virtual_tokens": 4}, 5e-2, 3),
    "prompt": ({"num_virtual_tokens": 4}, 5e-2, 3), "ptuning": ({"num_virtual_tokens": 4}, 5e-3, 3),
    "oft": ({}, 5e-3, 3), "boft": ({}, 5e-3, 3), "loha": ({"r": 4}, 1e-2, 3),
    "lokr": ({"r": 4}, 1e-2, 3), "bitfit": ({"include_norms": True}, 1e-2, 3),
    "lisa": ({"active_layers": 1, "switch_every": 2, "train_embeddings": False}, 1e-3, 3),
    "eva": ({"r": 4, "init_batches": 1}, 5e-3, 3), "lora_dash": ({"r": 4}, 5e-3, 3),
    "loftq": ({"r": 4, "lora_alpha": 4}, 1e-3, 3),
}
QUANTIZED_ONLY = {"qlora"}                      # checked in test_4bit_loading_and_qlora
NOT_PEFT_FORMAT = {"bitfit", "lisa", "loftq", "lora_dash"}
FAST_METHODS = {"lora"}


def _method_params():
    out = []
    for key in FAMILIES:
        for method in METHODS:
            marks = () if method in FAST_METHODS or (key == "phi3" and method == "ia3") else (
                pytest.mark.slow,)
            out.append(pytest.param(key, method, id=f"{key}-{method}", marks=marks))
    return out


@pytest.fixture(scope="module")
def plugins():
    from studio.plugins import discover

    found, problems = discover()
    assert set(METHODS) | QUANTIZED_ONLY <= set(found), problems
    assert set(found) - set(METHODS) - QUANTIZED_ONLY == set(), "a new plugin: add it to METHODS"
    return found


@pytest.fixture(scope="module")
def bases(tiny_family):
    from studio.core.models import load_model

    cache = {}

    def get(key):
        if key not in cache:
            model, tokenizer = load_model(tiny_family(key), device="cpu")
            examples = [Example(messages=CASES[c]) for c in CASES]
            tokenized = [tokenize_example(ex, tokenizer, 128) for ex in examples]
            from studio.core.data import collate
            batch = collate(tokenized, tokenizer.pad_token_id)
            cache[key] = (model, tokenizer, batch)
        return cache[key]

    return get


def _logits(model, batch):
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return logits[:, -batch["input_ids"].shape[1]:]


@pytest.mark.parametrize("key,method", _method_params())
def test_method_on_family(key, method, bases, plugins, tiny_family, tmp_path):
    claim = support.claim(key, "methods", method)
    model0, tokenizer, batch = bases(key)
    plugin = plugins[method]
    params, lr, steps = METHODS[method]
    if key == "qwen3_moe" and "lora_dropout" in plugin.parameters:
        params = {**params, "lora_dropout": 0.0}     # test_moe_needs_dropout_zero: the refusal
    values = plugin.validate(params)
    ctx = {"total_steps": steps, "train_batches": [batch], "tokenizer": tokenizer,
           "model_path": str(tiny_family(key)), "seed": 0}
    torch.manual_seed(0)
    if not claim.ok:
        with pytest.raises(UserError) as info:
            plugin.apply(copy.deepcopy(model0), values, ctx)
        assert claim.check in str(info.value), str(info.value)
        return
    reference = _logits(model0, batch)
    model = plugin.apply(copy.deepcopy(model0), values, ctx)
    if key == "qwen3_moe":           # which methods reach the fused experts, as the table says
        experts = [n for n, p in model.named_parameters() if p.requires_grad and "experts" in n]
        assert bool(experts) == (method in support.MOE_REACH_EXPERTS), experts[:3]
        assert claim.value == ("yes" if method in support.MOE_REACH_EXPERTS or method in (
            "bitfit", "prefix", "prompt", "ptuning") else "partly")
    groups = plugin.optimizer_param_groups(model, values, lr) or [
        p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)
    callbacks = plugin.callbacks(model, values, ctx)
    model.eval()
    with torch.no_grad():
        before = model(**batch).loss.item()
    model.train()
    for step in range(1, steps + 1):
        model(**batch).loss.backward()
        optimizer.step()
        for callback in callbacks:
            callback.on_step_end(step, model, optimizer)
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        after = model(**batch).loss.item()
    assert after < before, f"{method} on {key}: loss {before:.4f} -> {after:.4f}"
    trained = _logits(model, batch)
    assert (trained - reference).abs().max() > 1e-5, "training changed nothing"
    out = tmp_path / "adapter"
    plugin.save(model, out)
    fresh = copy.deepcopy(model0)
    if method in NOT_PEFT_FORMAT:
        reloaded = plugin.load(fresh, out)
    else:
        from peft import PeftModel
        reloaded = PeftModel.from_pretrained(fresh, str(out))        # plain peft, no plugin code
    diff = (_logits(reloaded, batch) - trained).abs().max().item()
    assert diff < 1e-3, f"reloaded {method} differs by {diff:.2e}"
    assert support.claim(key, "methods").ok
    if plugin.capabilities["mergeable"]:
        merged = plugin.merge(reloaded)
        merge_diff = (_logits(merged, batch) - trained).abs().max().item()
        assert merge_diff < 1e-3, f"merged {method} differs by {merge_diff:.2e}"
        assert support.claim(key, "merge").ok
    else:
        with pytest.raises(UserError, match="cannot merge"):
            plugin.merge(reloaded)


def test_moe_lora_needs_dropout_zero(bases, plugins):
    """peft adapts a transformers-5 MoE's fused expert tensors directly (target_parameters),
    which has no dropout: the default dropout is refused with the fix, not a peft traceback."""
    model0, _tok, _batch = bases("qwen3_moe")
    plugin = plugins["lora"]
    with pytest.raises(UserError) as info:
        plugin.apply(copy.deepcopy(model0), plugin.validate({"r": 4}), {})
    assert info.value.field == "lora_dropout" and "to 0" in info.value.fix
    model = plugin.apply(copy.deepcopy(model0), plugin.validate({"r": 4, "lora_dropout": 0.0}), {})
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters()
               if "lora_" in n}
    assert {"q_proj", "experts"} <= adapted, adapted      # attention and the experts


def test_fused_projection_names_are_explained(bases, plugins):
    """Phi-3 fuses q/k/v into qkv_proj: naming q_proj,v_proj says which name to use."""
    model0, _tok, _batch = bases("phi3")
    plugin = plugins["lora"]
    with pytest.raises(UserError) as info:
        plugin.apply(copy.deepcopy(model0), plugin.validate({"target_modules": "q_proj,v_proj"}), {})
    assert info.value.field == "target_modules" and "use 'qkv_proj'" in info.value.fix
    ia3 = plugins["ia3"].apply(copy.deepcopy(model0), plugins["ia3"].validate({}), {})
    scaled = {n.split(".ia3_")[0].rsplit(".", 1)[-1] for n, _ in ia3.named_parameters()
              if "ia3_" in n}
    assert scaled == {"qkv_proj", "down_proj"}


# ---- 4-bit --------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", _fast(FAMILIES))
def test_4bit_loading_and_qlora(key, tiny_family, plugins):
    pytest.importorskip("bitsandbytes")
    from studio.core.models import load_model

    claim = support.claim(key, "4bit")
    model, tokenizer = load_model(tiny_family(key), quantization="4bit", device="cpu")
    quantized = [n for n, m in model.named_modules() if type(m).__name__ == "Linear4bit"]
    assert quantized and not any(n.endswith("lm_head") for n in quantized)
    plugin = plugins["qlora"]
    values = plugin.validate({"r": 4, "lora_dropout": 0.0} if key == "qwen3_moe" else {"r": 4})
    model = plugin.apply(model, values, {})
    batch_ids = tokenize_example(Example(messages=CASES["single"]), tokenizer, 64)
    ids = torch.tensor([batch_ids["input_ids"]])
    labels = torch.tensor([batch_ids["labels"]])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(3):
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    full_precision = [n for n, p in model.named_parameters()
                      if p.ndim == 3 and "experts" in n]           # MoE experts are 3-D tensors
    assert bool(full_precision) == (claim.value == "partly"), full_precision
    assert claim.ok


# ---- training run, merged export, GGUF ----------------------------------------------------------

@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    import json

    path = tmp_path_factory.mktemp("matrix-data") / "train.jsonl"
    rows = [{"messages": CASES[c]} for c in CASES] * 2
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _run(key, tiny_family, data_file, tmp_path, method="lora"):
    from studio.core import runs
    from studio.core.recipe import Recipe
    from studio.core.training import run_training

    recipe = Recipe.default(model_path=tiny_family(key), data_path=data_file, method=method)
    recipe.name = f"matrix-{key}"
    recipe.data.eval_fraction = 0.25
    recipe.data.max_length = 128
    recipe.method.params.update(r=4, lora_alpha=8, lora_dropout=0.0)
    t = recipe.training
    t.max_steps, t.batch_size, t.learning_rate, t.warmup_steps = 2, 2, 5e-3, 0
    t.lr_scheduler, t.eval_every, t.save_every = "constant", 0, 0
    recipe.source = recipe.save(tmp_path / "recipe.toml")
    recipe = Recipe.load(recipe.source).validate()
    run_dir = runs.create_run(recipe, base=tmp_path / "runs")
    log = runs.RunLog(run_dir)
    metrics = run_training(runs.load_recipe(run_dir), run_dir, log.append)
    assert (run_dir / "adapter" / "adapter_config.json").is_file(), metrics
    return run_dir


@pytest.mark.parametrize("key", _fast(FAMILIES))
def test_training_run_and_merged_export(key, tiny_family, data_file, tmp_path):
    import json

    from studio.export import export, resolve_source

    family = tiny_families.FAMILIES[key]
    run_dir = _run(key, tiny_family, data_file, tmp_path)
    target = tmp_path / "merged"
    result = export(resolve_source(run_dir), target, "merged", parity_prompts=2)
    report = result["report"]
    (c,) = report["comparisons"]
    assert report["verdict"] == "matches", report
    assert c["max_abs_logit_diff"] < 1e-3 and c["top1_agreement"] == 1.0
    assert any("render identically" in n for n in report["notes"]), report["notes"]
    # the merged model stops at the end-of-turn token in plain transformers too
    eos = json.loads((target / "generation_config.json").read_text())["eos_token_id"]
    eos = [eos] if isinstance(eos, int) else eos
    from transformers import AutoTokenizer
    eot = AutoTokenizer.from_pretrained(str(target)).convert_tokens_to_ids(family.end_of_turn)
    assert eot in eos
    assert support.claim(key, "merged_export").ok


@pytest.mark.slow
@pytest.mark.parametrize("key", FAMILIES)
def test_gguf_export(key, tiny_family, data_file, tmp_path):
    import conftest
    from studio.export import export, gguf, resolve_source

    real = conftest._REAL_MODELS.parent / "tools"      # tools the user installed (setup --gguf)
    link = gguf.tools_dir().parent
    if real.is_dir() and not link.exists():
        link.symlink_to(real, target_is_directory=True)
    missing = gguf.missing_tools()
    if missing:
        assert support.claim(key, "gguf").value == "untested"     # the table says so
        pytest.skip("GGUF tools not installed (peft-studio setup --gguf): " + "; ".join(missing))
    run_dir = _run(key, tiny_family, data_file, tmp_path)
    result = export(resolve_source(run_dir), tmp_path / "gguf", "gguf", parity_prompts=2)
    assert result["report"]["verdict"] in ("matches", "matches within quantisation")


# ---- the table ----------------------------------------------------------------------------------

def test_every_family_has_a_row():
    for key in FAMILIES:
        row = support.row_for_model_type(tiny_families.FAMILIES[key].model_type)
        assert row is not None and row.key == key


def test_docs_table_is_the_support_table():
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[1] / "docs" / "MODELS.md").read_text()
    start = docs.index("<!-- support-table")
    start = docs.index("\n", start) + 1
    end = docs.index("<!-- /support-table -->")
    assert docs[start:end].strip() == support.markdown_table(), (
        "docs/MODELS.md's table is not studio.core.families.markdown_table(): paste it again")
    for key in FAMILIES:
        assert support.SUPPORT[key].name in docs
