"""BitFit (Ben Zaken et al. 2022): train only the bias terms, optionally the norm weights too.

Not a peft method: apply() freezes the model except the chosen tensors and returns the model
itself. save() writes just those tensors (tensors.safetensors) and a small tensors.json; load()
copies them into a fresh base model; merge() is a no-op (the trained tensors are the weights).
"""


from studio.plugins import tensor_subset
from studio.errors import UserError

ATTR = tensor_subset.ATTR           # names of the trained parameters, set by apply()/load()


def _norm_modules(model):
    for name, module in model.named_modules():
        if "norm" in type(module).__name__.lower() and not list(module.children()):
            yield name, module


def select(model, params: dict) -> list[str]:
    """Names of the parameters BitFit trains for these settings."""
    names = []
    for name, _ in model.named_parameters():
        if name.endswith(".bias") or name == "bias":
            if not params["include_lm_head_bias"] and name.split(".")[-2:-1] == ["lm_head"]:
                continue
            names.append(name)
    if params["include_norms"]:
        own = {id(p): n for n, p in model.named_parameters()}
        for _, module in _norm_modules(model):
            for p in module.parameters(recurse=False):
                if id(p) in own and own[id(p)] not in names:
                    names.append(own[id(p)])
    return names


def apply(model, params: dict, ctx: dict):
    names = select(model, params)
    if not names:
        has_bias = any(n.endswith("bias") for n, _ in model.named_parameters())
        if not has_bias:
            raise UserError("this model has no bias terms, so BitFit has nothing to train.",
                            field="include_norms",
                            fix="tick 'Train norm weights' (include_norms) to train the LayerNorm/RMSNorm "
                                "weights instead, or use IA3 or LoRA, which add their own small weights.")
        raise UserError("no trainable tensors selected.", field="include_lm_head_bias",
                        fix="tick 'Train output bias' or 'Train norm weights'.")
    chosen = set(names)
    for name, param in model.named_parameters():
        param.requires_grad_(name in chosen)
    setattr(model, ATTR, names)
    return model


def save(model, out_dir) -> None:
    tensor_subset.save(model, out_dir, "bitfit", "BitFit")


def load(base_model, adapter_dir, is_trainable: bool = False):
    return tensor_subset.load(base_model, adapter_dir, "BitFit", is_trainable)


def merge(model):
    """The trained tensors already live in the model: just drop the BitFit bookkeeping."""
    return tensor_subset.merge(model)
