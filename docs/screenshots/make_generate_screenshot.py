"""Render the Generate page offscreen into docs/screenshots/generate*.png.

    QT_QPA_PLATFORM=offscreen python docs/screenshots/make_generate_screenshot.py [--library DIR --steps N]

Uses the shipped Text-to-LoRA hypernetwork (resources/hypernetworks/); when none is shipped it
says so and renders with a small untrained one built for the default model's shapes, so the
picture shows the page, not a trained result. With --library it also trains a hypernetwork on
that folder of adapters in the background (the real worker process) to show the live curves.
Runs go to a temporary PEFT_STUDIO_HOME.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from make_screenshots import grab, wait  # noqa: E402

from studio import paths  # noqa: E402

HERE = Path(__file__).resolve().parent


def _fallback_hypernetwork(root: Path) -> Path:
    import torch

    from studio.core.models import load_model
    from studio.hyper.targets import spec_from_model
    from studio.hyper.text_to_lora import T2LConfig, TextToLoRA

    model, _ = load_model(paths.default_model_dir())
    spec = spec_from_model(model, r=4, alpha=8.0, base_model=str(paths.default_model_dir()))
    torch.manual_seed(0)
    TextToLoRA(T2LConfig(spec=spec.to_dict(), head="S")).save(root / "t2l-smollm2-135m")
    return root


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE))
    parser.add_argument("--library", help="folder of task adapters to train a hypernetwork on")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    out = Path(args.out)
    models = paths.models_dir()
    home = Path(tempfile.mkdtemp(prefix="peft-studio-shots-"))
    (home / "models").symlink_to(models, target_is_directory=True)
    os.environ["PEFT_STUDIO_HOME"] = str(home)
    try:
        return _shoot(args, out, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _shoot(args, out: Path, home: Path) -> int:
    from studio.hyper import api
    from studio.ui import app as studio_app

    app = studio_app.create_app()
    shipped = api.shipped_hypernetworks()
    real_dir = api.shipped_dir

    api.shipped_dir = lambda: home / "none"          # first: the page without a hypernetwork
    window = studio_app.MainWindow()
    window.resize(1440, 1000)
    window.show()
    page = window.pages["generate"]
    window.show_page("generate")
    wait(app, lambda: page.message.kind() == "error", 60, "missing message")
    grab(app, window, "generate-missing", out)
    window.close()

    if not any(h["kind"] == "t2l" for h in shipped):
        print("no shipped Text-to-LoRA hypernetwork: using an untrained one for the picture")
        api.shipped_dir = lambda: _fallback_hypernetwork(home / "hn")
    else:
        api.shipped_dir = real_dir
    window = studio_app.MainWindow()
    window.resize(1440, 1000)
    window.show()
    page = window.pages["generate"]
    window.show_page("generate")
    wait(app, lambda: window.model_page.info is not None, 120, "model info")
    wait(app, lambda: page.hypernetwork_dir() != "", 120, "hypernetworks")
    page.description.setPlainText("Decide whether a sentence about sports is plausible.")
    page.generate()
    wait(app, lambda: not page.busy, 300, "generation")
    if args.library:
        panel = page.train_panel
        panel.library.set_path(args.library)
        panel.steps.setValue(args.steps)
        panel.start()
        wait(app, lambda: not panel.timer.isActive(), 1800, "hypernetwork training")
    wait(app, lambda: page.hypernet_info.text() != "", 60, "hypernetwork info")
    grab(app, window, "generate", out)
    if args.library:
        from PySide6.QtWidgets import QScrollArea

        area = page.findChild(QScrollArea)
        area.verticalScrollBar().setValue(panel.mapTo(area.widget(), panel.rect().topLeft()).y())
        grab(app, window, "generate-train-form", out)
        area.verticalScrollBar().setValue(area.verticalScrollBar().maximum())
        grab(app, window, "generate-train", out)
    window.close()
    from studio.ui import tasks

    tasks.wait_all(60000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
