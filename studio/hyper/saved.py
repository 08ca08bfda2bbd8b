"""A saved hypernetwork folder: hypernetwork.json (its config, with "kind") and
hypernetwork.safetensors (its weights), read and written the same way for Text-to-LoRA and DnD.
torch is imported only when weights are read or written."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from studio.errors import UserError
from studio.fileio import atomic_file, read_json_object, write_json_atomic

CONFIG_FILE = "hypernetwork.json"
WEIGHTS_FILE = "hypernetwork.safetensors"


def read_hyper_config(folder: str | Path, kind: str | None = None) -> dict:
    """The folder's hypernetwork.json; UserError when missing, not JSON, or (with `kind`) of
    another kind."""
    folder = Path(folder)
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        raise UserError("not a hypernetwork folder (no hypernetwork.json).", path=folder,
                        fix="Choose a folder saved by PEFT Studio's hypernetwork training.")
    config = read_json_object(cfg_path, "hypernetwork.json", "Re-save the hypernetwork.",
                              strict=True)
    if kind is not None and config.get("kind") != kind:
        raise UserError(f"this hypernetwork is a '{config.get('kind')}', not a '{kind}'.",
                        path=cfg_path, field="kind", fix="Open it with the matching generator.")
    return config


def save_network(net, out_dir: str | Path) -> Path:
    """Write `net`'s weights and config (a dataclass) into `out_dir`, each file by temp + rename;
    other files in the folder are left alone."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_file(out_dir / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    write_json_atomic(out_dir / CONFIG_FILE, asdict(net.config), indent=1)
    return out_dir


def load_weights(net, folder: str | Path) -> None:
    from safetensors.torch import load_file

    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise UserError("hypernetwork weights are missing.", path=path,
                        fix="Re-save or re-train the hypernetwork.")
    try:
        net.load_state_dict(load_file(str(path)))
    except RuntimeError as err:
        raise UserError(f"weights do not match hypernetwork.json ({str(err).splitlines()[0]}).",
                        path=path, fix="Re-save or re-train the hypernetwork.") from err
