"""Losses for training Text-to-LoRA (the loop is studio.hyper.training): reconstruction of library LoRAs, or SFT through the frozen base model.

Reconstruction: L1 between the emitted factors and target factors. LoRA factors are not unique,
so by default (`target="svd"`) the targets are the canonical SVD factorisation of each library
LoRA's update (studio.hyper.targets.canonical_factors), rescaled to the hypernetwork's own
alpha/r; `target="raw"` uses the library's A and B as stored (what the T2L paper does; sensible
when every library LoRA started from the same A, as studio.hyper.library arranges).

SFT: the LoRA is generated inside the autograd graph and the base model is run with it
(studio.hyper.functional), the next-token loss on the task's examples back-propagates into the
hypernetwork. The base model stays frozen.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from studio.hyper.targets import Lora, LoraSpec, canonical_factors, read_adapter


@dataclass
class HyperTask:
    name: str
    descriptions: list[str]                       # training descriptions
    eval_descriptions: list[str] = field(default_factory=list)
    target: Lora | None = None                    # reconstruction target (hypernet's scaling)
    checkpoints: list[Lora] = field(default_factory=list)   # DnD: several targets per task
    examples: list = field(default_factory=list)  # studio.core.data.Example, for SFT
    prompts: list[str] = field(default_factory=list)        # DnD input prompts
    embeddings: torch.Tensor | None = None        # [len(descriptions), 384]
    eval_embeddings: torch.Tensor | None = None


def adapter_scaling(adapter_dir: str | Path) -> tuple[int, float]:
    """(r, scaling) of a saved PEFT LoRA adapter."""
    cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))
    r, alpha = int(cfg["r"]), float(cfg.get("lora_alpha", cfg["r"]))
    return r, alpha / (r ** 0.5 if cfg.get("use_rslora") else r)


def to_target(spec: LoraSpec, lora: Lora, source_scaling: float, target: str = "svd") -> Lora:
    """Express a LoRA (with its own scaling) as factors for `spec`'s scaling."""
    ratio = source_scaling / spec.scaling
    out = {}
    for key, (a, b) in lora.items():
        if target == "svd":
            out[key] = canonical_factors(a, b * ratio, spec.r)
        elif target == "raw":
            if a.shape[0] != spec.r:
                raise ValueError(f"raw targets need rank {spec.r}, the library LoRA has {a.shape[0]}")
            out[key] = (a.clone(), b * ratio)
        else:
            raise ValueError(f"unknown target kind {target!r} (use 'svd' or 'raw')")
    return out


def tasks_from_library(library, spec: LoraSpec, target: str = "svd", with_examples: bool = False,
                       with_checkpoints: bool = False, held_out: bool = False) -> list[HyperTask]:
    """HyperTasks of a library's training tasks (or its held-out ones)."""
    from studio.hyper.library import Library, load_library

    lib = library if isinstance(library, Library) else load_library(library)
    tasks = []
    for e in (lib.held_out_entries if held_out else lib.entries):
        _, scale = adapter_scaling(e.adapter_dir)
        tasks.append(HyperTask(
            name=e.name, descriptions=e.train_descriptions, eval_descriptions=e.eval_descriptions,
            target=to_target(spec, read_adapter(e.adapter_dir, spec), scale, target),
            checkpoints=[to_target(spec, read_adapter(e.adapter_dir, spec, w), scale, target)
                         for w in e.checkpoints()] if with_checkpoints else [],
            examples=e.examples() if with_examples else [],
            prompts=e.prompts() if with_checkpoints else []))
    return tasks


def embed_tasks(tasks: list[HyperTask], encoder=None) -> None:
    """Fill each task's description embeddings (one encoder call for all)."""
    from studio.hyper.encoder import default_encoder

    encoder = encoder or default_encoder()
    texts = [d for t in tasks for d in t.descriptions + t.eval_descriptions]
    embs = encoder.embed(texts) if texts else torch.zeros(0, 384)
    i = 0
    for t in tasks:
        t.embeddings = embs[i:i + len(t.descriptions)]
        i += len(t.descriptions)
        t.eval_embeddings = embs[i:i + len(t.eval_descriptions)]
        i += len(t.eval_descriptions)


def flatten(spec: LoraSpec, lora: Lora) -> torch.Tensor:
    return torch.cat([torch.cat([lora[k][0].reshape(-1), lora[k][1].reshape(-1)])
                      for k in spec.keys])


