"""The desktop window, driven headless (pytest-qt, QT_QPA_PLATFORM=offscreen) on the real shipped
SmolLM2-135M-Instruct and the demo data.

Training runs here are real: the Train page starts `studio.worker.child` as a separate OS process
(tiny settings: 30 steps of 64-token examples), and the tests pause, resume, cancel and SIGKILL it.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QApplication, QSpinBox  # noqa: E402

from studio.ui import tasks  # noqa: E402

RUN_TIMEOUT = 600_000           # ms: a training process on 2 busy CPU cores
TINY = {"max_steps": 30, "batch_size": 2, "grad_accum": 1, "warmup_steps": 2, "eval_every": 0,
        "save_every": 0, "learning_rate": 1e-3, "log_every": 1}


def _tiny_setup(window, eval_fraction: float = 0.1, **overrides) -> None:
    page = window.train_page
    page.method_panel.set_method("lora", {"r": 4, "lora_alpha": 8})
    assert not page.training_form.set_values({**TINY, **overrides})
    window.data_page.max_length.setValue(64)
    window.data_page.eval_fraction.setValue(eval_fraction)


def _start(qtbot, window, name: str) -> Path:
    page = window.train_page
    page.training_form.set_values({"name": name})
    window.show_page("train")
    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    assert page.job is not None, page.message.text()
    assert page.job.pid and page.job.pid != os.getpid()       # a separate OS process
    cmdline = Path(f"/proc/{page.job.pid}/cmdline").read_bytes().split(b"\0")
    assert b"studio.worker.child" in cmdline
    return page.run_dir


# ---- the window ----------------------------------------------------------------------------------

def test_window_opens_on_default_model_and_demo_data(window, model_dir, demo_train_path):
    assert window.model_page.model_path() == str(model_dir)
    assert window.model_page.info.num_layers == 30
    assert window.model_page.status_badge.text() == "ready"
    assert window.data_page.settings()["path"] == str(demo_train_path)
    assert window.data_page.result["count"] > 50
    assert window.train_page.method_panel.method_id() == "lora"
    for key in window.pages:                       # every page shows without error
        window.show_page(key)
        assert window.stack.currentWidget() is window.pages[key]
        assert window.sidebar.buttons[key].isChecked()
    assert "SmolLM2" in window.sidebar.footer.text()


# ---- training as a background process --------------------------------------------------------------

def test_train_pause_resume_cancel_then_restart_lists_run(qtbot, make_window):
    window = make_window()
    page = window.train_page
    _tiny_setup(window)
    run_dir = _start(qtbot, window, "gui-lifecycle")
    assert (run_dir / "recipe.toml").is_file()
    qtbot.waitUntil(lambda: page.curves.point_count("loss") >= 1, timeout=RUN_TIMEOUT)
    assert page.state == "running"
    assert page.curves.point_count("lr") >= 1 and page.curves.point_count("tokens_per_s") >= 1
    assert page.progress.maximum() == 30

    qtbot.mouseClick(page.pause_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.state == "paused", timeout=RUN_TIMEOUT)
    assert page.state_badge.text() == "paused"
    assert page.resume_button.isEnabled() and not page.pause_button.isEnabled()
    paused_points = page.curves.point_count("loss")
    qtbot.wait(1500)
    assert page.curves.point_count("loss") == paused_points         # paused means no more steps
    assert page.job.is_alive()

    qtbot.mouseClick(page.resume_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.curves.point_count("loss") > paused_points, timeout=RUN_TIMEOUT)
    assert page.state == "running"

    qtbot.mouseClick(page.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.state == "cancelled", timeout=RUN_TIMEOUT)
    assert page.job.wait(30) == 0
    cancelled = [e for e in _events(run_dir) if e["event"] == "cancelled"]
    assert cancelled and cancelled[0]["checkpoint"], "cancel must leave a checkpoint"
    checkpoint = Path(cancelled[0]["checkpoint"])
    assert checkpoint.is_dir() and any(checkpoint.iterdir())
    assert "Checkpoint" in page.status_line.text()
    assert page.start_button.isEnabled()

    # "restart": a fresh window finds the run in the run folders
    window.close()
    second = make_window()
    second.show_page("runs")
    runs_page = second.runs_page
    qtbot.waitUntil(lambda: any(Path(r.path) == run_dir for r in runs_page.runs), timeout=30_000)
    run = next(r for r in runs_page.runs if Path(r.path) == run_dir)
    assert run.status == "cancelled" and run.step >= paused_points
    assert runs_page.table.rowCount() == len(runs_page.runs)
    assert runs_page.select_run(run_dir)
    qtbot.waitUntil(lambda: runs_page.curves.point_count("loss") >= paused_points, timeout=30_000)
    assert runs_page.resume_button.isEnabled()            # a checkpoint to continue from
    assert runs_page.resume_button.isVisible() and runs_page.chat_button.isVisible()

    # Resume from the Runs page: the same run folder continues after its checkpoint step
    stopped_at = run.step
    qtbot.mouseClick(runs_page.resume_button, Qt.MouseButton.LeftButton)
    train = second.train_page
    assert second.stack.currentWidget() is train and train.run_dir == run_dir
    assert train.curves.point_count("loss") >= paused_points        # the history is kept
    qtbot.waitUntil(lambda: train.curves.data["loss"][0] and train.curves.data["loss"][0][-1] > stopped_at,
                    timeout=RUN_TIMEOUT)
    started = [e for e in _events(run_dir) if e["event"] == "started"]
    assert len(started) == 2 and started[1].get("resumed_from") == stopped_at
    qtbot.mouseClick(train.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: train.state == "cancelled", timeout=RUN_TIMEOUT)


def _events(run_dir: Path) -> list[dict]:
    lines = (Path(run_dir) / "events.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_killed_worker_leaves_gui_responsive_and_run_failed(qtbot, window):
    page = window.train_page
    _tiny_setup(window)
    run_dir = _start(qtbot, window, "gui-killed")
    qtbot.waitUntil(lambda: page.curves.point_count("loss") >= 1, timeout=RUN_TIMEOUT)
    os.kill(page.job.pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: page.state == "failed", timeout=60_000)
    assert page.message.isVisible()
    assert "SIGKILL" in page.message.text()                   # the cause
    assert page.log_tail.isVisible() and page.log_tail.toPlainText().strip()   # the log tail
    assert page.start_button.isEnabled()
    # the window still works: pages switch, forms edit, background tasks come back
    window.show_page("model")
    window.show_page("train")
    page.training_form.set_values({"max_steps": 7})
    assert page.training_form.values()["max_steps"] == 7
    window.data_page.refresh()
    qtbot.waitUntil(lambda: not window.data_page.is_loading(), timeout=30_000)
    # and the run folder says failed, with the cause, for the Runs page and the CLI
    window.show_page("runs")
    qtbot.waitUntil(lambda: any(Path(r.path) == run_dir for r in window.runs_page.runs), timeout=30_000)
    run = next(r for r in window.runs_page.runs if Path(r.path) == run_dir)
    assert run.status.startswith("failed") and "SIGKILL" in run.cause
    # a SIGKILL may be the system's out-of-memory killer (the cause says so), and an
    # out-of-memory exception (the cause the worker writes for one) certainly is: both offer
    # "Retry with gradient checkpointing"; one click starts the same settings as a new run
    # with checkpointing on.
    window.show_page("train")
    assert page.retry_checkpointing.isVisible()
    page._set_state("idle")
    assert not page.retry_checkpointing.isVisible()
    from studio.core import events as core_events
    from studio.worker.child import describe_failure

    cause, _ = describe_failure(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    page._handle(core_events.failed(cause, ""))
    assert page.retry_checkpointing.isVisible() and "gradient_checkpointing" in page.message.text()
    qtbot.mouseClick(page.retry_checkpointing, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.state in ("starting", "running"), timeout=RUN_TIMEOUT)
    assert page.run_dir != run_dir and not page.retry_checkpointing.isVisible()
    from studio.core.runs import load_recipe

    assert load_recipe(page.run_dir).training.gradient_checkpointing is True
    qtbot.mouseClick(page.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.state in ("cancelled", "finished", "failed"), timeout=RUN_TIMEOUT)


# ---- the Model and Data pages -----------------------------------------------------------------------

def test_bogus_model_folder_gives_clear_message(qtbot, window, tmp_path):
    page = window.model_page
    window.show_page("model")
    bogus = tmp_path / "not-a-model"
    bogus.mkdir()
    (bogus / "notes.txt").write_text("hello")
    page.picker.set_path(str(bogus))
    qtbot.waitUntil(lambda: not page.is_loading(), timeout=30_000)
    text = page.error.text()
    assert page.error.isVisible() and str(bogus) in text and "config.json" in text
    assert "Traceback" not in text and page.info is None
    assert page.status_badge.text() == "not usable"

    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    config = json.loads((Path(_default(window)) / "config.json").read_text())
    (no_tokenizer / "config.json").write_text(json.dumps(config))
    page.set_model_path(str(no_tokenizer))
    qtbot.waitUntil(lambda: not page.is_loading(), timeout=30_000)
    assert "tokenizer" in page.error.text().lower() and "Traceback" not in page.error.text()

    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps(
        {"model_type": "bert", "architectures": ["BertForSequenceClassification"]}))
    page.set_model_path(str(encoder))
    qtbot.waitUntil(lambda: not page.is_loading(), timeout=30_000)
    assert "not a causal language model" in page.error.text(), page.error.text()

    page.set_model_path(_default(window))              # back to a good model: the message goes
    qtbot.waitUntil(lambda: page.info is not None, timeout=30_000)
    assert not page.error.isVisible()


def _default(window) -> str:
    from studio import paths

    return str(paths.default_model_dir())


def test_malformed_data_file_names_file_and_line(qtbot, window, tmp_path):
    bad = tmp_path / "broken.jsonl"
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    bad.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n{\"messages\": [oops\n", encoding="utf-8")
    page = window.data_page
    window.show_page("data")
    page.set_data_path(bad)
    qtbot.waitUntil(lambda: not page.is_loading(), timeout=30_000)
    text = page.error.text()
    assert page.error.isVisible() and str(bad) in text and "line 3" in text, text
    assert "Traceback" not in text
    assert page.count_badge.text() == "not usable"


def test_data_preview_marks_trained_tokens(window):
    page = window.data_page
    previews = page.result["previews"]
    assert previews
    first = previews[0]
    trained = "".join(text for text, is_trained in first if is_trained)
    untrained = "".join(text for text, is_trained in first if not is_trained)
    assert trained.strip() and untrained.strip()
    from studio.core.data import load_examples

    example = load_examples(page.settings()["path"])[0]
    reply = next(m["content"] for m in example.messages if m["role"] == "assistant")
    question = next(m["content"] for m in example.messages if m["role"] == "user")
    assert reply.strip() in trained and question.strip() in untrained
    shown = page.preview.toHtml()
    assert "#173b30" in shown                       # the trained-token highlight
    assert page.stats.values["count"].text() == f"{page.result['count']:,}"


# ---- the method panel ---------------------------------------------------------------------------------

def test_every_plugin_form_renders_and_refuses_bad_values(qtbot, window):
    from PySide6.QtWidgets import QComboBox, QDoubleSpinBox

    panel = window.train_page.method_panel
    assert len(panel.plugins) >= 20
    for plugin_id, plugin in panel.plugins.items():
        panel.set_method(plugin_id)
        assert panel.method_id() == plugin_id
        form = panel.form
        assert set(form.editors) == set(plugin.parameters), plugin_id
        assert panel.description.text() == plugin.description
        assert panel.origin.text() == f"Loaded from: {plugin.origin}"     # where its code is
        assert plugin.validate(form.values()) == plugin.validate(plugin.defaults()), plugin_id
        for name, spec in plugin.parameters.items():
            editor = form.editors[name]
            if "enum" in spec:
                assert isinstance(editor, QComboBox)
                before = form.values()[name]
                bogus = "no-such-choice" if spec["type"] == "string" else max(spec["enum"]) + 1
                problems = form.set_values({name: bogus})
                assert problems and "not one of the choices" in form.message.text(), (plugin_id, name)
                assert form.values()[name] == before
            elif spec["type"] in ("integer", "number") and "maximum" in spec:
                assert isinstance(editor, (QSpinBox, QDoubleSpinBox))
                before = form.values()[name]
                too_big = spec["maximum"] * 2 + 1
                problems = form.set_values({name: too_big})
                assert problems and "out of range" in form.message.text(), (plugin_id, name)
                assert form.values()[name] == before
                assert bool(editor.property("invalid"))
            form.clear_errors()
    # the built-in plugins all load: nothing is reported as skipped
    assert panel.problems == [] and not panel.problems_message.isVisibleTo(panel)


def test_typed_out_of_range_value_is_refused_with_message(qtbot, window):
    panel = window.train_page.method_panel
    panel.set_method("lora")
    rank = panel.form.editors["r"]
    maximum = rank.maximum()
    rank.lineEdit().selectAll()
    qtbot.keyClicks(rank.lineEdit(), str(maximum * 10))
    assert "out of range" in panel.form.message.text()
    assert bool(rank.property("invalid"))
    rank.clearFocus()
    rank.interpretText()
    assert rank.value() <= maximum


def test_bad_recipe_value_is_refused_at_start(qtbot, window):
    page = window.train_page
    runs_before = _run_count()
    page.training_form.set_values({"max_steps": 0, "epochs": 0})
    window.show_page("train")
    assert not page.start()
    assert page.job is None and _run_count() == runs_before
    assert page.training_form.message.isVisible()
    assert "no length" in page.training_form.message.text()
    assert bool(page.training_form.editors["max_steps"].property("invalid"))


def _run_count() -> int:
    from studio import paths

    return len(list(paths.runs_dir().glob("*"))) if paths.runs_dir().is_dir() else 0


def test_prompt_methods_say_they_cannot_merge(window):
    panel = window.train_page.method_panel
    window.show_page("train")
    for plugin_id in ("prefix", "prompt", "ptuning"):
        panel.set_method(plugin_id)
        assert panel.note.isVisible()
        assert "cannot be merged" in panel.note.text() and "adapter only" in panel.note.text()
        badges = [panel.badges.itemAt(i).widget() for i in range(panel.badges.count())]
        assert "adapter-only" in [b.text() for b in badges if b is not None]
    panel.set_method("lora")
    assert not panel.note.isVisible()


def test_bitfit_without_biases_says_so_and_offers_alternatives(qtbot, window):
    page = window.train_page
    panel = page.method_panel
    window.show_page("train")
    qtbot.waitUntil(lambda: panel.facts is not None, timeout=30_000)
    assert panel.facts["bias"] == 0 and panel.facts["norm"] > 0     # SmolLM2 (Llama) has no biases
    panel.set_method("bitfit")
    text = panel.warning.text()
    assert panel.warning.isVisible() and "no bias terms" in text
    assert "IA3" in text and "LoRA" in text and "norm" in text
    runs_before = _run_count()
    assert not page.start()                                         # refused, not a doomed run
    assert page.job is None and _run_count() == runs_before
    assert "no bias terms" in page.message.text()
    norms = panel.findChild(type(page.start_button), "warning_bitfit_norms")
    qtbot.mouseClick(norms, Qt.MouseButton.LeftButton)
    assert panel.values()["include_norms"] is True
    assert not panel.warning.isVisible()
    panel.set_method("bitfit", {"include_norms": False})
    assert panel.warning.isVisible()
    ia3 = panel.findChild(type(page.start_button), "warning_ia3")
    qtbot.mouseClick(ia3, Qt.MouseButton.LeftButton)
    assert panel.method_id() == "ia3" and not panel.warning.isVisible()


# ---- chat ---------------------------------------------------------------------------------------------

def test_chat_answers_with_base_and_adapter_side_by_side(qtbot, window):
    page = window.train_page
    _tiny_setup(window, eval_fraction=0.0, max_steps=4, learning_rate=4e-3, warmup_steps=0)
    run_dir = _start(qtbot, window, "gui-chat")
    qtbot.waitUntil(lambda: page.state in ("finished", "failed"), timeout=RUN_TIMEOUT)
    assert page.state == "finished", page.message.text() + page.log_tail.toPlainText()
    adapter = run_dir / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    # the finished run offers what to do next; the status bar says what is loaded
    assert all(b.isVisible() for b in page.next_buttons.values())
    assert "SmolLM2" in window.status_model.text() and "dates_train" in window.status_data.text()
    qtbot.mouseClick(page.next_buttons["chat"], Qt.MouseButton.LeftButton)
    assert window.stack.currentWidget() is window.chat_page
    assert Path(window.chat_page.adapter_dir()) == adapter

    window.show_page("runs")
    runs = window.runs_page
    qtbot.waitUntil(lambda: any(Path(r.path) == run_dir for r in runs.runs), timeout=30_000)
    runs.select_run(run_dir)
    qtbot.waitUntil(lambda: runs.chat_button.isEnabled(), timeout=10_000)
    assert runs.chat_button.isVisible()
    # the run's settings are shown, and can be cloned into the Train page
    qtbot.waitUntil(lambda: "lora:" in runs.settings_line.text(), timeout=30_000)
    assert "r=4" in runs.settings_line.text() and "dates_train" in runs.settings_line.text()
    qtbot.mouseClick(runs.clone_button, Qt.MouseButton.LeftButton)
    assert window.stack.currentWidget() is page
    assert page.training_form.values()["name"] == "gui-chat-2"
    assert page.method_panel.method_id() == "lora" and page.method_panel.values()["r"] == 4
    window.show_page("runs")
    runs.select_run(run_dir)
    qtbot.waitUntil(lambda: runs.compare_button.isEnabled(), timeout=10_000)
    qtbot.mouseClick(runs.compare_button, Qt.MouseButton.LeftButton)   # the run on the Compare page
    assert window.stack.currentWidget() is window.pages["compare"]
    assert [Path(s.adapter_dir) for s in window.pages["compare"].sources] == [adapter]
    window.show_page("runs")
    runs.select_run(run_dir)
    qtbot.mouseClick(runs.chat_button, Qt.MouseButton.LeftButton)
    chat = window.chat_page
    assert window.stack.currentWidget() is chat
    assert Path(chat.adapter_dir()) == adapter
    chat.max_new_tokens.setValue(16)
    prompt = "What day of the week was 14 March 2021?"
    chat.prompt.setPlainText(prompt)
    qtbot.mouseClick(chat.send_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not chat.busy, timeout=RUN_TIMEOUT)
    assert not chat.message.isVisible(), chat.message.text()
    base, tuned = chat.base_pane.last_answer(), chat.adapter_pane.last_answer()
    assert base and tuned
    assert prompt in chat.base_pane.view.toPlainText() and prompt in chat.adapter_pane.view.toPlainText()

    from studio.core import chat as core_chat

    model, tokenizer = core_chat.load_for_chat(window.model_page.model_path(), str(adapter))
    expected = core_chat.compare_answers(model, tokenizer, prompt, 16, 0.0)
    assert (base, tuned) == (expected["base"], expected["adapter"])   # greedy: the very same answers
    assert chat.prompt.toPlainText() == ""                              # ready for the next turn

    # a second turn is sent with each side's own history, through the template, with the system prompt
    chat.system.setText("Answer briefly.")
    follow_up = "And the day after?"
    chat.prompt.setPlainText(follow_up)
    qtbot.mouseClick(chat.send_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not chat.busy, timeout=RUN_TIMEOUT)
    sent = chat.last_request["adapter"]
    assert sent == [{"role": "system", "content": "Answer briefly."},
                    {"role": "user", "content": prompt}, {"role": "assistant", "content": tuned},
                    {"role": "user", "content": follow_up}]
    assert chat.last_request["base"][2] == {"role": "assistant", "content": base}
    expected = core_chat.reply(model, tokenizer, sent, chat.sampling())
    assert chat.adapter_pane.last_answer() == expected["text"]
    assert "tokens/s" in chat.adapter_pane.view.toPlainText()
    assert len(chat.adapter_pane.history()) == 4

    # another adapter: the conversation held with the old one is not shown under the new name
    chat.set_adapter(str(run_dir / "checkpoints"))
    assert chat.base_pane.turns == [] and chat.adapter_pane.turns == []
    QApplication.processEvents()


def test_curves_show_points_within_view(qtbot):
    """Points reach the charts and the view follows them (not stuck on the empty 0..1 frame)."""
    from studio.ui import app as studio_app
    from studio.ui.curves import CurvesPanel

    studio_app.create_app()
    panel = CurvesPanel()
    qtbot.addWidget(panel)
    panel.resize(900, 500)
    panel.show()
    logs = [{"event": "log", "step": s, "loss": 3.0 / s, "lr": 1e-4 * s, "grad_norm": 2.0,
             "tokens_per_s": 500.0 + s, "memory_mb": 1300.0} for s in range(1, 41)]
    panel.add_events(logs[:1])
    panel.add_events(logs[1:] + [{"event": "eval", "step": 20, "eval_loss": 0.4}])
    qtbot.wait(50)
    assert panel.point_count("loss") == 40 and panel.point_count("eval_loss") == 1
    chart = panel.charts["loss"]
    (x0, x1), (y0, y1) = chart.plot.getPlotItem().vb.viewRange()
    assert x0 <= 1 and x1 >= 40 and y0 <= 3.0 / 40 and y1 >= 3.0
    assert not chart.placeholder.isVisible()
    assert chart.value_labels["loss"].text() == f"{3.0 / 40:.4f}"
    panel.clear()
    assert chart.placeholder.isVisible()


def test_qt_signals_keep_reference_counts():
    """PySide6 6.12.0 decrements True's reference count on every Signal.emit from Python, so a
    long-running window aborts with "bool_dealloc" (pyqtgraph emits on every curve update).
    pyproject.toml excludes that release; this catches it coming back."""
    import sys

    from PySide6.QtCore import QObject, Signal

    class Emitter(QObject):
        changed = Signal(object)

    emitter = Emitter()
    received = []
    emitter.changed.connect(received.append)
    before = sys.getrefcount(True)
    for _ in range(50):
        emitter.changed.emit(1)
    assert len(received) == 50
    assert sys.getrefcount(True) - before > -25, "this PySide6 leaks references on Signal.emit"


def test_runs_page_curves_follow_a_selected_run(qtbot, model_dir, demo_train_path):
    """A run selected while it trains keeps its curves current on later refreshes (run folders
    written through the same RunLog the training process uses)."""
    from studio.core.recipe import DataSection, MethodSection, ModelSection, Recipe
    from studio.core.runs import RunLog, create_run
    from studio.ui import app as studio_app
    from studio.ui.runs_page import RunsPage
    from studio.core import events

    studio_app.create_app()
    recipe = Recipe(name="follow-me", model=ModelSection(path=str(model_dir)),
                    data=DataSection(path=str(demo_train_path)), method=MethodSection(id="lora"))
    run_dir = create_run(recipe)
    log = RunLog(run_dir)
    log.append(events.started(str(run_dir), 10, 100, 1000))
    log.append(events.log(1, 0.1, 2.0, 1e-4, 1.0, 100.0, 1000.0, 9.0))
    page = RunsPage()
    qtbot.addWidget(page)
    page.show()
    page.refresh()
    qtbot.waitUntil(lambda: any(r.path == run_dir for r in page.runs), timeout=30_000)
    page.select_run(run_dir)
    qtbot.waitUntil(lambda: page.curves.point_count("loss") == 1, timeout=30_000)
    for step in range(2, 6):
        log.append(events.log(step, 0.1, 2.0 / step, 1e-4, 1.0, 100.0, 1000.0, 9.0))
    page.refresh()
    qtbot.waitUntil(lambda: page.curves.point_count("loss") == 5, timeout=30_000)
    tasks.wait_all(30_000)


def test_every_icon_is_valid_svg(qtbot):
    """An invalid SVG (e.g. a repeated attribute) renders as an empty gap next to a button's text."""
    from PySide6.QtSvg import QSvgRenderer

    from studio import paths

    icons = sorted((paths.resources_dir() / "icons").glob("*.svg"))
    assert icons
    bad = [p.name for p in icons if not QSvgRenderer(str(p)).isValid()]
    assert not bad, bad


