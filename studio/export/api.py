"""Export a run's adapter: as the adapter itself, as a merged transformers model, as GGUF, or as
an Ollama folder, each with a parity report (parity.json + parity.md) and a verdict.

    plan = estimate(source, "merged", dtype="bf16")      # disk and memory, before starting
    result = export(source, target, "merged", dtype="bf16", parity_prompts=8,
                    progress=lambda phase, done, total: ..., cancel=lambda: False)

Every file is written into `<target>.partial-<random>/` and renamed onto the target at the end
(studio.export.staging). The base model is loaded once at a time: the reference (adapter on its
base, as trained) is measured, the same model is merged in place when it was loaded unquantised
in float32 (a QLoRA base is reloaded unquantised first), saved, dropped, and the saved folder is
loaded again with plain transformers / peft / llama.cpp and measured.
"""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

from studio.errors import UserError
from studio.export import parity
from studio.export.card import model_card
from studio.export.staging import MB, Cancelled, Staging, check_disk, check_target

FORMATS = ("adapter", "merged", "gguf", "ollama")
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
MAX_SHARD_SIZE = "2GB"


def _noop(*_args) -> None:
    pass


class _Run:
    """Progress and cancellation for one export."""

    def __init__(self, progress, cancel) -> None:
        self.progress = progress or _noop
        self.cancel = cancel or (lambda: False)

    def phase(self, name: str, done: int = 0, total: int = 1) -> None:
        if self.cancel():
            raise Cancelled()
        self.progress(name, done, total)

    def stepper(self, name: str):
        def step(done, total):
            self.phase(name, done, total)
        return step


