"""Train a hypernetwork on a LoRA library, with progress events (the GUI job and the CLI use this).

    train_hypernetwork(LIB, OUT, kind="t2l", mode="recon", head="S", steps=300, progress=print)
    # or, the same in three parts:
    settings = HyperTrainSettings(LIB, OUT, kind="t2l", steps=300).checked()
    setup = build(settings)                       # library, network, losses
    loop = run_loop(setup, emit, should_stop)     # optimiser steps + evals, emitting events
    metrics = finish(setup, loop, emit)           # held-out report, save, model card

kind t2l, mode recon: L1 between emitted and library LoRA factors (studio.hyper.losses).
kind t2l, mode sft:   next-token loss of each task's examples through the frozen base model.
kind dnd:             MSE between the LoRA generated from a task's prompts and its checkpoints.
Events are studio.core.events (docs/HYPERNETWORKS.md); the hypernetwork is saved at the end, or
early when `should_stop()` turns true.
"""

from __future__ import annotations

import math
import random
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from studio.core import events
from studio.errors import UserError
from studio.hyper.saved import WEIGHTS_FILE

DEFAULT_LR = {("t2l", "recon"): 1e-3, ("t2l", "sft"): 2e-4, ("dnd", "recon"): 1e-3}


@dataclass
class HyperTrainSettings:
    """Everything that decides what a hypernetwork training run does (not how it reports)."""
    library: str | Path
    out_dir: str | Path
    kind: str = "t2l"                 # t2l | dnd
    mode: str = "recon"               # recon | sft (t2l only)
    head: str = "S"                   # L | M | S (t2l only)
    steps: int = 300
    lr: float | None = None           # None: DEFAULT_LR for (kind, mode)
    seed: int = 0
    model_path: str | Path | None = None   # sft: the base model (default: the library's)
    hidden: int = 256
    blocks: int = 2
    batch_tasks: int = 4
    batch_examples: int = 4
    max_length: int = 128
    eval_every: int | None = None     # None: every tenth of the steps
    target: str = "auto"              # raw | svd | auto (raw when the library shares its A init)
    n_prompts: int = 8                # dnd
    device: str | None = None         # None: cuda when available
    command: str | None = None        # the command line, for the model card
    init_from: str | Path | None = None    # t2l: a saved network of the same shape to start from

    def checked(self) -> "HyperTrainSettings":
        """These settings with the learning rate filled in; UserError naming a bad field."""
        if self.kind not in ("t2l", "dnd"):
            raise UserError(f"unknown hypernetwork kind '{self.kind}'.", field="kind",
                            fix="Use t2l or dnd.")
        if self.mode not in ("recon", "sft"):
            raise UserError(f"unknown training mode '{self.mode}'.", field="mode",
                            fix="Use recon or sft.")
        if self.kind == "dnd" and self.mode != "recon":
            raise UserError("DnD trains by reconstruction only.", field="mode",
                            fix="Use --mode recon.")
        if self.head not in ("L", "M", "S"):
            raise UserError(f"unknown head size '{self.head}'.", field="head", fix="Use L, M or S.")
        if int(self.steps) < 1:
            raise UserError("steps must be at least 1.", field="steps", fix="Use e.g. 300.")
        if self.init_from and self.kind != "t2l":
            raise UserError("starting from a saved network is for Text-to-LoRA only.",
                            field="init_from", fix="Leave --init-from out for DnD.")
        self.steps = int(self.steps)
        self.lr = float(self.lr or DEFAULT_LR[(self.kind, self.mode)])
        return self


def _memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def check_start_from(folder) -> Path:
    """The resolved folder of a saved hypernetwork to start training from; UserError otherwise
    (the GUI calls this before starting the job, the trainer again when it loads it)."""
    folder = Path(folder).expanduser()
    if not (folder / WEIGHTS_FILE).is_file():
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


# ---- build -----------------------------------------------------------------------------------

