"""Drills 4, 5 and 7: bad input gets a UserError naming the file / field and the fix (never a
traceback); one bad file never hides the good ones; names from files never leave their folder."""

from __future__ import annotations

import json

import pytest

from conftest import MC_TASK, small_recipe, write_task
from drills.conftest import cli
from studio.errors import UserError


# ---- recipes and data ---------------------------------------------------------------------------

def test_recipe_with_a_non_utf8_byte(tmp_path, capsys):
    from studio.core.recipe import Recipe

    path = tmp_path / "r.toml"
    path.write_bytes(b'name = "ok"\n# caf\xe9\n')
    with pytest.raises(UserError) as info:
        Recipe.load(path)
    text = str(info.value)
    assert str(path) in text and "line 2" in text and "byte offset 17" in text and "0xe9" in text
    code, out, err = cli(capsys, "train", path)
    assert code == 2 and "Traceback" not in err and "byte offset 17" in err


def _alpaca(tmp_path, outputs):
    path = tmp_path / "alpaca.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"say {i}", "output": o}) + "\n"
                            for i, o in enumerate(outputs)))
    return path


def test_alpaca_all_outputs_empty_is_refused(tmp_path):
    from studio.core.data import load_examples

    path = _alpaca(tmp_path, ["", "  ", ""])
    with pytest.raises(UserError) as info:
        load_examples(path)
    assert str(path) in str(info.value) and "empty answer" in str(info.value)
    assert info.value.field == "output"


def test_alpaca_some_outputs_empty_warns_on_the_data_page_and_at_start(tmp_path, model_dir):
    from studio.core.data import answer_warnings, load_examples
    from studio.ui.data_page import analyse

    path = _alpaca(tmp_path, ["one", "", "three", ""])
    examples = load_examples(path)
    assert len(examples) == 4
    warnings = answer_warnings(examples, path)
    assert len(warnings) == 1 and "2 of 4 examples have an empty answer" in warnings[0]
    assert analyse(str(path), "auto", str(model_dir), 64)["warnings"] == warnings
    assert answer_warnings(load_examples(_alpaca(tmp_path, ["a", "b"]))) == []


def test_target_module_that_matches_nothing(model_dir, tmp_path, demo_train_path, demo_eval_path):
    from studio.core.models import load_model
    from studio.plugins import apply_peft_config, lora_config

    model, _ = load_model(model_dir)
    params = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": "q_proj,foo_proj"}
    with pytest.raises(UserError) as info:
        apply_peft_config(model, lora_config(params))
    text = str(info.value)
    assert "foo_proj" in text and "q_proj" not in text.split("Fix:")[0]
    assert "k_proj" in text.split("Fix:")[1] and info.value.field == "target_modules"
    # a right list still works
    params["target_modules"] = "q_proj,v_proj"
    assert apply_peft_config(model, lora_config(params)) is not None


# ---- BIG-bench task files -----------------------------------------------------------------------

@pytest.mark.parametrize("change, field", [
    ({"stop_string": 5}, "stop_string"),
    ({"output_regex": "([a-z"}, "output_regex"),
    ({"example_input_prefix": None}, "example_input_prefix"),
    ({"example_output_prefix": ["A:"]}, "example_output_prefix"),
    ({"task_prefix": 3}, "task_prefix"),
])
def test_task_field_errors_at_load(tmp_path, change, field):
    from studio.core.bigbench import load_task

    path = write_task(tmp_path, {**MC_TASK, **change}, "bad")
    with pytest.raises(UserError) as info:
        load_task(path)
    assert info.value.field == field and str(path) in str(info.value)


def test_task_all_zero_target_scores(tmp_path):
    from studio.core.bigbench import load_task

    data = json.loads(json.dumps(MC_TASK))
    data["examples"][2]["target_scores"] = {"small": 0, "seven": 0}
    with pytest.raises(UserError) as info:
        load_task(write_task(tmp_path, data, "zeros"))
    assert info.value.field == "examples[2].target_scores"


def test_task_good_fields_still_load(tmp_path):
    from studio.core.bigbench import load_task

    task = load_task(write_task(tmp_path, {**MC_TASK, "stop_string": "\n", "output_regex": "[a-z]+",
                                           "example_input_prefix": "Q: "}, "good"))
    assert task.stop_string == "\n" and task.output_regex == "[a-z]+" and task.input_prefix == "Q: "
    assert load_task(write_task(tmp_path, {**MC_TASK, "stop_string": None}, "null")).stop_string is None


