"""The training loop (our own, not HF Trainer), shared by the worker child, the CLI and the benchmark.

    run_training(recipe, run_dir, emit, control=None, resume=False) -> final metrics

Loads the model (quantized when the recipe or the method asks), tokenises the data, applies the
method plugin, then trains with AdamW (or the plugin's param groups), a transformers scheduler,
gradient accumulation, clipping and the plugin's callbacks. Emits the events of
studio.core.events through `emit`; pause/cancel arrive through `control` between steps.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Callable

from studio.core.training_parts import (  # noqa: F401 - re-exported for the worker, CLI, benchmark
    IGNORE, Batches, Control, add_neftune, autocast_for, TrainData, default_param_groups, make_optimizer,
    compute_dtype, frozen_dtype, grad_scaler_for, hold_frozen,
    total_steps_for, memory_mb, micro_batches, pick_device, prepare_data, seed_everything)
from studio.errors import UserError
from studio.fileio import (atomic_dir, check_free_space, disk_full_as_user_error,
                           write_json_atomic)
from studio.core import events
from studio.core.packing import can_pack, pack, packed_loss


def run_training(recipe, run_dir, emit: Callable[[dict], None], control: Control | None = None,
                 resume: bool = False) -> dict:
    """Train per `recipe`, writing checkpoints/adapter/eval.json into run_dir; returns metrics.
    A full disk anywhere on the way is a UserError ('disk full at PATH: ...')."""
    from studio import plugins
    from studio.core import distributed
    from studio.core.metric_log import for_run

    recipe.validate()
    t = recipe.training
    world = distributed.planned_world(t.devices)
    plugin = plugins.get_plugin(recipe.method.id)
    if world > 1 and plugin.capabilities.get("callbacks"):   # before any rank starts or loads
        raise _callbacks_refused(recipe, plugin, world)
    distributed.check_sharding(recipe, quantization_for(recipe, plugin) or "", world)
    dist = distributed.setup(t.devices, run_dir, resume, t.sharding)
    try:
        if not dist.main:                  # a helper rank: rank 0 reports (and logs) for all
            with disk_full_as_user_error(run_dir):
                return _run_training(recipe, run_dir, _silent, control, resume, dist)
        with disk_full_as_user_error(run_dir), for_run(recipe, run_dir, emit) as emit:
            return _run_training(recipe, run_dir, emit, control, resume, dist)  # emit feeds log_to
    finally:
        dist.close()


def _callbacks_refused(recipe, plugin, world: int) -> UserError:
    return UserError(f"method '{plugin.id}' changes the model while it trains (its callbacks), "
                     f"which {world} data-parallel or sharded ranks cannot follow in step.",
                     path=recipe.source, field="training.devices",
                     fix="train this method on one device (training.devices = 1)")


def quantization_for(recipe, plugin) -> str | None:
    """How the base model is loaded: the recipe's quantization, else the method's own need."""
    needs_4bit = plugin.capabilities.get("needs_quantized_base")
    return (recipe.model.quantization or getattr(plugin, "requires_quantization", None)
            or ("4bit" if needs_4bit else "")) or None


def _silent(event: dict) -> None:
    """A helper rank's events: rank 0 reports for every rank."""