@dataclass
class HyperTraining:
    """A built training run: the library's tasks, the network and what its losses need."""
    settings: HyperTrainSettings
    lib: object                       # studio.hyper.library.Library
    tasks: list
    held_tasks: list                  # t2l: held-out tasks for the final report
    net: object                       # TextToLoRA | DnDGenerator, on the device
    target: str                       # raw | svd
    dnd_data: object = None           # DnDData (dnd)
    runner: object = None             # GeneratedLoraModel (sft)
    tokenizer: object = None          # sft
    rng: random.Random = field(default_factory=random.Random)   # batches (seeded by build)
    start: float = field(default_factory=time.perf_counter)

    def batch_loss(self, rng: random.Random):
        from studio.hyper import losses

        s = self.settings
        if s.kind == "dnd":
            return self.dnd_data.loss(rng)
        chosen, emb = losses.pick(self.tasks, s.batch_tasks, rng)
        if s.mode == "recon":
            return losses.reconstruction_loss(self.net, chosen, emb)
        return losses.sft_loss(self.net, self.runner, self.tokenizer, chosen, emb,
                               s.batch_examples, rng, s.max_length)

    def eval_loss(self) -> float:
        import torch

        from studio.hyper import losses

        s = self.settings
        with torch.no_grad():
            self.net.eval()
            try:
                if s.kind == "dnd":
                    return float(self.dnd_data.loss(random.Random(10_000), held_out=True))
                if s.mode == "recon":
                    return losses.eval_reconstruction(self.net, self.tasks, "eval")
                sub = self.tasks[:8]
                emb = torch.stack([t.eval_embeddings[0] if len(t.eval_embeddings) else
                                   t.embeddings[0] for t in sub])
                return float(losses.sft_loss(self.net, self.runner, self.tokenizer, sub, emb,
                                             s.batch_examples, random.Random(10_000),
                                             s.max_length))
            finally:
                self.net.train()


def build(settings: HyperTrainSettings, encoder=None) -> HyperTraining:
    """Load the library, embed its descriptions and make the network (on its device)."""
    import torch

    from studio.hyper import losses
    from studio.hyper.encoder import default_encoder
    from studio.hyper.library import load_library

    s = settings.checked()
    start = time.perf_counter()
    lib = load_library(s.library)
    spec = lib.spec
    target = s.target if s.target != "auto" else ("raw" if lib.shared_init else "svd")
    need_examples = s.mode == "sft" or s.kind == "dnd"
    tasks = losses.tasks_from_library(lib, spec, target=target, with_examples=need_examples,
                                      with_checkpoints=s.kind == "dnd")
    if need_examples:
        missing = [t.name for t in tasks if not t.examples]
        if missing:
            raise UserError(f"tasks without examples.jsonl: {', '.join(missing[:5])}.",
                            path=s.library, field="examples",
                            fix="Add examples.jsonl (chat format) to each task, or use --mode recon.")
    encoder = encoder or default_encoder()
    held_tasks = (losses.tasks_from_library(lib, spec, target=target, held_out=True)
                  if s.kind == "t2l" else [])
    losses.embed_tasks(tasks + held_tasks, encoder)
    torch.manual_seed(s.seed)
    run = HyperTraining(s, lib, tasks, held_tasks, net=None, target=target,
                        rng=random.Random(s.seed), start=start)
    if s.kind == "t2l":
        run.net = _t2l_network(s, spec, tasks, target)
    else:
        from studio.hyper.dnd import DnDConfig, DnDData, DnDGenerator

        run.net = DnDGenerator(DnDConfig(spec=spec.to_dict(), n_prompts=s.n_prompts))
        run.dnd_data = DnDData(run.net, tasks, encoder, run.rng)
    device = s.device or ("cuda" if torch.cuda.is_available() else "cpu")
    run.net.to(device)
    if run.dnd_data is not None:
        run.dnd_data.to(device)
    if s.mode == "sft":
        from studio.core.models import load_model
        from studio.hyper.functional import GeneratedLoraModel
        from studio.hyper.targets import check_base_model

        model_path = s.model_path or spec.base_model
        check_base_model(spec, model_path)
        base, run.tokenizer = load_model(model_path)
        run.runner = GeneratedLoraModel(base.to(device), spec)
    return run


def _t2l_network(s: HyperTrainSettings, spec, tasks, target: str):
    import torch

    from studio.hyper.text_to_lora import T2LConfig, TextToLoRA

    net = TextToLoRA(T2LConfig(spec=spec.to_dict(), head=s.head, hidden=s.hidden, blocks=s.blocks))
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
    if s.init_from:
        _start_from(net, s.init_from)
    return net


# ---- loop ------------------------------------------------------------------------------------

@dataclass
class LoopResult:
    step: int                         # the last step taken
    cancelled: bool
    losses: list[float]
    evals: list[tuple[int, float]]    # (step, eval loss), starting at step 0
    params: int                       # trainable parameters


def lr_schedule(lr: float, steps: int) -> Callable[[int], float]:
    """Linear warm-up over the first 5 % of steps, then cosine down to 10 % of `lr`."""
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step <= warmup:
            return lr * step / warmup
        frac = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    return lr_at


