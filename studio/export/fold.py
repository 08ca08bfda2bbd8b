"""LoRA-Dash as a plain peft LoRA: the dash update U diag(delta) V^T of each layer is appended to
that layer's LoRA matrices (rank r + s there, set through peft's rank_pattern / alpha_pattern), so
the exported adapter loads with plain peft and computes the same update:

    scale * B A + U diag(delta) V^T  ==  [scale * B, U diag(delta)] [A; V^T] * 1
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from studio.errors import UserError

DASH_META, DASH_WEIGHTS = "lora_dash.json", "lora_dash.safetensors"


def has_dash(adapter_dir: Path) -> bool:
    try:
        meta = json.loads((Path(adapter_dir) / DASH_META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(meta.get("installed")) and (Path(adapter_dir) / DASH_WEIGHTS).is_file()


def fold_lora_dash(adapter_dir: Path, out_dir: Path) -> int:
    """Write the folded adapter (config + weights) into out_dir; returns the layers folded."""
    import torch
    from safetensors.torch import load_file, save_file

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    meta = json.loads((adapter_dir / DASH_META).read_text(encoding="utf-8"))
    lora = load_file(str(adapter_dir / "adapter_model.safetensors"))
    dash = load_file(str(adapter_dir / DASH_WEIGHTS))
    rslora = bool(config.get("use_rslora"))
    rank_pattern = dict(config.get("rank_pattern") or {})
    alpha_pattern = dict(config.get("alpha_pattern") or {})
    for name in meta["layers"]:
        short = name.removeprefix("base_model.model.")
        key_a, key_b = f"{name}.lora_A.weight", f"{name}.lora_B.weight"
        if key_a not in lora or key_b not in lora:
            raise UserError(f"the LoRA-Dash layer {short} has no LoRA weights in the adapter.",
                            path=adapter_dir, fix="re-save the adapter from its run")
        r = int(rank_pattern.get(short, config["r"]))
        alpha = float(alpha_pattern.get(short, config["lora_alpha"]))
        scale = alpha / (math.sqrt(r) if rslora else r)
        A, B = lora[key_a], lora[key_b]
        U, V, delta = dash[f"{name}.U"].float(), dash[f"{name}.V"].float(), dash[f"{name}.delta"].float()
        lora[key_a] = torch.cat([A.float(), V.T], dim=0).to(A.dtype).contiguous()
        lora[key_b] = torch.cat([B.float() * scale, U * delta], dim=1).to(B.dtype).contiguous()
        new_r = r + U.shape[1]
        rank_pattern[short] = new_r
        alpha_pattern[short] = math.sqrt(new_r) if rslora else new_r
    config.update(rank_pattern=rank_pattern, alpha_pattern=alpha_pattern)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(lora, str(out_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return len(meta["layers"])