def _run_training(recipe, run_dir, emit, control, resume, dist) -> dict:
    import torch
    import transformers

    from studio import plugins
    from studio.core import checkpoints
    from studio.core.models import load_model

    run_dir = Path(run_dir)
    control = control or Control()
    recipe.validate()
    t = recipe.training
    plugin = plugins.get_plugin(recipe.method.id)
    params = recipe.method_params()
    ckpt = None
    if resume:
        ckpt = checkpoints.latest_checkpoint(run_dir)
        if ckpt is None:
            raise UserError("this run has no checkpoint to resume from", path=run_dir,
                            fix="start it again as a new run")
    seed_everything(t.seed)
    device = dist.device
    quant = quantization_for(recipe, plugin)
    # sharded: the whole base is read into host memory, never onto one GPU; sharding moves each
    # rank's share of every layer onto its device
    model, tokenizer = load_model(recipe.resolve_path(recipe.model.path), quant,
                                  recipe.model.dtype, "cpu" if dist.sharded else device)
    data = prepare_data(recipe, tokenizer)
    # each optimizer step takes `world` micro-batches per accumulation step (one per rank)
    total_steps = total_steps_for(recipe, max(1, data.batches_per_epoch // dist.world))
    if resume:
        from studio.core.runs import check_resumable

        check_resumable(run_dir, total_steps)     # RunFinished: nothing left to train
    pad_id = tokenizer.pad_token_id

    checkpointing, memory_note = t.gradient_checkpointing, ""
    if not checkpointing and t.auto_checkpointing:
        checkpointing, memory_note = auto_checkpointing(recipe, model, data, quant, device)
        # every rank as rank 0 decided: sharded layers recomputed on one rank only would
        # leave the others waiting in a collective
        checkpointing = dist.flag(checkpointing)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    from studio.core.data import iter_batches
    train_batches = Batches(list(iter_batches(data.train, t.batch_size, t.seed, 0)), pad_id)
    ctx = {"total_steps": total_steps, "train_batches": train_batches, "tokenizer": tokenizer,
           "device": device, "run_dir": str(run_dir), "seed": t.seed,
           "gradient_checkpointing": checkpointing, "quantization": quant or "",
           "learning_rate": t.learning_rate}
    model = plugin.apply(model, params, ctx)
    add_neftune(model, t.neftune_alpha)
    # bf16 compute: the frozen base held in bf16 too (FSDP keeps one dtype per sharded unit)
    held = (recipe.model.dtype if dist.sharded
            else hold_frozen(model, t, device, quant, recipe.model.dtype))
    model.train()
    callbacks = plugin.callbacks(model, params, ctx)
    if dist.active and callbacks:        # a plugin whose hook is known only once it runs
        raise _callbacks_refused(recipe, plugin, dist.world)
    trainable, total = plugins.count_parameters(model)
    if trainable == 0:
        raise UserError(f"method '{plugin.id}' left no parameter to train", path=recipe.source,
                        field="method.params", fix="check the method's target modules")

    step, epoch, index, tokens_seen = 0, 0, 0, 0
    early: dict = {}
    scaler_state = None
    if ckpt is not None:
        saved = checkpoints.read_state(ckpt, device)
        for cb in callbacks:
            if callable(getattr(cb, "on_resume", None)):
                cb.on_resume(saved["state"]["step"], model, ckpt)
        checkpoints.restore_trainable(model, ckpt)          # whole tensors, before sharding
    if dist.sharded:
        # FSDP2: the parameters become this rank's shards (DTensors, same names); the optimizer
        # is made over the shards below, so its state is sharded too
        model = dist.shard(model)
    if ckpt is not None:
        groups = checkpoints.rebuild_groups(model, saved["state"], saved["optimizer"])
    else:
        groups = (plugin.optimizer_param_groups(model, params, t.learning_rate)
                  or default_param_groups(model, t.weight_decay))
    optimizer = make_optimizer(groups, recipe, device)
    scheduler = transformers.get_scheduler(t.lr_scheduler, optimizer,
                                           num_warmup_steps=t.warmup_steps,
                                           num_training_steps=total_steps)
    if ckpt is not None:
        # the checkpoint holds whole tensors (as a single-device run writes them); a sharded
        # optimizer takes this rank's shard of each
        optimizer.load_state_dict(dist.shard_optimizer_state(saved["optimizer"], optimizer))
        scheduler.load_state_dict(saved["scheduler"])
        for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr()):
            group["lr"] = lr
        state = saved["state"]
        for cb, cb_state in zip(callbacks, state.get("callbacks") or []):
            if cb_state is not None and callable(getattr(cb, "load_state_dict", None)):
                cb.load_state_dict(cb_state)
        step = int(state["step"])
        epoch, index = int(state["position"]["epoch"]), int(state["position"]["index"])
        early = state.get("early_stopping") or {}
        scaler_state = state.get("grad_scaler")
        tokens_seen = state.get("tokens_seen", 0)       # progress.json, merged in by read_state
        checkpoints.restore_rng(state)
        del saved
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    emit(events.started(str(run_dir), total_steps, trainable, total, resumed_from=step,
                          device=device, method=plugin.id, quantization=quant or "",
                          train_examples=len(data.train), eval_examples=len(data.eval),
                          dropped_examples=data.dropped, optimizer=t.optimizer,
                          precision=compute_dtype(device, t.precision), frozen_dtype=held,
                          train_on=t.train_on,
                          packing=uses_packing(t, model, plugin), devices=dist.world,
                          gradient_checkpointing=checkpointing,
                          sharding=t.sharding if dist.active else "",
                          warnings=data.warnings + ([memory_note] if memory_note else [])
                          + interval_warnings(recipe.training, total_steps, bool(data.eval))
                          + sharding_notes(t, dist.world)))
    loop = StepLoop(recipe, run_dir, emit, control, model, plugin, optimizer, scheduler, callbacks,
                    data, pad_id, device, total_steps, dist)
    loop.best_eval, loop.best_step = early.get("best_eval"), early.get("best_step")
    loop.evals_without_gain = int(early.get("evals_without_gain", 0))
    if loop.scaler is not None and scaler_state:
        loop.scaler.load_state_dict(scaler_state)
    loop.tokens_seen = int(tokens_seen or 0)
    return loop.run(step, epoch, index)


def uses_packing(training, model, plugin) -> bool:
    """Padding-free batches (studio/core/packing.py) unless the recipe turns them off, the method
    needs padded batches (prompt learning, AdaLoRA, a plugin whose capabilities say
    "packing": false) or NEFTune is on (its noise scale depends on each example's length)."""
    return bool(training.packing and can_pack(model) and not training.neftune_alpha
                and plugin.capabilities.get("packing", True))


def auto_checkpointing(recipe, model, data, quant, device) -> tuple[bool, str]:
    """Gradient checkpointing on when the largest batch's estimated memory does not fit what is
    free on the device (estimate.checkpointing_choice); the note says so with the numbers."""
    from studio.core.estimate import checkpointing_choice
    from studio.core.models import check_model_folder

    t = recipe.training
    longest = max((len(f["input_ids"]) for f in data.train), default=0)
    batch_tokens = t.batch_size * min(longest, recipe.data.max_length)
    try:
        info = check_model_folder(recipe.resolve_path(recipe.model.path))
    except UserError:
        return False, ""
    dtype = frozen_dtype(t, device, quant, recipe.model.dtype)
    on, note = checkpointing_choice(info, quant, dtype, batch_tokens, device)
    if on and not getattr(model, "supports_gradient_checkpointing", False):
        return False, ""
    return on, note


def sharding_notes(training, world: int) -> list[str]:
    """What `training.sharding` (and torch_compile) do not do in a run of `world` ranks."""
    out = []
    if training.sharding == "fsdp" and world <= 1:
        out.append("sharding is fsdp but the run has one device: it trains as one process, the "
                   "model unsharded (FSDP splits a model across 2 or more devices).")
    if getattr(training, "torch_compile", False):
        out.append("torch_compile is on: the first step compiles the model (minutes; about 6 "
                   "on one CPU core for a 135M model), later steps are faster."
                   if world <= 1 else
                   "torch_compile is off in a multi-device run (compiled per device it would "
                   "recompile on every rank); the run trains uncompiled.")
    return out


def interval_warnings(training, total_steps: int, has_eval: bool) -> list[str]:
    """What the eval / checkpoint intervals will not do in a run of `total_steps` steps."""
    out = []
    if getattr(training, "early_stopping_patience", 0) and not (has_eval and training.eval_every):
        out.append("early stopping needs an eval set and 'eval every' > 0: it is off for this run.")
    if has_eval and training.eval_every and training.eval_every >= total_steps:
        out.append(f"eval every {training.eval_every} steps, but the run has {total_steps}: the eval "
                   f"loss is measured only at the end (lower 'eval every' to see it during the run).")
    if training.save_every and training.save_every >= total_steps:
        out.append(f"checkpoint every {training.save_every} steps, but the run has {total_steps}: "
                   f"no checkpoint before the end, so a crash or cancel restarts from step 0.")
    return out


class StepLoop:
    """The step loop and what happens between steps (log, eval, checkpoint, pause, cancel).

    On a GPU a log's numbers (loss, grad norm) are read back one step late: reading them right
    after a step would make the host wait for the device to drain its queue every step; a step
    later they are long done. Logs are sent before anything else happens between steps (eval,
    checkpoint, pause, cancel, the end), so the order of events is the same as when read at once."""

    DEFER_LOGS_ON = ("cuda",)       # device kinds whose logs are read a step late

    def __init__(self, recipe, run_dir, emit, control, model, plugin, optimizer, scheduler,
                 callbacks, data, pad_id, device, total_steps, dist=None):
        from studio.core.distributed import Dist

        self.recipe, self.t, self.run_dir, self.emit = recipe, recipe.training, run_dir, emit
        self.control, self.model, self.plugin = control, model, plugin
        self.optimizer, self.scheduler, self.callbacks = optimizer, scheduler, callbacks
        self.data, self.pad_id, self.device, self.total = data, pad_id, device, total_steps
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.packed = uses_packing(recipe.training, model, plugin)
        self.scaler = grad_scaler_for(device, recipe.training.precision)   # fp16 only
        self.dist = dist or Dist(device=device)
        # DDP: the forward pass goes through DistributedDataParallel, evaluation and saving use
        # the plain model (rank 0 alone). FSDP: the model is sharded in place already, and every
        # rank evaluates and saves with it (the layers are gathered through collectives)
        self.forward_model = (self.dist.accelerator.prepare_model(model)
                              if self.dist.active and not self.dist.sharded else model)
        if getattr(self.t, "torch_compile", False) and not self.dist.active:
            import torch

            # the training forward only (eval and saving use the model as it is); dynamic: a
            # packed row's length changes every step
            self.forward_model = torch.compile(self.forward_model, dynamic=True)
        self.step_times: deque[float] = deque(maxlen=20)
        self.last_loss: float | None = None
        self.last_eval: float | None = None
        self.best_eval: float | None = None      # early stopping / keep best
        self.best_step: int | None = None
        self.evals_without_gain = 0
        self.tokens_seen = 0                     # tokens trained on since step 0 (resumes too)
        self.defer_logs = str(device).split(":")[0] in self.DEFER_LOGS_ON
        self._pending_log: tuple | None = None

    def _flush_log(self) -> None:
        """Send the log whose numbers were left on the device (one step late)."""
        if self._pending_log is not None:
            pending, self._pending_log = self._pending_log, None
            self._log(*pending)

    # ---- between steps -------------------------------------------------------------------
    def _position(self, epoch, index) -> dict:
        return {"epoch": epoch, "index": index}

    def _checkpoint(self, step, epoch, index) -> Path:
        from studio.core import checkpoints

        if not self.dist.main and not self.dist.sharded:
            return self.run_dir / "checkpoints"

        self.emit(events.phase("saving", step))
        # sharded: every rank gathers its shares (optimizer state, trained tensors) for rank 0
        optimizer_state = self.dist.full_optimizer_state(self.optimizer)
        group_names = checkpoints.group_param_names(self.model, self.optimizer)
        with self.dist.gathered(self.model):
            if not self.dist.main:
                return self.run_dir / "checkpoints"
            path = checkpoints.save_checkpoint(
                self.run_dir, step, model=self.model, plugin=self.plugin, optimizer=self.optimizer,
                scheduler=self.scheduler, position=self._position(epoch, index),
                callbacks=self.callbacks, optimizer_state=optimizer_state, group_names=group_names,
                extra={"total_steps": self.total, "loss": self.last_loss,
                       "tokens_seen": self.tokens_seen,
                       "early_stopping": {"best_eval": self.best_eval, "best_step": self.best_step,
                                          "evals_without_gain": self.evals_without_gain},
                       "grad_scaler": self.scaler.state_dict() if self.scaler is not None else None})
        self.emit(events.checkpoint(step, str(path)))
        return path

    def _evaluate(self, step) -> float | None:
        import torch

        from studio.core.evaluate import eval_loss

        if not self.data.eval or not (self.dist.main or self.dist.sharded):
            return None           # sharded: every rank runs the same batches (the collectives)
        items, size = self.data.eval, self.t.batch_size
        chunks = [items[i:i + size] for i in range(0, len(items), size)]
        batches = chunks if self.packed else Batches(chunks, self.pad_id, self.device)
        shown = {"at": 0.0}

        def progress(done, total):       # at most ~2 lines a second, and always the last batch
            now = time.perf_counter()
            if done == total or now - shown["at"] >= 0.5:
                shown["at"] = now
                self.emit(events.phase("evaluating", step, done, total))

        self.emit(events.phase("evaluating", step, 0, len(batches)))
        self.model.eval()
        try:
            with torch.no_grad(), autocast_for(self.device, self.t.precision):
                value = float(eval_loss(self.model, batches, progress))
        finally:
            self.model.train()
        self.last_eval = value
        self.emit(events.eval_result(step, value))
        if self.best_eval is None or value < self.best_eval - 1e-6:     # a real gain, not float noise
            self.best_eval, self.best_step, self.evals_without_gain = value, step, 0
            if self.t.keep_best:
                self.emit(events.phase("saving", step))
                with self.dist.gathered(self.model):
                    if self.dist.main:
                        with atomic_dir(self.run_dir / "best-adapter", replace=True) as tmp:
                            self.plugin.save(self.model, tmp)
        else:
            self.evals_without_gain += 1
        return value

    def should_stop_early(self) -> bool:
        patience = self.t.early_stopping_patience
        return bool(patience) and self.evals_without_gain >= patience

    def _wait_if_paused(self, step) -> None:
        if not self.control.paused or self.control.cancelled:
            return
        self.emit(events.paused(step))
        while self.control.paused and not self.control.cancelled:
            self.control.wait_while_paused(timeout=0.5)
        if not self.control.cancelled:
            self.emit(events.resumed(step))

    # ---- the loop ------------------------------------------------------------------------
    def run(self, step: int, epoch: int, index: int) -> dict:
        import torch

        t = self.t
        stream = micro_batches(self.data.train, t.batch_size, t.seed, epoch, index,
                               group_by_length=t.group_by_length and not self.packed)
        max_norm = t.max_grad_norm if t.max_grad_norm > 0 else float("inf")
        window_loss = torch.zeros((), device=self.device)
        window_steps, window_tokens, window_start = 0, 0, time.perf_counter()
        window_trained = window_padded = 0
        train_start, train_tokens, start_step = time.perf_counter(), 0, step
        grad_norm = None
        while step < self.total:
            waited = time.perf_counter()
            if self.control.paused and not self.dist.active:   # (its collectives: every rank)
                self._flush_log()
            self._wait_if_paused(step)
            window_start += time.perf_counter() - waited       # a pause is not training time
            if self.dist.flag(self.control.cancelled):       # rank 0's commands rule
                self._flush_log()
                path = self._checkpoint(step, epoch, index)
                self.emit(events.cancelled(step, str(path)))
                return {"step": step, "cancelled": True, "checkpoint": str(path),
                        "train_loss": self.last_loss, "eval_loss": self.last_eval}
            started = time.perf_counter()
            micro = []
            for _ in range(t.grad_accum):
                for rank in range(self.dist.world):      # rank r takes the r-th of each group
                    epoch, idx, items = next(stream)
                    index = idx + 1
                    if rank == self.dist.rank:
                        micro.append(items)
            n_trained = max(1, self.dist.sum([sum(trained_count(items) for items in micro)])[0])
            scale = self.dist.world / n_trained          # DDP averages gradients over ranks
            step_loss = torch.zeros((), device=self.device)
            for items in micro:
                real = sum(len(i["input_ids"]) for i in items)
                window_tokens += real
                train_tokens += real
                self.tokens_seen += real
                window_trained += trained_count(items)
                window_padded += (max(len(i["input_ids"]) for i in items) * len(items)
                                  if not self.packed else real)
                with autocast_for(self.device, t.precision):
                    if self.packed:
                        loss = packed_loss(self.forward_model, pack(items), reduction="sum").float()
                    else:
                        batch = {k: v.to(self.device, non_blocking=True)
                                 for k, v in _collate(items, self.pad_id).items()}
                        out = self.forward_model(**batch)
                        loss = out.loss.float() * trained_count(items)
                        del out
                loss = loss * scale
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
                step_loss += loss.detach()
                del loss
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)    # clip the true gradients
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
            if hasattr(grad_norm, "full_tensor"):      # FSDP: the norm over every rank's shard
                grad_norm = grad_norm.full_tensor()
            step_lr = float(self.optimizer.param_groups[0]["lr"])   # the rate this step used
            if self.scaler is not None:
                self.scaler.step(self.optimizer)        # skipped when the scaled grads overflowed
                self.scaler.update()
            else:
                self.optimizer.step()
            self.scheduler.step()
            step += 1
            for cb in self.callbacks:
                cb.on_step_end(step, self.model, self.optimizer)
            self.optimizer.zero_grad(set_to_none=True)
            window_loss += step_loss
            window_steps += 1
            if step % t.log_every == 0 or step == self.total:
                entry = (step, epoch, index, window_loss, window_steps, window_tokens,
                         max(time.perf_counter() - window_start, 1e-9), grad_norm, step_lr,
                         window_trained, window_padded, self.tokens_seen)
                self._flush_log()                   # the previous step's: done by now
                if self.defer_logs and step < self.total:
                    self._pending_log = entry
                else:
                    self._log(*entry)
                window_loss = torch.zeros((), device=self.device)
                window_steps, window_tokens, window_start = 0, 0, time.perf_counter()
                window_trained = window_padded = 0
            self.step_times.append(time.perf_counter() - started)
            if step < self.total:
                between = time.perf_counter()
                busy = False
                if (t.eval_every and step % t.eval_every == 0) or \
                        (t.save_every and step % t.save_every == 0):
                    self._flush_log()               # the log before the eval / checkpoint
                if t.eval_every and step % t.eval_every == 0:
                    self._evaluate(step)
                    busy = True
                    if self.dist.flag(self.should_stop_early()):
                        self.emit(events.phase("saving", step))
                        return self._finish(step, time.perf_counter() - train_start, train_tokens,
                                            start_step, stopped_early=True)
                if t.save_every and step % t.save_every == 0:
                    self._checkpoint(step, epoch, index)
                    busy = True
                if busy:            # eval and checkpoint time stay out of tokens/s and the ETA
                    window_start += time.perf_counter() - between
                    self.emit(events.phase("training", step))
            # keep the clipped parameter list current (a callback may add a group: LoRA-Dash)
            if len(self.params) != sum(len(g["params"]) for g in self.optimizer.param_groups):
                self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        return self._finish(step, time.perf_counter() - train_start, train_tokens, start_step)

    def _log(self, step, epoch, index, window_loss, window_steps, window_tokens, elapsed,
             grad_norm, lr, trained, positions, seen) -> None:
        if self.dist.active:     # every rank's share: loss, tokens, trained, positions, all seen
            summed, window_tokens, trained, positions, seen = self.dist.sum(
                [float(window_loss), window_tokens, trained, positions, seen])
            window_loss = summed / self.dist.world
        loss = float(window_loss) / window_steps
        self.last_loss = loss
        per_step = (sum(self.step_times) / len(self.step_times)) if self.step_times else elapsed
        self.emit(events.log(
            step=step, epoch=epoch + index / max(self.data.batches_per_epoch, 1),
            loss=loss, lr=lr,
            grad_norm=float(grad_norm) if grad_norm is not None else None,
            tokens_per_s=window_tokens / elapsed, memory_mb=memory_mb(self.device),
            eta_s=per_step * (self.total - step), progress=round(step / self.total, 4),
            trained_tokens_per_s=round(trained / elapsed, 1),
            padding=round(1.0 - window_tokens / positions, 4) if positions else 0.0,
            tokens=int(seen)))

    def _finish(self, step, seconds, tokens, start_step, stopped_early: bool = False) -> dict:
        from studio.core.checkpoints import checkpoint_bytes_needed

        if not self.dist.main and not self.dist.sharded:
            return {"step": step, "rank": self.dist.rank}
        eval_loss = self.last_eval if stopped_early else self._evaluate(step)
        final = self.run_dir / "adapter"           # the run's own folder: replaced on resume
        self.emit(events.phase("saving", step))
        with self.dist.gathered(self.model):       # sharded: the adapter whole, on rank 0
            if not self.dist.main:
                return {"step": step, "rank": self.dist.rank}
            needed = checkpoint_bytes_needed(self.run_dir, self.model, adapter_only=True)
            check_free_space(self.run_dir, needed)
            with disk_full_as_user_error(final, needed), atomic_dir(final, replace=True) as tmp:
                self.plugin.save(self.model, tmp)
        metrics = {"step": step, "train_loss": self.last_loss, "eval_loss": eval_loss,
                   "train_seconds": round(seconds, 3), "steps_this_session": step - start_step,
                   "tokens_per_s": tokens / seconds if seconds > 0 else None,
                   "eval_examples": len(self.data.eval)}
        if stopped_early:
            metrics["stopped_early"] = (f"no eval-loss gain in {self.t.early_stopping_patience} "
                                        f"evaluations; best {self.best_eval:.4f} at step {self.best_step}")
        if self.best_eval is not None:
            metrics.update(best_eval_loss=self.best_eval, best_step=self.best_step)
        if self.t.keep_best and (self.run_dir / "best-adapter").is_dir():
            metrics["best_adapter_path"] = str(self.run_dir / "best-adapter")
        write_json_atomic(self.run_dir / "eval.json", metrics)
        self.emit(events.finished(step, str(final), metrics))
        return metrics


def trained_count(items) -> int:
    """Tokens of `items` whose loss is trained (a label that is not IGNORE after the first)."""
    return sum(sum(1 for y in item.get("labels", item["input_ids"])[1:] if y != IGNORE)
               for item in items)


def _collate(items, pad_id):
    from studio.core.data import collate

    return collate(items, pad_id)


def helper_rank_main(argv=None) -> int:
    """A helper rank of a data-parallel run (studio/core/distributed.py starts it): train the
    run's recipe silently, rank 0 reports for all; exit when rank 0's process is gone."""
    import argparse
    import os
    import threading

    from studio.core.distributed import watch_parent
    from studio.core.recipe import Recipe

    parser = argparse.ArgumentParser(prog="python -m studio.core.training")
    parser.add_argument("run_dir")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    parent = int(os.environ.get("PEFT_STUDIO_PARENT_PID", "0"))
    if parent:
        threading.Thread(target=watch_parent, args=(parent,), daemon=True).start()
    recipe = Recipe.load(Path(args.run_dir) / "recipe.toml")
    run_training(recipe, args.run_dir, _silent, Control(), resume=args.resume)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(helper_rank_main())
