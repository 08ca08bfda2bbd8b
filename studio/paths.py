"""Where PEFT Studio keeps things on disk. No Qt, no torch."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"


def data_dir() -> Path:
    """User data folder: $PEFT_STUDIO_HOME, else $XDG_DATA_HOME/peft-studio, else ~/.local/share/peft-studio."""
    env = os.environ.get("PEFT_STUDIO_HOME")
    if env:
        path = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        path = Path(xdg) / "peft-studio"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sub(name: str) -> Path:
    path = data_dir() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    return _sub("runs")


def models_dir() -> Path:
    return _sub("models")


def user_plugins_dir() -> Path:
    return _sub("plugins")


def default_model_dir() -> Path:
    return models_dir() / DEFAULT_MODEL_NAME


def resources_dir() -> Path:
    return REPO_ROOT / "resources"


def builtin_plugins_dir() -> Path:
    return REPO_ROOT / "plugins"


def demo_data_path() -> Path:
    return resources_dir() / "demo" / "dates_train.jsonl"


def sample_tasks_dir() -> Path:
    """The BIG-bench sample tasks shipped for "Evaluate on a task" (resources/sample_tasks/<name>/)."""
    return resources_dir() / "sample_tasks"
