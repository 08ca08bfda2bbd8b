"""Train a hypernetwork on a LoRA library, with progress events (the GUI job and the CLI use this).

    train_hypernetwork(LIB, OUT, kind="t2l", mode="recon", head="S", steps=300, progress=print)

kind t2l, mode recon: L1 between emitted and library LoRA factors (studio.hyper.train).
kind t2l, mode sft:   next-token loss of each task's examples through the frozen base model.
kind dnd:             MSE between the LoRA generated from a task's prompts and its checkpoints.
Events use the training worker's field names (docs/HYPERNETWORKS.md); the hypernetwork is saved
at the end, or early when `should_stop()` turns true.
"""

from __future__ import annotations

import math
import random
import resource
import time
from pathlib import Path

from studio.errors import UserError

DEFAULT_LR = {("t2l", "recon"): 1e-3, ("t2l", "sft"): 2e-4, ("dnd", "recon"): 1e-3}


def _event(name: str, **fields) -> dict:
    return {"event": name, "time": time.time(), **fields}


def _memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _check_args(kind, mode, head, steps):
    if kind not in ("t2l", "dnd"):
        raise UserError(f"unknown hypernetwork kind '{kind}'.", field="kind", fix="Use t2l or dnd.")
    if mode not in ("recon", "sft"):
        raise UserError(f"unknown training mode '{mode}'.", field="mode", fix="Use recon or sft.")
    if kind == "dnd" and mode != "recon":
        raise UserError("DnD trains by reconstruction only.", field="mode", fix="Use --mode recon.")
    if head not in ("L", "M", "S"):
        raise UserError(f"unknown head size '{head}'.", field="head", fix="Use L, M or S.")
    if int(steps) < 1:
        raise UserError("steps must be at least 1.", field="steps", fix="Use e.g. 300.")


def check_start_from(folder) -> Path:
    """The resolved folder of a saved hypernetwork to start training from; UserError otherwise
    (the GUI calls this before starting the job, the trainer again when it loads it)."""
    folder = Path(folder).expanduser()
    if not (folder / "hypernetwork.safetensors").is_file():
        raise UserError("is not a saved hypernetwork (no hypernetwork.safetensors).", path=folder,
                        field="init_from", fix="Pick a folder written by hypernetwork training "
                                               "(peft-studio hyper train or the Generate page), "
                                               "or leave it empty.")
    return folder.resolve()


def _start_from(net, folder) -> None:
    """Copy the weights of a saved T2L network of the same shape into `net` (e.g. SFT after recon:
    SFT from scratch on a small library tends to ignore the description and emit one LoRA)."""
    from studio.hyper.text_to_lora import TextToLoRA

    folder = check_start_from(folder)
    old = TextToLoRA.load(folder)
    mine, theirs = net.state_dict(), old.state_dict()
    if {k: v.shape for k, v in mine.items()} != {k: v.shape for k, v in theirs.items()}:
        raise UserError(f"has another shape (head {old.config.head}, hidden {old.config.hidden}) "
                        f"than the network being trained (head {net.config.head}, hidden "
                        f"{net.config.hidden}).", path=folder, field="init_from",
                        fix="Train with the same --head and --hidden, or start from scratch.")
    if not old.spec.same_shapes(net.spec):
        raise UserError("emits LoRAs of another shape than this library's.", path=folder,
                        field="init_from", fix="Start from a network trained on this base model.")
    net.load_state_dict(theirs)


