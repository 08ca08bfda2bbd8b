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
    assert html.count("<svg") == 2 + 3 + 1          # 2 curves, 3 norm maps, 1 similarity map
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


def test_compare_page_shows_curves_settings_and_weights(qtbot, trio, tmp_path, task_path):
    from studio.compare.sources import colour
    from studio.ui.compare_page import ComparePage

    page = ComparePage()
    qtbot.addWidget(page)
    page.resize(1000, 600)
    page.show()
    page.add_paths(trio)
    qtbot.waitUntil(lambda: page.analysis is not None, timeout=120_000)
    assert page.list.count() == 3
    lines = [item for item in page.plot.getPlotItem().listDataItems() if item.name()]
    assert [item.name() for item in lines] == ["test", "test-r4"]
    assert [item.opts["pen"].color().name() for item in lines] == [colour(0).lower(), colour(1).lower()]
    diff = settings_diff(load_sources(trio))
    assert page.settings_table.rowCount() == len(diff) > 0
    assert [page.settings_table.item(r, 0).text() for r in range(len(diff))] == list(diff)
    assert page.similarity_table.rowCount() == 3
    assert [page.similarity_table.item(i, i + 1).text() for i in range(3)] == ["1.000"] * 3
    assert page.norm_combo.count() == 3 and page.heat_image.image.shape == (2, 30)

    other = tmp_path / "other"
    other.mkdir()
    config = json.loads((trio[2] / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "meta-llama/Llama-3.1-8B"
    (other / "adapter_config.json").write_text(json.dumps(config))
    page.add_paths([other])
    assert page.list.count() == 3 and "different base models" in page.message.text()

    page.evaluate_task(str(task_path), limit=6)
    qtbot.waitUntil(lambda: page.evaluation is not None or "failed" in page.eval_status.text(),
                    timeout=600_000)
    assert page.evaluation is not None, page.eval_status.text()
    assert page.eval_table.rowCount() == 4            # the base and three adapters
    assert page.disagree_table.rowCount() == page.evaluation["disagreements"]
    assert page.eval_button.isEnabled()

    # filled with three adapters and an evaluation it still fits the page area of a 1024x640
    # window (the sidebar takes the rest): no sideways scrolling, no button cut
    from PySide6.QtWidgets import QAbstractButton, QApplication, QScrollArea

    page.resize(800, 600)
    for _ in range(5):
        QApplication.processEvents()
    area = page.findChild(QScrollArea)
    assert area.horizontalScrollBar().maximum() == 0
    cut = [b.text() for b in page.findChildren(QAbstractButton)
           if b.isVisible() and b.text() and b.width() + 1 < b.sizeHint().width()]
    assert cut == []

    out = tmp_path / "page.html"
    page.write_report(out)
    qtbot.waitUntil(out.exists, timeout=60_000)
    html = out.read_text(encoding="utf-8")
    assert '<table class="similarity">' in html and '<table class="pairs">' in html
