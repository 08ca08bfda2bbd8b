"""Prompt tuning (Lester et al. 2021) through peft: trained soft-prompt embeddings before the input.

With init = TEXT, peft starts the prompt from the token embeddings of `init_text`; it reads the
tokenizer from the local model folder (ctx["model_path"], else the model's own name_or_path), so
nothing is downloaded.
"""

from pathlib import Path

from studio.errors import UserError
from studio.plugins import apply_peft_config


def _tokenizer_folder(model, ctx: dict) -> str:
    for candidate in (ctx.get("model_path"), getattr(model, "name_or_path", None),
                      getattr(getattr(model, "config", None), "_name_or_path", None)):
        if candidate and Path(candidate).is_dir():
            return str(candidate)
    raise UserError("prompt tuning with a TEXT start needs the model's local folder to read its "
                    "tokenizer, and none is known.", field="init",
                    fix="load the model from a folder, or choose init = SAMPLE_VOCAB or RANDOM.")


def apply(model, params: dict, ctx: dict):
    from peft import PromptTuningConfig, TaskType
    kwargs = {}
    if params["init"] == "TEXT":
        if not params["init_text"].strip():
            raise UserError("the initial text is empty.", field="init_text",
                            fix="write a short task instruction, or choose init = SAMPLE_VOCAB or RANDOM.")
        kwargs = {"prompt_tuning_init_text": params["init_text"],
                  "tokenizer_name_or_path": _tokenizer_folder(model, ctx)}
    config = PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=params["num_virtual_tokens"],
        prompt_tuning_init=params["init"],
        **kwargs,
    )
    return apply_peft_config(model, config)