def test_training_form_renders_the_recipe_schema(window):
    """The Train page's Training form is the recipe's [training] schema itself, not a copy."""
    from studio.core.recipe import RUN_NAME_SPEC, TRAINING_SCHEMA
    from studio.ui.method_panel import TRAINING_FORM

    form = window.train_page.training_form
    assert form.parameters is TRAINING_FORM and TRAINING_FORM["name"] is RUN_NAME_SPEC
    assert set(form.editors) == {"name", *TRAINING_SCHEMA}
    for key, spec in TRAINING_SCHEMA.items():
        assert form.parameters[key] is spec, key


def test_train_page_estimates_time_from_this_machines_last_run(qtbot, window, model_dir, tmp_path,
                                                                demo_train_path, demo_eval_path):
    """Before a run: 'Estimate: about N for S steps ...' from the newest finished run on the same
    model (its tokens/s and memory), never an invented speed."""
    from conftest import small_recipe
    from studio import cli
    from studio.core.estimate import last_measurement

    page = window.train_page
    model_name = Path(window.model_page.model_path()).name
    recipe = small_recipe(Path(window.model_page.model_path()), tmp_path, demo_train_path,
                          demo_eval_path, n_train=8, n_eval=2, steps=2)
    recipe.name = "estimate-source"
    recipe.save(recipe.source)
    assert cli.main(["train", str(recipe.source)]) == 0
    measured = last_measurement(model_name)
    assert measured is not None and measured.run == "estimate-source" and measured.tokens_per_s > 0
    page.training_form.set_values({"max_steps": 50})
    page.update_estimate()
    text = page.estimate.text()
    assert text.startswith("Estimate: about") and "50 steps" in text and "estimate-source" in text
    assert f"{measured.tokens_per_s:,.0f} tokens/s" in text
    # the modelled memory for the longest batch against this machine's free RAM
    assert "Memory (model): about" in text and "free on cpu" in text and "it fits" in text
    # another model with no run of its own: the speed scaled by the parameter counts
    other = last_measurement("some-other-model", any_model=True)
    assert other.run == "estimate-source" and other.params > 100_000_000
    from studio.core.estimate import estimate_text

    tokens = 20 * other.tokens_per_s               # 20 s per step at the measured speed
    same = estimate_text(1, tokens, other, True, "some-other-model", other.params)
    scaled = estimate_text(1, tokens, other, True, "some-other-model", other.params * 2)
    assert scaled.startswith("Estimate: roughly") and "scaled from" in scaled
    assert human_seconds(same) == 20 and human_seconds(scaled) == 40   # twice the parameters


