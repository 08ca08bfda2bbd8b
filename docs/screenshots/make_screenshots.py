"""Render every page of the PEFT Studio window offscreen into docs/screenshots/*.png.

    QT_QPA_PLATFORM=offscreen python docs/screenshots/make_screenshots.py [--steps 16] [--out DIR]

Uses the real default model and the demo data, and trains a real short LoRA run (CPU, a minute or
two) so the Train, Runs and Chat pages show live curves and real answers. Runs go to a temporary
PEFT_STUDIO_HOME; the models folder of the real one is linked in.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from studio import paths  # noqa: E402

HERE = Path(__file__).resolve().parent


def wait(app, condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.02)
    for _ in range(5):
        app.processEvents()


def grab(app, window, name: str, out: Path) -> None:
    for _ in range(10):
        app.processEvents()
        time.sleep(0.02)
    path = out / f"{name}.png"
    window.grab().save(str(path))
    print(f"wrote {path}")


METHOD_SHOTS = [
    ("lora", {}),
    ("lora_dash", {}),
    ("adalora", {}),
    ("prefix", {}),          # says it cannot be merged
    ("bitfit", {}),          # SmolLM2 has no biases: says so, offers alternatives
]


def _method_shots(app, window, out: Path) -> None:
    """The method panel (description, badges, notes, the generated form) for a few methods."""
    panel = window.train_page.method_panel
    wait(app, lambda: panel.facts is not None, 60, "model facts")
    size = window.size()
    window.resize(size.width(), 2400)        # tall enough that no form scrolls
    for method_id, values in METHOD_SHOTS:
        if method_id not in panel.plugins:
            print(f"skipped method-{method_id}: no such plugin")
            continue
        panel.set_method(method_id, values or None)
        if panel.form.advanced_toggle is not None:
            panel.form.advanced_toggle.setChecked(True)
        for _ in range(10):
            app.processEvents()
            time.sleep(0.02)
        path = out / f"method-{method_id}.png"
        panel.grab().save(str(path))
        print(f"wrote {path}")
    window.resize(size)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--out", default=str(HERE))
    parser.add_argument("--skip-run", action="store_true", help="only the pages that need no training")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    models = paths.models_dir()
    home = Path(tempfile.mkdtemp(prefix="peft-studio-shots-"))
    (home / "models").symlink_to(models, target_is_directory=True)
    os.environ["PEFT_STUDIO_HOME"] = str(home)
    try:
        return _shoot(args, out)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _shoot(args, out: Path) -> int:
    from studio.core.models import ensure_default_model
    from studio.ui import app as studio_app
    from studio.ui import tasks

    ensure_default_model(log=print)
    app = studio_app.create_app()
    window = studio_app.MainWindow()
    window.resize(1440, 900)
    window.show()
    wait(app, lambda: window.model_page.info is not None, 120, "model info")
    wait(app, lambda: window.data_page.result is not None and window.data_page.result.get("stats"), 180,
         "data preview")
    wait(app, lambda: window.train_page.method_panel.plugins, 180, "plugins")

    window.show_page("model")
    grab(app, window, "model", out)
    window.show_page("data")
    window.data_page.show_example(0)
    grab(app, window, "data", out)

    train = window.train_page
    window.show_page("train")
    train.method_panel.set_method("lora", {"r": 8, "lora_alpha": 16})
    train.training_form.set_values({"max_steps": args.steps, "batch_size": 2, "eval_every": 8,
                                    "save_every": 8, "warmup_steps": 2, "learning_rate": 2e-3})
    window.data_page.max_length.setValue(64)
    window.show_page("train")
    grab(app, window, "train-idle", out)

    if not args.skip_run:
        assert train.start(), train.message.text()
        lora_run = train.run_dir
        wait(app, lambda: train.step >= max(3, args.steps // 2), 1800, "half of the run")
        grab(app, window, "train-running", out)
        wait(app, lambda: train.state in ("finished", "failed", "cancelled"), 1800, "the run to end")
        if train.state != "finished":
            print(f"run ended {train.state}: {train.message.text()}")
        grab(app, window, "train", out)

        # a second run, cancelled early, so the Runs page shows more than one state
        train.method_panel.set_method("dora")
        train.training_form.set_values({"name": "dora-dates"})
        assert train.start(), train.message.text()
        wait(app, lambda: train.step >= 2, 900, "two DoRA steps")
        train.cancel()
        wait(app, lambda: train.state in ("cancelled", "failed"), 900, "the DoRA run to stop")

        window.show_page("runs")
        wait(app, lambda: not window.runs_page.is_loading() and len(window.runs_page.runs) >= 2, 60, "runs")
        runs_page = window.runs_page
        runs_page.select_run(lora_run)
        try:
            wait(app, lambda: runs_page.curves.point_count("loss") > 0, 60, "run curves")
        except TimeoutError:
            print("runs:", [(r.name, r.status, str(r.path)) for r in runs_page.runs],
                  "selected:", runs_page.selected, "lora run:", lora_run, "busy tasks:", tasks.busy())
            raise
        grab(app, window, "runs", out)

        adapter = window.runs_page.adapter_dir(window.runs_page.selected)
        if adapter:
            window._chat_with(adapter)
            chat = window.chat_page
            chat.max_new_tokens.setValue(40)
            for prompt in ("Rewrite this date as YYYY-MM-DD: 14 March 2021",
                           "Rewrite this date as YYYY-MM-DD: the 2nd of July, 1999"):
                chat.prompt.setPlainText(prompt)
                chat.send()
                wait(app, lambda: not chat.busy, 600, "chat answers")
            chat.prompt.clear()
            grab(app, window, "chat", out)

    window.show_page("train")
    _method_shots(app, window, out)

    # An invalid model folder: the inline error, not a traceback.
    window.show_page("model")
    window.model_page.set_model_path(str(Path(paths.resources_dir()) / "demo"))
    wait(app, lambda: not window.model_page.is_loading(), 60, "model check")
    grab(app, window, "model-invalid", out)

    window.close()
    tasks.wait_all(60000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
