"""The shipped Text-to-LoRA hypernetwork: the default of `peft-studio generate`, small, and its
adapters are standard PEFT LoRAs that change the real model's behaviour."""

from __future__ import annotations

import json

import torch


def test_shipped_t2l_is_the_default_and_small():
    from studio.hyper import api

    shipped = api.shipped_hypernetworks()
    assert shipped and shipped[0]["name"] == "t2l-smollm2-135m" and shipped[0]["kind"] == "t2l"
    assert "## Rebuild" in shipped[0]["card"] and "peft-studio hyper train" in shipped[0]["card"]
    hn = api.load_hypernetwork()                     # no folder: the shipped default
    info = hn.info()
    assert info["size_mb"] < 8 and info["r"] == 4 and info["modules"] == ["q_proj", "v_proj"]
    assert info["steps"] and info["trained_on"]


def test_cli_generate_with_the_shipped_default(tmp_path, model_dir, capsys):
    from peft import PeftModel

    from studio.cli import main
    from studio.core.models import load_model

    out = tmp_path / "sports"
    assert main(["generate", "Decide whether a sentence about sports is plausible.",
                 "--out", str(out), "--model", str(model_dir)]) == 0
    printed = capsys.readouterr().out
    assert "generated in" in printed and "ms" in printed
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(model_dir.resolve()) and cfg["r"] == 4
    base, tok = load_model(model_dir)
    model = PeftModel.from_pretrained(base, str(out))
    ids = tok("Q: Was this claim true or false?", return_tensors="pt").input_ids
    with torch.no_grad():
        with_adapter = model(input_ids=ids).logits
        with model.disable_adapter():
            plain = model(input_ids=ids).logits
    assert (with_adapter - plain).abs().max() > 1e-3     # a trained, non-zero adapter


def test_shipped_dnd_generates_from_prompts(tmp_path, model_dir):
    from studio.hyper import api

    hn = api.load_hypernetwork(api.default_hypernetwork_dir("dnd"))
    assert hn.kind == "dnd" and hn.info()["size_mb"] < 8
    res = api.generate(hn, tmp_path / "a", prompts=["What is 3 times 4?", "What is 7 times 2?"],
                       base_model=model_dir)
    assert res["kind"] == "dnd" and (tmp_path / "a" / "adapter_model.safetensors").is_file()


def test_cli_generate_names_the_closest_learned_tasks(tmp_path, model_dir):
    """As a user types it: the shipped network says which of its 16 training tasks a sentence is
    closest to, and warns when a request is far from all of them."""
    import subprocess

    from conftest import cli_program

    def run(sentence, out):
        proc = subprocess.run(cli_program() + ["generate", sentence, "--out",
                               str(tmp_path / out), "--model", str(model_dir)],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    near = run("Is this sentence about a basketball player believable?", "near")
    line = next(x for x in near.splitlines() if x.startswith("closest tasks it learned:"))
    assert line.split(": ", 1)[1].startswith("sports_understanding (0.")
    assert "far from every task" not in near
    far = run("Write a limerick about quantum chromodynamics in French.", "far")
    assert "far from every task the network learned" in far
