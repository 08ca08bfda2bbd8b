"""Comparing adapters (studio/compare, `peft-studio compare` / `blend`) on real adapters of the
shipped model: two tiny real trainings that differ in rank and learning rate, and a LoRA with
random B."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from html import escape
from pathlib import Path

import pytest
from conftest import MC_TASK, small_recipe, write_task

from studio.compare import report, weights
from studio.compare.blend import blend
from studio.compare.evaluate import evaluate_all
from studio.compare.loaded import BASE, AdapterSet
from studio.compare.sources import load_source, load_sources, settings_diff
from studio.core import runs
from studio.core.training import run_training
from studio.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def _train(recipe, base: Path) -> Path:
    run_dir = runs.create_run(recipe, base=base)
    log = runs.RunLog(run_dir)
    run_training(runs.load_recipe(run_dir), run_dir, log.append)
    return run_dir


@pytest.fixture(scope="module")
def trio(model_dir, demo_train_path, demo_eval_path, tmp_path_factory, random_adapter):
    """[run r=8 lr=1e-3, run r=4 lr=3e-3, random LoRA r=4] as paths."""
    tmp = tmp_path_factory.mktemp("compare")
    first = _train(small_recipe(model_dir, tmp, demo_train_path, demo_eval_path, steps=4,
                                log_every=1), tmp / "runs")
    recipe = small_recipe(model_dir, tmp, demo_train_path, demo_eval_path, steps=4,
                          learning_rate=3e-3, log_every=1)
    recipe.name = "test-r4"
    recipe.method.params["r"] = 4
    second = _train(recipe.validate(), tmp / "runs")
    return [first, second, random_adapter]


@pytest.fixture(scope="module")
def aset(trio, model_dir):
    return AdapterSet(load_sources(trio), model_dir)


def test_sources_read_runs_and_adapter_folders(trio, model_dir):
    sources = load_sources(trio)
    assert [s.kind for s in sources] == ["run", "run", "adapter"]
    assert [s.name for s in sources[:2]] == ["test", "test-r4"]
    assert all(s.base_name == model_dir.name for s in sources)
    assert sources[0].method == "lora" and sources[2].peft_type == "LORA"
    assert [step for step, _ in sources[0].curves["loss"]] == [1, 2, 3, 4]
    assert sources[2].curves == {}


def test_curves_by_step_and_by_tokens_seen(trio):
    from studio.compare.sources import AdapterSource, curve

    src = load_source(trio[0])
    for key in ("loss", "lr", "tokens_per_s", "tokens"):
        assert [step for step, _ in src.curves[key]] == [1, 2, 3, 4], key
    assert [v for _, v in src.curves["lr"]] == [1e-3] * 4          # the constant schedule
    tokens = [t for _, t in src.curves["tokens"]]
    assert all(b > a > 0 for a, b in zip(tokens, tokens[1:]))
    metrics = next(e for e in runs.read_events(trio[0]) if e["event"] == "finished")["metrics"]
    # the tokens seen at the end are the run's throughput times its training time
    assert math.isclose(tokens[-1], metrics["tokens_per_s"] * metrics["train_seconds"], rel_tol=1e-3)
    assert curve(src, "loss", "tokens") == [(t, v) for t, (_, v) in zip(tokens, src.curves["loss"])]
    assert curve(src, "eval_loss", "tokens") == [(tokens[-1], src.curves["eval_loss"][-1][1])]
    # an eval between logged steps sits between their token counts; none past the last log
    fake = AdapterSource(name="x", adapter_dir=Path("."), kind="run", base_model="", method="lora",
                         peft_type="LORA", config={},
                         curves={"tokens": [(2, 100.0), (4, 300.0)],
                                 "eval_loss": [(1, 0.5), (3, 1.0), (5, 2.0)]})
    assert curve(fake, "eval_loss", "tokens") == [(50.0, 0.5), (200.0, 1.0)]
    assert curve(fake, "eval_loss", "step") == [(1, 0.5), (3, 1.0), (5, 2.0)]
    fake.curves.pop("tokens")                      # a run from before tokens were logged
    assert curve(fake, "eval_loss", "tokens") == []


def test_settings_diff_shows_exactly_what_differs(trio):
    diff = settings_diff(load_sources(trio[:2]))
    assert set(diff) == {"method.params.r", "adapter.r", "training.learning_rate"}
    assert diff["adapter.r"] == [8, 4]
    assert diff["training.learning_rate"] == [1e-3, 3e-3]
    assert settings_diff(load_sources([trio[0], trio[0]])) == {}


def test_adapter_of_another_base_is_refused_with_the_reason(trio, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    config = json.loads((trio[2] / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "meta-llama/Llama-3.1-8B"
    (other / "adapter_config.json").write_text(json.dumps(config))
    (other / "adapter_model.safetensors").write_bytes(
        (trio[2] / "adapter_model.safetensors").read_bytes())
    with pytest.raises(UserError, match="Llama-3.1-8B.*different base models"):
        load_sources([trio[0], other])
    with pytest.raises(UserError, match="chosen base model"):
        load_sources([other], base_model=trio[0])
    with pytest.raises(UserError, match="neither a run nor a PEFT adapter"):
        load_source(tmp_path)


def test_delta_w_equals_peft_merged_weight_change(trio, model_dir):
    from peft import PeftModel

    from studio.core.models import load_model

    for adapter in (trio[1] / "adapter", trio[2]):
        lora = weights.read_lora(adapter)
        module = "model.layers.3.self_attn.v_proj"
        model, _ = load_model(model_dir)
        before = model.model.layers[3].self_attn.v_proj.weight.detach().double().clone()
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        after = merged.model.layers[3].self_attn.v_proj.weight.detach().double()
        delta = lora.modules[module].delta()
        assert delta.abs().max() > 1e-4                    # a real update, not zeros
        assert (after - before - delta).abs().max() < 1e-6


def test_norms_spectrum_and_similarity_from_the_factors(trio):
    import torch

    start = time.perf_counter()
    sources = load_sources(trio)
    result = weights.analyse(sources, module="3.q_proj")
    seconds = time.perf_counter() - start
    print(f"\nweight analysis of 3 adapters (read, norms, spectrum, similarity): {seconds:.2f} s")
    loras = [weights.read_lora(s) for s in sources]

    table = result["norms"][0]
    assert table["modules"] == ["q_proj", "v_proj"] and table["layers"] == list(range(30))
    full = loras[0].modules["model.layers.5.self_attn.v_proj"].delta()
    assert math.isclose(table["norms"][5][1], float(torch.linalg.norm(full)), rel_tol=1e-9)

    spec = result["spectra"][0]
    assert spec["module"] == "model.layers.3.self_attn.q_proj" and spec["rank"] == 8
    expected = torch.linalg.svdvals(loras[0].modules[spec["module"]].delta())[:8]
    assert torch.allclose(torch.tensor(spec["singular_values"], dtype=torch.float64), expected,
                          rtol=1e-8, atol=1e-12)
    assert 1 <= spec["effective_rank"] <= 8

    sim = result["similarity"]["overall"]
    for i in range(3):
        assert math.isclose(sim[i][i], 1.0, rel_tol=1e-12)
        for j in range(3):
            assert math.isclose(sim[i][j], sim[j][i], rel_tol=1e-12)
            if i != j:
                assert sim[i][j] < 0.99
    # the factor formula against flattening every full ΔW
    a = torch.cat([f.delta().flatten() for f in loras[0].modules.values()])
    c = torch.cat([f.delta().flatten() for f in loras[2].modules.values()])
    assert math.isclose(sim[0][2], float(a @ c / (a.norm() * c.norm())), rel_tol=1e-9, abs_tol=1e-12)


def test_prompt_learning_has_no_delta_w(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING"}))
    with pytest.raises(UserError, match="prefix tuning adds learned key/value vectors"):
        weights.read_lora(tmp_path)


def test_blend_with_weights_one_zero_answers_like_the_first(trio, aset, tmp_path, model_dir):
    sources = load_sources(trio)
    r4 = [sources[1], sources[2]]                         # linear needs one rank
    out = blend(r4, [1.0, 0.0], tmp_path / "blend", combination_type="linear", aset=aset)
    record = json.loads((out / "blended_from.json").read_text())
    assert [a["weight"] for a in record["adapters"]] == [1.0, 0.0]
    assert record["combination_type"] == "linear"
    blended = load_source(out)
    assert blended.kind == "blend" and blended.base_name == model_dir.name
    first, mixed = weights.read_lora(sources[1]), weights.read_lora(blended)
    for module, f in first.modules.items():
        assert (mixed.modules[module].delta() - f.delta()).abs().max() < 1e-6

    both = AdapterSet([sources[1], blended], model_dir)
    answers = both.answers("What is the date one week after 2024-03-01?", max_new_tokens=24)
    assert answers[sources[1].name] == answers[blended.name]

    # cat is the exact weighted sum of the updates
    cat = blend(sources, [0.5, 0.25, 0.25], tmp_path / "cat", combination_type="cat", aset=aset)
    mixed = weights.read_lora(cat)
    loras = [weights.read_lora(s) for s in sources]
    module = "model.layers.7.self_attn.q_proj"
    expected = sum(w * l.modules[module].delta() for w, l in zip((0.5, 0.25, 0.25), loras))
    assert (mixed.modules[module].delta() - expected).abs().max() < 1e-6

    with pytest.raises(UserError, match="ranks \\[4, 8\\]"):
        blend(sources[:2], [0.5, 0.5], tmp_path / "x", combination_type="linear", aset=aset)
    with pytest.raises(UserError, match="already holds a blend"):
        blend(r4, [1.0, 0.0], out, aset=aset)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="did not write"):
        blend(r4, [1.0, 0.0], foreign, overwrite=True, aset=aset)
    assert (foreign / "notes.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def loud(random_adapter, tmp_path_factory):
    """The random LoRA with B five times larger: its greedy answers surely differ from the base's."""
    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("loud") / "loud"
    out.mkdir()
    (out / "adapter_config.json").write_bytes((random_adapter / "adapter_config.json").read_bytes())
    tensors = load_file(str(random_adapter / "adapter_model.safetensors"))
    save_file({k: v * 5 if "lora_B" in k else v for k, v in tensors.items()},
              str(out / "adapter_model.safetensors"))
    return out


