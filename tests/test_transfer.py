"""Trans-LoRA transfer (issue 13): the discriminator on a constructed case, the refusals before any
work, a whole transfer through the CLI (SmolLM2 + LoRA -> another model) whose new adapter moves
the target's answers towards the teacher's, the dialog in a real window, and Gemma3-270M when it
is installed (slow)."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest

from conftest import cli_program, small_recipe
from studio.errors import UserError

WORDS = ("river lamp orbit seven velvet engine pocket thunder maple quiet silver hinge crimson "
         "ladder ocean pencil frost marble cactus violin rocket basket lemon").split()


def _prompts(path: Path) -> list[str]:
    out = []
    for line in path.read_text().splitlines():
        messages = json.loads(line)["messages"]
        out.append(next(m["content"] for m in messages if m["role"] == "user"))
    return out


def _junk(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    kinds = [lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))),
             lambda: "def f(x):\n    return x * %d + %d" % (rng.randint(2, 9), rng.randint(0, 99)),
             lambda: "Le chat %s dort sous la table pendant que il pleut." % rng.choice(WORDS)]
    return [rng.choice(kinds)() for _ in range(n)]


def _source_run(model_dir, tmp_path, demo_train_path, demo_eval_path, steps=12) -> Path:
    """A finished LoRA run on the real model (dates task), its eval file = 8 held-out examples."""
    from studio.core import runs
    from studio.core.training import run_training

    recipe = small_recipe(model_dir, tmp_path, demo_train_path, demo_eval_path, steps=steps,
                          n_train=32, n_eval=8)
    run_dir = runs.create_run(recipe, base=tmp_path / "runs")
    run_training(runs.load_recipe(run_dir), run_dir, runs.RunLog(run_dir).append)
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    return run_dir


@pytest.fixture(scope="module")
def source_run(model_dir, tmp_path_factory, demo_train_path, demo_eval_path):
    return _source_run(model_dir, tmp_path_factory.mktemp("source"), demo_train_path,
                       demo_eval_path)


def test_discriminator_keeps_real_prompts_over_junk(model_dir, demo_train_path):
    """Seeds and 'candidates' are real dates prompts; junk is word salad, code and French. The
    cross-fitted probe on the model's hidden states keeps the real ones."""
    from studio.core.models import load_model
    from studio.transfer import synth

    prompts = _prompts(demo_train_path)
    seeds, real = prompts[:16], prompts[16:32]
    junk = _junk(16)
    candidates = [{"index": i, "text": t, "finished": True} for i, t in enumerate(real + junk)]
    model, tokenizer = load_model(model_dir)
    feats = synth.hidden_features(model, tokenizer, seeds + real + junk)
    probe = synth.probe_scores(feats[:16], feats[16:], seed=0)
    reasons = synth.hygiene(candidates, seeds)
    assert reasons == [None] * 32
    cut = synth.quantile(probe["real"], 0.1)
    kept, final = synth.choose(candidates, reasons, probe["fake"], wanted=16, threshold=cut)
    kept_real = sum(1 for i in kept if i < 16)
    kept_junk = len(kept) - kept_real
    assert kept_real >= 11 and kept_junk <= 1, (kept_real, kept_junk, probe["fake"])
    assert all(final[i] is None for i in kept)
    assert any(r and r.startswith("judged synthetic") for r in final)
    # hygiene: empty, unfinished, a seed's copy and a repeat never reach the probe
    odd = [{"text": "", "finished": True}, {"text": "x y", "finished": False},
           {"text": seeds[0].upper(), "finished": True}, {"text": real[0], "finished": True},
           {"text": real[0], "finished": True}]
    assert synth.hygiene(odd, seeds) == ["empty", "unfinished (longer than the limit)",
                                         "a copy of a real prompt", None, "a repeat"]
    # a probe that passes too few: the best of the rest keep the student fed, the rest say why
    few, few_final = synth.choose(candidates, reasons, probe["fake"], wanted=16, threshold=1.01,
                                  minimum=8)
    assert len(few) == 8 and sorted(few, key=lambda i: -probe["fake"][i]) == few
    assert sum(r is not None and r.startswith("judged synthetic") for r in few_final) == 24


