"""studio.export on the real SmolLM2-135M-Instruct: merged exports reproduce the adapter on its
base (logits, top-1 tokens, greedy answers), the adapter export loads with plain peft and carries
a model card, prompt-learning adapters get the cannot-merge message, the Ollama TEMPLATE renders
like the chat template, exports never overwrite foreign folders and a killed export leaves
nothing that looks finished; GGUF through llama.cpp when it is installed (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import small_recipe
from studio.core import runs
from studio.core.training import run_training
from studio.errors import UserError

REPO = Path(__file__).resolve().parents[1]
PROMPTS = 2


@pytest.fixture(scope="module", autouse=True)
def gguf_tools_from_the_user_data_folder():
    """Tests run with a fresh PEFT_STUDIO_HOME; link in the GGUF tools the user installed (like
    conftest links the models), so the GGUF tests run where `setup --gguf` was done."""
    import conftest
    from studio.export import gguf

    real = conftest._REAL_MODELS.parent / "tools"
    link = gguf.tools_dir().parent
    if real.is_dir() and not link.exists():
        link.symlink_to(real, target_is_directory=True)


def train_run(model_dir, tmp, demo_train_path, demo_eval_path, method="lora", steps=2, **kw):
    from studio import plugins

    recipe = small_recipe(model_dir, tmp, demo_train_path, demo_eval_path, n_train=8, n_eval=4,
                          steps=steps)
    if method != "lora":           # small_recipe's LoRA settings, where the method has them
        known = plugins.discover()[0][method].parameters
        recipe.method.id = method
        recipe.method.params = {k: v for k, v in recipe.method.params.items() if k in known}
    recipe.method.params.update(kw.get("params", {}))
    if kw.get("quantization"):
        recipe.model.quantization = kw["quantization"]
    recipe.save(recipe.source)
    recipe = type(recipe).load(recipe.source).validate()
    run_dir = runs.create_run(recipe, base=tmp / "runs")
    log = runs.RunLog(run_dir)
    run_training(runs.load_recipe(run_dir), run_dir, log.append)
    return run_dir


@pytest.fixture(scope="module")
def lora_run(model_dir, demo_train_path, demo_eval_path, tmp_path_factory):
    return train_run(model_dir, tmp_path_factory.mktemp("export-lora"), demo_train_path,
                     demo_eval_path)


@pytest.fixture(scope="module")
def merged_export(lora_run, tmp_path_factory):
    from studio.export import export, resolve_source

    target = tmp_path_factory.mktemp("merged-out") / "merged"
    phases = []
    result = export(resolve_source(lora_run), target, "merged", parity_prompts=PROMPTS,
                    progress=lambda phase, done, total: phases.append(phase))
    return target, result, phases


def cli(*args, timeout=600, **kw):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "studio.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=str(REPO), **kw)


# ---- merged -------------------------------------------------------------------------------------

def test_merged_lora_matches_adapter(merged_export):
    target, result, phases = merged_export
    report = result["report"]
    (c,) = report["comparisons"]
    print(f"\nmerged fp32 LoRA: max |logit diff| {c['max_abs_logit_diff']:.2e}, top-1 "
          f"{c['top1_agreement']:.2%}, greedy {c['identical_greedy_answers']}/{c['prompts']}")
    assert report["verdict"] == "matches" and c["verdict"] == "matches"
    assert c["max_abs_logit_diff"] < 5e-3 and c["top1_agreement"] == 1.0
    assert c["identical_greedy_answers"] == c["prompts"] == PROMPTS
    assert c["perplexity_export"] == pytest.approx(c["perplexity_reference"], rel=1e-3)
    assert report["examples_from"] == "the run's eval file eval.jsonl"
    assert "merged model chat template: same as the base model's (2/2 conversations render " \
           "identically)" in report["notes"]
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "chat_template.jinja", "README.md", "parity.md", "parity.json", "export.json"):
        assert (target / name).is_file(), name
    assert json.loads((target / "parity.json").read_text())["verdict"] == "matches"
    assert "**Verdict: matches**" in (target / "parity.md").read_text()
    assert not list(target.parent.glob("*.partial-*"))
    assert phases[0] == "reference" and "merging" in phases and phases[-1] == "done"


def test_merged_folder_loads_with_plain_transformers(merged_export, lora_run):
    """A fresh interpreter with nothing of the studio imported: plain transformers loads it, and
    it answers the demo task the way the adapter taught it (ISO date)."""
    target, _result, _ = merged_export
    code = (
        "import sys, torch\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); t = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "assert 'peft' not in sys.modules and 'studio' not in sys.modules\n"
        "assert m.dtype == torch.float32 and not any('lora' in n for n, _ in m.named_modules())\n"
        "msgs = [{'role': 'user', 'content': 'hi'}]\n"
        "ids = t.apply_chat_template(msgs, add_generation_prompt=True, return_tensors='pt', return_dict=True)\n"
        "out = m.generate(**ids, max_new_tokens=3, do_sample=False)\n"
        "print('OK', out.shape[1] > ids['input_ids'].shape[1], m.generation_config.eos_token_id)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "OK True" in proc.stdout


@pytest.mark.slow
def test_merged_bf16_within_quantisation(lora_run, tmp_path):
    from studio.export import export, resolve_source

    result = export(resolve_source(lora_run), tmp_path / "bf16", "merged", dtype="bf16",
                    parity_prompts=PROMPTS)
    (c,) = result["report"]["comparisons"]
    print(f"\nmerged bf16: max |diff| {c['max_abs_logit_diff']:.3g}, top-1 {c['top1_agreement']:.2%}")
    assert c["precision"] == "reduced"
    assert result["report"]["verdict"] in ("matches", "matches within quantisation")
    cfg = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert cfg.get("dtype", cfg.get("torch_dtype")) == "bfloat16"
    size = (tmp_path / "bf16" / "model.safetensors").stat().st_size
    assert size < 0.6 * 4 * 134_515_008        # 2 bytes per weight, not 4


# ---- adapter ------------------------------------------------------------------------------------

def test_adapter_export_has_card_and_loads_with_plain_peft(lora_run, tmp_path):
    from studio.export import export, resolve_source
    from studio.export.card import sha256_of

    src = resolve_source(lora_run)
    result = export(src, tmp_path / "adapter", "adapter", parity_prompts=PROMPTS)
    out = tmp_path / "adapter"
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert result["report"]["verdict"] == "matches"
    card = (out / "README.md").read_text()
    recipe = runs.load_recipe(lora_run)
    data = recipe.resolve_path(recipe.data.path)
    assert sha256_of(data) in card and data.name in card
    assert "LoRA (`lora`)" in card and "r=8" in card and "learning_rate=0.001" in card
    assert "final train loss" in card
    assert (lora_run / "recipe.toml").read_text().strip() in card


# ---- refusals -----------------------------------------------------------------------------------

def test_foreign_folder_is_refused_and_untouched(lora_run, tmp_path):
    from studio.export import export, resolve_source

    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("my own file")
    with pytest.raises(UserError, match="not a previous PEFT Studio export"):
        export(resolve_source(lora_run), target, "merged")
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    assert not list(tmp_path.glob("*.partial-*"))


def test_previous_export_is_replaced_whole(merged_export, lora_run, tmp_path):
    from studio.export.staging import Staging, is_studio_export

    target, _result, _ = merged_export
    assert is_studio_export(target)
    # a studio export may be replaced; the replacement appears only at commit
    with Staging(target) as stage:
        (stage.path / "x.txt").write_text("new")
        assert (target / "model.safetensors").is_file()
        stage.commit({"format": "test"})
    assert sorted(p.name for p in target.iterdir()) == ["export.json", "x.txt"]


def test_short_disk_is_refused_before_any_work(lora_run, tmp_path, monkeypatch):
    from studio.export import export, resolve_source, staging

    monkeypatch.setattr(staging, "free_bytes", lambda folder: 10 * staging.MB)
    with pytest.raises(UserError, match=r"not enough free disk .* needs about [\d,]+ MB"):
        export(resolve_source(lora_run), tmp_path / "big", "merged")
    assert not (tmp_path / "big").exists()


def test_cancelled_export_leaves_nothing(lora_run, tmp_path):
    from studio.export import Cancelled, export, resolve_source

    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2          # after the reference measurement has started

    with pytest.raises(Cancelled):
        export(resolve_source(lora_run), tmp_path / "c", "merged", parity_prompts=1,
               cancel=cancel)
    assert not (tmp_path / "c").exists() and not list(tmp_path.glob("c.partial-*"))


def test_prompt_learning_cannot_merge(model_dir, tmp_path):
    """A real prefix-tuning adapter: merged is refused with the fix; the CLI exits 2."""
    from peft import PrefixTuningConfig, TaskType, get_peft_model

    from studio.core.models import load_model
    from studio.export import resolve_source

    model, _ = load_model(model_dir)
    peft_model = get_peft_model(model, PrefixTuningConfig(task_type=TaskType.CAUSAL_LM,
                                                          num_virtual_tokens=4))
    peft_model.save_pretrained(str(tmp_path / "prefix"))
    src = resolve_source(tmp_path / "prefix")
    assert src.method == "prefix" and not src.mergeable
    with pytest.raises(UserError, match="cannot merge prefix: prompt-learning adapters have no "
                                        "weights to fold in; export --format adapter instead"):
        src.check_mergeable()
    proc = cli("export", str(tmp_path / "prefix"), "--to", str(tmp_path / "out"),
               "--format", "gguf", timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "cannot merge prefix: prompt-learning adapters have no weights to fold in; export " \
           "--format adapter instead" in proc.stderr
    assert not (tmp_path / "out").exists()


# ---- the CLI ------------------------------------------------------------------------------------

def test_cli_export_help():
    proc = cli("export", "--help", timeout=120)
    assert proc.returncode == 0
    for word in ("--to", "--format", "adapter,merged,gguf,ollama", "--dtype", "--quant",
                 "--parity-prompts", "--progress-json"):
        assert word in proc.stdout


def test_cli_adapter_export(lora_run, tmp_path):
    target = tmp_path / "cli-adapter"
    proc = cli("export", str(lora_run), "--to", str(target), "--format", "adapter",
               "--parity-prompts", "1", "--progress-json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "needs about" in proc.stdout and "verdict: matches" in proc.stdout
    assert '@progress {"phase": "finished"' in proc.stdout
    assert json.loads((target / "export.json").read_text())["verdict"] == "matches"


def test_killed_export_leaves_nothing_that_looks_finished(lora_run, tmp_path):
    """SIGKILL the export process while it writes: no target folder; the leftover staging folder
    has no export.json, and the next export to the same target clears it away."""
    from studio.export.staging import Staging

    target = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "studio.cli", "export", str(lora_run),
                             "--to", str(target), "--format", "merged", "--parity-prompts", "1",
                             "--progress-json"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, cwd=str(REPO))
    seen = []
    deadline = time.time() + 600
    for line in proc.stdout:
        seen.append(line)
        if '"phase": "writing"' in line or '"phase": "checking"' in line or time.time() > deadline:
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    assert any('"phase": "writing"' in s or '"phase": "checking"' in s for s in seen), seen[-5:]
    assert not target.exists()
    partial = list(tmp_path.glob("killed.partial-*"))
    assert len(partial) == 1 and not (partial[0] / "export.json").exists()
    with Staging(target):
        assert not partial[0].exists()          # a dead export's staging folder is cleared


# ---- Ollama -------------------------------------------------------------------------------------

CONVERSATIONS = [
    [{"role": "user", "content": "Convert to ISO: March 5th, 2021"}],
    [{"role": "system", "content": "You answer in one word."},
     {"role": "user", "content": "Capital of France?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Line one\nline two {{ .Content }}"}],
]


def test_ollama_template_renders_like_the_chat_template(model_dir):
    from studio.core.data import render
    from studio.core.models import load_tokenizer
    from studio.export import ollama

    tok = load_tokenizer(model_dir)
    tr = ollama.translate(tok)
    assert tr["template"] == ollama.CHATML_TEMPLATE
    assert tr["system"].startswith("You are a helpful AI assistant named SmolLM")
    for conv in CONVERSATIONS:
        got = ollama.render_go_template(tr["template"], conv, tr["system"])
        assert got == render(conv, tok, add_generation_prompt=True)
    # the expected strings, written out by hand (independent of both renderers)
    assert ollama.render_go_template(tr["template"], CONVERSATIONS[1], tr["system"]) == (
        "<|im_start|>system\nYou answer in one word.<|im_end|>\n"
        "<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n")
    assert ollama.render_go_template(tr["template"], CONVERSATIONS[0], tr["system"]).startswith(
        f"<|im_start|>system\n{tr['system']}<|im_end|>\n<|im_start|>user\nConvert")
    text = ollama.modelfile_text("m.gguf", tr, ollama.stop_strings(tok, True))
    assert text.startswith("FROM ./m.gguf\nTEMPLATE \"\"\"")
    assert 'PARAMETER stop "<|im_end|>"' in text and "SYSTEM \"\"\"You are a helpful" in text


def test_ollama_refuses_to_guess_an_unknown_template(model_dir):
    from studio.core.models import load_tokenizer
    from studio.export import ollama

    tok = load_tokenizer(model_dir)
    tok.chat_template = ("{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}")
    tr = ollama.translate(tok)
    assert tr["template"] is None and "not ChatML" in tr["why"]
    text = ollama.modelfile_text("m.gguf", tr, [])
    assert not any(line.startswith("TEMPLATE") for line in text.splitlines())
    assert "# No TEMPLATE: the chat template is not ChatML" in text


# ---- GGUF (needs `peft-studio setup --gguf`) ----------------------------------------------------

def _gguf_ready() -> bool:
    from studio.export import gguf

    return not gguf.missing_tools()


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["q8_0", "f16"])
def test_gguf_matches_merged_model(lora_run, tmp_path, quant):
    if not _gguf_ready():
        pytest.skip("GGUF tools not installed (peft-studio setup --gguf)")
    from studio.export import export, resolve_source

    result = export(resolve_source(lora_run), tmp_path / "g", "ollama", quant=quant,
                    parity_prompts=4)
    report = result["report"]
    merged_vs_gguf = report["comparisons"][1]
    print(f"\nGGUF {quant}: {json.dumps({k: merged_vs_gguf[k] for k in ('max_abs_logit_diff', 'top1_agreement', 'identical_greedy_answers', 'prompts')})}")
    assert merged_vs_gguf["identical_greedy_answers"] >= merged_vs_gguf["prompts"] - 1
    assert merged_vs_gguf["top1_agreement"] >= 0.95
    assert report["verdict"] in ("matches", "matches within quantisation")
    assert any("4/4 prompts exactly like transformers" in n for n in report["notes"])
    files = {p.name for p in (tmp_path / "g").iterdir()}
    assert f"SmolLM2-135M-Instruct-lora-{quant}.gguf" in files and "Modelfile" in files
    assert "hf-merged-fp32" not in files
    assert result["ollama_command"].startswith("ollama create g -f ")


# ---- every mergeable method (slow) -------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("method,params,quantization,expect", [
    ("dora", {}, None, "matches"),
    ("ia3", {"target_modules": "k_proj,v_proj,down_proj", "feedforward_modules": "down_proj"},
     None, "matches"),
    ("oft", {}, None, "matches"),
    ("lora_dash", {"pre_launch_steps": 1, "num_directions": 2}, None, "matches"),
    ("qlora", {}, "4bit", "matches within quantisation"),
])
def test_merged_matches_for_each_method(model_dir, demo_train_path, demo_eval_path, tmp_path,
                                        method, params, quantization, expect):
    from studio.export import export, resolve_source

    run_dir = train_run(model_dir, tmp_path, demo_train_path, demo_eval_path, method=method,
                        steps=2, params=params, quantization=quantization)
    src = resolve_source(run_dir)
    result = export(src, tmp_path / "m", "merged", parity_prompts=PROMPTS)
    comparisons = result["report"]["comparisons"]
    for c in comparisons:
        print(f"\n{method}: {c['reference']}: max |diff| {c['max_abs_logit_diff']:.3g}, top-1 "
              f"{c['top1_agreement']:.2%}, greedy {c['identical_greedy_answers']}/{c['prompts']}, "
              f"ppl {c['perplexity_reference']:.4f} -> {c['perplexity_export']:.4f}: {c['verdict']}")
    assert result["report"]["verdict"] == expect
    # the merge itself is exact: the export reproduces the adapter on the weights it was folded into
    assert comparisons[-1]["verdict"] == "matches"
    if quantization:
        assert len(comparisons) == 2 and comparisons[0]["reference"].endswith("(as trained)")
        assert any("trained on a quantised base" in n for n in result["report"]["notes"])


@pytest.mark.slow
def test_lora_dash_adapter_export_loads_whole_with_plain_peft(model_dir, demo_train_path,
                                                              demo_eval_path, tmp_path):
    """The dash directions are folded into the LoRA matrices: plain peft reproduces the adapter
    as the studio loads it (the LoRA part alone would not)."""
    from studio.export import export, resolve_source

    run_dir = train_run(model_dir, tmp_path, demo_train_path, demo_eval_path, method="lora_dash",
                        steps=3, params={"pre_launch_steps": 1, "num_directions": 2})
    assert json.loads((run_dir / "adapter" / "lora_dash.json").read_text())["installed"]
    result = export(resolve_source(run_dir), tmp_path / "a", "adapter", parity_prompts=PROMPTS)
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert cfg["rank_pattern"] and set(cfg["rank_pattern"].values()) == {8 + 2}
    assert not (tmp_path / "a" / "lora_dash.json").exists()
    assert result["report"]["verdict"] == "matches", result["report"]["comparisons"]