PROMPT = "What is the date one week after 2024-03-01?"


def test_all_models_answer_one_prompt_streamed_side_by_side(trio, loud, model_dir):
    from studio.core.chat import Sampling, reply

    both = AdapterSet(load_sources([trio[0], loud]), model_dir)
    sampling = Sampling(max_new_tokens=10)
    pieces = []
    start = time.perf_counter()
    result = both.chat(PROMPT, sampling, on_text=lambda name, piece: pieces.append(
        (name, piece, time.perf_counter() - start)))
    names = [BASE, *both.names]
    assert list(result) == names
    print("\nfirst streamed piece after " + ", ".join(
        f"{n}: {next(t for m, _, t in pieces if m == n):.2f} s" for n in names)
        + f"; all {len(names)} answers in {time.perf_counter() - start:.2f} s")
    for name in names:                         # the stream is the answer; each as it answers alone
        assert "".join(p for n, p, _ in pieces if n == name).strip() == result[name]["text"]
        with both.use(None if name == BASE else name) as model:
            alone = reply(model, both.tokenizer, PROMPT, sampling)
        assert (result[name]["text"], result[name]["tokens"]) == (alone["text"], alone["tokens"])
    assert result["loud"]["text"] != result[BASE]["text"]
    # side by side: every model's first piece arrives before any model's last piece
    order = [n for n, _, _ in pieces]
    assert max(order.index(n) for n in names) < min(len(order) - 1 - order[::-1].index(n)
                                                   for n in names)


