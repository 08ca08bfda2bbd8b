"""Tiny real-shaped models of the families people bring, built offline (never downloaded).

Each family: its transformers config class with a few layers and a small hidden size (so its real
module layout and names: q_proj/k_proj/..., Phi-3's fused qkv_proj/gate_up_proj, an MoE's router
and fused experts), random weights, tied or untied embeddings as the family ships them, and a
tokenizer: the shipped SmolLM2 tokenizer's vocabulary with the family's special tokens added (so
each end-of-turn marker is one token), its bos/eos, and the family's public chat template
(tests/fixtures/chat_templates/<family>.jinja, tool-calling branches left out).

    python tests/tiny_families.py OUT_DIR [family ...]     # build into OUT_DIR/<family>/

The test suite builds them once into pytest's cache (`tiny_family` fixture in conftest.py); the
cache key includes this file, the template and the transformers version, so a change rebuilds.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent / "fixtures" / "chat_templates"
SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512)


@dataclass(frozen=True)
class Family:
    key: str                      # folder name, test id, row of studio.core.families.SUPPORT
    name: str                     # what people call it
    config_class: str             # transformers config class
    model_type: str               # its config.json model_type
    template: str                 # tests/fixtures/chat_templates/<template>.jinja
    bos: str | None
    eos: str
    end_of_turn: str              # the token that ends an assistant turn in the template
    specials: tuple[str, ...]     # added as special tokens (single tokens, never split)
    plain_added: tuple[str, ...] = ()   # added as ordinary added tokens (Qwen3's <think> tags)
    pad: str | None = None
    tied: bool = False
    config: dict = field(default_factory=dict)
    system: str = "kept"          # what the template does with a system message (docs)


FAMILIES = {f.key: f for f in [
    Family("llama3", "Llama 3.x", "LlamaConfig", "llama", "llama3", bos="<|begin_of_text|>",
           eos="<|end_of_text|>", end_of_turn="<|eot_id|>",
           specials=("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                     "<|end_header_id|>", "<|eot_id|>"),
           tied=False, config=dict(rope_theta=500000.0)),
    Family("qwen2_5", "Qwen2.5", "Qwen2Config", "qwen2", "qwen2_5", bos=None, eos="<|im_end|>",
           end_of_turn="<|im_end|>", specials=("<|im_start|>", "<|im_end|>", "<|endoftext|>"),
           pad="<|endoftext|>", tied=True, system="default system prompt when none"),
    Family("qwen3", "Qwen3", "Qwen3Config", "qwen3", "qwen3", bos=None, eos="<|im_end|>",
           end_of_turn="<|im_end|>", specials=("<|im_start|>", "<|im_end|>", "<|endoftext|>"),
           plain_added=("<think>", "</think>"), pad="<|endoftext|>", tied=True,
           config=dict(head_dim=16)),
    Family("mistral", "Mistral (v0.3 template)", "MistralConfig", "mistral", "mistral", bos="<s>",
           eos="</s>", end_of_turn="</s>", specials=("<s>", "</s>", "[INST]", "[/INST]"),
           tied=False, system="folded into the last user turn"),
    Family("gemma2", "Gemma 2", "Gemma2Config", "gemma2", "gemma2", bos="<bos>", eos="<eos>",
           end_of_turn="<end_of_turn>",
           specials=("<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"),
           pad="<pad>", tied=True, config=dict(head_dim=16), system="rejected by the template"),
    Family("gemma3", "Gemma 3 (text)", "Gemma3TextConfig", "gemma3_text", "gemma3", bos="<bos>", eos="<eos>",
           end_of_turn="<end_of_turn>",
           specials=("<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"),
           pad="<pad>", tied=True, config=dict(head_dim=16, sliding_window=64),
           system="folded into the first user turn"),
    Family("phi3", "Phi-3 / Phi-3.5", "Phi3Config", "phi3", "phi3", bos="<s>", eos="<|endoftext|>",
           end_of_turn="<|end|>",
           specials=("<s>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
           pad="<|endoftext|>", tied=False),
    Family("qwen3_moe", "Qwen3-MoE", "Qwen3MoeConfig", "qwen3_moe", "qwen3", bos=None, eos="<|im_end|>",
           end_of_turn="<|im_end|>", specials=("<|im_start|>", "<|im_end|>", "<|endoftext|>"),
           plain_added=("<think>", "</think>"), pad="<|endoftext|>", tied=False,
           config=dict(head_dim=16, moe_intermediate_size=32, num_experts=4,
                       num_experts_per_tok=2, decoder_sparse_step=1, mlp_only_layers=[])),
]}


def cache_key(family: Family) -> str:
    import transformers

    digest = hashlib.sha256()
    digest.update(Path(__file__).read_bytes())
    digest.update((TEMPLATES / f"{family.template}.jinja").read_bytes())
    digest.update(transformers.__version__.encode())
    return digest.hexdigest()[:12]


def build_tokenizer(family: Family, tokenizer_source: Path):
    """The SmolLM2 vocabulary with the family's special tokens, bos/eos/pad and chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_source))
    tokenizer.add_special_tokens({"additional_special_tokens": list(family.specials)},
                                 replace_extra_special_tokens=True)
    if family.plain_added:
        tokenizer.add_tokens(list(family.plain_added), special_tokens=False)
    tokenizer.bos_token = family.bos
    tokenizer.eos_token = family.eos
    tokenizer.pad_token = family.pad
    tokenizer.add_bos_token = family.bos is not None and family.key in ("llama3", "gemma2", "gemma3")
    tokenizer.chat_template = (TEMPLATES / f"{family.template}.jinja").read_text(encoding="utf-8")
    for token in (family.end_of_turn, *family.specials, *family.plain_added):
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1, f"{family.key}: {token!r} is not one token ({ids})"
    return tokenizer