def test_refusals_before_any_work(model_dir, random_adapter, tmp_path, monkeypatch, source_run,
                                  tiny_family):
    from studio.core import estimate
    from studio.transfer import plan as plans

    with pytest.raises(UserError) as info:                  # the model it was trained on
        plans.check_transfer(source_run, model_dir)
    assert "nothing to transfer" in str(info.value) and info.value.field == "target"
    not_model = tmp_path / "not-a-model"
    not_model.mkdir()
    (not_model / "notes.txt").write_text("mine")
    with pytest.raises(UserError) as info:
        plans.check_transfer(source_run, not_model)
    assert "target model" in str(info.value) and str(not_model) in str(info.value)
    target = tiny_family("qwen2_5")
    with pytest.raises(UserError) as info:                  # an adapter folder: no seeds, no task
        plans.check_transfer(random_adapter, target)
    assert "--seeds FILE" in str(info.value) and "--task" in str(info.value)
    plan = plans.check_transfer(random_adapter, target, task="Answer date questions.")
    assert plan["seeds"] == [] and plan["task"] == "Answer date questions."
    with pytest.raises(UserError) as info:                  # an adapter whose base is unknown
        bare = tmp_path / "bare"
        bare.mkdir()
        cfg = json.loads((random_adapter / "adapter_config.json").read_text())
        cfg["base_model_name_or_path"] = "some-org/some-model"
        (bare / "adapter_config.json").write_text(json.dumps(cfg))
        plans.check_transfer(bare, target, task="x")
    assert "--from" in str(info.value)
    monkeypatch.setattr(estimate, "available_memory_mb", lambda device: 50.0)
    with pytest.raises(UserError) as info:
        plans.check_transfer(source_run, target)
    assert "MB" in str(info.value) and "free" in str(info.value)
    assert (not_model / "notes.txt").read_text() == "mine"


