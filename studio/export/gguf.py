"""GGUF through llama.cpp's own tools: `convert_hf_to_gguf.py` (f32/f16/bf16/q8_0) and
llama.cpp's quantizer (`llama_model_quantize`, reached through llama-cpp-python) for 2-6 bit
types; parity through llama.cpp's runtime (llama_cpp.Llama).

The tools are an optional install (`peft-studio setup --gguf`, about 10 minutes on 2 cores):
llama-cpp-python is built from source and the converter scripts it vendors (with their own
gguf-py and conversion package) are copied to data_dir()/tools/llama.cpp/.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from studio import paths
from studio.errors import UserError

CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")
# llama.cpp's quantizer: type -> the LLAMA_FTYPE_MOSTLY_* constant name in llama_cpp
LLAMA_QUANTIZE_TYPES = {"q6_k": "Q6_K", "q5_k_m": "Q5_K_M", "q5_0": "Q5_0", "q4_k_m": "Q4_K_M",
                        "q4_0": "Q4_0", "q3_k_m": "Q3_K_M", "q2_k": "Q2_K"}
QUANT_TYPES = CONVERTER_TYPES + tuple(LLAMA_QUANTIZE_TYPES)
BYTES_PER_PARAM = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 1.0625, "q6_k": 0.82,
                   "q5_k_m": 0.69, "q5_0": 0.6875, "q4_k_m": 0.6, "q4_0": 0.5625,
                   "q3_k_m": 0.49, "q2_k": 0.33}
LLAMA_CPP_VERSION = "0.3.36"
INSTALL_COMMAND = "peft-studio setup --gguf"
INSTALL_COST = ("builds llama-cpp-python 0.3.36 from source (about 10 minutes on 2 cores, "
                "~80 MB download, ~40 MB installed) and copies llama.cpp's converter scripts")


def tools_dir() -> Path:
    return paths.data_dir() / "tools" / "llama.cpp"


def converter_path() -> Path:
    return tools_dir() / "convert_hf_to_gguf.py"


def runtime_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def missing_tools() -> list[str]:
    missing = []
    if not converter_path().is_file():
        missing.append(f"llama.cpp's converter ({converter_path()})")
    if not runtime_available():
        missing.append("llama-cpp-python (the llama.cpp runtime)")
    return missing


def require_tools() -> None:
    missing = missing_tools()
    if missing:
        raise UserError("GGUF export needs " + " and ".join(missing) + ".", field="format",
                        fix=f"run `{INSTALL_COMMAND}` once ({INSTALL_COST})")


def _run_tool(args: list[str], cancel, step, what: str, total_s: float) -> None:
    """A tool in a child process (cancellable, its crash stays its own); UserError on failure."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log = []
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=str(tools_dir()))
    start = time.time()
    try:
        while proc.poll() is None:
            if cancel is not None and cancel():
                proc.kill()
                proc.wait()
                from studio.export.staging import Cancelled
                raise Cancelled()
            if step is not None:
                step(min(int(time.time() - start), int(total_s) - 1), int(total_s))
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = (proc.stdout.read() if proc.stdout else "").splitlines()
    if proc.returncode != 0:
        tail = " | ".join(line.strip() for line in log[-4:] if line.strip())
        if "No space left" in "\n".join(log):
            from studio.export.staging import disk_full_error
            raise disk_full_error(Path(args[-1]))
        raise UserError(f"{what} failed (exit code {proc.returncode}): {tail}",
                        fix="see the message above; the architecture may be unsupported by this "
                            "llama.cpp version")


def convert(hf_dir: Path, out_dir: Path, quant: str, stem: str, step=None, cancel=None) -> Path:
    """hf_dir (a merged transformers folder) -> out_dir/<stem>-<quant>.gguf."""
    require_tools()
    out = Path(out_dir) / f"{stem}-{quant}.gguf"
    first = quant if quant in CONVERTER_TYPES else "f16"
    first_out = out if quant in CONVERTER_TYPES else Path(out_dir) / f".{stem}-f16.tmp.gguf"
    _run_tool([sys.executable, str(converter_path()), str(hf_dir), "--outfile", str(first_out),
               "--outtype", first], cancel, step, "llama.cpp's convert_hf_to_gguf.py", 60)
    if quant in LLAMA_QUANTIZE_TYPES:
        code = ("import ctypes, sys, llama_cpp as l\n"
                "p = l.llama_model_quantize_default_params()\n"
                f"p.ftype = l.LLAMA_FTYPE_MOSTLY_{LLAMA_QUANTIZE_TYPES[quant]}\n"
                "sys.exit(l.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), "
                "ctypes.byref(p)))\n")
        _run_tool([sys.executable, "-c", code, str(first_out), str(out)], cancel, step,
                  f"llama.cpp's quantizer ({quant})", 60)
        first_out.unlink(missing_ok=True)
    return out


def lora_convertible(source) -> bool:
    """convert_lora_to_gguf.py takes plain LoRA adapters (not DoRA, not LoRA-Dash's extra terms)."""
    from studio.export import fold

    cfg = source.adapter_config
    return str(cfg.get("peft_type", "")).upper() == "LORA" and not cfg.get("use_dora") and \
        not fold.has_dash(source.adapter_dir)


