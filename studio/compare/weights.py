"""What a LoRA-family adapter changed in the weights, from its files alone (no model load).

For every adapted module the update is ΔW = s · B · A (A: r x in, B: out x r), with the scaling
s = lora_alpha / r, or lora_alpha / sqrt(r) for rsLoRA; rank_pattern / alpha_pattern override
r / alpha per module as in peft. Everything is computed from the small factors:

    ||ΔW||_F^2      = s^2 · trace((BᵀB)(AAᵀ))                       (r x r products)
    <ΔW1, ΔW2>_F    = s1 s2 · trace((B1ᵀB2)(A2A1ᵀ))
    singular values = s · svd(R_B R_Aᵀ)    with B = Q_B R_B, Aᵀ = Q_A R_A  (an r x r core)

    lora = read_lora(source_or_dir)           # LoraWeights: {module: Factors}
    norm_table(lora)  -> {"layers": [...], "modules": [...], "norms": [[...]]}
    spectrum(lora, module) -> {"singular_values": [...], "effective_rank": ..., ...}
    analyse(sources)  -> all of these for several adapters (what the page and the report show)
    similarity(loras) -> {"names", "overall": n x n, "per_module": {module: n x n}}

Methods without a ΔW of this form (prompt learning, IA3, LoHa, ..., DoRA's magnitude rescaling)
raise UserError saying why. Layer: compare (rank 3); torch and safetensors inside functions.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from studio.errors import UserError

WEIGHTS_FILE = "adapter_model.safetensors"
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<which>A|B)(?:\.[^.]+)?\.weight$")
_LAYER = re.compile(r"\.(?:layers|h|blocks|layer)\.(\d+)\.")

NO_DELTA = {
    "PREFIX_TUNING": "prefix tuning adds learned key/value vectors, not a weight update",
    "PROMPT_TUNING": "prompt tuning adds learned input embeddings, not a weight update",
    "P_TUNING": "p-tuning adds learned input embeddings, not a weight update",
    "MULTITASK_PROMPT_TUNING": "prompt tuning adds learned input embeddings, not a weight update",
    "IA3": "IA3 rescales activations by learned vectors; it has no low-rank update B·A",
}


@dataclass
class Factors:
    a: object           # torch tensor [r, in], float64
    b: object           # torch tensor [out, r], float64
    scaling: float
    fan_in_fan_out: bool = False

    def delta(self):
        """The full ΔW as the base layer's weight is laid out (out x in; transposed for Conv1D)."""
        d = (self.b @ self.a) * self.scaling
        return d.T if self.fan_in_fan_out else d


@dataclass
class LoraWeights:
    name: str
    modules: dict               # module path ("model.layers.0.self_attn.q_proj") -> Factors
    config: dict

    def squared_norms(self) -> dict:
        return {m: _inner(f, f) for m, f in self.modules.items()}


def module_label(module: str) -> tuple[int | None, str]:
    """(layer index or None, the module's own name) of a module path."""
    match = _LAYER.search("." + module + ".")
    return (int(match.group(1)) if match else None, module.rsplit(".", 1)[-1])


def _pattern_value(patterns: dict, module: str, default):
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _scaling(config: dict, module: str, r: int) -> float:
    alpha = _pattern_value(config.get("alpha_pattern"), module, config.get("lora_alpha", r))
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def check_has_delta(config: dict, where=None) -> None:
    """UserError when the adapter's method has no ΔW = s·B·A to analyse."""
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type in NO_DELTA:
        raise UserError(f"no weight update to analyse: {NO_DELTA[peft_type]}.", path=where,
                        fix="Weight norms and similarity need LoRA-family adapters; compare this "
                            "one by its curves and evaluation.")
    if peft_type != "LORA":
        kind = peft_type or "of an unknown type"
        raise UserError(f"weight analysis reads LoRA factors; this adapter is {kind}, whose "
                        "update is not B·A.", path=where,
                        fix="Compare this one by its curves and evaluation.")
    if config.get("use_dora"):
        raise UserError("DoRA rescales each column of W + B·A by a learned magnitude, so its update "
                        "depends on the base weights and is not B·A.", path=where,
                        fix="Compare this one by its curves and evaluation.")