def build(family: Family, out: Path, tokenizer_source: Path, seed: int = 0) -> Path:
    """Write the tiny model folder `out` (config.json, weights, tokenizer, generation_config)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig

    tokenizer = build_tokenizer(family, tokenizer_source)
    vocab = -(-len(tokenizer) // 64) * 64          # rounded up, like the real checkpoints pad it
    ids = {name: tokenizer.convert_tokens_to_ids(tok) if tok else None
           for name, tok in (("bos_token_id", family.bos), ("eos_token_id", family.eos),
                             ("pad_token_id", family.pad))}
    config = getattr(transformers, family.config_class)(
        vocab_size=vocab, tie_word_embeddings=family.tied, **SHAPE, **ids, **family.config)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # the folder's generation_config names only the tokenizer's eos (as many community
    # conversions do): stopping at the family's end-of-turn token is the studio's job
    model.generation_config = GenerationConfig(bos_token_id=ids["bos_token_id"],
                                               eos_token_id=ids["eos_token_id"],
                                               pad_token_id=ids["pad_token_id"])
    out = Path(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def ensure(key: str, cache_root: Path, tokenizer_source: Path) -> Path:
    """The family's folder under cache_root, built the first time (or when the key changed)."""
    family = FAMILIES[key]
    cache_root = Path(cache_root)
    cache_root.mkdir(parents=True, exist_ok=True)
    out = cache_root / f"{key}-{cache_key(family)}"
    if not (out / "config.json").is_file() or not list(out.glob("*.safetensors")):
        for old in cache_root.glob(f"{key}-*"):
            if old != out and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        build(family, out, tokenizer_source)
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from studio.core.models import ensure_default_model

    out_root = Path(argv[0])
    out_root.mkdir(parents=True, exist_ok=True)
    source = ensure_default_model(log=lambda msg: print(msg, file=sys.stderr))
    for key in argv[1:] or list(FAMILIES):
        print(build(FAMILIES[key], out_root / key, source))
    return 0


if __name__ == "__main__":
    sys.exit(main())
