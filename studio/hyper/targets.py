"""Which LoRA a hypernetwork emits, and reading/writing those LoRAs as standard PEFT adapters.

A `LoraSpec` names the targeted modules (e.g. q_proj, v_proj) of every decoder layer of one base
model, their shapes, and the LoRA rank/alpha. Hypernetworks store it in their config, so a
generated adapter needs no model weights: `write_adapter` produces the same files
`PeftModel.save_pretrained` would (adapter_config.json + adapter_model.safetensors with peft's key
names, in the base model's dtype), and plain `PeftModel.from_pretrained` loads them.

LoRA factors are not unique (B A = (B G)(G^-1 A)). `canonical_factors` gives one deterministic
factorisation of the update B A (SVD split evenly between the factors, signs fixed), used as the
reconstruction target when training on a library of independently trained LoRAs.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from studio.errors import UserError
from studio.fileio import atomic_dir

Lora = dict  # {(layer, module): (A [r, in], B [out, r])}


@dataclass
class LoraSpec:
    modules: list[str]
    num_layers: int
    path_templates: dict[str, str]      # module -> "model.layers.{layer}.self_attn.q_proj"
    in_features: dict[str, int]
    out_features: dict[str, int]
    r: int = 4
    alpha: float = 8.0
    use_rslora: bool = False
    base_model: str = ""
    model_type: str = ""
    dtype: str = "float32"
    hidden_size: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.use_rslora else self.r)

    @property
    def keys(self) -> list[tuple[int, str]]:
        return [(layer, m) for layer in range(self.num_layers) for m in self.modules]

    def module_path(self, layer: int, module: str) -> str:
        return self.path_templates[module].format(layer=layer)

    def saved_key(self, layer: int, module: str, which: str) -> str:
        """Key in adapter_model.safetensors, as peft writes it."""
        return f"base_model.model.{self.module_path(layer, module)}.lora_{which}.weight"

    def live_key(self, layer: int, module: str, which: str, adapter: str = "default") -> str:
        """Parameter name inside a PeftModel (for torch.func.functional_call)."""
        return f"base_model.model.{self.module_path(layer, module)}.lora_{which}.{adapter}.weight"

    def lora_config(self):
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, use_rslora=self.use_rslora,
                          target_modules=list(self.modules), lora_dropout=0.0, bias="none",
                          task_type="CAUSAL_LM", base_model_name_or_path=self.base_model or None)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "LoraSpec":
        return cls(**data)

    def same_shapes(self, other: "LoraSpec") -> bool:
        return (self.modules == other.modules and self.num_layers == other.num_layers
                and self.in_features == other.in_features
                and self.out_features == other.out_features)


_LAYER_RE = re.compile(r"^(.*\.)(\d+)(\..*)$")


def spec_from_model(model, modules=("q_proj", "v_proj"), r: int = 4, alpha: float = 8.0,
                    use_rslora: bool = False, base_model: str | Path = "") -> LoraSpec:
    """Read the targeted Linear layers' shapes from a loaded (plain, un-wrapped) model."""
    import torch

    found: dict[str, dict[int, tuple[str, int, int]]] = {m: {} for m in modules}
    for name, mod in model.named_modules():
        short = name.rsplit(".", 1)[-1]
        if short in found and isinstance(mod, torch.nn.Linear):
            match = _LAYER_RE.match(name)
            if match:
                template = match.group(1) + "{layer}" + match.group(3)
                found[short][int(match.group(2))] = (template, mod.in_features, mod.out_features)
    if any(not v for v in found.values()):
        missing = [m for m, v in found.items() if not v]
        raise UserError(f"the model has no per-layer Linear modules named {missing}.",
                        field="target_modules", fix="Choose modules the model has, e.g. q_proj, v_proj.")
    layer_counts = {len(v) for v in found.values()}
    if len(layer_counts) != 1:
        raise UserError("the targeted modules do not appear in every layer.", field="target_modules",
                        fix="Target modules present in all decoder layers.")
    first = {m: v[0] for m, v in found.items()}
    config = getattr(model, "config", None)
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    return LoraSpec(
        modules=list(modules), num_layers=layer_counts.pop(),
        path_templates={m: t[0] for m, t in first.items()},
        in_features={m: t[1] for m, t in first.items()},
        out_features={m: t[2] for m, t in first.items()},
        r=int(r), alpha=float(alpha), use_rslora=bool(use_rslora), base_model=str(base_model),
        model_type=str(getattr(config, "model_type", "")), dtype=dtype,
        hidden_size=int(getattr(config, "hidden_size", 0) or 0))


def _read_config(base) -> tuple[dict, str]:
    """(config dict, folder path or "") from a folder path, a dict or a transformers config."""
    if base is None:
        return {}, ""
    if isinstance(base, (str, Path)):
        folder = Path(base)
        cfg_path = folder / "config.json" if folder.is_dir() else folder
        if not cfg_path.is_file():
            raise UserError("no config.json found for the base model.", path=folder,
                            fix="Point to the base model folder the hypernetwork was trained for.")
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        return cfg, str(cfg_path.parent.resolve())
    if hasattr(base, "to_dict"):
        base = base.to_dict()
    cfg = dict(base)
    return cfg, str(cfg.get("_name_or_path", "") or "")


