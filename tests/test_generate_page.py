"""The Generate page, headless (pytest-qt, offscreen), on the real SmolLM2 model and sentence encoder.

A small real Text-to-LoRA hypernetwork is built for the shipped model's shapes (untrained but with
non-zero heads, so its LoRAs change the model) and installed as the "shipped" one in a temporary
resources folder; the page generates from a typed sentence, the adapter loads with plain peft,
the Runs and Chat pages pick it up. Without a hypernetwork the page says how to build one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from studio.ui import tasks  # noqa: E402

TIMEOUT = 180_000          # ms: first encoder load + model shapes on 2 busy cores


def _make_dnd(model_dir, out: Path) -> Path:
    import torch

    from studio.hyper.dnd import DnDConfig, DnDGenerator
    from studio.hyper.targets import LoraSpec

    spec = json.loads((out.parent / "t2l-smollm2-135m" / "hypernetwork.json").read_text())["spec"]
    torch.manual_seed(0)
    net = DnDGenerator(DnDConfig(spec=LoraSpec.from_dict(spec).to_dict(), n_prompts=4,
                                 max_tokens=16, stages=[[4, 8, 32]], latent=16))
    with torch.no_grad():
        for head in net.heads:
            head.weight.normal_(0, 0.05)
    net.save(out)
    return out


@pytest.fixture(scope="module")
def hypernet_root(model_dir, tmp_path_factory, make_t2l):
    root = tmp_path_factory.mktemp("hypernetworks")
    make_t2l(root / "t2l-smollm2-135m")
    (root / "t2l-smollm2-135m" / "tasks.json").write_text(json.dumps({"tasks": [
        {"name": "sports_understanding", "descriptions": ["Judge whether a sports sentence is plausible."]},
        {"name": "word_sorting", "descriptions": ["Sort a list of words alphabetically."]},
        {"name": "date_understanding", "descriptions": ["Answer questions about dates."]}]}))
    _make_dnd(model_dir, root / "dnd-smollm2-135m")
    return root


@pytest.fixture
def page_factory(qtbot, monkeypatch):
    from studio.hyper import api
    from studio.ui import app as studio_app

    def make(root: Path, window=None):
        monkeypatch.setattr(api, "shipped_dir", lambda: root)
        studio_app.create_app()
        from studio.ui.generate_page import GeneratePage

        page = GeneratePage(window)
        qtbot.addWidget(page)
        page.resize(1200, 1000)
        page.show()
        return page

    yield make
    tasks.wait_all(60_000)


def test_generate_from_a_sentence(qtbot, page_factory, hypernet_root, model_dir):
    page = page_factory(hypernet_root)
    qtbot.waitUntil(lambda: page.hypernetwork_dir() != "", timeout=TIMEOUT)
    assert page.generate_button.isEnabled()
    assert "shipped" in page.hypernet.currentText()
    qtbot.waitUntil(lambda: "head S" in page.hypernet_info.text(), timeout=TIMEOUT)
    page.description.setPlainText("Decide whether a sentence about sports is plausible.")
    assert page.generate()
    assert page.busy and not page.generate_button.isEnabled()   # work happens off the GUI thread
    qtbot.waitUntil(lambda: page.result is not None or bool(page.last_error), timeout=TIMEOUT)
    assert not page.last_error, page.last_error
    res = page.result
    assert page.result_card.isVisible() and "ms" in page.stats.values["ms"].text()
    assert res["ms"] > 0 and res["size_mb"] > 0
    # the page names the learned tasks closest to the sentence (the fixture network's tasks.json)
    assert page.nearest_label.isVisible() and "sports_understanding" in page.nearest_label.text()
    assert res["nearest"][0]["task"] == "sports_understanding"

    run_dir = Path(res["run_dir"])
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "finished" and status["method"] == "text_to_lora"
    from studio.core.runs import list_runs

    listed = {r.path: r for r in list_runs()}
    assert run_dir in listed and listed[run_dir].adapter_path == res["adapter_dir"]
    gen = json.loads((Path(res["adapter_dir"]) / "generated_by.json").read_text())
    assert gen["description"] == "Decide whether a sentence about sports is plausible."
    # "Evaluate on task…" opens the evaluation dialog on this adapter, results kept in the run
    assert page.eval_button.isVisible() and page.eval_button.isEnabled()
    dialog = page.evaluate()
    qtbot.addWidget(dialog)
    assert dialog.adapter.path() == res["adapter_dir"]
    assert dialog.model_path == page.model_path()
    from studio.ui.eval_dialog import results_folder

    assert results_folder(res["adapter_dir"]) == run_dir / "evals"
    dialog.close()

    # A standard adapter: plain peft loads it, and it changes the model's logits.
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    ids = torch.tensor([[1, 504, 3458, 314, 2656, 30]])
    with torch.no_grad():
        before = base(input_ids=ids).logits
        model = PeftModel.from_pretrained(base, res["adapter_dir"])
        after = model(input_ids=ids).logits
    assert (after - before).abs().max() > 1e-3


def test_dnd_from_example_prompts(qtbot, page_factory, hypernet_root):
    page = page_factory(hypernet_root)
    qtbot.waitUntil(lambda: page.hypernetwork_dir() != "", timeout=TIMEOUT)
    page.kind.set_value("dnd")
    assert page.prompts.isVisible() and not page.description.isVisible()
    assert Path(page.hypernetwork_dir()).name == "dnd-smollm2-135m"
    assert not page.generate()                          # no prompts yet
    assert "example inputs" in page.message.text()
    page.prompts.setPlainText("Is this plausible? Messi scored a touchdown.\n\n"
                              "Is this plausible? LeBron hit a three-pointer.\n")
    assert page.generate()
    qtbot.waitUntil(lambda: page.result is not None or bool(page.last_error), timeout=TIMEOUT)
    assert not page.last_error, page.last_error
    gen = json.loads((Path(page.result["adapter_dir"]) / "generated_by.json").read_text())
    assert gen["generator"] == "dnd" and len(gen["prompts"]) == 2     # blank line dropped
    status = json.loads((Path(page.result["run_dir"]) / "status.json").read_text())
    assert status["method"] == "dnd" and status["status"] == "finished"


def test_empty_sentence_is_refused(qtbot, page_factory, hypernet_root):
    page = page_factory(hypernet_root)
    qtbot.waitUntil(lambda: page.hypernetwork_dir() != "", timeout=TIMEOUT)
    page.description.setPlainText("   ")
    assert not page.generate()
    assert page.message.kind() == "error" and "sentence" in page.message.text()


def test_missing_hypernetwork_says_how_to_build_it(qtbot, page_factory, tmp_path):
    empty = tmp_path / "none"
    empty.mkdir()
    page = page_factory(empty)
    qtbot.waitUntil(lambda: page.message.kind() == "error", timeout=TIMEOUT)
    text = page.message.text()
    assert "No Text-to-LoRA hypernetwork is installed" in text
    assert "peft-studio hyper train" in text and "build-library" in text
    assert not page.generate_button.isEnabled()
    page.description.setPlainText("Classify sentiment.")
    assert not page.generate()
    page.kind.set_value("dnd")
    assert page.prompts.isVisible() and not page.description.isVisible()
    assert "No DnD hypernetwork" in page.message.text()


def test_open_in_chat_from_the_main_window(qtbot, monkeypatch, hypernet_root, model_dir):
    from studio.hyper import api
    from studio.ui import app as studio_app

    monkeypatch.setattr(api, "shipped_dir", lambda: hypernet_root)
    studio_app.create_app()
    window = studio_app.MainWindow(model_dir)
    qtbot.addWidget(window)
    window.show()
    page = window.pages["generate"]
    window.show_page("generate")
    qtbot.waitUntil(lambda: window.model_page.info is not None, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: page.hypernetwork_dir() != "", timeout=TIMEOUT)
    page.description.setPlainText("Answer questions about dates.")
    assert page.generate()
    qtbot.waitUntil(lambda: page.result is not None or bool(page.last_error), timeout=TIMEOUT)
    assert not page.last_error, page.last_error
    page.chat_button.click()
    assert window.stack.currentWidget() is window.chat_page
    assert window.chat_page.adapter_dir() == page.result["adapter_dir"]
    tasks.wait_all(60_000)


def _make_adapter_folder(model_dir, root: Path) -> Path:
    """Three task LoRAs (random, rank 2 on q/v) with a description.txt each: the documented
    'folder of PEFT adapters' layout."""
    import torch
    from peft import LoraConfig, get_peft_model

    from studio.core.models import load_model

    model, _ = load_model(model_dir)
    descriptions = {"sports": "Decide whether a sentence about sports is plausible.\nIs this sports claim plausible?",
                    "sentiment": "Classify the sentiment of a review as positive or negative.",
                    "dates": "Say which day of the week a date falls on."}
    for i, (name, text) in enumerate(descriptions.items()):
        torch.manual_seed(i)
        peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
        with torch.no_grad():
            for pname, p in peft_model.named_parameters():
                if "lora_B" in pname:
                    p.normal_(0, 0.02)
        peft_model.save_pretrained(str(root / name))
        (root / name / "description.txt").write_text(text + "\n")
        model = peft_model.unload()
    return root


def test_train_panel_refuses_a_bad_start_from_folder(qtbot, page_factory, hypernet_root, tmp_path,
                                                     model_dir):
    """Start from (SFT after recon) must be a saved network; checked before any process starts."""
    page = page_factory(hypernet_root)
    panel = page.train_panel
    panel.library.set_path(str(_make_adapter_folder(model_dir, tmp_path / "my_adapters")))
    panel.init_from.set_path(str(tmp_path / "not-a-network"))
    assert not panel.start() and panel.job is None
    assert panel.message.kind() == "error" and "not a saved hypernetwork" in panel.message.text()
    panel.kind.set_value("dnd")
    assert not panel.init_from.isEnabled()      # DnD has no Start from
    assert panel._options() == {}


@pytest.mark.slow          # ~2.5 min on 2 busy cores: child process, encoder load, 6 steps
def test_train_your_own_hypernetwork_in_a_worker_process(qtbot, page_factory, hypernet_root,
                                                         model_dir, tmp_path):
    library = _make_adapter_folder(model_dir, tmp_path / "my_adapters")
    page = page_factory(hypernet_root)
    panel = page.train_panel
    panel.library.set_path(str(tmp_path / "nowhere"))
    assert not panel.start()
    assert panel.message.kind() == "error" and "does not exist" in panel.message.text()
    panel.library.set_path(str(library))
    panel.steps.setValue(6)
    assert panel.start()
    assert panel.job.pid != __import__("os").getpid()        # a separate OS process
    qtbot.waitUntil(lambda: not panel.timer.isActive(), timeout=300_000)
    assert panel.job.terminal_event["event"] == "finished", panel.message.text()
    assert panel.curves.point_count("loss") == 6
    out = Path(panel.final["adapter_path"])
    assert (out / "hypernetwork.json").is_file() and (out / "hypernetwork.safetensors").is_file()
    from studio.core.runs import run_info

    assert run_info(panel.run_dir).status == "finished"
    assert panel.use_button.isVisible()
    panel.use_button.click()
    assert Path(page.hypernetwork_dir()) == out