def read_lora(source, name: str | None = None) -> LoraWeights:
    """The LoRA factors of an adapter folder (or an AdapterSource), in float64."""
    import torch
    from safetensors.torch import load_file

    adapter_dir = Path(getattr(source, "adapter_dir", source))
    name = name or getattr(source, "name", None) or adapter_dir.name
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file():
        raise UserError("this folder is not a PEFT adapter (no adapter_config.json).",
                        path=adapter_dir, fix="Give a run's adapter/ folder or an adapter folder.")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    check_has_delta(config, adapter_dir)
    weights_path = adapter_dir / WEIGHTS_FILE
    if not weights_path.is_file():
        raise UserError(f"the adapter has no {WEIGHTS_FILE}.", path=adapter_dir,
                        fix="Re-save it with safetensors (peft's default).")
    tensors = load_file(str(weights_path))
    parts: dict[str, dict] = {}
    for key, tensor in tensors.items():
        match = _KEY.match(key)
        if match:
            parts.setdefault(match.group("module"), {})[match.group("which")] = tensor
    fan = bool(config.get("fan_in_fan_out"))
    modules = {}
    for module in sorted(parts, key=lambda m: (module_label(m)[0] or -1, m)):
        pair = parts[module]
        if set(pair) != {"A", "B"}:
            raise UserError(f"module {module} has only lora_{''.join(pair)}.", path=weights_path,
                            fix="Re-save the adapter from its run.")
        a, b = pair["A"].to(torch.float64), pair["B"].to(torch.float64)
        if a.dim() != 2 or b.dim() != 2:       # conv LoRA: flatten the kernel dimensions
            a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
        modules[module] = Factors(a, b, _scaling(config, module, a.shape[0]), fan)
    if not modules:
        raise UserError("no LoRA factors (lora_A / lora_B) found in the weights file.",
                        path=weights_path, fix="Give a LoRA adapter folder.")
    return LoraWeights(name=name, modules=modules, config=config)


def _inner(f: Factors, g: Factors) -> float:
    """<ΔW_f, ΔW_g>_F from the factors: trace((Bfᵀ Bg)(Ag Afᵀ)) · sf · sg."""
    if f.a.shape[1] != g.a.shape[1] or f.b.shape[0] != g.b.shape[0]:
        raise UserError(f"the same module has shapes {tuple(f.delta().shape)} and "
                        f"{tuple(g.delta().shape)}: the adapters are for different base models.",
                        fix="Compare adapters of one base model.")
    return float(((f.b.T @ g.b) * (f.a @ g.a.T)).sum()) * f.scaling * g.scaling


def norm_table(lora: LoraWeights) -> dict:
    """||ΔW||_F per layer x module kind: {"layers", "modules", "norms" (None where not adapted)}."""
    cells: dict[tuple, float] = {}
    for module, sq in lora.squared_norms().items():
        layer, kind = module_label(module)
        cells[(layer, kind)] = cells.get((layer, kind), 0.0) + sq
    layers = sorted({k[0] for k in cells}, key=lambda x: -1 if x is None else x)
    kinds = sorted({k[1] for k in cells})
    norms = [[math.sqrt(cells[(layer, kind)]) if (layer, kind) in cells else None
              for kind in kinds] for layer in layers]
    return {"name": lora.name, "layers": layers, "modules": kinds, "norms": norms,
            "total": math.sqrt(sum(cells.values()))}


def find_module(lora: LoraWeights, module: str) -> str:
    """The full module path for `module`: a full path, or "LAYER.KIND" such as "3.q_proj"."""
    if module in lora.modules:
        return module
    for path in lora.modules:
        layer, kind = module_label(path)
        if f"{layer}.{kind}" == module:
            return path
    raise UserError(f"the adapter has no module {module}.", field="module",
                    fix="Use a full module path or LAYER.MODULE, e.g. "
                        f"{'.'.join(map(str, module_label(next(iter(lora.modules)))))}.")


