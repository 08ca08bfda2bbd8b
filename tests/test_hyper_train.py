"""Training hypernetworks end to end on a small "folder of adapters with descriptions" library.

The library's LoRAs are synthetic (random low-rank updates with distinct structure per task) so
the test needs no task-LoRA training; the hypernetworks, the encoder and the CLI are real.
"""

from __future__ import annotations

import json

import pytest
import torch

from studio.hyper.targets import LoraSpec, write_adapter

TASKS = {
    "sentiment": ["Classify the sentiment of a movie review as positive or negative.",
                  "Is this review positive or negative?"],
    "plural": ["Give the plural form of an English noun.", "Turn a singular noun into its plural."],
    "multiply": ["Multiply two single-digit numbers.", "Compute the product of two small numbers."],
}


def _spec(model_dir) -> LoraSpec:
    return LoraSpec(modules=["q_proj", "v_proj"], num_layers=30,
                    path_templates={m: "model.layers.{layer}.self_attn." + m for m in ("q_proj", "v_proj")},
                    in_features={"q_proj": 576, "v_proj": 576},
                    out_features={"q_proj": 576, "v_proj": 192}, r=4, alpha=8.0,
                    base_model=str(model_dir), model_type="llama", hidden_size=576)


@pytest.fixture(scope="module")
def plain_library(tmp_path_factory, model_dir):
    root = tmp_path_factory.mktemp("mylib")
    spec = _spec(model_dir)
    for i, (name, descs) in enumerate(TASKS.items()):
        g = torch.Generator().manual_seed(i)
        lora = {(layer, m): (torch.randn(4, 576, generator=g) * 0.05,
                             torch.randn(spec.out_features[m], 4, generator=g) * 0.02 * (i + 1))
                for layer, m in spec.keys}
        write_adapter(spec, lora, root / name / "adapter")
        (root / name / "description.txt").write_text("\n".join(descs) + "\n")
        with open(root / name / "examples.jsonl", "w") as fh:
            for k in range(12):
                fh.write(json.dumps({"messages": [{"role": "user", "content": f"{name} example {k}?"},
                                                  {"role": "assistant", "content": f"answer {k}"}]}) + "\n")
    return root


def test_plain_folder_library_reads_spec_from_adapters(plain_library, model_dir):
    from studio.hyper.library import load_library

    lib = load_library(plain_library)
    assert [e.name for e in lib.entries] == sorted(TASKS)
    assert lib.spec.same_shapes(_spec(model_dir)) and lib.spec.r == 4 and lib.spec.alpha == 8.0
    assert lib.entries[0].train_descriptions == TASKS["multiply"] and not lib.shared_init


def test_library_problems_are_user_errors(tmp_path, plain_library):
    import shutil

    from studio.errors import UserError
    from studio.hyper.library import load_library

    shutil.copytree(plain_library / "plural", tmp_path / "plural")
    with pytest.raises(UserError, match="at least 2"):
        load_library(tmp_path)
    shutil.copytree(plain_library / "sentiment" / "adapter", tmp_path / "nodesc")
    with pytest.raises(UserError, match="no description") as err:
        load_library(tmp_path)
    assert "nodesc" in str(err.value) and "description.txt" in str(err.value)


def test_t2l_recon_training_progress_and_generate(plain_library, tmp_path, model_dir):
    from studio.hyper import api

    events = []
    metrics = api.train_hypernetwork(plain_library, tmp_path / "hn", kind="t2l", mode="recon",
                                     head="M", steps=40, hidden=32, eval_every=20,
                                     progress=events.append)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished"
    logs = [e for e in events if e["event"] == "log"]
    assert len(logs) == 40 and all(k in logs[0] for k in ("loss", "lr", "grad_norm", "eta_s"))
    first = sum(e["loss"] for e in logs[:5]) / 5
    last = sum(e["loss"] for e in logs[-5:]) / 5
    assert last < 0.9 * first, (first, last)          # it learns the library
    assert [e["step"] for e in events if e["event"] == "eval"] == [0, 20, 40]
    hn = api.load_hypernetwork(tmp_path / "hn")
    info = hn.info()
    assert info["kind"] == "t2l" and info["head"] == "M" and info["trained_on"] == sorted(TASKS)
    assert metrics["size_mb"] == info["size_mb"] > 0
    card = (tmp_path / "hn" / "MODEL_CARD.md").read_text()
    assert "| sentiment |" in card and "head M" in card
    res = api.generate(hn, tmp_path / "adapter", description="Multiply two numbers.",
                       base_model=model_dir)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert res["kind"] == "t2l" and res["seconds"] > 0 and res["size_mb"] > 0
    meta = json.loads((tmp_path / "adapter" / "generated_by.json").read_text())
    assert meta["description"] == "Multiply two numbers."
    # the network keeps its training tasks: generation names the closest ones
    saved = json.loads((tmp_path / "hn" / "tasks.json").read_text())["tasks"]
    assert {t["name"] for t in saved} == set(TASKS)
    assert res["nearest"][0]["task"] == "multiply" and len(res["nearest"]) == 3
    assert res["nearest"][0]["similarity"] > res["nearest"][1]["similarity"]
    # different sentences give different adapters
    from studio.hyper.targets import read_adapter

    res2 = api.generate(hn, tmp_path / "adapter2", description="Give the plural of a noun.")
    a1 = read_adapter(res["adapter_dir"], hn.spec)[(3, "v_proj")][1]
    a2 = read_adapter(res2["adapter_dir"], hn.spec)[(3, "v_proj")][1]
    assert not torch.allclose(a1, a2)