@pytest.fixture(scope="module")
def task_path(tmp_path_factory):
    return write_task(tmp_path_factory.mktemp("task"), MC_TASK, "opposites")


def test_evaluation_equals_each_adapter_alone(trio, aset, task_path, model_dir):
    from studio.core.bigbench import load_task
    from studio.core.chat import load_for_chat
    from studio.core.task_eval import evaluate

    task = load_task(task_path)
    result = evaluate_all(aset, task, limit=6, seed=3)
    names = [BASE, *aset.names]
    assert [m["name"] for m in result["models"]] == names
    assert len(result["pairs"]) == 6 and len(result["rows"]) == 6
    for source, model_result in zip([None, *trio], result["models"]):
        adapter = None if source is None else (source / "adapter" if (source / "adapter").is_dir()
                                               else source)
        model, tokenizer = load_for_chat(model_dir, adapter)
        alone = evaluate(model, tokenizer, task, limit=6, seed=3)
        assert model_result["score"] == alone["score"]
        assert model_result["ci95"] == alone["ci95"]
        name = model_result["name"]
        assert [r["answers"][name] for r in result["rows"]] == \
            [r["prediction"] for r in alone["results"]]
    pair = next(p for p in result["pairs"] if p["a"] == aset.names[2] and p["b"] == BASE)
    diffs = [r["scores"][aset.names[2]] - r["scores"][BASE] for r in result["rows"]]
    assert math.isclose(pair["mean"], sum(diffs) / 6)
    assert pair["ci95"][0] <= pair["mean"] <= pair["ci95"][1]
    assert result["disagreements"] == sum(len(set(r["scores"].values())) > 1 for r in result["rows"])