def spectrum(lora: LoraWeights, module: str) -> dict:
    """Singular values of one module's ΔW, from the r x r core (never the full matrix), and its
    effective rank exp(entropy of σ/Σσ) (Roy & Vetterli) and numerical rank (σ > 1e-6 σ_max)."""
    import torch

    path = find_module(lora, module)
    f = lora.modules[path]
    _, r_b = torch.linalg.qr(f.b)             # B = Q_B R_B        (out x r)
    _, r_a = torch.linalg.qr(f.a.T)           # Aᵀ = Q_A R_A       (in x r)
    sv = torch.linalg.svdvals(r_b @ r_a.T) * abs(f.scaling)
    values = [float(v) for v in sv]
    total = sum(values)
    if total > 0:
        p = [v / total for v in values if v > 0]
        effective = math.exp(-sum(x * math.log(x) for x in p))
    else:
        effective = 0.0
    top = values[0] if values else 0.0
    return {"module": path, "rank": len(values), "singular_values": values,
            "effective_rank": effective,
            "numerical_rank": sum(v > 1e-6 * top for v in values) if top > 0 else 0,
            "frobenius": math.sqrt(sum(v * v for v in values))}


def similarity(loras: list[LoraWeights]) -> dict:
    """Cosine similarity of the updates between every pair of adapters: per module (common
    modules only) and overall (all updates as one vector: Σ<ΔW1,ΔW2> / (||ΔW1|| ||ΔW2||), a
    module one adapter does not touch counts as 0 in the other)."""
    n = len(loras)
    sq = [l.squared_norms() for l in loras]
    total = [math.sqrt(sum(s.values())) for s in sq]
    overall = [[0.0] * n for _ in range(n)]
    modules = sorted(set().union(*(l.modules for l in loras)),
                     key=lambda m: (module_label(m)[0] or -1, m))
    per_module = {m: [[None] * n for _ in range(n)] for m in modules}
    for i in range(n):
        for j in range(i, n):
            dot = 0.0
            for m in modules:
                fi, fj = loras[i].modules.get(m), loras[j].modules.get(m)
                if fi is None or fj is None:
                    continue
                d = sq[i][m] if i == j else _inner(fi, fj)
                dot += d
                den = math.sqrt(sq[i][m] * sq[j][m])
                cos = d / den if den > 0 else float("nan")
                per_module[m][i][j] = per_module[m][j][i] = cos
            den = total[i] * total[j]
            overall[i][j] = overall[j][i] = dot / den if den > 0 else float("nan")
    return {"names": [l.name for l in loras], "overall": overall, "per_module": per_module}


def analyse(sources, module: str | None = None) -> dict:
    """Everything the report and the page show about the weights of several adapters: the norm
    table of each, the spectrum of one module (default: the largest update of the first) in
    "spectra", the spectrum of every adapted module of every adapter in "spectra_by_module"
    (module path -> one entry per adapter that adapts it; each is an r x r SVD, so all of them
    cost little) and the similarity matrices. Adapters without a ΔW are listed under "skipped"
    with the reason."""
    loras, skipped = [], []
    for src in sources:
        try:
            loras.append(read_lora(src))
        except UserError as err:
            skipped.append({"name": getattr(src, "name", str(src)), "reason": err.message})
    if not loras:
        return {"norms": [], "spectra": [], "spectra_by_module": {}, "similarity": None,
                "skipped": skipped}
    if module is None:
        sq = loras[0].squared_norms()
        module = max(sq, key=sq.get)
    spectra = []
    for lora in loras:
        try:
            spectra.append({"name": lora.name, **spectrum(lora, module)})
        except UserError:
            pass
    by_module: dict[str, list] = {}
    for lora in loras:
        for path in lora.modules:
            by_module.setdefault(path, []).append({"name": lora.name, **spectrum(lora, path)})
    order = sorted(by_module, key=lambda m: (module_label(m)[0] or -1, m))
    return {"norms": [norm_table(l) for l in loras], "spectra": spectra,
            "spectra_by_module": {m: by_module[m] for m in order},
            "similarity": similarity(loras), "skipped": skipped}