def reconstruction_loss(hypernet, tasks: list[HyperTask], emb: torch.Tensor) -> torch.Tensor:
    device = next(hypernet.parameters()).device
    loras = hypernet.emit(emb.to(device))
    spec = hypernet.spec
    return torch.stack([(flatten(spec, lo) - flat_target(spec, t, device)).abs().mean()
                        for lo, t in zip(loras, tasks)]).mean()


def flat_target(spec: LoraSpec, task: HyperTask, device) -> torch.Tensor:
    """The task's target LoRA flattened, cached on `device`."""
    cached = getattr(task, "_flat", None)
    if cached is None or cached.device != torch.device(device):
        cached = flatten(spec, task.target).to(device)
        task._flat = cached
    return cached


def pick(tasks, batch_tasks, rng, split="train"):
    """A random batch of tasks and one random description embedding of each."""
    chosen = rng.sample(tasks, min(batch_tasks, len(tasks)))
    rows = []
    for t in chosen:
        embs = t.embeddings if split == "train" or not len(t.eval_embeddings) else t.eval_embeddings
        rows.append(embs[rng.randrange(embs.shape[0])])
    return chosen, torch.stack(rows)


@torch.no_grad()
def eval_reconstruction(hypernet, tasks: list[HyperTask], split: str = "eval") -> float:
    """Mean L1 over every task and every description of `split` (train or eval)."""
    hypernet.eval()
    total, n = 0.0, 0
    if split == "eval" and not any(t.eval_embeddings is not None and len(t.eval_embeddings)
                                   for t in tasks):
        split = "train"             # a library without held-apart descriptions
    for t in tasks:
        embs = t.eval_embeddings if split == "eval" else t.embeddings
        if embs is None or embs.shape[0] == 0:
            continue
        total += float(reconstruction_loss(hypernet, [t] * embs.shape[0], embs)) * embs.shape[0]
        n += embs.shape[0]
    return total / max(1, n)


def _tokenized(task: HyperTask, tokenizer, max_length: int) -> list[dict]:
    from studio.core.data import tokenize_example

    cache = getattr(task, "_tokenized", None)
    if cache is None:
        cache = [tokenize_example(ex, tokenizer, max_length) for ex in task.examples]
        task._tokenized = cache
    return cache


def sft_loss(hypernet, runner, tokenizer, tasks: list[HyperTask], emb: torch.Tensor,
             batch_examples: int, rng: random.Random, max_length: int = 128) -> torch.Tensor:
    """Mean next-token loss of each task's examples under the LoRA generated for it."""
    from studio.core.data import collate

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(hypernet.parameters()).device
    losses = []
    for lora, t in zip(hypernet.emit(emb.to(device)), tasks):
        toks = _tokenized(t, tokenizer, max_length)
        batch = collate(rng.sample(toks, min(batch_examples, len(toks))), pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        losses.append(runner.loss(lora, batch))
    return torch.stack(losses).mean()


@torch.no_grad()
def held_out_report(hypernet, held: list[HyperTask], train: list[HyperTask]) -> dict:
    """How close the LoRAs generated for unseen tasks (from their eval descriptions) come to
    those tasks' own trained LoRAs, against the trivial baseline of the library's mean LoRA.

    Per task: L1 of the factors (what recon training minimises) and the cosine between update
    matrices delta W = B A summed over modules and layers (factor-order free)."""
    if not held:
        return {}
    spec = hypernet.spec
    hypernet.eval()

    def delta(lora):
        return torch.cat([(lora[k][1].float().cpu() @ lora[k][0].float().cpu()).reshape(-1)
                          for k in spec.keys])

    mean_flat = torch.stack([flatten(spec, t.target).cpu() for t in train]).mean(0)
    mean_delta = torch.stack([delta(t.target) for t in train]).mean(0)
    out = {}
    for t in held:
        embs = t.eval_embeddings if t.eval_embeddings is not None and len(t.eval_embeddings) \
            else t.embeddings
        device = next(hypernet.parameters()).device
        loras = hypernet.emit(embs.to(device))
        target_flat, target_delta = flatten(spec, t.target).cpu(), delta(t.target)
        gen_l1 = sum(float((flatten(spec, lo).cpu() - target_flat).abs().mean()) for lo in loras)
        gen_cos = sum(float(torch.nn.functional.cosine_similarity(delta(lo), target_delta, dim=0))
                      for lo in loras)
        out[t.name] = {
            "l1_generated": gen_l1 / len(loras),
            "l1_library_mean": float((mean_flat - target_flat).abs().mean()),
            "cos_dw_generated": gen_cos / len(loras),
            "cos_dw_library_mean": float(torch.nn.functional.cosine_similarity(
                mean_delta, target_delta, dim=0))}
    return out
