"""Helpers for plugin code and the GUI/CLI: target-module parsing, peft's get_peft_model with a
clear error, parameter counts. torch/peft are imported inside the functions only.
"""

from __future__ import annotations

from studio.errors import UserError


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit packed weights count their real element count."""
    trainable = total = 0
    for param in model.parameters():
        n = param.numel()
        if type(param).__name__ == "Params4bit":
            n *= 2 * param.element_size()   # two 4-bit values per byte of storage
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total


def parse_target_modules(text: str) -> str | list[str]:
    """'all-linear' stays as is; 're:<regex>' becomes a regex; 'q_proj, v_proj' becomes a list."""
    text = (text or "").strip()
    if text == "all-linear":
        return text
    if text.startswith("re:"):
        return text[3:]
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UserError("target_modules is empty.", field="target_modules",
                        fix="use 'all-linear' or a comma list such as 'q_proj,v_proj'.")
    return names


LORA_OPTIONS = ("bias", "use_rslora")     # the "lora_options" fragment, passed on when present


def peft_config(class_name: str, params: dict, names=(), **extra):
    """peft's `class_name` config (LoHaConfig, PrefixTuningConfig, ...) for a causal LM: each
    parameter in `names` passed on under its own name (target_modules parsed the studio's way),
    then `extra` (fixed or renamed arguments). A method plugin's apply() is then one line."""
    import peft

    kwargs = {"task_type": peft.TaskType.CAUSAL_LM}
    for name in names:
        kwargs[name] = parse_target_modules(params[name]) if name == "target_modules" else params[name]
    return getattr(peft, class_name)(**{**kwargs, **extra})


def lora_config(params: dict, **extra):
    """peft's LoraConfig for a causal LM from the "lora" fragment's parameters (r, lora_alpha,
    lora_dropout, target_modules) and, when the manifest includes them, the "lora_options" ones
    (bias, use_rslora); `extra` adds or overrides LoraConfig arguments (use_dora=True,
    init_lora_weights="olora", ...)."""
    names = ("r", "lora_alpha", "lora_dropout", "target_modules") + tuple(
        key for key in LORA_OPTIONS if key in params)
    return peft_config("LoraConfig", params, names, **extra)


def linear_module_names(model) -> list[str]:
    """Short names of the Linear-like leaf modules (what target_modules can name), in model order."""
    names: list[str] = []
    for full, module in model.named_modules():
        if "Linear" in type(module).__name__ and not list(module.children()):
            short = full.rsplit(".", 1)[-1]
            if short not in names:
                names.append(short)
    return names


# separate projections and the fused module some families use instead (Phi-3: qkv_proj,
# gate_up_proj)
FUSED = {"q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj",
         "gate_proj": "gate_up_proj", "up_proj": "gate_up_proj"}


def fused_equivalents(model, names: list[str]) -> list[str] | None:
    """`names` with each projection this model does not have replaced by the fused module that
    holds it (k_proj,v_proj,down_proj -> qkv_proj,down_proj on Phi-3); None when some name has no
    such stand-in."""
    short = set(linear_module_names(model))
    out: list[str] = []
    for name in names:
        use = name if name in short else FUSED.get(name) if FUSED.get(name) in short else None
        if use is None:
            return None
        if use not in out:
            out.append(use)
    return out


def check_target_names(model, targets) -> None:
    """UserError naming each listed target module that matches no module of the model (peft
    accepts a list where only some names match, and silently ignores the rest). A regex string
    or 'all-linear' is left to peft."""
    if isinstance(targets, str) or not targets:
        return
    full_names = [name for name, _ in model.named_modules()]
    missing = [t for t in sorted(targets)
               if not any(n == t or n.endswith("." + t) for n in full_names)]
    if missing:
        fused = fused_equivalents(model, sorted(targets))
        hint = ("this model fuses them: use '" + ",".join(fused) + "' or 'all-linear'"
                ) if fused else "use 'all-linear' or names from: " + ", ".join(
                    linear_module_names(model))
        raise UserError(f"target module{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(missing)} match{'' if len(missing) > 1 else 'es'} nothing in "
                        "this model.", field="target_modules", fix=hint)


def fused_experts(model) -> list[str]:
    """Names of mixture-of-experts blocks that hold their experts as fused 3-D tensors instead of
    Linear layers (transformers 5's Mixtral, Qwen2/3-MoE, ...). peft reaches them only through
    parameter targeting (lora.ParamWrapper), which plain LoRA supports and DoRA, PiSSA, OLoRA,
    EVA, LoftQ and the other methods do not."""
    return [name for name, module in model.named_modules()
            if type(module).__name__.endswith("Experts")
            and any(p.ndim == 3 for p in module.parameters(recurse=False))]


def _matrix_only(config) -> bool:
    """A LoRA config whose set-up needs weight matrices (DoRA's norms, an SVD or data-driven
    initialisation): it cannot take the fused expert tensors."""
    init = getattr(config, "init_lora_weights", True)
    return bool(getattr(config, "use_dora", False)) or init not in (True, False, "gaussian")


def linear_targets(model) -> list[str]:
    """'all-linear' spelt out as the model's Linear layer names, without the output head."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = [name for name, module in model.named_modules()
             if "Linear" in type(module).__name__ and not list(module.children())
             and module is not head]
    return sorted({name.rsplit(".", 1)[-1] for name in names})


def apply_peft_config(model, config, *, linear_only: bool = False):
    """peft.get_peft_model, turning 'target modules not found' into a UserError on target_modules;
    a listed target that matches nothing is a UserError too (check_target_names).

    On a model with fused expert tensors, 'all-linear' for a method that needs weight matrices
    (`linear_only`, or a DoRA / PiSSA / OLoRA / EVA config) means the Linear layers only: the
    attention; the experts stay as they are (peft would fail on them)."""
    from peft import get_peft_model
    if (getattr(config, "target_modules", None) == "all-linear"
            and (linear_only or _matrix_only(config)) and fused_experts(model)):
        config.target_modules = linear_targets(model)
    check_target_names(model, getattr(config, "target_modules", None))
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        if "ParamWrapper" in str(exc) and "dropout" in str(exc):
            raise UserError("this mixture-of-experts model keeps its experts as fused tensors, "
                            "which peft adapts directly, and that has no dropout.",
                            field="lora_dropout",
                            fix="set Dropout (lora_dropout) to 0 for this model.") from None
        if "ParamWrapper" in str(exc):
            raise UserError(f"this method cannot adapt the fused expert tensors of a "
                            f"mixture-of-experts model (peft: {exc}).", field="target_modules",
                            fix="list the attention layers only, e.g. "
                                "'q_proj,k_proj,v_proj,o_proj', or use LoRA.") from None
        if type(exc).__name__ == "NoMatchingPeftModuleError" or "not found in the base" in str(exc):
            layers = getattr(config, "layers_to_transform", None)
            extra = f" (in layers {layers})" if layers is not None else ""
            raise UserError(f"none of the target modules {config.target_modules!r}{extra} exist in "
                            "this model.", field="target_modules",
                            fix="use 'all-linear' or names from: "
                                + ", ".join(linear_module_names(model))) from None
        raise
