"""studio.core.recipe: TOML/JSON round trips and validation errors that name file + field."""

from __future__ import annotations

import pytest

from studio.core.recipe import Recipe
from studio.errors import UserError


@pytest.fixture
def recipe(model_dir, demo_train_path, demo_eval_path, tmp_path):
    r = Recipe.default(model_path=model_dir)
    r.data.eval_path = str(demo_eval_path)
    r.method.params.update(r=8, target_modules="q_proj,v_proj")
    r.training.learning_rate = 1e-3
    path = r.save(tmp_path / "run.toml")
    return Recipe.load(path)


def test_default_recipe_uses_demo_data_and_plugin_defaults(model_dir, demo_train_path):
    r = Recipe.default(model_path=model_dir)
    assert r.data.path == str(demo_train_path) and r.data.eval_path.endswith("dates_eval.jsonl")
    assert r.method.id == "lora" and r.method.params["r"] == 16
    assert r.validate() is r


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_save_load_round_trip(recipe, tmp_path, suffix):
    recipe.name = 'quotes "and" ünïcode'
    recipe.method.params["target_modules"] = "re:.*(q|v)_proj"
    recipe.training.gradient_checkpointing = True
    path = recipe.save(tmp_path / f"copy{suffix}")
    again = Recipe.load(path)
    assert again == recipe and again.to_dict() == recipe.to_dict()
    assert again.source == path
    assert type(again.training.learning_rate) is float and again.training.learning_rate == 1e-3
    if suffix == ".toml":
        text = path.read_text()
        assert "[training]" in text and "[method.params]" in text


def test_relative_paths_start_at_the_recipe_folder(recipe, tmp_path, demo_train_path):
    import shutil

    shutil.copy(demo_train_path, tmp_path / "mine.jsonl")
    recipe.data.path = "mine.jsonl"
    recipe.data.eval_path = ""
    path = recipe.save(tmp_path / "rel.toml")
    loaded = Recipe.load(path).validate()
    assert loaded.resolve_path(loaded.data.path) == (tmp_path / "mine.jsonl").resolve()
    assert Recipe.load(path).resolved().data.path == str((tmp_path / "mine.jsonl").resolve())


def _edited(recipe, tmp_path, old, new):
    path = recipe.source
    text = path.read_text()
    assert old in text, old
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace(old, new, 1))
    return bad


@pytest.mark.parametrize("old, new, field, words", [
    ('id = "lora"', 'id = "lorax"', "method.id", "unknown method 'lorax'"),
    ("learning_rate = 0.001", "learning_rate = -0.001", "training.learning_rate", "out of range"),
    ("batch_size = 4", 'batch_size = "4"', "training.batch_size", "without quotes"),
    ("r = 8", "r = 0", "method.params.r", "0 is out of range"),
    ('quantization = ""', 'quantization = "3bit"', "model.quantization", "'3bit'"),
    ("max_steps = 60", "max_steps = 60\nmax_step = 3", "training.max_step", "unknown setting"),
])
def test_bad_values_name_file_and_field(recipe, tmp_path, old, new, field, words):
    bad = _edited(recipe, tmp_path, old, new)
    with pytest.raises(UserError) as err:
        Recipe.load(bad).validate()
    assert err.value.field == field and err.value.path == str(bad)
    message = str(err.value)
    assert message.startswith(f"{bad}, field '{field}'") and words in message and "Fix:" in message


def test_missing_data_file_and_bad_model_folder(recipe, tmp_path):
    recipe.data.path = str(tmp_path / "nowhere.jsonl")
    recipe.source = tmp_path / "r.toml"
    with pytest.raises(UserError) as err:
        recipe.validate()
    assert err.value.field == "data.path" and "nowhere.jsonl" in str(err.value)

    not_a_model = tmp_path / "folder"
    not_a_model.mkdir()
    (not_a_model / "notes.txt").write_text("hi")
    recipe2 = Recipe.load(recipe.save(tmp_path / "r2.toml"))
    recipe2.data.path = Recipe.default().data.path
    for folder, words in [(not_a_model, "no config.json"), (tmp_path / "gone", "does not exist")]:
        recipe2.model.path = str(folder)
        with pytest.raises(UserError) as err:
            recipe2.validate()
        assert err.value.field == "model.path" and err.value.path == str(tmp_path / "r2.toml")
        assert words in str(err.value) and str(folder) in str(err.value)


def test_syntax_errors_name_the_line(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text('name = "x"\n[training]\nmax_steps = = 3\n')
    with pytest.raises(UserError) as err:
        Recipe.load(bad)
    assert err.value.line == 3 and "broken.toml" in str(err.value)
    with pytest.raises(UserError, match="not found"):
        Recipe.load(tmp_path / "none.toml")
    with pytest.raises(UserError) as err:
        Recipe.from_dict({"training": {"max_steps": 0, "epochs": 0}}, bad).validate(
            check_paths=False)
    assert err.value.field == "training.max_steps"


def test_schema_covers_every_setting_and_keeps_the_dataclass_defaults():
    """One schema per section: every field has a spec whose default is the dataclass default."""
    import dataclasses

    from studio.core import recipe as recipe_mod

    for section, cls in [("model", recipe_mod.ModelSection), ("data", recipe_mod.DataSection),
                         ("training", recipe_mod.TrainingSection)]:
        specs = recipe_mod.RECIPE_SCHEMA[section]
        assert set(specs) == {f.name for f in dataclasses.fields(cls)}, section
        assert {k: s["default"] for k, s in specs.items()} == dataclasses.asdict(cls()), section
    assert recipe_mod.TRAINING_SCHEMA["max_steps"]["maximum"] == 10_000_000


def test_validation_uses_the_shared_checker(monkeypatch):
    """Recipe.validate refuses through studio.schema.coerce_value, naming the field."""
    from studio import schema

    seen = []
    real = schema.coerce_value
    monkeypatch.setattr(schema, "coerce_value",
                        lambda spec, raw, **kw: seen.append(kw["field"]) or real(spec, raw, **kw))
    bad = Recipe.from_dict({"training": {"max_steps": 10_000_001}})
    with pytest.raises(UserError) as err:
        bad.validate(check_paths=False, check_method=False)
    assert err.value.field == "training.max_steps" and "out of range" in err.value.message
    assert "training.max_steps" in seen and "model.quantization" in seen
