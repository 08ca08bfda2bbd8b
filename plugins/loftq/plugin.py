"""LoftQ (Li et al. 2023): LoRA initialised to cancel the error of quantising the base weights.

For every adapted linear layer, alternating for `loftq_iter` rounds: Q = dequant(quant(W - s*BA)),
then s*BA = best rank-r approximation of W - Q (SVD). The layer's base weight is replaced by Q,
so training sees exactly the weights a 4-bit (NF4, block 64, no double quantisation) or int8
base would have, and Q + s*BA starts close to W.

peft's own `init_lora_weights="loftq"` runs only on CUDA/XPU and ignores alpha/r; this does the
same with bitsandbytes' CPU-capable (de)quantisation, on any device, with the scale folded in.
The adapter is saved in plain peft format plus `loftq.json`; it belongs to the *quantised* base:
load() re-quantises the listed weights of an unquantised base (deterministic) before attaching
it, or attaches it directly to a base loaded in 4-bit/8-bit.
"""

import json
from pathlib import Path

from studio.errors import UserError
from studio.plugins import apply_peft_config, lora_config

META_FILE = "loftq.json"
BLOCKSIZE = 64
QUANT_TYPE = "nf4"
META_ATTR = "studio_loftq"


def _roundtrip(weight, bits: int):
    """The weight as the quantised base sees it: quantise then dequantise (float32, same device)."""
    import bitsandbytes.functional as bnbf
    import torch
    w = weight.detach().to(torch.float32).contiguous()
    if bits == 4:
        packed, state = bnbf.quantize_4bit(w.cpu(), blocksize=BLOCKSIZE, quant_type=QUANT_TYPE)
        out = bnbf.dequantize_4bit(packed, state)
    else:
        codes, scales, _ = bnbf.int8_vectorwise_quant(w.cpu())
        out = bnbf.int8_vectorwise_dequant(codes, scales)
    return out.to(device=weight.device, dtype=torch.float32)


def _is_quantized(model) -> bool:
    return any(type(p).__name__ in ("Params4bit", "Int8Params") for p in model.parameters())


def loftq_layer(weight, rank: int, scale: float, bits: int, iters: int):
    """Return (Q, A, B) with Q + scale * B @ A ~= weight (all float32)."""
    import torch
    w = weight.detach().to(torch.float32)
    target = w
    for _ in range(iters):
        q = _roundtrip(target, bits)
        u, s, vh = torch.linalg.svd(w - q, full_matrices=False)
        root = torch.sqrt(s[:rank] / scale)
        b, a = u[:, :rank] * root, root[:, None] * vh[:rank]
        target = w - scale * (b @ a)
    return q, a.contiguous(), b.contiguous()


def apply(model, params: dict, ctx: dict):
    import torch
    from peft.tuners.lora import LoraLayer

    if _is_quantized(model):
        raise UserError("LoftQ needs the unquantised model: it computes the quantisation error itself.",
                        field="model.quantization",
                        fix="set quantization to none (\"\"); LoftQ simulates the 4-bit base on its own.")
    model = apply_peft_config(model, lora_config(params), linear_only=True)
    done = []
    with torch.no_grad():
        for name, module in model.base_model.model.named_modules():
            if not isinstance(module, LoraLayer) or "default" not in module.lora_A:
                continue
            base = module.get_base_layer()
            q, a, b = loftq_layer(base.weight, module.r["default"], module.scaling["default"],
                                  params["loftq_bits"], params["loftq_iter"])
            base.weight.copy_(q.to(base.weight.dtype))
            module.lora_A["default"].weight.copy_(a)
            module.lora_B["default"].weight.copy_(b)
            done.append(name)
    if not done:
        raise UserError("LoftQ found no linear layers to adapt.", field="target_modules",
                        fix="target linear layers, e.g. 'all-linear'.")
    setattr(model, META_ATTR, {"bits": params["loftq_bits"], "iterations": params["loftq_iter"],
                               "blocksize": BLOCKSIZE, "quant_type": QUANT_TYPE, "quantized_modules": done})
    return model


def save(model, out_dir) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    meta = getattr(model, META_ATTR, None)
    if meta is not None:
        note = ("This LoRA belongs to the quantised base: load it with PEFT Studio's loftq plugin, "
                "or attach it to the model loaded in 4-bit NF4 (block 64, no double quantisation).")
        (out_dir / META_FILE).write_text(json.dumps({**meta, "note": note}, indent=1))


def load(base_model, adapter_dir, is_trainable: bool = False):
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    meta_path = adapter_dir / META_FILE
    if not meta_path.is_file() or not (adapter_dir / "adapter_config.json").is_file():
        raise UserError(f"not a LoftQ adapter folder (needs adapter_config.json and {META_FILE}).",
                        path=adapter_dir, fix="choose the 'adapter' folder of a finished LoftQ run.")
    try:
        meta = json.loads(meta_path.read_text())
        bits, names = int(meta["bits"]), list(meta["quantized_modules"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{META_FILE} is damaged ({exc}).", path=meta_path,
                        fix="re-export the adapter from its run folder.") from None
    if not _is_quantized(base_model):
        import torch
        modules = dict(base_model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise UserError(f"this LoftQ adapter was made for another model (no layer {missing[0]}).",
                            path=adapter_dir, fix="load it on the base model it was trained on.")
        with torch.no_grad():
            for name in names:
                weight = modules[name].weight
                weight.copy_(_roundtrip(weight, bits).to(weight.dtype))
    model = PeftModel.from_pretrained(base_model, str(adapter_dir), is_trainable=is_trainable)
    setattr(model, META_ATTR, meta)
    return model