def human_seconds(text: str) -> float:
    import re

    n, unit = re.search(r"roughly ([0-9.]+) (s|min|h)", text).groups()
    return float(n) * {"s": 1, "min": 60, "h": 3600}[unit]


def test_memory_line_says_what_the_run_will_do():
    """The Train page's memory line: fits / auto checkpointing will turn on / may not fit /
    checked at start, from the model estimate and the free memory given."""
    from studio.core.estimate import memory_text
    from studio.core.models import ModelInfo

    info = ModelInfo(path="m", architecture="LlamaForCausalLM", model_type="llama", num_layers=30,
                     hidden_size=576, vocab_size=49152, num_parameters=134_515_008,
                     has_chat_template=True, torch_dtype="bfloat16")
    fits = memory_text(info, None, "float32", 2048, "cpu", free_mb=64_000)
    assert "it fits" in fits and "62.5 GB free on cpu" in fits
    short = memory_text(info, None, "float32", 2048, "cpu", free_mb=500)
    assert "gradient checkpointing will turn on by itself" in short
    assert "may not fit" in memory_text(info, None, "float32", 2048, "cpu", auto=False, free_mb=500)
    assert "(on)" in memory_text(info, None, "float32", 2048, "cpu", checkpointing=True, free_mb=500)
    assert "checked when the run starts" in memory_text(info, None, "float32", 2048, "cuda",
                                                         free_mb=0.0)
    half = memory_text(info, None, "bfloat16", 2048, "cpu", free_mb=64_000)
    gb = lambda t: float(t.split("about ")[1].split(" GB")[0])  # noqa: E731
    assert gb(half) < gb(fits)                    # bf16 frozen weights: less modelled memory