def train_hypernetwork(library, out_dir, kind: str = "t2l", mode: str = "recon", head: str = "S",
                       steps: int = 300, lr: float | None = None, seed: int = 0, model_path=None,
                       progress=None, should_stop=None, hidden: int = 256, blocks: int = 2,
                       batch_tasks: int = 4, batch_examples: int = 4, max_length: int = 128,
                       eval_every: int | None = None, target: str = "auto", n_prompts: int = 8,
                       encoder=None, device: str | None = None, command: str | None = None,
                       init_from=None) -> dict:
    import torch

    from studio.hyper import train as T
    from studio.hyper.encoder import default_encoder
    from studio.hyper.library import load_library

    _check_args(kind, mode, head, steps)
    if init_from and kind != "t2l":
        raise UserError("starting from a saved network is for Text-to-LoRA only.", field="init_from",
                        fix="Leave --init-from out for DnD.")
    emit = progress or (lambda event: None)
    lr = float(lr or DEFAULT_LR[(kind, mode)])
    start = time.perf_counter()
    lib = load_library(library)
    spec = lib.spec
    if target == "auto":
        target = "raw" if lib.shared_init else "svd"
    need_examples = mode == "sft" or kind == "dnd"
    tasks = T.tasks_from_library(lib, spec, target=target, with_examples=need_examples,
                                 with_checkpoints=kind == "dnd")
    if need_examples:
        missing = [t.name for t in tasks if not t.examples]
        if missing:
            raise UserError(f"tasks without examples.jsonl: {', '.join(missing[:5])}.",
                            path=library, field="examples",
                            fix="Add examples.jsonl (chat format) to each task, or use --mode recon.")
    encoder = encoder or default_encoder()
    held_tasks = T.tasks_from_library(lib, spec, target=target, held_out=True) if kind == "t2l" else []
    T.embed_tasks(tasks + held_tasks, encoder)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    runner = None
    if kind == "t2l":
        from studio.hyper.text_to_lora import T2LConfig, TextToLoRA

        net = TextToLoRA(T2LConfig(spec=spec.to_dict(), head=head, hidden=hidden, blocks=blocks))
        if target == "raw":
            # Every library LoRA started from the same A: start the per-layer base A at the
            # library's mean A (still a kaiming-uniform-like init, so B = 0 keeps step 0 a
            # standard LoRA init) instead of learning the shared part from scratch.
            with torch.no_grad():
                base_a = net.a_base.view(spec.num_layers, len(spec.modules), spec.r, -1)
                for (layer, m), _ in tasks[0].target.items():
                    mi = spec.modules.index(m)
                    mean_a = torch.stack([t.target[(layer, m)][0] for t in tasks]).mean(0)
                    base_a[layer, mi, :, :mean_a.shape[1]] = mean_a
        if init_from:
            _start_from(net, init_from)
    else:
        from studio.hyper.dnd import DnDConfig, DnDGenerator, DnDData

        net = DnDGenerator(DnDConfig(spec=spec.to_dict(), n_prompts=n_prompts))
        dnd_data = DnDData(net, tasks, encoder, rng)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    net.to(device)
    if kind == "dnd":
        dnd_data.to(device)
    if mode == "sft":
        from studio.core.models import load_model
        from studio.hyper.functional import GeneratedLoraModel
        from studio.hyper.targets import check_base_model

        model_path = model_path or spec.base_model
        check_base_model(spec, model_path)
        base, tokenizer = load_model(model_path)
        runner = GeneratedLoraModel(base.to(device), spec)

    def batch_loss(step_rng):
        if kind == "dnd":
            return dnd_data.loss(step_rng)
        chosen, emb = T.pick(tasks, batch_tasks, step_rng)
        if mode == "recon":
            return T.reconstruction_loss(net, chosen, emb)
        return T.sft_loss(net, runner, tokenizer, chosen, emb, batch_examples, step_rng, max_length)

    def eval_loss() -> float:
        with torch.no_grad():
            net.eval()
            try:
                if kind == "dnd":
                    return float(dnd_data.loss(random.Random(10_000), held_out=True))
                if mode == "recon":
                    return T.eval_reconstruction(net, tasks, "eval")
                ev_rng = random.Random(10_000)
                sub = tasks[:8]
                emb = torch.stack([t.eval_embeddings[0] if len(t.eval_embeddings) else
                                   t.embeddings[0] for t in sub])
                return float(T.sft_loss(net, runner, tokenizer, sub, emb, batch_examples,
                                        ev_rng, max_length))
            finally:
                net.train()

    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:      # linear warm-up, cosine to 10 %
        if step <= warmup:
            return lr * step / warmup
        frac = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    n_params = sum(p.numel() for p in params)
    emit(_event("started", run_dir=str(out_dir), total_steps=steps, trainable_params=n_params,
                total_params=n_params, kind=kind, mode=mode, head=head if kind == "t2l" else None,
                tasks=[t.name for t in tasks], held_out_tasks=lib.held_out,
                device=str(next(net.parameters()).device)))
    eval_every = eval_every or max(1, steps // 10)
    losses, evals, step = [], [], 0
    first_eval = eval_loss()
    evals.append((0, first_eval))
    emit(_event("eval", step=0, eval_loss=first_eval))
    net.train()
    loop_start = time.perf_counter()
    cancelled = False
    try:
        for step in range(1, steps + 1):
            if should_stop and should_stop():
                cancelled, step = True, step - 1
                break
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            loss = batch_loss(rng)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, 1.0))
            opt.step()
            losses.append(float(loss.detach()))
            elapsed = time.perf_counter() - loop_start
            emit(_event("log", step=step, epoch=0.0, loss=losses[-1], lr=lr_at(step),
                        grad_norm=grad_norm, tokens_per_s=0.0, memory_mb=round(_memory_mb(), 1),
                        eta_s=round(elapsed / step * (steps - step), 1)))
            if step % eval_every == 0 or step == steps:
                evals.append((step, eval_loss()))
                emit(_event("eval", step=step, eval_loss=evals[-1][1]))
    finally:
        if runner is not None:
            runner.unwrap()
    net.eval()
    held_report = T.held_out_report(net, held_tasks, tasks) if held_tasks else {}
    net.cpu()
    tail = losses[-max(1, min(20, len(losses) // 5)):] if losses else [float("nan")]
    metrics = {"out_dir": str(out_dir), "kind": kind, "mode": mode,
               "head": head if kind == "t2l" else None, "steps": step, "lr": lr, "seed": seed,
               "target": target, "first_loss": losses[0] if losses else None,
               "final_loss": sum(tail) / len(tail), "eval_loss_start": first_eval,
               "eval_loss": evals[-1][1], "evals": evals,
               "seconds": round(time.perf_counter() - start, 1),
               "tasks": [t.name for t in tasks], "held_out_tasks": lib.held_out,
               "library": str(Path(library).resolve()), "params": n_params,
               "init_from": str(init_from) if init_from else None,
               "held_out_report": held_report}
    net.config.notes = {k: v for k, v in metrics.items() if k not in ("out_dir",)}
    net.save(out_dir)
    from studio.hyper.card import write_model_card

    lib_cmd = lib.command
    write_model_card(out_dir, [c for c in (lib_cmd, command) if c])
    metrics["size_mb"] = round((Path(out_dir) / "hypernetwork.safetensors").stat().st_size / 2**20, 2)
    if cancelled:
        emit(_event("cancelled", step=step, checkpoint=str(out_dir)))
    else:
        emit(_event("finished", step=step, adapter_path=str(out_dir), metrics=metrics))
    return metrics
