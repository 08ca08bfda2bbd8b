"""QLoRA (Dettmers et al. 2023): LoRA adapters trained on a 4-bit NF4 quantized, frozen base model.

The manifest says "requires_quantization": "4bit", so the loader loads the base in 4 bit; this
plugin prepares the quantized model for training (peft.prepare_model_for_kbit_training) and then
adds LoRA with the same hyperparameters as the plain LoRA plugin.
"""

from studio.errors import UserError
from studio.plugins import apply_peft_config, lora_config

QUANTIZED_LAYERS = ("Linear4bit", "Linear8bitLt")


def is_quantized(model) -> bool:
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        return True
    return any(type(m).__name__ in QUANTIZED_LAYERS for m in model.modules())


def keep_trainable_on_cpu(model) -> None:
    """bitsandbytes repacks a 4-bit weight for its faster CPU kernel the first time the layer runs
    in eval mode without gradients (an evaluation, a chat turn) and never unpacks it for training;
    that kernel has no backward, so training after it silently stops changing the loss. Turn the
    repacking off for this model. (bitsandbytes' own inverse of the repacking does not restore the
    weights, so a model that was already repacked is refused instead.)"""
    packed = False
    for module in model.modules():
        if type(module).__name__ != "Linear4bit":
            continue
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
        state = getattr(module.weight, "quant_state", None)
        packed = packed or bool(getattr(state, "packing_format_for_cpu", False))
    if packed:
        raise UserError("this 4-bit model already ran an inference pass on the CPU, which repacked "
                        "its weights for a kernel that cannot train.", field="model.quantization",
                        fix="load the model again and add QLoRA before evaluating or chatting with it.")


def apply(model, params: dict, ctx: dict):
    if not is_quantized(model):
        raise UserError("QLoRA trains on a 4-bit quantized base model, but this model was loaded "
                        "unquantized.", field="model.quantization",
                        fix="choose 4-bit on the Model page (recipe: [model] quantization = \"4bit\"), "
                            "or pick the plain LoRA method.")
    keep_trainable_on_cpu(model)
    from peft import prepare_model_for_kbit_training
    # Gradient checkpointing follows the recipe (the training loop turns it on, non-reentrant);
    # peft's own default would switch it on always, which costs a third more time per step.
    model = prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=bool(ctx.get("gradient_checkpointing", False)),
        gradient_checkpointing_kwargs={"use_reentrant": False})
    return apply_peft_config(model, lora_config(params))     # with bias and use_rslora


def merge(model):
    """Merging into 4-bit weights would round the update away; merge onto an unquantized base."""
    if is_quantized(model):
        raise UserError("cannot merge a QLoRA adapter into 4-bit weights without losing most of "
                        "the update.", field="model.quantization",
                        fix="load the base model unquantized (float32/bfloat16), load this adapter "
                            "onto it, then merge; or export as adapter.")
    return model.merge_and_unload()
