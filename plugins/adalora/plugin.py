"""AdaLoRA (Zhang et al. 2023) through peft: SVD-form LoRA whose rank budget moves between layers.

Needs the run's length: ctx["total_steps"] (optimizer steps). The schedule is
  steps [0, tinit)                   train at init_r everywhere (warm-up),
  steps [tinit, total - tfinal)      every delta_t steps prune singular values by importance,
  steps [total - tfinal, total]      ranks fixed, keep training.
The callback must run after loss.backward() (it scores parameters by |p * grad|) and before
optimizer.zero_grad(): the training loop calls on_step_end(step, model, optimizer) right after
optimizer.step(), while the gradients still exist.
"""

from studio.errors import UserError
from studio.plugins import apply_peft_config, parse_target_modules


def _schedule(params: dict, total_steps) -> tuple[int, int, int]:
    try:
        total = int(total_steps)
    except (TypeError, ValueError):
        total = 0
    if total <= 0:
        raise UserError("AdaLoRA needs to know the number of training steps in advance.",
                        field="training.max_steps", fix="set max_steps (or epochs) to a positive number.")
    tinit = int(total * params["tinit_fraction"])
    tfinal = int(total * params["tfinal_fraction"])
    if tinit >= total - tfinal:
        raise UserError(f"with {total} steps, warm-up ({tinit}) + final phase ({tfinal}) leave no steps "
                        "to reallocate ranks.", field="tinit_fraction",
                        fix="lower tinit_fraction / tfinal_fraction or train for more steps.")
    return total, tinit, tfinal


def apply(model, params: dict, ctx: dict):
    from peft import AdaLoraConfig, TaskType
    if params["target_r"] > params["init_r"]:
        raise UserError(f"target rank {params['target_r']} is above the initial rank {params['init_r']}; "
                        "AdaLoRA only prunes.", field="target_r", fix="use a target rank <= init_r.")
    total, tinit, tfinal = _schedule(params, ctx.get("total_steps"))
    config = AdaLoraConfig(
        task_type=TaskType.CAUSAL_LM,
        init_r=params["init_r"],
        target_r=params["target_r"],
        lora_alpha=params["lora_alpha"],
        lora_dropout=params["lora_dropout"],
        target_modules=parse_target_modules(params["target_modules"]),
        total_step=total,
        tinit=tinit,
        tfinal=tfinal,
        deltaT=params["delta_t"],
        beta1=params["beta1"],
        beta2=params["beta2"],
        orth_reg_weight=params["orth_reg_weight"],
    )
    return apply_peft_config(model, config)


class BudgetCallback:
    """Calls AdaLoraModel.update_and_allocate(step) once per optimizer step, gradients still present."""

    def __init__(self, model):
        self.tuner = model.base_model

    def on_step_end(self, step: int, model, optimizer) -> None:
        if not any(p.grad is not None for n, p in model.named_parameters() if "lora_E" in n):
            raise RuntimeError("AdaLoRA's budget update ran without gradients: on_step_end must be "
                               "called after backward() and before optimizer.zero_grad().")
        self.tuner.update_and_allocate(step)


def callbacks(model, params: dict, ctx: dict) -> list:
    return [BudgetCallback(model)]