def convert_lora(source, out_dir: Path, stem: str, step=None, cancel=None) -> tuple[Path, Path]:
    """The adapter alone as a GGUF LoRA (llama.cpp's convert_lora_to_gguf.py), plus the base
    model as f16 GGUF to apply it to (llama.cpp needs both: `llama-cli -m BASE --lora LORA`)."""
    require_tools()
    lora = Path(out_dir) / f"{stem}-lora-adapter-f16.gguf"
    base = Path(out_dir) / f"{source.base_model.name}-base-f16.gguf"
    _run_tool([sys.executable, str(tools_dir() / "convert_lora_to_gguf.py"), "--base",
               str(source.base_model), "--outfile", str(lora), "--outtype", "f16",
               str(source.adapter_dir)], cancel, step, "llama.cpp's convert_lora_to_gguf.py", 30)
    _run_tool([sys.executable, str(converter_path()), str(source.base_model), "--outfile",
               str(base), "--outtype", "f16"], cancel, step, "llama.cpp's convert_hf_to_gguf.py", 60)
    return lora, base


def measure(gguf_file: Path, prepared: list[dict], tokenizer, max_new_tokens: int | None = None,
            step=None, lora_path: Path | None = None) -> dict:
    """The GGUF in llama.cpp on the same token ids: logits per position and greedy answers.
    Also checks that llama.cpp tokenises each prompt (special tokens parsed) like transformers."""
    import numpy as np
    from llama_cpp import Llama

    from studio.core.data import end_of_turn_token_ids
    from studio.export import parity

    max_new = max_new_tokens or parity.MAX_NEW_TOKENS
    longest = max(max(len(p["input_ids"]), len(p["prompt_ids"]) + max_new) for p in prepared)
    llm = Llama(model_path=str(gguf_file), n_ctx=longest + 8, logits_all=True, verbose=False,
                n_threads=max(1, min(4, os.cpu_count() or 1)), seed=0,
                lora_path=str(lora_path) if lora_path else None)
    stop = set(end_of_turn_token_ids(tokenizer)) | {llm.token_eos()}
    out, same_tokens = [], 0
    for i, item in enumerate(prepared):
        text = tokenizer.decode(item["prompt_ids"])
        # special=True: without it llama.cpp reads <|im_start|> as plain text.
        if llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) == item["prompt_ids"]:
            same_tokens += 1
        llm.reset()
        llm.eval(item["input_ids"])
        logits = np.array(llm.scores[:len(item["input_ids"])], dtype=np.float32)
        llm.reset()
        llm.eval(item["prompt_ids"])
        greedy = []
        for _ in range(max_new):
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            if token in stop:
                break
            greedy.append(token)
            llm.eval([token])
        out.append({"input_ids": item["input_ids"], "labels": item["labels"], "logits": logits,
                    "greedy": greedy})
        if step is not None:
            step(i + 1, len(prepared))
    template = (llm.metadata or {}).get("tokenizer.chat_template")
    llm.close()
    note = (f"llama.cpp tokenises {same_tokens}/{len(prepared)} prompts exactly like transformers "
            "(special tokens parsed)")
    return {"measurement": out, "chat_template": template, "tokenizer_note": note,
            "same_tokenisation": same_tokens}


# ---- the optional install -----------------------------------------------------------------------

VENDOR = "vendor/llama.cpp/"
VENDORED = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "LICENSE", "conversion/",
            "gguf-py/")


def extract_tools(sdist: Path, dest: Path | None = None) -> Path:
    """Copy llama.cpp's converter scripts (and the gguf-py / conversion packages they import)
    out of the llama-cpp-python source archive into tools_dir(), replacing an older copy."""
    import shutil
    import tarfile
    import tempfile

    dest = Path(dest or tools_dir())
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".llama.cpp-", dir=dest.parent))
    try:
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                parts = member.name.split("/", 1)
                if len(parts) < 2 or not parts[1].startswith(VENDOR):
                    continue
                rel = parts[1][len(VENDOR):]
                if not rel or not any(rel == v or (v.endswith("/") and rel.startswith(v))
                                      for v in VENDORED):
                    continue
                if not (member.isfile() or member.isdir()) or ".." in Path(rel).parts:
                    continue
                target = tmp / rel
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
        if not (tmp / "convert_hf_to_gguf.py").is_file():
            raise UserError("the llama-cpp-python archive has no convert_hf_to_gguf.py.",
                            path=sdist, fix=f"use llama-cpp-python=={LLAMA_CPP_VERSION}")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def install_tools(log=print) -> Path:
    """`peft-studio setup --gguf`: build llama-cpp-python from its source package and copy the
    converter scripts it vendors into tools_dir()."""
    import tempfile

    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    with tempfile.TemporaryDirectory(prefix="peft-studio-llama-") as tmp:
        log(f"downloading llama-cpp-python {LLAMA_CPP_VERSION} (source, ~77 MB)")
        subprocess.run(pip + ["download", "--no-deps", "--no-binary", "llama-cpp-python",
                              f"llama-cpp-python=={LLAMA_CPP_VERSION}", "-d", tmp], check=True)
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        log(f"extracting llama.cpp's converter into {tools_dir()}")
        extract_tools(sdist)
        if not runtime_available():
            log("building llama-cpp-python (about 10 minutes on 2 cores)")
            env = dict(os.environ)
            env.setdefault("CMAKE_ARGS", "-DGGML_NATIVE=OFF")
            subprocess.run(pip + ["install", str(sdist)], check=True, env=env)
        # the converter imports sentencepiece for Llama-family vocabularies
        subprocess.run(pip + ["install", "sentencepiece"], check=True)
    return tools_dir()
