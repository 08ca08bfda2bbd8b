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


# =================================================================================================
# The bad-input corpus (issue 11, "make it a suite"): tables of (what is wrong, input, words the
# message must hold). Every case goes through the real loader; a representative subset also goes
# through the CLI (exit code 2, one `error:` line naming the file / field and the fix, no
# traceback, the user's file untouched). Cases that must *load* are in the tables too, so a
# check that refuses everything fails here.
# =================================================================================================

import errno  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import builtins  # noqa: E402
from pathlib import Path  # noqa: E402


def refused(fn, *words, field=None):
    """fn() raises a UserError holding every one of `words` and a fix; returns it."""
    with pytest.raises(UserError) as info:
        fn()
    text = str(info.value)
    for word in words:
        assert word in text, f"{word!r} not in: {text}"
    assert info.value.fix and "Fix:" in text, text
    if field is not None:
        assert info.value.field == field, (info.value.field, text)
    return info.value


def one_error_line(code, err, *words):
    """What the CLI must print for a bad input: exit 2, a single `error:` line with `words`,
    a fix, and no traceback."""
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and "Warning" not in line
             and not line.startswith(" ")]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, err
    for word in words:
        assert word in errors[0], f"{word!r} not in: {errors[0]}"
    assert "Fix:" in errors[0], errors[0]


@pytest.fixture
def deny(monkeypatch):
    """deny(path): reading `path` fails with EACCES, as for a file without read permission. The
    drills run as root here (root reads a chmod 000 file anyway), so the OS's answer is put in
    front of open() for that one path; the mode is set to 000 as well."""
    denied = set()
    real_open = io.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and str(file) in denied:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", guarded)
    monkeypatch.setattr(builtins, "open", guarded)

    def deny_path(path):
        path = Path(path)
        denied.add(str(path))
        os.chmod(path, 0)
        return path

    yield deny_path
    for path in denied:
        if os.path.exists(path):
            os.chmod(path, 0o644)


# ---- data files ---------------------------------------------------------------------------------

ALPACA_LINE = '{"instruction": "say hi", "output": "hi"}\n'
DEEP = "[" * 100_000 + "]" * 100_000

DATA_CASES = [
    # (what is wrong, file name, content, words in the message)
    ("json line cut short", "d.jsonl", ALPACA_LINE + '{"instruction": "x", "output": "y"\n',
     ["line 2", "not valid JSON"]),
    ("trailing comma", "d.jsonl", '{"instruction": "a", "output": "b",}\n', ["line 1", "not valid JSON"]),
    ("single quotes", "d.jsonl", "{'instruction': 'a', 'output': 'b'}\n", ["line 1", "not valid JSON"]),
    ("python True", "d.jsonl", '{"text": True}\n', ["line 1", "not valid JSON"]),
    ("a list per line", "d.jsonl", '["say hi", "hi"]\n', ["line 1", "JSON object, got a list"]),
    ("a string per line", "d.jsonl", '"just text"\n', ["line 1", "got a string"]),
    ("a number per line", "d.jsonl", "42\n", ["line 1", "got a number"]),
    ("null per line", "d.jsonl", "null\n", ["line 1", "got null"]),
    ("unknown fields", "d.jsonl", '{"question": "a", "answer": "b"}\n',
     ["cannot tell the data format", "question"]),
    ("output missing", "d.jsonl", '{"instruction": "say hi"}\n', ["no 'output' field"]),
    ("instruction missing", "d.jsonl", '{"output": "hi"}\n', ["no 'instruction' field"]),
    ("instruction empty", "d.jsonl", '{"instruction": "  ", "output": "hi"}\n', ["'instruction' is empty"]),
    ("instruction a list", "d.jsonl", '{"instruction": ["a"], "output": "hi"}\n',
     ["'instruction' must be text, got a list"]),
    ("output an object", "d.jsonl", '{"instruction": "a", "output": {"x": 1}}\n',
     ["'output' must be text, got an object"]),
    ("output true", "d.jsonl", '{"instruction": "a", "output": true}\n', ["got true/false"]),
    ("output 1e999", "d.jsonl", '{"instruction": "a", "output": 1e999}\n', ["too large for JSON"]),
    ("every output empty", "d.jsonl", '{"instruction": "a", "output": ""}\n', ["empty answer"]),
    ("messages not a list", "d.jsonl", '{"messages": "hi"}\n', ["'messages' must be a list of turns"]),
    ("messages empty", "d.jsonl", '{"messages": []}\n', ["'messages' is an empty list"]),
    ("turn not an object", "d.jsonl", '{"messages": ["hi"]}\n', ["each turn must be an object"]),
    ("turn without content", "d.jsonl", '{"messages": [{"role": "user"}]}\n', ["turn has no 'content'"]),
    ("turn with from/value", "d.jsonl", '{"messages": [{"from": "human", "value": "x"}]}\n',
     ["looks like sharegpt"]),
    ("unknown role", "d.jsonl",
     '{"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]}\n',
     ["unknown role 'wizard'"]),
    ("content a number list", "d.jsonl",
     '{"messages": [{"role": "user", "content": [1]}, {"role": "assistant", "content": "y"}]}\n',
     ["'content' must be text"]),
    ("no assistant turn", "d.jsonl", '{"messages": [{"role": "user", "content": "x"}]}\n',
     ["no assistant turn"]),
    ("sharegpt unknown speaker", "d.jsonl",
     '{"conversations": [{"from": "robot", "value": "x"}, {"from": "gpt", "value": "y"}]}\n',
     ["unknown speaker 'robot'"]),
    ("sharegpt value a number list", "d.jsonl",
     '{"conversations": [{"from": "human", "value": [2]}, {"from": "gpt", "value": "y"}]}\n',
     ["'value' must be text"]),
    ("sharegpt turn without value", "d.jsonl",
     '{"conversations": [{"from": "human"}, {"from": "gpt", "value": "y"}]}\n',
     ["each turn must be an object with 'from' and 'value'"]),
    ("text empty", "d.jsonl", '{"text": "   "}\n', ["'text' is empty"]),
    ("text null", "d.jsonl", '{"text": null}\n', ["'text' must be text, got null"]),
    ("the file is empty", "d.jsonl", "", ["the file is empty"]),
    ("only blank lines", "d.jsonl", "\n\n   \n", ["the file is empty"]),
    ("latin-1 byte", "d.jsonl", b'{"text": "caf\xe9"}\n', ["not UTF-8", "line 1"]),
    ("utf-16 file", "d.jsonl", '{"text": "a"}\n'.encode("utf-16"), ["not UTF-8"]),
    ("json: an object", "d.json", '{"text": "a"}', ["must hold a list of records"]),
    ("json: data not a list", "d.json", '{"data": {"text": "a"}}', ["must hold a list of records"]),
    ("json: empty list", "d.json", "[]", ["has no records"]),
    ("json: broken", "d.json", '[{"text": "a"},\n{"text": }]', ["line 2", "not valid JSON"]),
    ("json: a string record", "d.json", '["a", "b"]', ["got a string"]),
    ("csv: wrong cell count", "d.csv", "instruction,output\nsay hi,hi,extra\n",
     ["line 2", "3 cells", "2 columns"]),
    ("csv: unknown columns", "d.csv", "question,answer\na,b\n", ["cannot tell the data format"]),
    ("csv: header only", "d.csv", "instruction,output\n", ["has no records"]),
    ("csv: messages cell not JSON", "d.csv", 'messages\n"[{broken"\n', ["'messages' is not valid JSON"]),
    # found by this corpus (each failed before its fix)
    ("duplicate key in a line", "d.jsonl", '{"instruction": "a", "output": "b", "output": "c"}\n',
     ["line 1", "'output' is written twice"]),
    ("duplicate key in a .json record", "d.json",
     '[\n{"text": "a"},\n{"text": "b",\n "text": "c"}\n]', ["line 3", "'text' is written twice"]),
    ("duplicate key nested", "d.jsonl",
     ALPACA_LINE + '{"messages": [{"role": "user", "role": "assistant", "content": "x"}]}\n',
     ["line 2", "'role' is written twice"]),
    ("NaN", "d.jsonl", '{"text": NaN}\n', ["line 1", "NaN is not a JSON value"]),
    ("Infinity", "d.jsonl", '{"instruction": "a", "output": -Infinity}\n', ["-Infinity is not a JSON value"]),
    ("nested 100,000 deep (.jsonl)", "d.jsonl", '{"text": ' + DEEP + "}\n", ["line 1", "nested too deeply"]),
    ("nested 100,000 deep (.json)", "d.json", DEEP, ["nested too deeply"]),
    ("a parquet file", "d.parquet", b"PAR1\x15\x04\x15\x10\x15\x14L\x15\x02\x15\x00\x12\x00\x00PAR1",
     ["unsupported file type '.parquet'", ".jsonl", ".csv", "read_parquet"]),
    ("a gzipped jsonl", "d.jsonl.gz", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03",
     ["compressed file ('.gz')", ".jsonl", "gunzip"]),
    ("a zip", "d.zip", b"PK\x03\x04", ["compressed file ('.zip')"]),
    ("a .txt", "d.txt", "say hi\nhi\n", ["unsupported file type '.txt'", "{\"text\": \"...\"}"]),
    ("a .tsv", "d.tsv", "instruction\toutput\nsay hi\thi\n", ["'.tsv'", "save it as .csv"]),
    ("an .xlsx", "d.xlsx", b"PK\x03\x04", ["'.xlsx'", ".csv"]),
    ("no extension", "data", ALPACA_LINE, ["unsupported file type '(none)'"]),
]