# ---- run listing and plugins --------------------------------------------------------------------

def test_one_bad_status_never_hides_the_other_runs(tmp_path, capsys):
    from studio.core import runs

    good = tmp_path / "20250101-000000-good"
    bad = tmp_path / "20250102-000000-bad"
    for folder, step in ((good, 3), (bad, "x")):
        folder.mkdir()
        (folder / "recipe.toml").write_text('name = "x"\n')
        runs.write_status(folder, runs.new_status(folder.name, "lora", "m", 10, "finished",
                                                  step=step))
    listed = {r.path.name: r for r in runs.list_runs(tmp_path)}
    assert listed[good.name].status == "finished" and listed[good.name].step == 3
    assert listed[bad.name].status == "unreadable" and "'step'" in listed[bad.name].cause
    code, out, err = cli(capsys, "runs", "--runs-dir", tmp_path, "-v")
    assert code == 0 and good.name in out and "unreadable" in out and "'step' is \"x\"" in out


def test_plugin_calling_sys_exit_on_import_is_a_problem(tmp_path, capsys, monkeypatch):
    from studio import paths
    from studio.plugins import discover

    folder = tmp_path / "plugins" / "quitter"
    folder.mkdir(parents=True)
    manifest = json.loads((paths.builtin_plugins_dir() / "lora" / "manifest.json").read_text())
    manifest.update(id="quitter", name="Quitter")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "plugin.py").write_text("import sys\nsys.exit(3)\n")
    found, problems = discover([tmp_path / "plugins"])
    assert "lora" in found and "quitter" not in found
    assert any("quitter" in p and "sys.exit(3)" in p for p in problems), problems
    monkeypatch.setattr(paths, "user_plugins_dir", lambda: tmp_path / "plugins")
    code, out, err = cli(capsys, "methods")
    assert code == 0 and "lora" in out and "sys.exit(3)" in out
    (folder / "plugin.py").write_text("raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):                # Ctrl-C still stops the program
        discover([tmp_path / "plugins"])


# ---- hypernetwork descriptions ------------------------------------------------------------------

def test_huge_description_refused_and_long_one_noted(tmp_path):
    from studio.hyper import api

    with pytest.raises(UserError) as info:
        api.check_task_input("t2l", "word " * 20_000)
    assert info.value.field == "description" and "99,999 characters" in str(info.value)

    class Encoder:                      # the real encoder's token_count, without loading it
        @staticmethod
        def token_count(text):
            return len(text.split()) + 2, 256

    assert api.truncation_notice(Encoder, "short task") == ""
    assert "description truncated to 256 tokens (it has 602)" in api.truncation_notice(
        Encoder, "word " * 600)


@pytest.mark.slow
def test_real_encoder_counts_tokens():
    from studio.hyper.encoder import default_encoder

    n, limit = default_encoder().token_count("word " * 600)
    assert limit == 256 and n > limit


# ---- paths from file content --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../..", "..", "/etc", "a/b", ".hidden", "", "x\\y"])
def test_safe_child_refuses_names_that_leave_the_folder(tmp_path, name):
    from studio.fileio import safe_child

    with pytest.raises(UserError):
        safe_child(tmp_path, name, field="name", source="task.json")


def test_safe_child_accepts_plain_names(tmp_path):
    from studio.fileio import safe_child

    assert safe_child(tmp_path, "arithmetic_1-digit.v2") == tmp_path / "arithmetic_1-digit.v2"


def test_build_library_keeps_a_task_name_inside(tmp_path, model_dir):
    """A task's "name" field never makes a path: the library folder comes from the task's own
    folder (safe_child still guards it), so '../../escaped' writes nothing outside."""
    from studio.hyper.build_library import build_library

    data = json.loads(json.dumps(MC_TASK))
    data["name"] = "../../escaped"
    task = write_task(tmp_path, data, "evil")
    out = tmp_path / "lib" / "inner"
    res = build_library(model_dir, [task], out, steps=1, batch_size=2, n_eval=2, n_train=4,
                        log=lambda *a: None)
    assert res["tasks"] == ["evil"] and (out / "evil" / "description.json").is_file()
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "lib" / "escaped").exists()


def test_library_index_with_a_bad_name(tmp_path):
    from studio.hyper.library import _built_entry

    with pytest.raises(UserError):
        _built_entry(tmp_path, "../outside")