def test_should_stop_saves_and_reports_cancelled(plain_library, tmp_path):
    from studio.hyper import api

    events = []
    api.train_hypernetwork(plain_library, tmp_path / "hn", head="S", steps=50, hidden=32,
                           progress=events.append,
                           should_stop=lambda: sum(e["event"] == "log" for e in events) >= 3)
    assert events[-1]["event"] == "cancelled" and events[-1]["step"] == 3
    assert api.load_hypernetwork(tmp_path / "hn").info()["steps"] == 3


def test_init_from_continues_a_saved_network(plain_library, tmp_path):
    """--init-from (e.g. SFT after recon) starts from the saved weights, not from scratch."""
    from studio.errors import UserError
    from studio.hyper import api

    first = api.train_hypernetwork(plain_library, tmp_path / "a", head="S", steps=30, hidden=32)
    second = api.train_hypernetwork(plain_library, tmp_path / "b", head="S", steps=1, hidden=32,
                                    lr=1e-9, init_from=tmp_path / "a")
    fresh = api.train_hypernetwork(plain_library, tmp_path / "c", head="S", steps=1, hidden=32,
                                   lr=1e-9)
    assert abs(second["eval_loss_start"] - first["eval_loss"]) < 1e-4 * first["eval_loss"]
    assert fresh["eval_loss_start"] > first["eval_loss"]
    assert second["init_from"] == str(tmp_path / "a")
    with pytest.raises(UserError, match="another shape"):
        api.train_hypernetwork(plain_library, tmp_path / "d", head="S", steps=1, hidden=64,
                               init_from=tmp_path / "a")
    with pytest.raises(UserError, match="not a saved hypernetwork"):
        api.train_hypernetwork(plain_library, tmp_path / "e", steps=1, hidden=32,
                               init_from=tmp_path)


def test_dnd_training_and_generation(plain_library, tmp_path):
    from studio.hyper import api

    events = []
    api.train_hypernetwork(plain_library, tmp_path / "dnd", kind="dnd", steps=8,
                           progress=events.append, n_prompts=4)
    assert events[-1]["event"] == "finished"
    hn = api.load_hypernetwork(tmp_path / "dnd")
    assert hn.kind == "dnd"
    res = api.generate(hn, tmp_path / "a", prompts=["plural example 1?", "plural example 2?"])
    assert res["kind"] == "dnd" and (tmp_path / "a" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_sft_mode_runs_through_the_base_model(plain_library, tmp_path, model_dir):
    from studio.hyper import api

    events = []
    m = api.train_hypernetwork(plain_library, tmp_path / "sft", mode="sft", head="S", steps=2,
                               hidden=32, batch_tasks=1, batch_examples=2, model_path=model_dir,
                               progress=events.append)
    logs = [e for e in events if e["event"] == "log"]
    assert len(logs) == 2 and all(0 < e["loss"] < 20 for e in logs)
    assert m["mode"] == "sft"


def test_cli_train_and_generate(plain_library, tmp_path, model_dir, capsys):
    from studio.cli import main

    assert main(["hyper", "train", "--library", str(plain_library), "--out", str(tmp_path / "hn"),
                 "--head", "S", "--steps", "5", "--hidden", "32"]) == 0
    out = capsys.readouterr().out
    assert "step 5" in out and "finished" in out
    assert main(["generate", "Sort words alphabetically.", "--out", str(tmp_path / "ad"),
                 "--hypernetwork", str(tmp_path / "hn"), "--model", str(model_dir)]) == 0
    assert "generated in" in capsys.readouterr().out
    assert main(["generate", "  ", "--out", str(tmp_path / "ad2"), "--hypernetwork",
                 str(tmp_path / "hn")]) == 2
    assert "description is empty" in capsys.readouterr().err
    assert main(["generate", "x", "--out", str(tmp_path / "ad3"), "--hypernetwork",
                 str(tmp_path / "hn"), "--model", str(tmp_path)]) == 2      # not a model folder
    assert "config.json" in capsys.readouterr().err
    assert main(["hyper", "train", "--library", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