DATA_GOOD = [
    ("alpaca", "d.jsonl", ALPACA_LINE, 1),
    ("a BOM in front", "d.jsonl", "\ufeff" + ALPACA_LINE, 1),
    ("blank lines between", "d.jsonl", ALPACA_LINE + "\n\n" + ALPACA_LINE, 2),
    ("numbers as text", "d.jsonl", '{"instruction": 12, "output": 3.5}\n', 1),
    ("the same key in two records", "d.jsonl", ALPACA_LINE * 3, 3),
    ("the same key at two depths", "d.jsonl",
     '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], '
     '"content": "x"}\n', 1),
    ("json list", "d.json", "[" + ALPACA_LINE + "," + ALPACA_LINE + "]", 2),
    ("json data", "d.json", '{"data": [' + ALPACA_LINE + "]}", 1),
    ("sharegpt", "d.jsonl",
     '{"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]}\n', 1),
    ("csv", "d.csv", "instruction,output\nsay hi,hi\n", 1),
    ("upper-case suffix", "D.JSONL", ALPACA_LINE, 1),
    ("nested 50 deep", "d.jsonl", '{"text": "a", "x": ' + "[" * 50 + "]" * 50 + "}\n", 1),
]


def _write(folder: Path, name: str, content) -> Path:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize("what, name, content, words", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_file(tmp_path, what, name, content, words):
    from studio.core.data import load_examples

    path = _write(tmp_path, name, content)
    before = path.read_bytes()
    refused(lambda: load_examples(path), str(path), *words)
    assert path.read_bytes() == before


@pytest.mark.parametrize("what, name, content, n", DATA_GOOD, ids=[c[0] for c in DATA_GOOD])
def test_good_data_file_still_loads(tmp_path, what, name, content, n):
    from studio.core.data import load_examples

    assert len(load_examples(_write(tmp_path, name, content))) == n


def test_data_file_without_read_permission(tmp_path, deny):
    from studio.core.data import detect_file_format, load_examples

    path = deny(_write(tmp_path, "d.jsonl", ALPACA_LINE))
    refused(lambda: load_examples(path), str(path), "permission denied", "chmod")
    refused(lambda: detect_file_format(path), "permission denied")     # the Data page's probe


def test_data_path_that_is_a_folder_or_missing(tmp_path):
    from studio.core.data import load_examples

    refused(lambda: load_examples(tmp_path), "is a folder")
    refused(lambda: load_examples(tmp_path / "nope.jsonl"), "file not found")
    refused(lambda: load_examples(_write(tmp_path, "d.jsonl", ALPACA_LINE), fmt="xml"),
            "unknown data format 'xml'", field="format")


@pytest.mark.parametrize("fmt, line, words", [
    ("chat", ALPACA_LINE, ["no 'messages' field"]),
    ("sharegpt", ALPACA_LINE, ["no 'conversations' field"]),
    ("text", ALPACA_LINE, ["no 'text' field"]),
    ("alpaca", '{"text": "a"}\n', ["no 'instruction' field"]),
], ids=["alpaca-as-chat", "alpaca-as-sharegpt", "alpaca-as-text", "text-as-alpaca"])
def test_data_read_in_the_wrong_named_format(tmp_path, fmt, line, words):
    from studio.core.data import load_examples

    refused(lambda: load_examples(_write(tmp_path, "d.jsonl", line), fmt=fmt), *words)


# ---- recipes ------------------------------------------------------------------------------------

def _recipe_text(model_dir, top="", model="", data="", training="max_steps = 2",
                 method='id = "lora"'):
    return (f'name = "corpus"\n{top}\n[model]\npath = "{model_dir}"\n{model}\n'
            f'[data]\npath = "train.jsonl"\n{data}\n[method]\n{method}\n'
            f"[training]\n{training}\n")


RECIPE_CASES = [
    # (what is wrong, {part: extra TOML}, field, words)
    ("unknown top-level key", {"top": "steps = 5"}, "steps", ["unknown setting 'steps'"]),
    ("unknown key in [training]", {"training": "learning_rat = 0.1"}, "training.learning_rat",
     ["unknown setting 'learning_rat'", "learning_rate"]),
    ("unknown key in [data]", {"data": "shuffle = true"}, "data.shuffle", ["unknown setting"]),
    ("steps as text", {"training": 'batch_size = "4"'}, "training.batch_size", ["without quotes"]),
    ("steps 1.5", {"training": "batch_size = 1.5"}, "training.batch_size", ["whole number, got 1.5"]),
    ("negative steps", {"training": "warmup_steps = -1"}, "training.warmup_steps", ["out of range"]),
    ("steps beyond the range", {"training": "batch_size = 99999"}, "training.batch_size", ["out of range"]),
    ("learning rate 0", {"training": "learning_rate = 0.0"}, "training.learning_rate", ["out of range"]),
    ("learning rate 5", {"training": "learning_rate = 5.0"}, "training.learning_rate", ["out of range"]),
    ("learning rate nan", {"training": "learning_rate = nan"}, "training.learning_rate", ["nan"]),
    ("learning rate inf", {"training": "learning_rate = inf"}, "training.learning_rate", ["inf"]),
    ("a date as the seed", {"training": "seed = 1979-05-27"}, "training.seed", ["got date"]),
    ("true/false as text", {"training": 'packing = "yes"'}, "training.packing", ["true/false"]),
    ("unknown scheduler", {"training": 'lr_scheduler = "cosine_annealing"'}, "training.lr_scheduler",
     ["not one of the choices", "cosine"]),
    ("unknown optimizer", {"training": 'optimizer = "sgd"'}, "training.optimizer", ["not one of"]),
    ("unknown precision", {"training": 'precision = "fp8"'}, "training.precision", ["not one of"]),
    ("unknown tracker", {"training": 'log_to = "neptune"'}, "training.log_to", ["not one of"]),
    ("too many devices", {"training": "devices = 100"}, "training.devices", ["out of range"]),
    ("no length", {"training": "max_steps = 0\nepochs = 0"}, "training.max_steps", ["no length"]),
    ("train_on typo", {"training": 'train_on = "answer"'}, "training.train_on", ["not one of"]),
    ("max_length 0", {"data": "max_length = 0"}, "data.max_length", ["out of range"]),
    ("eval_fraction 1", {"data": "eval_fraction = 1.0"}, "data.eval_fraction", ["out of range"]),
    ("unknown data format", {"data": 'format = "xml"'}, "data.format", ["not one of"]),
    ("unknown quantization", {"model": 'quantization = "16bit"'}, "model.quantization", ["not one of"]),
    ("unknown dtype", {"model": 'dtype = "fp8"'}, "model.dtype", ["not one of"]),
    ("method id a number", {"method": "id = 3"}, "method.id", ["expected a text"]),
    ("unknown method", {"method": 'id = "lorra"'}, "method.id", ["unknown method 'lorra'", "lora"]),
    ("unknown method parameter", {"method": 'id = "lora"\n[method.params]\nrank = 8'}, "method.params.rank",
     ["no parameter 'rank'"]),
    ("rank 0", {"method": 'id = "lora"\n[method.params]\nr = 0'}, "method.params.r", ["out of range"]),
    ("params a list", {"method": 'id = "lora"\nparams = [1]'}, "method.params", ["expected a table"]),
    ("dropout 2", {"method": 'id = "lora"\n[method.params]\nlora_dropout = 2.0'}, "method.params.lora_dropout",
     ["out of range"]),
    # found by this corpus
    ("data path is a folder", {"data": "eval_path = \".\""}, "data.eval_path", ["is a folder, not a data file"]),
    ("data path a parquet", {"data": 'eval_path = "eval.parquet"'}, "data.eval_path",
     ["unsupported file type '.parquet'"]),
]


@pytest.fixture
def recipe_dir(tmp_path):
    (tmp_path / "train.jsonl").write_text(ALPACA_LINE * 4)
    (tmp_path / "eval.parquet").write_bytes(b"PAR1")
    return tmp_path


@pytest.mark.parametrize("what, parts, field, words", RECIPE_CASES, ids=[c[0] for c in RECIPE_CASES])
def test_bad_recipe(recipe_dir, model_dir, what, parts, field, words):
    from studio.core.recipe import Recipe

    path = recipe_dir / "r.toml"
    path.write_text(_recipe_text(model_dir, **parts))
    refused(lambda: Recipe.load(path).validate(), str(path), *words, field=field)


RECIPE_TEXT_CASES = [
    # (what is wrong, file name, text, field, words) - the whole file is the input
    ("`name = null` (no null in TOML)", "r.toml", 'name = null\n', "name", ["line 1", "TOML has no null"]),
    ("`name = None`", "r.toml", '\nname = None\n', "name", ["line 2", "TOML has no null"]),
    ("empty name", "r.toml", 'name = ""\n', "name", ["needs a name"]),
    ("blank name", "r.toml", 'name = "   "\n', "name", ["needs a name"]),
    ("name with a line break", "r.toml", 'name = "a\\nb"\n', "name", ["line break"]),
    ("name a list", "r.toml", 'name = ["a"]\n', "name", ["expected a text, got list"]),
    ("JSON name null", "r.json", '{"name": null}', "name", ["name is null"]),
    ("JSON duplicate key", "r.json", '{"name": "a", "name": "b"}', "name", ["written twice"]),
    ("JSON nested 100,000 deep", "r.json", '{"name": ' + DEEP + "}", None, ["nested too deeply"]),
    ("JSON NaN", "r.json", '{"name": "a", "training": {"learning_rate": NaN}}', None, ["NaN is not"]),
    ("JSON a list", "r.json", "[1, 2]", None, ["must be a table of settings"]),
    ("JSON broken", "r.json", '{"name": "a",\n}', None, ["line 2", "not valid JSON"]),
    ("an empty file", "r.toml", "", None, ["recipe file is empty"]),
    ("a YAML recipe", "r.yaml", "name: x\n", None, ["not YAML"]),
    ("TOML: unclosed quote", "r.toml", 'name = "a\n', None, ["line 1", "not valid TOML"]),
    ("a section as a value", "r.toml", 'training = "fast"\n', "training", ["must be a table"]),
    ("a section as a list of tables", "r.toml", "[[training]]\nseed = 1\n", "training",
     ["must be a table"]),
    ("TOML: key set twice", "r.toml", 'name = "a"\nname = "b"\n', None,
     ["line 2", "set twice"]),
    ("TOML: section twice", "r.toml", "[data]\n[data]\n", None, ["line 2", "set twice"]),
    ("TOML: section and key", "r.toml", '[data]\npath = "a"\n[data.path]\n', None,
     ["line 3", "set twice"]),
    ("TOML: no value", "r.toml", "name =\n", None, ["line 1", "not valid TOML"]),
    ("not a file", "missing.toml", None, None, ["recipe file not found"]),
]


@pytest.mark.parametrize("what, name, text, field, words", RECIPE_TEXT_CASES,
                         ids=[c[0] for c in RECIPE_TEXT_CASES])
def test_bad_recipe_file(tmp_path, what, name, text, field, words):
    from studio.core.recipe import Recipe

    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    refused(lambda: Recipe.load(path).validate(check_paths=False, check_method=False),
            str(path), *words, field=field)


def test_recipe_with_a_bom_and_odd_names_still_loads(tmp_path):
    from studio.core.recipe import Recipe

    path = tmp_path / "r.toml"
    path.write_bytes('\ufeffname = "café ünïcode"\n'.encode("utf-8"))     # Notepad's UTF-8
    assert Recipe.load(path).name == "café ünïcode"
    path.write_text('name = "../../x"\n')       # only a label: the run folder is a slug of it
    assert Recipe.load(path).validate(check_paths=False, check_method=False).name == "../../x"


def test_recipe_data_and_model_paths(recipe_dir, model_dir, deny):
    from studio.core.recipe import Recipe

    path = recipe_dir / "r.toml"
    cases = [
        (f'[model]\npath = "{model_dir}"\n[data]\npath = "."\n', "data.path", "is a folder"),
        (f'[model]\npath = "{model_dir}"\n[data]\npath = "nope.jsonl"\n', "data.path", "does not exist"),
        (f'[model]\npath = "{model_dir}"\n', "data.path", "no training data given"),
        ('[data]\npath = "train.jsonl"\n', "model.path", "no model folder given"),
        ('[model]\npath = "/nope"\n[data]\npath = "train.jsonl"\n', "model.path", "does not exist"),
        ('[model]\npath = "train.jsonl"\n[data]\npath = "train.jsonl"\n', "model.path", "is a file"),
        ('[model]\npath = "."\n[data]\npath = "train.jsonl"\n', "model.path", "no config.json"),
    ]
    for body, field, words in cases:
        path.write_text('name = "x"\n' + body)
        refused(lambda: Recipe.load(path).validate(check_method=False), str(path), words, field=field)
    deny(path)
    refused(lambda: Recipe.load(path), str(path), "permission denied")


# ---- model folders ------------------------------------------------------------------------------

def _model_copy(model_dir: Path, where: Path, config=None, raw=None, drop=()) -> Path:
    """A model folder beside the real one: its files linked, config.json changed."""
    where.mkdir()
    for file in model_dir.iterdir():
        if file.name not in drop and file.name != "config.json":
            (where / file.name).symlink_to(file)
    if raw is not None:
        (where / "config.json").write_text(raw)
    elif "config.json" not in drop:
        base = json.loads((model_dir / "config.json").read_text())
        (where / "config.json").write_text(json.dumps({**base, **(config or {})}))
    return where


MODEL_CASES = [
    # (what is wrong, config changes, field, words)
    ("num_hidden_layers as text", {"num_hidden_layers": "x"}, "num_hidden_layers", ['not "x"']),
    ("hidden_size a list", {"hidden_size": [576]}, "hidden_size", ["whole number above 0"]),
    ("vocab_size negative", {"vocab_size": -5}, "vocab_size", ["not -5"]),
    ("vocab_size 1.5", {"vocab_size": 1.5}, "vocab_size", ["not 1.5"]),
    ("num_hidden_layers true", {"num_hidden_layers": True}, "num_hidden_layers", ["not true"]),
    ("num_attention_heads 0", {"num_attention_heads": 0}, "num_attention_heads", ["not 0"]),
    ("intermediate_size text", {"intermediate_size": "1536"}, "intermediate_size", ['not "1536"']),
    ("text_config size bad", {"text_config": {"hidden_size": "big"}}, "text_config.hidden_size",
     ["whole number above 0"]),
    ("architectures a string", {"architectures": "Llama"}, "architectures", ["must be a list"]),
    ("architectures full name as a string", {"architectures": "LlamaForCausalLM"}, "architectures",
     ['["LlamaForCausalLM"]']),
    ("architectures of numbers", {"architectures": [5]}, "architectures", ["must be a list"]),
    ("model_type a number", {"model_type": 3}, "model_type", ["'model_type' must be text"]),
    ("no model_type", {"model_type": None}, None, ["no 'model_type'"]),
    ("unknown model_type", {"model_type": "llama99"}, None, ["'llama99' is not known"]),
    ("an encoder", {"model_type": "bert", "architectures": ["BertModel"]}, None,
     ["not a causal language model"]),
    ("a classifier", {"architectures": ["LlamaForSequenceClassification"]}, None,
     ["not a causal language model"]),
]


@pytest.mark.parametrize("what, change, field, words", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_bad_model_config(tmp_path, model_dir, what, change, field, words):
    from studio.core.models import check_model_folder

    folder = _model_copy(model_dir, tmp_path / "m", change)
    refused(lambda: check_model_folder(folder), str(folder / "config.json"), *words, field=field)


MODEL_FOLDER_CASES = [
    # (what is wrong, {raw / drop}, words)
    ("no config.json", {"drop": ("config.json",)}, ["no config.json"]),
    ("config.json empty", {"raw": ""}, ["config.json could not be read"]),
    ("config.json a list", {"raw": "[1, 2]"}, ["not a JSON object"]),
    ("config.json not UTF-8", {"raw": None, "bytes": b'{"model_type": "caf\xe9"}'}, ["could not be read"]),
    ("config.json nested 100,000 deep", {"raw": '{"a": ' + DEEP + "}"}, ["nested too deeply"]),
    ("no tokenizer", {"drop": ("tokenizer.json",)}, ["no tokenizer files"]),
    ("no weights", {"drop": ("model.safetensors",)}, ["no weight files"]),
]


@pytest.mark.parametrize("what, how, words", MODEL_FOLDER_CASES, ids=[c[0] for c in MODEL_FOLDER_CASES])
def test_bad_model_folder(tmp_path, model_dir, what, how, words):
    from studio.core.models import check_model_folder

    folder = _model_copy(model_dir, tmp_path / "m", raw=how.get("raw"), drop=how.get("drop", ()))
    if "bytes" in how:
        (folder / "config.json").write_bytes(how["bytes"])
    refused(lambda: check_model_folder(folder), str(folder), *words)


def test_model_paths_that_are_not_model_folders(tmp_path, model_dir):
    from studio.core.models import check_model_folder

    refused(lambda: check_model_folder(tmp_path / "nope"), "does not exist")
    (tmp_path / "notes.txt").write_text("x")
    refused(lambda: check_model_folder(tmp_path / "notes.txt"), "is a file, not a model folder")
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    refused(lambda: check_model_folder(tmp_path / "m.gguf"), "GGUF file", "models import")
    assert check_model_folder(_model_copy(model_dir, tmp_path / "ok", {"head_dim": None})).num_layers


GGUF_CASES = [
    # (what is wrong, file content (None: a folder), words)
    ("a text file named .gguf", b"hello", ["not a GGUF file"]),
    ("an empty .gguf", b"", ["not a GGUF file"]),
    ("a safetensors renamed", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ", ["not a GGUF file"]),
    ("a GGUF cut after its header", b"GGUF\x03\x00\x00\x00", ["cannot be read", "again"]),
    ("a GGUF with garbage counts", b"GGUF\x03\x00\x00\x00" + b"\xff" * 16, ["cannot be read"]),
]


@pytest.mark.parametrize("what, content, words", GGUF_CASES, ids=[c[0] for c in GGUF_CASES])
def test_a_gguf_that_is_not_a_model(tmp_path, what, content, words):
    from studio.core.models import import_gguf

    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    refused(lambda: import_gguf(path), str(path), *words)
    assert path.read_bytes() == content and not (tmp_path / "home").exists()


def test_models_import_of_a_folder(tmp_path, model_dir, capsys, deny):
    from studio.core.models import import_gguf

    refused(lambda: import_gguf(model_dir), str(model_dir), "is a folder", "Model page", "--model")
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "x.Q4.gguf").write_bytes(b"GGUF")
    refused(lambda: import_gguf(tmp_path / "dl"), "x.Q4.gguf")
    (tmp_path / "empty-dir").mkdir()
    refused(lambda: import_gguf(tmp_path / "empty-dir"), "is a folder", ".gguf model file")
    refused(lambda: import_gguf(tmp_path / "nope.gguf"), "file not found")
    code, out, err = cli(capsys, "models", "import", model_dir)
    one_error_line(code, err, str(model_dir), "is a folder", "Model page")
    locked = tmp_path / "locked.gguf"
    locked.write_bytes(b"GGUF\x03\x00\x00\x00")
    deny(locked)
    refused(lambda: import_gguf(locked), "permission denied")


# ---- BIG-bench task files -----------------------------------------------------------------------

GEN_TASK = {"description": "add", "examples": [{"input": "1+1", "target": "2"},
                                               {"input": "2+2", "target": ["4", "four"]}]}

TASK_CASES = [
    # (what is wrong, base task, changes, field, words)
    ("keywords a string", MC_TASK, {"keywords": "math"}, "keywords", ["list of strings"]),
    ("keywords of numbers", MC_TASK, {"keywords": [1, 2]}, "keywords", ["list of strings"]),
    ("keywords an object", MC_TASK, {"keywords": {"a": 1}}, "keywords", ["list of strings"]),
    ("description a list", MC_TASK, {"description": ["a", "b"]}, "description", ["must be text"]),
    ("description a number", MC_TASK, {"description": 5}, "description", ["must be text"]),
    ("name a list", MC_TASK, {"name": ["x"]}, "name", ["must be text"]),
    ("append_choices_to_input 'maybe'", MC_TASK, {"append_choices_to_input": "maybe"},
     "append_choices_to_input", ["true or false"]),
    ("append_choices_to_input 2", MC_TASK, {"append_choices_to_input": 2},
     "append_choices_to_input", ["true or false"]),
    ("every target blank", GEN_TASK, {"examples": [{"input": "a", "target": " "},
                                                   {"input": "b", "target": ["", " "]}]},
     "examples", ["blank 'target'"]),
    ("target_scores true/false", MC_TASK,
     {"examples": [{"input": "a", "target_scores": {"x": True, "y": False}}]},
     "examples[0].target_scores", ["not true/false"]),
    ("examples an object", MC_TASK, {"examples": {"a": 1}}, "examples", ["must be a list"]),
    ("examples empty", MC_TASK, {"examples": []}, "examples", ["no examples"]),
    ("examples missing", MC_TASK, {"examples": None}, "examples", ["no examples"]),
    ("an example without input", GEN_TASK, {"examples": [{"target": "2"}]}, "examples[0]",
     ["string 'input'"]),
    ("input a number", GEN_TASK, {"examples": [{"input": 5, "target": "2"}]}, "examples[0]",
     ["string 'input'"]),
    ("target a number", GEN_TASK, {"examples": [{"input": "a", "target": 4}]},
     "examples[0].target", ["string or a list of strings"]),
    ("target an empty list", GEN_TASK, {"examples": [{"input": "a", "target": []}]},
     "examples[0].target", ["string or a list of strings"]),
    ("neither target", GEN_TASK, {"examples": [{"input": "a"}]}, "examples[0]", ["neither"]),
    ("one choice", MC_TASK, {"examples": [{"input": "a", "target_scores": {"x": 1}}]},
     "examples[0].target_scores", ["at least two choices"]),
    ("scores as text", MC_TASK, {"examples": [{"input": "a", "target_scores": {"x": "1", "y": "0"}}]},
     "examples[0].target_scores", ["to numbers"]),
    ("all-zero scores", MC_TASK, {"examples": [{"input": "a", "target_scores": {"x": 0, "y": 0}}]},
     "examples[0].target_scores", ["scores 0"]),
    ("mixed kinds", GEN_TASK, {"examples": [{"input": "a", "target": "x"},
                                            {"input": "b", "target_scores": {"x": 1, "y": 0}}]},
     "examples", ["mixes"]),
    ("choice_prefix a number", MC_TASK, {"choice_prefix": 1}, "choice_prefix", ["must be text"]),
]


@pytest.mark.parametrize("what, base, change, field, words", TASK_CASES, ids=[c[0] for c in TASK_CASES])
def test_bad_task_field(tmp_path, what, base, change, field, words):
    from studio.core.bigbench import load_task

    data = {**json.loads(json.dumps(base)), **change}
    data = {k: v for k, v in data.items() if v is not None}
    path = write_task(tmp_path, data, "t")
    refused(lambda: load_task(path), str(path), *words, field=field)


TASK_FILE_CASES = [
    # (what is wrong, the file's bytes, words)
    ("NaN in target_scores", json.dumps(MC_TASK).replace('"banana": 0', '"banana": NaN').encode(),
     ["NaN is not a JSON value"]),
    ("Infinity in target_scores", json.dumps(MC_TASK).replace('"cold": 1', '"cold": Infinity').encode(),
     ["Infinity is not a JSON value"]),
    ("a choice written twice", json.dumps(MC_TASK).replace('"banana": 0', '"cold": 0').encode(),
     ["'cold' is written twice"]),
    ("description written twice", (json.dumps(MC_TASK)[:-1] + ', "description": "x"}').encode(),
     ["'description' is written twice"]),
    ("nested 100,000 deep", ('{"x": ' + DEEP + "}").encode(), ["nested too deeply"]),
    ("empty file", b"", ["not valid JSON"]),
    ("a list", b"[1, 2]", ["must be a JSON object"]),
    ("latin-1", json.dumps(MC_TASK).replace("hot", "h\\u00f6t").encode().replace(b"\\u00f6", b"\xf6"),
     ["not UTF-8 text", "0xf6"]),
]


@pytest.mark.parametrize("what, raw, words", TASK_FILE_CASES, ids=[c[0] for c in TASK_FILE_CASES])
def test_bad_task_file(tmp_path, what, raw, words):
    from studio.core.bigbench import load_task

    (tmp_path / "t").mkdir()
    path = tmp_path / "t" / "task.json"
    path.write_bytes(raw)
    refused(lambda: load_task(path), str(path), *words)
    assert path.read_bytes() == raw


def test_task_files_that_still_load(tmp_path):
    from studio.core.bigbench import load_task

    some_blank = {**GEN_TASK, "examples": [{"input": "a", "target": ""}, {"input": "b", "target": "x"}]}
    assert len(load_task(write_task(tmp_path, some_blank, "blank")).examples) == 2  # real tasks do
    bom = tmp_path / "bom"
    bom.mkdir()
    (bom / "task.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(MC_TASK).encode())
    assert load_task(bom / "task.json").name == "opposites"
    words = load_task(write_task(tmp_path, {**MC_TASK, "keywords": ["a"], "name": None,
                                            "append_choices_to_input": "false"}, "kw"))
    assert words.keywords == ["a"] and words.name == "kw" and words.append_choices is False


def test_task_file_unreadable_or_missing(tmp_path, deny):
    from studio.core.bigbench import load_task

    path = deny(write_task(tmp_path, MC_TASK, "locked"))
    refused(lambda: load_task(path), str(path), "permission denied")
    refused(lambda: load_task(tmp_path / "nope" / "task.json"), "task file not found")
    refused(lambda: load_task(tmp_path), "task file not found")          # a folder without one


# ---- chat sampling settings ---------------------------------------------------------------------

SAMPLING_CASES = [
    # (what is wrong, settings, field, words)
    ("max_new_tokens 0", {"max_new_tokens": 0}, "max_new_tokens", ["out of range", "4096"]),
    ("max_new_tokens 5000", {"max_new_tokens": 5000}, "max_new_tokens", ["out of range"]),
    ("max_new_tokens 1.5", {"max_new_tokens": 1.5}, "max_new_tokens", ["not a valid integer"]),
    ("max_new_tokens text", {"max_new_tokens": "many"}, "max_new_tokens", ["not a valid integer"]),
    ("negative temperature", {"temperature": -0.5}, "temperature", ["out of range"]),
    ("temperature 10", {"temperature": 10.0}, "temperature", ["out of range"]),
    ("temperature nan", {"temperature": float("nan")}, "temperature", ["not a valid number"]),
    ("top_p 0", {"top_p": 0.0}, "top_p", ["out of range"]),
    ("top_p 1.5", {"top_p": 1.5}, "top_p", ["out of range"]),
    ("top_p negative", {"top_p": -1.0}, "top_p", ["out of range"]),
    ("top_k negative", {"top_k": -1}, "top_k", ["out of range"]),
    ("top_k 0.5", {"top_k": 0.5}, "top_k", ["not a valid integer"]),
    ("repetition_penalty 0", {"repetition_penalty": 0.0}, "repetition_penalty", ["out of range"]),
    ("repetition_penalty inf", {"repetition_penalty": float("inf")}, "repetition_penalty",
     ["not a valid number"]),
]


@pytest.mark.parametrize("what, settings, field, words", SAMPLING_CASES,
                         ids=[c[0] for c in SAMPLING_CASES])
def test_bad_sampling_setting(what, settings, field, words):
    from studio.core.chat import Sampling

    refused(lambda: Sampling(**settings).check(), *words, field=field)
    refused(lambda: Sampling(**settings).check(flags=True), field="--" + field.replace("_", "-"))


def test_sampling_schema_is_the_one_source():
    from studio.core.chat import SAMPLING_SCHEMA, Sampling
    from studio.schema import check_spec

    for name, spec in SAMPLING_SCHEMA.items():
        check_spec(name, spec)
        assert getattr(Sampling(), name) == spec["default"]
    edges = Sampling(max_new_tokens=4096, temperature=2.0, top_p=0.01, top_k=1000,
                     repetition_penalty=0.5).check()
    assert edges.max_new_tokens == 4096 and edges.top_p == 0.01


@pytest.mark.parametrize("flags, words", [
    (["--max-new-tokens", "5000"], ["--max-new-tokens", "5000 is out of range"]),
    (["--temperature", "-1"], ["--temperature", "-1.0 is out of range"]),
    (["--top-p", "0"], ["--top-p", "out of range"]),
    (["--top-p", "1.5"], ["--top-p", "out of range"]),
    (["--top-k", "-3"], ["--top-k"]),
    (["--repetition-penalty", "nan"], ["--repetition-penalty"]),
], ids=["max-new-tokens", "temperature", "top-p 0", "top-p 1.5", "top-k", "repetition nan"])
def test_chat_cli_refuses_sampling_before_the_model_loads(tmp_path, capsys, flags, words):
    # the model folder does not exist: the sampling error must come first (nothing loaded)
    code, out, err = cli(capsys, "chat", "--model", tmp_path / "no-model", *flags, "hi")
    one_error_line(code, err, *words)
    assert "no-model" not in err


# ---- hypernetwork inputs ------------------------------------------------------------------------

PROMPT_FILE_CASES = [
    # (what is wrong, file name, content, words)
    ("empty", "p.txt", "", ["holds no prompt"]),
    ("only blank lines", "p.txt", "\n  \n\t\n", ["holds no prompt"]),
    ("not UTF-8", "p.txt", b"caf\xe9\n", ["not UTF-8", "line 1"]),
    ("a binary file", "p.txt", b"\x00\x01\x02binary\n", ["NUL bytes"]),
    ("a broken .jsonl", "p.jsonl", '{"messages": [\n', ["not valid JSON", "line 1"]),
    ("a .jsonl with a duplicate key", "p.jsonl", '{"text": "a", "text": "b"}\n', ["written twice"]),
    ("a .jsonl of plain text only", "p.jsonl", '{"text": "a"}\n', ["holds no prompt"]),
    ("a .jsonl without user turns", "p.jsonl",
     '{"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}\n',
     ["holds no prompt"]),
]


@pytest.mark.parametrize("what, name, content, words", PROMPT_FILE_CASES,
                         ids=[c[0] for c in PROMPT_FILE_CASES])
def test_bad_prompts_file(tmp_path, what, name, content, words):
    from studio.hyper.api import read_prompts

    path = _write(tmp_path, name, content)
    refused(lambda: read_prompts(path), str(path), *words)


def test_prompts_file_missing_folder_unreadable_and_good(tmp_path, deny):
    from studio.hyper.api import read_prompts

    refused(lambda: read_prompts(tmp_path / "nope.txt"), "does not exist", field="--prompts")
    refused(lambda: read_prompts(tmp_path), "is a folder", field="--prompts")
    assert read_prompts(_write(tmp_path, "ok.txt", "\ufeffone\n\n two \n")) == ["one", "two"]
    assert read_prompts(_write(tmp_path, "ok.jsonl", ALPACA_LINE)) == ["say hi"]
    refused(lambda: read_prompts(deny(_write(tmp_path, "locked.txt", "x\n"))), "permission denied")


@pytest.mark.parametrize("args, words", [
    (["--kind", "dnd", "--prompts", "{missing}"], ["the prompts file does not exist"]),
    (["--kind", "dnd", "--prompts", "{empty}"], ["holds no prompt"]),
    (["--kind", "dnd"], ["DnD needs example prompts"]),
    (["--kind", "t2l", "   "], ["task description is empty"]),
    (["--kind", "t2l", "word " * 2000], ["characters"]),
], ids=["prompts missing", "prompts empty", "no prompts", "blank description", "huge description"])
def test_generate_cli_checks_inputs_before_loading(tmp_path, capsys, args, words):
    (tmp_path / "empty.txt").write_text("\n")
    args = [a.format(missing=tmp_path / "nope.txt", empty=tmp_path / "empty.txt") for a in args]
    # the hypernetwork folder does not exist: the input error must come first (nothing loaded)
    code, out, err = cli(capsys, "generate", *args, "--out", tmp_path / "out",
                         "--hypernetwork", tmp_path / "no-hypernetwork")
    one_error_line(code, err, *words)
    assert "no-hypernetwork" not in err and not (tmp_path / "out").exists()


def _library(tmp_path, library=None, description=None, raw_index=None, raw_description=None):
    """A built library's layout (library.json + one task folder) with bad parts put in."""
    root = tmp_path / "lib"
    (root / "t1" / "adapter").mkdir(parents=True)
    index = {"spec": {"modules": ["q_proj"], "num_layers": 1, "path_templates": {},
                      "in_features": {}, "out_features": {}, "r": 2, "alpha": 4.0},
             "tasks": ["t1"], **(library or {})}
    (root / "library.json").write_text(raw_index if raw_index is not None else json.dumps(index))
    desc = {"description": "add numbers", "train_descriptions": ["add numbers"], **(description or {})}
    (root / "t1" / "description.json").write_text(
        raw_description if raw_description is not None else json.dumps(desc))
    return root


LIBRARY_CASES = [
    # (what is wrong, _library keywords, file, field, words)
    ("library.json not JSON", {"raw_index": "{"}, "library.json", None, ["could not be read"]),
    ("library.json a list", {"raw_index": "[]"}, "library.json", None, ["not a JSON object"]),
    ("library.json duplicate key", {"raw_index": '{"tasks": [], "tasks": ["t1"]}'}, "library.json",
     "tasks", ["written twice"]),
    ("no spec", {"library": {"spec": None}}, "library.json", "spec", ["no usable 'spec'"]),
    ("spec with an unknown key", {"library": {"spec": {"rank": 2}}}, "library.json", "spec",
     ["no usable 'spec'"]),
    ("tasks a string", {"library": {"tasks": "t1"}}, "library.json", "tasks", ["must be a list"]),
    ("a task name leaving the folder", {"library": {"tasks": ["../t1"]}}, "library.json", "tasks",
     ["not a plain folder name"]),
    ("description.json without description", {"description": {"description": None}},
     "t1/description.json", "description", ["no 'description' text"]),
    ("train_descriptions a string", {"description": {"train_descriptions": "add"}},
     "t1/description.json", "train_descriptions", ["list of sentences"]),
    ("description.json broken", {"raw_description": '{"description": '}, "t1/description.json",
     None, ["could not be read"]),
]


@pytest.mark.parametrize("what, kwargs, file, field, words", LIBRARY_CASES,
                         ids=[c[0] for c in LIBRARY_CASES])
def test_bad_hypernetwork_library(tmp_path, what, kwargs, file, field, words):
    from studio.hyper.library import load_library

    root = _library(tmp_path, **kwargs)
    refused(lambda: load_library(root), str(root / file), *words, field=field)


def test_bad_plain_library_and_hypernetwork_folder(tmp_path):
    from studio.hyper.api import load_hypernetwork
    from studio.hyper.library import load_library

    root = tmp_path / "plain"
    for name, desc in (("a", '{"description": ["x"]}'), ("b", "[1]")):
        (root / name).mkdir(parents=True)
        (root / name / "adapter_config.json").write_text('{"peft_type": "LORA"}')
        (root / name / "description.json").write_text(desc)
    refused(lambda: load_library(root), "'description' must be text", field="description")
    (root / "a" / "description.json").unlink()
    (root / "a" / "description.txt").write_bytes(b"caf\xe9\n")
    refused(lambda: load_library(root), "description.txt is not UTF-8")
    refused(lambda: load_library(tmp_path / "nope"), "does not exist")
    hyper = tmp_path / "hn"
    hyper.mkdir()
    for raw, words in (("[1]", "not a JSON object"), ('{"kind": "dnd", "kind": "t2l"}', "twice"),
                       (b"\xff\xfe", "could not be read"), ('{"kind": "gan"}', "unknown hypernetwork kind")):
        (hyper / "hypernetwork.json").write_bytes(raw if isinstance(raw, bytes) else raw.encode())
        refused(lambda: load_hypernetwork(hyper), words)


# ---- runs listing with corrupted files ----------------------------------------------------------

def _status(**changes):
    from studio.core import runs

    return json.dumps({**runs.new_status("bad", "lora", "m", 10, "finished", step=3), **changes})


RUN_CASES = [
    # (what is wrong, status.json bytes (None: none), events.jsonl bytes (None: none),
    #  expected status, words in the cause)
    ("status.json empty", b"", None, "created", ""),
    ("status.json torn", _status()[:20].encode(), None, "created", ""),
    ("status.json a list", b"[1, 2]", None, "created", ""),
    ("status.json binary", b"\x00\xff\xfe\x00", None, "created", ""),
    ("status.json torn, events tell", b'{"status": "fin',
     b'{"event": "started", "time": 1, "total_steps": 10}\n', "failed (process died)", ""),
    ("step as text", _status(step="x").encode(), None, "unreadable", "'step'"),
    ("step true", _status(step=True).encode(), None, "unreadable", "'step'"),
    ("status a number", _status(status=5).encode(), None, "unreadable", "'status'"),
    ("total_steps a list", _status(total_steps=[1]).encode(), None, "unreadable", "'total_steps'"),
    ("last_loss text", _status(last_loss="low").encode(), None, "unreadable", "'last_loss'"),
    ("method an object", _status(method={"id": "lora"}).encode(), None, "unreadable", "'method'"),
    ("name a number", _status(name=7).encode(), None, "unreadable", "'name'"),
    ("running, pid gone", _status(status="running", pid=2**22 + 7).encode(), None,
     "failed (process died)", "ended without a word"),
    ("running, pid as text", _status(status="running", pid="me").encode(), None,
     "failed (process died)", ""),
    ("events: garbage lines only", None, b"\x00\x01\nnot json\n[1]\n", "created", ""),
    ("events: a torn last line", None, b'{"event": "started", "time": 1, "total_steps": 4}\n{"ev',
     "failed (process died)", ""),
    ("events: a log with a bad step", None,
     b'{"event": "started", "time": 1}\n{"event": "log", "time": 2, "step": "x"}\n',
     "unreadable", "'step'"),
]


@pytest.mark.parametrize("what, status, events, state, words", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_corrupted_run_never_hides_the_others(tmp_path, what, status, events, state, words):
    from studio.core import runs

    good = tmp_path / "20250101-000000-good"
    bad = tmp_path / "20250102-000000-bad"
    for folder in (good, bad):
        folder.mkdir()
        (folder / "recipe.toml").write_text('name = "x"\n')
    runs.write_status(good, runs.new_status(good.name, "lora", "m", 10, "finished", step=3))
    if status is not None:
        (bad / "status.json").write_bytes(status)
    if events is not None:
        (bad / "events.jsonl").write_bytes(events)
    before = {p.name: p.read_bytes() for p in bad.iterdir()}
    listed = {r.path.name: r for r in runs.list_runs(tmp_path)}
    assert listed[good.name].status == "finished" and listed[good.name].step == 3
    assert listed[bad.name].status == state, listed[bad.name]
    assert words in (listed[bad.name].cause or "")
    assert {p.name: p.read_bytes() for p in bad.iterdir()} == before      # listing writes nothing


def test_runs_cli_lists_corrupted_runs(tmp_path, capsys, deny):
    from studio.core import runs

    for name, step in (("20250101-000000-good", 3), ("20250102-000000-bad", "x")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "recipe.toml").write_text('name = "x"\n')
        runs.write_status(tmp_path / name, runs.new_status(name, "lora", "m", 10, "finished", step=step))
    (tmp_path / "20250103-000000-locked").mkdir()
    deny(_write(tmp_path / "20250103-000000-locked", "status.json", _status()))
    (tmp_path / "20250104-000000-dir").mkdir()
    (tmp_path / "20250104-000000-dir" / "status.json").mkdir()     # a folder named status.json
    (tmp_path / "20250104-000000-dir" / "recipe.toml").write_text("")
    code, out, err = cli(capsys, "runs", "--runs-dir", tmp_path, "-v")
    assert code == 0 and "Traceback" not in err
    for name in ("good", "bad", "locked", "dir"):
        assert f"-{name}" in out
    assert "unreadable" in out


def test_bad_evaluation_files_are_skipped_not_shown_broken(tmp_path):
    from studio.core import runs

    evals = tmp_path / "evals"
    evals.mkdir()
    good = {"task": "t", "n": 4, "metric": "accuracy", "score": 0.5, "ci95": [0.2, 0.8]}
    files = {"good": good, "torn": "{", "list": [1],
             "score text": {**good, "score": "high"}, "ci95 a number": {**good, "ci95": 5},
             "ci95 of text": {**good, "ci95": ["a", "b"]}, "n text": {**good, "n": "four"},
             "difference broken": {"with_adapter": good, "base": {"score": 0.4},
                                   "difference": {"mean": "x"}}}
    for name, data in files.items():
        (evals / f"{name}.json").write_text(data if isinstance(data, str) else json.dumps(data))
    found = runs.list_evaluations(tmp_path)
    assert [Path(item["file"]).stem for item in found] == ["good"]
    assert runs.format_evaluation(found[0]) == "t (4): 0.500 [0.200, 0.800]"


# ---- plugins ------------------------------------------------------------------------------------

def _lora_manifest():
    from studio import paths

    return json.loads((paths.builtin_plugins_dir() / "lora" / "manifest.json").read_text())


PLUGIN_CASES = [
    # (what is wrong, manifest.json text (a dict: JSON of it), plugin.py text, words in the problem)
    ("manifest not JSON", "{", "", ["not valid JSON"]),
    ("manifest a list", "[]", "", ["must be a JSON object"]),
    ("manifest without id", {"id": None}, "", ["missing required key"]),
    ("id with capitals", {"id": "Bad Id"}, "", ["lower-case"]),
    ("capabilities a list", {"capabilities": []}, "", ["'capabilities' must be an object"]),
    ("a parameter without default", {"parameters": {"r": {"type": "integer"}}}, "", ["no default"]),
    ("a parameter of an unknown type", {"parameters": {"r": {"type": "big", "default": 1}}}, "",
     ["type must be one of"]),
    ("a default outside its range", {"parameters": {"r": {"type": "integer", "default": 0,
                                                          "minimum": 1}}}, "", ["outside"]),
    ("manifest key written twice", '{"id": "twice", "id": "twice2"}', "", ["written twice"]),
    ("manifest nested 100,000 deep", '{"x": ' + DEEP + "}", "", ["nested too deeply"]),
    ("manifest not UTF-8", b'{"id": "caf\xe9"}', "", ["not valid JSON"]),
    ("no plugin.py", {}, None, ["no plugin.py"]),
    ("plugin.py with a syntax error", {}, "def apply(:\n", ["SyntaxError"]),
    ("plugin.py raising on import", {}, "raise RuntimeError('boom')\n", ["boom"]),
    ("plugin.py without apply", {}, "x = 1\n", ["no apply"]),
    ("plugin.py calling os._exit-like sys.exit", {}, "import sys\nsys.exit('bye')\n", ["bye"]),
]


@pytest.mark.parametrize("what, manifest, module, words", PLUGIN_CASES, ids=[c[0] for c in PLUGIN_CASES])
def test_broken_plugin_is_a_listed_problem(tmp_path, what, manifest, module, words):
    from studio.plugins import discover

    folder = tmp_path / "plugins" / "broken"
    folder.mkdir(parents=True)
    if isinstance(manifest, dict):
        data = {**_lora_manifest(), "id": "broken", "name": "Broken", **manifest}
        manifest = json.dumps({k: v for k, v in data.items() if v is not None})
    (folder / "manifest.json").write_bytes(manifest if isinstance(manifest, bytes) else manifest.encode())
    if module is not None:
        (folder / "plugin.py").write_text(module)
    found, problems = discover([tmp_path / "plugins"])
    assert "lora" in found and "broken" not in found
    mine = [p for p in problems if str(folder) in p]
    assert len(mine) == 1, problems
    for word in words:
        assert word in mine[0], mine[0]


# ---- the same cases through the CLI -------------------------------------------------------------

def _data_case(what):
    return next(c for c in DATA_CASES if c[0] == what)


CLI_DATA = ["json line cut short", "duplicate key in a line", "NaN", "nested 100,000 deep (.jsonl)",
            "latin-1 byte", "unknown fields", "no assistant turn", "every output empty"]


@pytest.mark.parametrize("what", CLI_DATA)
def test_cli_bad_data_file(tmp_path, capsys, what):
    """`peft-studio eval DATA.jsonl` reads the data before any model loads (the model folder
    given does not even exist): one error line naming the file, the user's file untouched."""
    _, name, content, words = _data_case(what)
    path = _write(tmp_path, name, content)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    code, out, err = cli(capsys, "eval", path, "--model", tmp_path / "no-model")
    one_error_line(code, err, str(path), *words)
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]          # nothing written beside it


@pytest.mark.parametrize("what, name, content, words", [
    ("a parquet", "d.parquet", b"PAR1", ["unsupported task file type '.parquet'"]),
    ("a task.json with NaN", "task.json", TASK_FILE_CASES[0][1], ["NaN is not a JSON value"]),
    ("a task.json with keywords as text", "task.json", json.dumps({**MC_TASK, "keywords": "x"}),
     ["field 'keywords'"]),
], ids=["parquet", "task NaN", "task keywords"])
def test_cli_bad_task_file(tmp_path, capsys, what, name, content, words):
    path = _write(tmp_path, name, content)
    before = path.read_bytes()
    code, out, err = cli(capsys, "eval", path, "--model", tmp_path / "no-model")
    one_error_line(code, err, str(path), *words)
    assert path.read_bytes() == before


CLI_RECIPES = ["unknown key in [training]", "steps as text", "learning rate nan", "unknown method",
               "data path is a folder", "rank 0"]


@pytest.mark.parametrize("what", CLI_RECIPES)
def test_cli_bad_recipe(recipe_dir, model_dir, capsys, what):
    _, parts, field, words = next(c for c in RECIPE_CASES if c[0] == what)
    path = recipe_dir / "r.toml"
    path.write_text(_recipe_text(model_dir, **parts))
    before = path.read_bytes()
    code, out, err = cli(capsys, "train", path, "--runs-dir", recipe_dir / "runs")
    one_error_line(code, err, str(path), f"field '{field}'", *words)
    assert path.read_bytes() == before and not (recipe_dir / "runs").exists()   # no run folder


@pytest.mark.parametrize("what", ["num_hidden_layers as text", "architectures a string",
                                  "model_type a number"])
def test_cli_bad_model_config(tmp_path, model_dir, capsys, what):
    _, change, field, words = next(c for c in MODEL_CASES if c[0] == what)
    folder = _model_copy(model_dir, tmp_path / "m", change)
    before = (folder / "config.json").read_bytes()
    code, out, err = cli(capsys, "models", "check", folder)
    one_error_line(code, err, str(folder / "config.json"), f"field '{field}'", *words)
    code, out, err = cli(capsys, "chat", "--model", folder, "hi")
    one_error_line(code, err, str(folder / "config.json"), *words)
    assert (folder / "config.json").read_bytes() == before


def test_cli_gguf_that_is_not_a_model(tmp_path, capsys):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF\x03\x00\x00\x00")
    code, out, err = cli(capsys, "models", "import", path, "--name", "corpus-never-made")
    one_error_line(code, err, str(path), "cannot be read")
    assert path.read_bytes() == b"GGUF\x03\x00\x00\x00"


@pytest.mark.parametrize("argv, words", [
    (["train", "{recipe}"], ["{recipe}", "TOML has no null"]),
    (["eval", "{data}"], ["{data}", "'output' is written twice"]),
], ids=["recipe", "data"])
def test_installed_command_prints_one_line(tmp_path, argv, words):
    """The real `peft-studio` program in its own process (what a user runs)."""
    import subprocess

    from conftest import cli_program

    (tmp_path / "r.toml").write_text("name = null\n")
    _write(tmp_path, "d.jsonl", '{"instruction": "a", "output": "b", "output": "c"}\n')
    fill = {"recipe": tmp_path / "r.toml", "data": tmp_path / "d.jsonl"}
    done = subprocess.run(cli_program() + [a.format(**fill) for a in argv], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    one_error_line(done.returncode, done.stderr, *[w.format(**fill) for w in words])
    assert done.stdout.strip() == ""