def test_report_has_every_table_and_the_cli_writes_the_same(trio, aset, task_path, tmp_path):
    from studio.core.bigbench import load_task

    sources = load_sources(trio)
    prompt = "Name a colour."
    analysis = weights.analyse(sources)
    evaluation = evaluate_all(aset, load_task(task_path), limit=6, seed=0)
    answers = aset.answers(prompt, max_new_tokens=64)
    html = report.build_report(sources, weights=analysis, evaluation=evaluation,
                               answers=answers, prompt=prompt)
    for cls in ("settings", "evaluation", "pairs", "disagreements", "answers", "similarity",
                "spectra"):
        assert f'<table class="{cls}">' in html
    # 5 curves (train loss, eval loss, learning rate, throughput; train loss by tokens seen),
    # 3 norm maps, 1 similarity map, 1 spectrum
    assert html.count("<svg") == 5 + 3 + 1 + 1
    assert "Train loss by tokens seen" in html and "Singular values of ΔW at" in html
    assert "src=" not in html and "href=" not in html and "<script" not in html

    out = tmp_path / "report.html"
    mine = tmp_path / "mine.html"
    mine.write_text("my notes")
    with pytest.raises(UserError, match="not a comparison report"):
        report.write_report(mine, html)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "studio.cli", "compare", *map(str, trio), "--eval", str(task_path),
         "--limit", "6", "--prompt", prompt, "--report", str(out), "--json",
         str(tmp_path / "out.json")], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr
    for heading in ("settings that differ", "cosine similarity", "paired differences",
                    f"[{BASE}]", "report:"):
        assert heading in proc.stdout
    assert out.read_text(encoding="utf-8") == html
    data = json.loads((tmp_path / "out.json").read_text())
    assert [m["score"] for m in data["evaluation"]["models"]] == \
        [m["score"] for m in evaluation["models"]]
    proc = subprocess.run([sys.executable, "-m", "studio.cli", "compare", str(trio[0]),
                           str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "neither a run nor a PEFT adapter" in proc.stderr


def _layout_problems(page) -> list[str]:
    """What a user would see as broken: sideways scrolling, a button whose text is cut."""
    from PySide6.QtWidgets import QAbstractButton, QScrollArea

    found = [f"scrolls sideways by {a.horizontalScrollBar().maximum()} px"
             for a in page.findChildren(QScrollArea)
             if a.isVisible() and a.horizontalScrollBar().maximum() > 0]
    found += [f"button '{b.text()}' cut: {b.width()} px for {b.sizeHint().width()}"
              for b in page.findChildren(QAbstractButton)
              if b.isVisible() and b.text() and b.width() + 1 < b.sizeHint().width()]
    return found


def test_compare_page(qtbot, window, trio, tmp_path, task_path):
    """The page in the window, filled with three real adapters: curves (every metric, by step and
    by tokens seen, a legend that hides a run), settings, the same prompt answered by all four
    models side by side while the window stays responsive, the weights (norms, one module's
    spectrum, similarity overall and per module), an evaluation, the report; it fits 1024x640
    and 1440x900 scrolled to each part (screenshots to $PEFT_STUDIO_SCREENSHOTS/compare)."""
    from PySide6.QtCore import QPoint, QTimer
    from PySide6.QtWidgets import QApplication, QScrollArea

    from studio.compare.sources import METRICS, colour, curve

    window.show_page("compare")
    page = window.pages["compare"]
    page.add_paths(trio)
    qtbot.waitUntil(lambda: page.analysis is not None, timeout=120_000)
    sources = load_sources(trio)
    assert page.list.count() == 3
    assert [s.colour for s in page.sources] == [colour(0), colour(1), colour(2)]

    # curves: one line per run in its colour, for every metric, by step and by tokens seen
    def lines():
        return {item.name(): item for item in page.plot.getPlotItem().listDataItems() if item.name()}

    assert list(lines()) == ["test", "test-r4"]
    assert [i.opts["pen"].color().name() for i in lines().values()] == [colour(0).lower(), colour(1).lower()]
    for axis in ("step", "tokens"):
        page.axis_choice.set_value(axis)
        for metric in METRICS:
            page.metric_choice.set_value(metric)
            for src in sources[:2]:
                x, y = lines()[src.name].getData()
                assert list(zip(x, y)) == curve(src, metric, axis), (axis, metric)
    assert page.plot.getPlotItem().getAxis("bottom").labelText == "tokens seen"
    page.metric_choice.set_value("loss")
    page.axis_choice.set_value("step")
    checks = list(page.legend_checks.values())
    assert [c.isEnabled() for c in checks] == [True, True, False]     # an adapter folder: no curves
    checks[1].setChecked(False)                                        # the legend hides a run
    assert list(lines()) == ["test"]
    checks[1].setChecked(True)
    assert list(lines()) == ["test", "test-r4"]

    diff = settings_diff(sources)
    assert page.settings_table.rowCount() == len(diff) > 0
    assert [page.settings_table.item(r, 0).text() for r in range(len(diff))] == list(diff)

    # weights: norms, the spectrum of the chosen module, similarity overall and per module
    assert page.norm_combo.count() == 3 and page.heat_image.image.shape == (2, 30)
    assert page.similarity_table.rowCount() == 3
    assert [page.similarity_table.item(i, i + 1).text() for i in range(3)] == ["1.000"] * 3
    module = "model.layers.3.self_attn.q_proj"
    page.spectrum_combo.setCurrentIndex(page.spectrum_combo.findData(module))
    expected = weights.analyse(sources, module=module)["spectra"]
    plotted = page.spectrum_plot.getPlotItem().listDataItems()
    assert [i.name() for i in plotted] == [s.name for s in sources]
    for item, spec in zip(plotted, expected):
        assert list(item.yData) == pytest.approx(spec["singular_values"], rel=1e-12)
        assert item.opts["pen"].color().name() == page.colour_of(spec["name"]).lower()
        assert f"{spec['name']}: effective rank {spec['effective_rank']:.2f} of {spec['rank']}" \
            in page.rank_label.text()
    page.similarity_combo.setCurrentIndex(page.similarity_combo.findData(module))
    per_module = page.analysis["similarity"]["per_module"][module]
    assert [[page.similarity_table.item(i, j + 1).text() for j in range(3)] for i in range(3)] == \
        [[f"{v:.3f}" for v in row] for row in per_module]
    assert per_module[0][2] != page.analysis["similarity"]["overall"][0][2]

    # the same prompt: four answers streamed side by side, the window responsive meanwhile
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(20)
    page.decoding.max_new_tokens.setValue(20)
    page.prompt.setText(PROMPT)
    page.ask_button.click()
    assert not page.ask_button.isEnabled()
    qtbot.waitUntil(lambda: page.chat_result is not None or bool(page.chat_message.text()),
                    timeout=300_000)
    timer.stop()
    assert page.chat_result is not None, page.chat_message.text()
    answers = page.chat_result["answers"]
    assert list(answers) == [BASE, "test", "test-r4", sources[2].name] == list(page.boxes)
    assert {n: b.text() for n, b in page.boxes.items()} == answers
    assert all(answers.values()) and page.chat_result["sampling"]["max_new_tokens"] == 20
    assert page.boxes["test"].title.styleSheet().count(colour(0)) == 1
    gap = max(b - a for a, b in zip(ticks, ticks[1:]))
    print("\nsame prompt, time to the first streamed piece per pane (model loading included): "
          + ", ".join(f"{n} {t:.2f} s" for n, t in page.first_piece_s.items())
          + f"; {page.chat_status.text()} Longest pause of the GUI thread: {gap * 1000:.0f} ms")
    assert set(page.first_piece_s) == set(answers)
    assert gap < 1.5
    page.copy_answers()
    copied = QApplication.clipboard().text()
    assert copied.startswith(f"Prompt: {PROMPT}") and all(f"[{n}]\n{a}" in copied for n, a in answers.items())
    page.boxes["test"].copy()
    assert QApplication.clipboard().text() == answers["test"]

    other = tmp_path / "other"
    other.mkdir()
    config = json.loads((trio[2] / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "meta-llama/Llama-3.1-8B"
    (other / "adapter_config.json").write_text(json.dumps(config))
    (other / "adapter_model.safetensors").write_bytes((trio[2] / "adapter_model.safetensors").read_bytes())
    page.add_paths([other])
    assert page.list.count() == 3 and "different base models" in page.message.text()

    page.evaluate_task(str(task_path), limit=6)
    qtbot.waitUntil(lambda: page.evaluation is not None or "failed" in page.eval_status.text(),
                    timeout=600_000)
    assert page.evaluation is not None, page.eval_status.text()
    assert page.eval_table.rowCount() == 4            # the base and three adapters
    assert page.disagree_table.rowCount() == page.evaluation["disagreements"]
    assert page.eval_button.isEnabled()

    out = tmp_path / "page.html"
    page.write_report(out)
    qtbot.waitUntil(out.exists, timeout=60_000)
    html = out.read_text(encoding="utf-8")
    for cls in ("similarity", "pairs", "answers", "spectra"):
        assert f'<table class="{cls}">' in html
    assert all(escape(a) in html for a in answers.values()) and escape(PROMPT) in html

    # filled, every part fits a laptop window and a large one: no sideways scroll, no cut button
    shots = os.environ.get("PEFT_STUDIO_SCREENSHOTS")
    area = next(a for a in page.findChildren(QScrollArea) if a.widget().isAncestorOf(page.chat_card))
    bad = {}
    for size in [(1024, 640), (1440, 900)]:
        window.resize(*size)
        for _ in range(5):
            QApplication.processEvents()
        for name, card in page.parts.items():
            area.verticalScrollBar().setValue(card.mapTo(area.widget(), QPoint(0, 0)).y() - 12)
            for _ in range(3):
                QApplication.processEvents()
            if problems := _layout_problems(page):
                bad[f"{name} {size}"] = problems
            if shots:
                folder = Path(shots) / "compare"
                folder.mkdir(parents=True, exist_ok=True)
                window.grab().save(str(folder / f"{name}-{size[0]}x{size[1]}.png"))
    assert not bad, bad

    # a source keeps its colour when another is removed
    page.list.setCurrentRow(0)
    page.remove_selected()
    assert [s.colour for s in page.sources] == [colour(1), colour(2)]
    assert page.chat_result is None and list(page.boxes) == [BASE, "test-r4", sources[2].name]