def check_base_model(spec: LoraSpec, base) -> tuple[str, str]:
    """Check the base model matches the spec; return (base model path, dtype) for the adapter."""
    cfg, folder = _read_config(base)
    if not cfg:
        return spec.base_model, spec.dtype
    cfg = cfg.get("text_config", cfg) if "num_hidden_layers" not in cfg else cfg
    layers = cfg.get("num_hidden_layers")
    hidden = cfg.get("hidden_size")
    if layers is not None and int(layers) != spec.num_layers or (
            hidden and spec.hidden_size and int(hidden) != spec.hidden_size):
        raise UserError(
            f"the hypernetwork makes LoRAs for a {spec.num_layers}-layer model with hidden size "
            f"{spec.hidden_size}, but this base model has {layers} layers, hidden size {hidden}.",
            path=folder or None, fix="Load the base model the hypernetwork was trained for.")
    dtype = str(cfg.get("dtype") or cfg.get("torch_dtype") or spec.dtype)
    return folder or spec.base_model, dtype if dtype in ("float32", "bfloat16", "float16") else spec.dtype


from studio.core.adapter_files import (  # noqa: E402,F401 - moved down to core: transfer uses them too
    ADAPTER_CONFIG, ADAPTER_FILES, ADAPTER_WEIGHTS, check_adapter_target, is_adapter_folder)


def write_adapter(spec: LoraSpec, lora: Lora, out_dir: str | Path, base_model: str | None = None,
                  dtype: str | None = None, metadata: dict | None = None) -> Path:
    """Write a standard PEFT LoRA adapter folder: built in a temp folder beside `out_dir`, then
    renamed into place. `out_dir` may be new, empty or an adapter folder (replaced only once the
    new one is complete); anything else is refused (check_adapter_target)."""
    import torch
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    target = check_adapter_target(out_dir)
    torch_dtype = getattr(torch, dtype or spec.dtype)
    tensors = {}
    for layer, m in spec.keys:
        a, b = lora[(layer, m)]
        if tuple(a.shape) != (spec.r, spec.in_features[m]) or \
                tuple(b.shape) != (spec.out_features[m], spec.r):
            raise ValueError(f"LoRA for layer {layer} {m} has shapes {tuple(a.shape)}, {tuple(b.shape)}")
        tensors[spec.saved_key(layer, m, "A")] = a.detach().to("cpu", torch_dtype).contiguous()
        tensors[spec.saved_key(layer, m, "B")] = b.detach().to("cpu", torch_dtype).contiguous()
    try:
        with atomic_dir(target, replace=target.is_dir()) as tmp:
            config = spec.lora_config()
            config.base_model_name_or_path = base_model if base_model is not None else spec.base_model
            config.save_pretrained(str(tmp))
            save_file(tensors, str(tmp / ADAPTER_WEIGHTS[0]), metadata={"format": "pt"})
            if metadata:
                (tmp / "generated_by.json").write_text(json.dumps(metadata, indent=1),
                                                       encoding="utf-8")
    except (FileExistsError, NotADirectoryError, PermissionError) as err:
        raise UserError(f"the adapter could not be written here ({err.strerror or err}).",
                        path=out_dir, fix="Choose a new folder you can write to, e.g. "
                                          "--out ./my-adapter.") from err
    return out_dir


def read_adapter(adapter_dir: str | Path, spec: LoraSpec, weights_file: str | Path | None = None
                 ) -> Lora:
    """Read a PEFT LoRA adapter made for `spec`'s modules (rank may differ) as float32 tensors."""
    import torch
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    weights = Path(weights_file) if weights_file else adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        raise UserError("no adapter_model.safetensors found.", path=adapter_dir,
                        fix="Point to a PEFT LoRA adapter folder (saved with safetensors).")
    state = load_file(str(weights))
    out = {}
    for layer, m in spec.keys:
        ka, kb = spec.saved_key(layer, m, "A"), spec.saved_key(layer, m, "B")
        if ka not in state or kb not in state:
            raise UserError(f"the adapter has no LoRA for layer {layer} {m}.", path=weights,
                            fix=f"Use adapters trained on {', '.join(spec.modules)} of this base model.")
        out[(layer, m)] = (state[ka].to(torch.float32), state[kb].to(torch.float32))
    return out


def canonical_factors(a, b, r: int):
    """One deterministic rank-r factorisation (A', B') of the update B A.

    SVD B A = U S V^T; A' = sqrt(S) V^T, B' = U sqrt(S) over the top r singular values; each
    component's sign is flipped so that the largest-magnitude entry of its U column is positive.
    """
    import torch

    # B A = (Qb Rb)(Ra^T Qa^T) -> SVD of the small core Rb Ra^T is cheap and exact.
    qb, rb = torch.linalg.qr(b.double())
    qa, ra = torch.linalg.qr(a.double().T)
    u_s, s, vh_s = torch.linalg.svd(rb @ ra.T)
    u, vh = qb @ u_s, vh_s @ qa.T
    k = min(r, s.numel())
    u, s, vh = u[:, :k], s[:k], vh[:k]
    idx = u.abs().argmax(dim=0)
    sign = torch.sign(u[idx, torch.arange(k)])
    sign[sign == 0] = 1
    u, vh = u * sign, vh * sign[:, None]
    root = s.sqrt()
    a_c, b_c = root[:, None] * vh, u * root
    if k < r:   # pad with zero components
        a_c = torch.cat([a_c, a_c.new_zeros(r - k, a_c.shape[1])])
        b_c = torch.cat([b_c, b_c.new_zeros(b_c.shape[0], r - k)], dim=1)
    return a_c.float(), b_c.float()


def delta_weight(spec: LoraSpec, lora: Lora, layer: int, module: str):
    a, b = lora[(layer, module)]
    return spec.scaling * (b @ a)