def run_loop(run: HyperTraining, emit: Callable[[dict], None],
             should_stop: Callable[[], bool] | None = None) -> LoopResult:
    """The optimiser steps, emitting started, eval (step 0 and every eval_every), log, eval."""
    import torch

    s, net, rng = run.settings, run.net, run.rng
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=1e-4)
    lr_at = lr_schedule(s.lr, s.steps)
    n_params = sum(p.numel() for p in params)
    emit(events.started(str(s.out_dir), s.steps, n_params, n_params, kind=s.kind, mode=s.mode,
                        head=s.head if s.kind == "t2l" else None,
                        tasks=[t.name for t in run.tasks], held_out_tasks=run.lib.held_out,
                        device=str(next(net.parameters()).device)))
    eval_every = s.eval_every or max(1, s.steps // 10)
    result = LoopResult(step=0, cancelled=False, losses=[], evals=[(0, run.eval_loss())],
                        params=n_params)
    emit(events.eval_result(0, result.evals[0][1]))
    net.train()
    loop_start = time.perf_counter()
    try:
        for step in range(1, s.steps + 1):
            if should_stop and should_stop():
                result.cancelled = True
                break
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            loss = run.batch_loss(rng)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, 1.0))
            opt.step()
            result.step = step
            result.losses.append(float(loss.detach()))
            elapsed = time.perf_counter() - loop_start
            emit(events.log(step, 0.0, result.losses[-1], lr_at(step), grad_norm, 0.0,
                            _memory_mb(), elapsed / step * (s.steps - step)))
            if step % eval_every == 0 or step == s.steps:
                result.evals.append((step, run.eval_loss()))
                emit(events.eval_result(step, result.evals[-1][1]))
    finally:
        if run.runner is not None:
            run.runner.unwrap()
    return result


# ---- finish ----------------------------------------------------------------------------------

def finish(run: HyperTraining, loop: LoopResult, emit: Callable[[dict], None]) -> dict:
    """Report on held-out tasks, save the network and its model card, emit finished/cancelled."""
    from studio.hyper.card import write_model_card
    from studio.hyper.losses import held_out_report

    s, net = run.settings, run.net
    out_dir = s.out_dir
    net.eval()
    held_report = held_out_report(net, run.held_tasks, run.tasks) if run.held_tasks else {}
    net.cpu()
    losses = loop.losses
    tail = losses[-max(1, min(20, len(losses) // 5)):] if losses else [float("nan")]
    metrics = {"out_dir": str(out_dir), "kind": s.kind, "mode": s.mode,
               "head": s.head if s.kind == "t2l" else None, "steps": loop.step, "lr": s.lr,
               "seed": s.seed, "target": run.target, "first_loss": losses[0] if losses else None,
               "final_loss": sum(tail) / len(tail), "eval_loss_start": loop.evals[0][1],
               "eval_loss": loop.evals[-1][1], "evals": loop.evals,
               "seconds": round(time.perf_counter() - run.start, 1),
               "tasks": [t.name for t in run.tasks], "held_out_tasks": run.lib.held_out,
               "library": str(Path(s.library).resolve()), "params": loop.params,
               "init_from": str(s.init_from) if s.init_from else None,
               "held_out_report": held_report}
    net.config.notes = {k: v for k, v in metrics.items() if k not in ("out_dir",)}
    net.save(out_dir)
    if s.kind == "t2l":
        from studio.hyper.nearest import write_tasks

        write_tasks(out_dir, run.tasks)
    write_model_card(out_dir, [c for c in (run.lib.command, s.command) if c])
    metrics["size_mb"] = round((Path(out_dir) / WEIGHTS_FILE).stat().st_size / 2**20, 2)
    if loop.cancelled:
        emit(events.cancelled(loop.step, str(out_dir)))
    else:
        emit(events.finished(loop.step, str(out_dir), metrics))
    return metrics


def train(settings: HyperTrainSettings, progress: Callable[[dict], None] | None = None,
          should_stop: Callable[[], bool] | None = None, encoder=None) -> dict:
    """Build, loop, finish; returns the metrics (also in the finished event)."""
    emit = progress or (lambda event: None)
    run = build(settings, encoder)
    return finish(run, run_loop(run, emit, should_stop), emit)


def train_hypernetwork(library, out_dir, kind: str = "t2l", mode: str = "recon", head: str = "S",
                       steps: int = 300, lr: float | None = None, seed: int = 0, model_path=None,
                       progress=None, should_stop=None, encoder=None, **options) -> dict:
    """train() with the settings as keyword arguments (HyperTrainSettings' fields)."""
    settings = HyperTrainSettings(library, out_dir, kind=kind, mode=mode, head=head, steps=steps,
                                  lr=lr, seed=seed, model_path=model_path, **options)
    return train(settings, progress, should_stop, encoder)