def test_cli_refuses_with_a_message(source_run, model_dir, tmp_path, tiny_family):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    for args, expect in (([str(source_run), "--to", str(model_dir)], "nothing to transfer"),
                         ([str(source_run), "--to", str(tiny_family("qwen2_5")), "--out",
                           str(out)], "not a LoRA adapter")):
        done = subprocess.run(cli_program() + ["transfer", *args], capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 2, done.stderr
        assert expect in done.stderr and "Traceback" not in done.stderr
    assert (out / "keep.txt").read_text() == "user file"
    assert list(out.iterdir()) == [out / "keep.txt"]


def _answer_loss(model, tokenizer, pairs) -> float:
    """Mean loss per answer token of `pairs` (prompt, answer) through the chat format."""
    import torch

    from studio.core.data import Example, tokenize_example

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for prompt, answer in pairs:
            item = tokenize_example(Example(messages=[{"role": "user", "content": prompt},
                                                      {"role": "assistant", "content": answer}]),
                                    tokenizer, 256)
            ids = torch.tensor([item["input_ids"]])
            labels = torch.tensor([item["labels"]])
            out = model(input_ids=ids, labels=labels)
            n = int((labels[0, 1:] != -100).sum())
            total += float(out.loss) * n
            count += n
    return total / count


def test_transfer_through_the_cli_moves_the_target_towards_the_teacher(
        source_run, tiny_family, tmp_path, demo_train_path, model_dir):
    """A whole transfer (tiny budget) to another model: stages, a finished run on the target,
    the adapter copied to --out; on real prompts no stage saw, the new adapter makes the target
    give the teacher's answers a much lower loss than the target alone."""
    from studio.core.chat import build_prompt, load_for_chat
    from studio.core.evaluate import generate_batch
    from studio.core.models import load_model
    from studio.core.chat import attach_adapter

    target = tiny_family("qwen2_5")
    out = tmp_path / "moved"
    done = subprocess.run(
        cli_program() + ["transfer", str(source_run), "--to", str(target), "--out", str(out),
                         "--prompts", "16", "--seed-count", "8", "--steps", "40",
                         "--generator", "source",      # the tiny target is random: it writes noise
                         "--learning-rate", "1e-2", "--runs-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    text = done.stdout
    for line in ("Reading real prompts: 8 real prompts",
                 "Writing synthetic prompts: 32 prompts written by the source model",
                 "Filtering with the discriminator: kept", "The source adapter answers: ",
                 "started: 40 steps", "finished at step 40", f"adapter copied to {out}"):
        assert line in text, text
    run_dir = Path(text.split("run: ", 1)[1].splitlines()[0])
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "finished"
    state = json.loads((run_dir / "transfer" / "state.json").read_text())["stages"]
    assert set(state) == {"seeds", "generate", "filter", "teach"}
    table = [json.loads(l) for l in (run_dir / "transfer" / "filtered.jsonl").read_text().splitlines()]
    assert len(table) == 32 and all("reason" in r and "p_real" in r for r in table)
    kept = [r for r in table if r["kept"]]
    assert 1 <= len(kept) <= 16 and all(r["reason"] is None for r in kept)
    assert (out / "adapter_config.json").is_file()
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert Path(cfg["base_model_name_or_path"]).resolve() == Path(target).resolve()

    # unseen real prompts (not training data, not seeds): the teacher's answers
    unseen = _prompts(demo_train_path)[40:48]
    teacher, ttok = load_for_chat(model_dir, str(source_run / "adapter"))
    answers = [a.strip() for a in generate_batch(teacher, ttok, [build_prompt(ttok, p) for p in unseen], 24)]
    del teacher
    pairs = list(zip(unseen, answers))
    base, tok = load_model(target)
    before = _answer_loss(base, tok, pairs)
    moved = attach_adapter(base, target, str(out))
    after = _answer_loss(moved, tok, pairs)
    # a tiny random-weight student moves little in 40 steps (measured: -0.40 to -0.47 nats per
    # answer token); Gemma3-270M below and docs/TRANS_LORA.md show the real size of the move
    assert after < before - 0.25, (before, after)


def test_transfer_dialog_runs_a_transfer(qtbot, source_run, tiny_family, monkeypatch, tmp_path):
    """The dialog as a user meets it: the plan is checked as the fields change, Start runs the
    stages and the training in the worker, every stage row ends done; looked at in both sizes."""
    from studio.ui.app import create_app
    from studio.ui.transfer_dialog import STAGE_ROWS, TransferDialog, MARKS

    create_app()                             # themed, as the app shows it
    monkeypatch.setenv("PEFT_STUDIO_HOME", str(tmp_path / "home"))
    target = tiny_family("qwen2_5")
    dialog = TransferDialog(None, source=str(source_run))
    qtbot.addWidget(dialog)
    dialog.resize(1024, 640)
    dialog.show()
    dialog.target.setCurrentText(str(target))
    dialog.settings.set_values({"prompts": 8, "seed_count": 8, "candidates": 2.0,
                                "generator": "source"})
    dialog.epochs.setValue(1)
    qtbot.waitUntil(lambda: dialog.state == "ready", timeout=120_000)
    assert "8 real prompts" in dialog.plan_label.text()
    assert "keeps the 8 most real-looking" in dialog.plan_label.text()
    shots = Path(__file__).resolve().parents[1] / "docs" / "screenshots" / "transfer"
    shots.mkdir(parents=True, exist_ok=True)
    dialog.grab().save(str(shots / "plan-1024x640.png"))
    dialog.start()
    assert dialog.state == "running" and dialog.run_dir is not None
    qtbot.waitUntil(lambda: dialog.rows["generate"]["mark"].text() != MARKS["waiting"],
                    timeout=300_000)
    dialog.resize(1440, 900)
    qtbot.wait(200)
    dialog.grab().save(str(shots / "running-1440x900.png"))
    qtbot.waitUntil(lambda: dialog.state in ("finished", "failed", "cancelled"), timeout=600_000)
    assert dialog.state == "finished", dialog.message.text()
    assert all(dialog.rows[k]["mark"].text() == MARKS["done"] for k, _t in STAGE_ROWS)
    assert "kept" in dialog.rows["filter"]["text"].text()
    assert dialog.chat_button.isVisible() and Path(dialog.adapter_path).is_dir()
    for size in ((1024, 640), (1440, 900)):
        dialog.resize(*size)
        qtbot.wait(200)
        dialog.grab().save(str(shots / f"finished-{size[0]}x{size[1]}.png"))
    dialog.close()


@pytest.mark.slow
def test_transfer_to_gemma3_when_installed(source_run, tmp_path, demo_train_path, model_dir):
    """The second real model (fetched on request: `peft-studio models get gemma3-270m`): after
    the transfer, Gemma gives the teacher's answers to unseen prompts a lower loss."""
    from studio.core.chat import attach_adapter, build_prompt, load_for_chat
    from studio.core.evaluate import generate_batch
    from studio.core.models import load_model
    from studio.core.models import extra_model_dir
    from studio.transfer import plan as plans
    from studio.transfer.pipeline import run_transfer
    from studio.core import runs

    gemma = extra_model_dir("gemma3-270m")
    real = Path.home() / ".local/share/peft-studio/models/gemma3-270m"
    gemma = gemma if (gemma / "config.json").is_file() else real
    if not (gemma / "config.json").is_file():
        pytest.skip("Gemma3-270M is not installed (peft-studio models get gemma3-270m)")
    plan = plans.check_transfer(source_run, gemma, settings={"prompts": 16, "seed_count": 8})
    run_dir = plans.create_transfer_run(plan, training={"max_steps": 16, "epochs": 0,
                                                        "learning_rate": 1e-3},
                                        runs_base=tmp_path)
    run_transfer(run_dir, runs.RunLog(run_dir).append)
    assert runs.read_status(run_dir)["status"] == "finished"
    unseen = _prompts(demo_train_path)[40:48]
    teacher, ttok = load_for_chat(model_dir, str(source_run / "adapter"))
    answers = [a.strip() for a in generate_batch(teacher, ttok, [build_prompt(ttok, p) for p in unseen], 24)]
    del teacher
    base, tok = load_model(gemma)
    before = _answer_loss(base, tok, list(zip(unseen, answers)))
    after = _answer_loss(attach_adapter(base, gemma, str(run_dir / "adapter")), tok,
                         list(zip(unseen, answers)))
    assert after < before - 0.5, (before, after)