def _dir_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def parameter_count(base_model: Path) -> int:
    """From the safetensors headers (else config.json), without loading weights or torch."""
    import json

    from studio.core import models

    count = models._safetensors_param_count(Path(base_model))
    if count is None:
        try:
            config = json.loads((Path(base_model) / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise UserError("the base model has no readable config.json.", path=base_model,
                            fix="pick the base model folder with --model DIR") from None
        count = models._config_param_count(models._text_config(config))
    return int(count or 0)


def estimate(base_model, adapter_dir, fmt: str, dtype: str = "fp32", quant: str = "f16") -> dict:
    """What the export needs before it starts: peak disk in the staging folder, the final size,
    and memory (the base loaded unquantised in float32 for the merge, plus the measurements).
    Cheap: reads file headers only (no torch), so the dialog shows it before starting."""
    from studio.export import gguf

    _check_choice(fmt, dtype, quant)
    base_model, adapter_dir = Path(base_model), Path(adapter_dir)
    params = parameter_count(base_model)
    tokenizer_bytes = sum(f.stat().st_size for f in base_model.iterdir()
                          if f.is_file() and not f.name.endswith((".safetensors", ".bin")))
    adapter_bytes = _dir_bytes(adapter_dir)
    if fmt == "adapter":
        final = peak = adapter_bytes + MB
        memory = params * 4
    elif fmt == "merged":
        final = peak = params * DTYPE_BYTES[dtype] + tokenizer_bytes
        memory = params * (4 + DTYPE_BYTES[dtype])
    else:
        final = int(params * gguf.BYTES_PER_PARAM[quant]) + tokenizer_bytes
        peak = params * 4 + tokenizer_bytes + final + (
            params * 2 if quant in gguf.LLAMA_QUANTIZE_TYPES else 0)
        memory = params * 4 + final
    return {"parameters": params, "final_bytes": int(final), "peak_disk_bytes": int(peak * 1.05),
            "memory_bytes": int(memory * 1.2), "text": (
                f"{params / 1e6:,.0f}M parameters: needs about {peak * 1.05 / MB:,.0f} MB of free "
                f"disk while exporting ({final / MB:,.0f} MB at the end) and "
                f"{memory * 1.2 / MB:,.0f} MB of memory.")}


def _check_choice(fmt, dtype, quant) -> None:
    from studio.export import gguf

    if fmt not in FORMATS:
        raise UserError(f"unknown export format '{fmt}'.", field="format",
                        fix="use adapter, merged, gguf or ollama")
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'.", field="dtype", fix="use fp32, bf16 or fp16")
    if fmt in ("gguf", "ollama") and quant not in gguf.QUANT_TYPES:
        raise UserError(f"unknown GGUF type '{quant}'.", field="quant",
                        fix="use one of " + ", ".join(gguf.QUANT_TYPES))


# ---- loading ----------------------------------------------------------------------------------

def _load_reference(source):
    """The adapter on its base model as it was trained (quantised base for QLoRA)."""
    from studio.core.chat import attach_adapter
    from studio.core.models import load_model

    dtype = "float32"
    if source.recipe is not None and source.recipe.model.dtype in ("float32", "bfloat16",
                                                                   "float16"):
        dtype = source.recipe.model.dtype
    model, tokenizer = load_model(source.base_model, quantization=source.quantization,
                                  dtype=dtype, device="cpu")
    model = attach_adapter(model, source.base_model, source.adapter_dir, plugin=source.plugin)
    return model, tokenizer, dtype


def _load_for_merge(source):
    """The adapter on the base loaded unquantised in float32 (a QLoRA adapter is merged onto the
    de-quantised base: the original weights, not their 4-bit rounding)."""
    from studio.core.chat import attach_adapter
    from studio.core.models import load_model

    model, _tok = load_model(source.base_model, quantization=None, dtype="float32", device="cpu")
    return attach_adapter(model, source.base_model, source.adapter_dir, plugin=source.plugin)


def _merge(source, model):
    """The plugin's merge (peft merge_and_unload, module by module, in place)."""
    merged = source.plugin.merge(model)
    if hasattr(merged, "peft_config") or any("lora_" in n for n, _ in merged.named_modules()):
        raise UserError(f"merging {source.method} left adapter layers in the model.",
                        path=source.adapter_dir, fix="export --format adapter instead")
    return merged


def save_merged(model, tokenizer, folder: Path, dtype: str, base_model: Path) -> None:
    """A complete transformers folder: sharded safetensors, config, generation config, tokenizer
    and chat template."""
    import torch
    from transformers import GenerationConfig

    model = model.to(getattr(torch, DTYPES[dtype]))
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model.hf_quantizer = None
    config.dtype = DTYPES[dtype]
    if (base_model / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(str(base_model))
    _stop_at_end_of_turn(model.generation_config, tokenizer)
    model.save_pretrained(str(folder), safe_serialization=True, max_shard_size=MAX_SHARD_SIZE)
    tokenizer.save_pretrained(str(folder))


def _stop_at_end_of_turn(generation_config, tokenizer) -> None:
    """The merged model stops where the studio's chat stopped: the template's end-of-turn token
    joins the eos ids (a base folder's generation config often names only the tokenizer's eos,
    e.g. Gemma's <eos> without <end_of_turn>, and plain transformers would talk past the turn)."""
    from studio.core.data import end_of_turn_token_ids

    configured = generation_config.eos_token_id
    ids = [configured] if isinstance(configured, int) else list(configured or [])
    for token_id in end_of_turn_token_ids(tokenizer):
        if token_id not in ids:
            ids.append(token_id)
    if ids:
        generation_config.eos_token_id = ids[0] if len(ids) == 1 else ids


def _measure_saved_merged(folder: Path, dtype: str, prepared, step):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=getattr(torch, DTYPES[dtype]))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return parity.measure_hf(model, tokenizer, prepared, step=step), tokenizer


def _copy_adapter(source, folder: Path) -> str | None:
    """The adapter files as plain peft loads them; LoRA-Dash directions are folded into the
    LoRA matrices (studio.export.fold). Returns a note for the report, if any."""
    from studio.export import fold

    if fold.has_dash(source.adapter_dir):
        layers = fold.fold_lora_dash(source.adapter_dir, folder)
        return (f"LoRA-Dash: the dash directions of {layers} layers are folded into their LoRA "
                "matrices (rank_pattern), so plain peft loads the whole adapter")
    for item in source.adapter_dir.iterdir():
        if item.is_file() and item.name != "README.md":
            shutil.copy2(item, folder / item.name)
    return None


# ---- the export -------------------------------------------------------------------------------

def phases_for(fmt: str) -> list[str]:
    common = ["reference", "writing", "checking"]
    return {"adapter": common, "merged": ["reference", "merging", "writing", "checking"],
            "gguf": ["reference", "merging", "writing", "checking", "converting", "checking gguf",
                     "gguf lora"],
            "ollama": ["reference", "merging", "writing", "checking", "converting",
                       "checking gguf", "gguf lora", "modelfile"]}[fmt]


def export(source, target, fmt: str, *, dtype: str = "fp32", quant: str = "f16",
           parity_prompts: int = 8, name: str | None = None, gguf_lora: bool = False,
           progress=None, cancel=None) -> dict:
    """Run one export; returns {"target", "report", "estimate", "files", ...}. Raises UserError
    for what the user can fix and staging.Cancelled when cancelled."""
    from studio.export import gguf, ollama

    _check_choice(fmt, dtype, quant)
    Path(target).expanduser().absolute().parent.mkdir(parents=True, exist_ok=True)
    target = check_target(target)
    if fmt != "adapter":
        source.check_mergeable()
    if fmt in ("gguf", "ollama"):
        gguf.require_tools()
    plan = estimate(source.base_model, source.adapter_dir, fmt, dtype, quant)
    check_disk(target, plan["peak_disk_bytes"], f"this {fmt} export")
    run = _Run(progress, cancel)
    notes, comparisons = [plan["text"]], []
    with Staging(target) as stage:
        run.phase("reference")
        model, tokenizer, ref_dtype = _load_reference(source)
        examples, examples_from = parity.parity_examples(source.recipe, parity_prompts)
        prepared = parity.prepared_examples(examples, tokenizer)
        reference = parity.measure_hf(model, tokenizer, prepared, step=run.stepper("reference"))
        decode = tokenizer.decode
        conversations = [p["conversation"] for p in prepared]
        out = stage.path
        extra = {}
        if fmt == "adapter":
            model = None                  # one model in memory at a time
            gc.collect()
            run.phase("writing")
            folded = _copy_adapter(source, out)
            if folded:
                notes.append(folded)
            run.phase("checking")
            exported = _measure_plain_peft(source, out, prepared, run.stepper("checking"))
            comparisons.append(parity.compare(
                reference, exported, parity.precision_class(), decode,
                export_name="exported adapter, loaded with plain peft"))
        else:
            run.phase("merging")
            dequantised = None
            if source.quantization or ref_dtype != "float32":
                model = None
                gc.collect()
                model = _load_for_merge(source)
                # what is merged: the adapter on the original (de-quantised) float32 weights
                dequantised = parity.measure_hf(model, tokenizer, prepared,
                                                step=run.stepper("merging"))
            merged = _merge(source, model)
            model = None
            hf_dir = out if fmt == "merged" else out / "hf-merged-fp32"
            hf_dir.mkdir(exist_ok=True)
            hf_dtype = dtype if fmt == "merged" else "fp32"
            run.phase("writing")
            save_merged(merged, tokenizer, hf_dir, hf_dtype, source.base_model)
            merged = None
            gc.collect()
            run.phase("checking")
            hf_measured, export_tok = _measure_saved_merged(hf_dir, hf_dtype, prepared,
                                                            run.stepper("checking"))
            export_name = f"merged {hf_dtype} model, loaded with plain transformers"
            if dequantised is None:
                comparisons.append(parity.compare(reference, hf_measured,
                                                  parity.precision_class(hf_dtype), decode,
                                                  export_name=export_name))
            else:
                comparisons.append(parity.compare(
                    reference, hf_measured,
                    parity.precision_class(hf_dtype, reference_quantization=source.quantization),
                    decode, export_name=export_name,
                    reference_name=f"adapter on the {source.quantization or ref_dtype} base "
                                   "(as trained)"))
                comparisons.append(parity.compare(
                    dequantised, hf_measured, parity.precision_class(hf_dtype), decode,
                    export_name=export_name,
                    reference_name="adapter on the de-quantised float32 base (what is merged)"))
                notes.append(quantised_base_note(comparisons[-2], comparisons[-1]))
            check = parity.template_check(
                tokenizer, getattr(export_tok, "chat_template", None), conversations,
                render_export=lambda conv: _render(conv, export_tok), where="merged model")
            notes.append(parity.template_note(check))
            extra["Precision"] = hf_dtype
            if fmt in ("gguf", "ollama"):
                run.phase("converting")
                gguf_file = gguf.convert(hf_dir, out, quant,
                                         name or f"{source.base_model.name}-{source.method}",
                                         step=run.stepper("converting"), cancel=run.cancel)
                run.phase("checking gguf")
                g = gguf.measure(gguf_file, prepared, tokenizer, step=run.stepper("checking gguf"))
                comparisons.append(parity.compare(
                    hf_measured, g["measurement"], parity.precision_class(quant=quant), decode,
                    reference_name="merged model (transformers, fp32)",
                    export_name=f"GGUF {quant} (llama.cpp)"))
                notes.append(g["tokenizer_note"])
                gcheck = parity.template_check(tokenizer, g["chat_template"], conversations,
                                               where="GGUF")
                notes.append(parity.template_note(gcheck))
                if gguf_lora:
                    notes.append(_gguf_lora(source, out, prepared, tokenizer, hf_measured,
                                            comparisons, run, decode))
                shutil.rmtree(hf_dir)
                extra["GGUF file"] = gguf_file.name
                if fmt == "ollama":
                    run.phase("modelfile")
                    mf = ollama.write_modelfile(out, gguf_file.name, tokenizer, conversations,
                                                 name=ollama.model_name(target))
                    mf["command"] = f"ollama create {ollama.model_name(target)} -f {target / 'Modelfile'}"
                    notes.append(mf["note"])
                    extra["Ollama"] = mf["command"]
                    extra["ollama_command"] = mf["command"]
        (out / "README.md").write_text(
            model_card(source, fmt, {k: v for k, v in extra.items() if k != "ollama_command"}),
            encoding="utf-8")
        overall = parity.worst([c["verdict"] for c in comparisons
                                if not c["reference"].endswith("(as trained)")])
        if overall == parity.MATCHES and any(c["reference"].endswith("(as trained)")
                                             and c["verdict"] != parity.MATCHES
                                             for c in comparisons):
            overall = parity.WITHIN
        if any("MISMATCH" in n for n in notes):
            overall = parity.DIFFERS
        report = {"format": fmt, "verdict": overall, "source": str(source.adapter_dir),
                  "method": source.method, "base_model": str(source.base_model),
                  "dtype": dtype if fmt == "merged" else None,
                  "quant": quant if fmt in ("gguf", "ollama") else None,
                  "prompts": len(prepared), "examples_from": examples_from,
                  "max_new_tokens": parity.MAX_NEW_TOKENS, "comparisons": comparisons,
                  "notes": notes}
        parity.write_report(out, report)
        files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()
                       and p.name != ".peft-studio-partial.json")
        final = stage.commit({"format": fmt, "source": str(source.adapter_dir),
                              "method": source.method, "base_model": str(source.base_model),
                              "dtype": report["dtype"], "quant": report["quant"],
                              "verdict": overall, "files": files})
    run.progress("done", 1, 1)
    return {"target": str(final), "report": report, "estimate": plan, "files": files,
            "ollama_command": extra.get("ollama_command")}


def _gguf_lora(source, out: Path, prepared, tokenizer, hf_measured, comparisons, run,
               decode) -> str:
    """The adapter alone as a GGUF LoRA, checked on the base GGUF in llama.cpp against the merged
    model. The base GGUF written for the check is kept (llama.cpp needs it to apply the LoRA)."""
    from studio.export import gguf

    if not gguf.lora_convertible(source):
        return (f"GGUF LoRA not written: llama.cpp's convert_lora_to_gguf.py takes plain LoRA "
                f"adapters, and this is {source.method}")
    run.phase("gguf lora")
    lora, base = gguf.convert_lora(source, out, source.method, step=run.stepper("gguf lora"),
                                   cancel=run.cancel)
    g = gguf.measure(base, prepared, tokenizer, step=run.stepper("gguf lora"), lora_path=lora)
    comparisons.append(parity.compare(
        hf_measured, g["measurement"], parity.precision_class(quant="f16"), decode,
        reference_name="merged model (transformers, fp32)",
        export_name="base f16 GGUF + GGUF LoRA (llama.cpp)"))
    return f"GGUF LoRA: {lora.name} applies to {base.name} (llama-cli -m BASE --lora LORA)"


def quantised_base_note(as_trained: dict, dequantised: dict) -> str:
    """Why an export of an adapter trained on a 4/8-bit base differs from it as trained."""
    return (f"the adapter was trained on a quantised base; the merge folds it into the original "
            f"weights, so the export differs from the adapter as trained by the base's "
            f"quantisation (top-1 agreement {as_trained['top1_agreement']:.1%}, perplexity "
            f"{as_trained['perplexity_reference']:.3f} as trained vs "
            f"{as_trained['perplexity_export']:.3f} exported) and "
            f"{dequantised['verdict']} the adapter on the de-quantised base "
            f"(max |logit diff| {dequantised['max_abs_logit_diff']:.2e}); the overall verdict "
            "is therefore at best 'matches within quantisation'")


def _render(conversation, tokenizer) -> str:
    from studio.core import data

    return data.render(conversation, tokenizer, add_generation_prompt=False)


def _measure_plain_peft(source, folder: Path, prepared, step):
    """The exported adapter loaded as anyone would: plain transformers + peft."""
    from peft import PeftModel

    from studio.core.models import load_model

    base, tokenizer = load_model(source.base_model, quantization=source.quantization,
                                 dtype=source.recipe.model.dtype if source.recipe is not None
                                 and source.recipe.model.dtype != "auto" else "float32",
                                 device="cpu")
    model = PeftModel.from_pretrained(base, str(folder), is_trainable=False)
    return parity.measure_hf(model, tokenizer, prepared, step=step)
