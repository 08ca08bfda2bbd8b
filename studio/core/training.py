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
    total_steps_for, memory_mb, micro_batches, pick_device, prepare_data, seed_everything)
from studio.errors import UserError
from studio.fileio import (atomic_dir, check_free_space, disk_full_as_user_error,
                           write_json_atomic)
from studio.core import events


def run_training(recipe, run_dir, emit: Callable[[dict], None], control: Control | None = None,
                 resume: bool = False) -> dict:
    """Train per `recipe`, writing checkpoints/adapter/eval.json into run_dir; returns metrics.
    A full disk anywhere on the way is a UserError ('disk full at PATH: ...')."""
    from studio.core.metric_log import for_run

    with disk_full_as_user_error(run_dir), for_run(recipe, run_dir, emit) as emit:
        return _run_training(recipe, run_dir, emit, control, resume)   # emit also feeds log_to


def _run_training(recipe, run_dir, emit, control, resume) -> dict:
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
    device = pick_device()
    needs_4bit = plugin.capabilities.get("needs_quantized_base")
    quant = (recipe.model.quantization or getattr(plugin, "requires_quantization", None)
             or ("4bit" if needs_4bit else "")) or None
    model, tokenizer = load_model(recipe.resolve_path(recipe.model.path), quant,
                                  recipe.model.dtype, device)
    data = prepare_data(recipe, tokenizer)
    total_steps = total_steps_for(recipe, data.batches_per_epoch)
    if resume:
        from studio.core.runs import check_resumable

        check_resumable(run_dir, total_steps)     # RunFinished: nothing left to train
    pad_id = tokenizer.pad_token_id

    if t.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    from studio.core.data import iter_batches
    train_batches = Batches(list(iter_batches(data.train, t.batch_size, t.seed, 0)), pad_id)
    ctx = {"total_steps": total_steps, "train_batches": train_batches, "tokenizer": tokenizer,
           "device": device, "run_dir": str(run_dir), "seed": t.seed,
           "gradient_checkpointing": t.gradient_checkpointing, "quantization": quant or "",
           "learning_rate": t.learning_rate}
    model = plugin.apply(model, params, ctx)
    add_neftune(model, t.neftune_alpha)
    model.train()
    callbacks = plugin.callbacks(model, params, ctx)
    trainable, total = plugins.count_parameters(model)
    if trainable == 0:
        raise UserError(f"method '{plugin.id}' left no parameter to train", path=recipe.source,
                        field="method.params", fix="check the method's target modules")

    step, epoch, index = 0, 0, 0
    early: dict = {}
    if ckpt is not None:
        saved = checkpoints.read_state(ckpt, device)
        for cb in callbacks:
            if callable(getattr(cb, "on_resume", None)):
                cb.on_resume(saved["state"]["step"], model, ckpt)
        checkpoints.restore_trainable(model, ckpt)
        groups = checkpoints.rebuild_groups(model, saved["state"], saved["optimizer"])
    else:
        groups = (plugin.optimizer_param_groups(model, params, t.learning_rate)
                  or default_param_groups(model, t.weight_decay))
    optimizer = make_optimizer(groups, recipe, device)
    scheduler = transformers.get_scheduler(t.lr_scheduler, optimizer,
                                           num_warmup_steps=t.warmup_steps,
                                           num_training_steps=total_steps)
    if ckpt is not None:
        optimizer.load_state_dict(saved["optimizer"])
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
        checkpoints.restore_rng(state)
        del saved
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    emit(events.started(str(run_dir), total_steps, trainable, total, resumed_from=step,
                          device=device, method=plugin.id, quantization=quant or "",
                          train_examples=len(data.train), eval_examples=len(data.eval),
                          dropped_examples=data.dropped, optimizer=t.optimizer,
                          precision=t.precision, train_on=t.train_on,
                          warnings=data.warnings + interval_warnings(recipe.training,
                                                                     total_steps, bool(data.eval))))
    loop = StepLoop(recipe, run_dir, emit, control, model, plugin, optimizer, scheduler, callbacks,
                    data, pad_id, device, total_steps)
    loop.best_eval, loop.best_step = early.get("best_eval"), early.get("best_step")
    loop.evals_without_gain = int(early.get("evals_without_gain", 0))
    return loop.run(step, epoch, index)


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
    """The step loop and what happens between steps (log, eval, checkpoint, pause, cancel)."""

    def __init__(self, recipe, run_dir, emit, control, model, plugin, optimizer, scheduler,
                 callbacks, data, pad_id, device, total_steps):
        self.recipe, self.t, self.run_dir, self.emit = recipe, recipe.training, run_dir, emit
        self.control, self.model, self.plugin = control, model, plugin
        self.optimizer, self.scheduler, self.callbacks = optimizer, scheduler, callbacks
        self.data, self.pad_id, self.device, self.total = data, pad_id, device, total_steps
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.step_times: deque[float] = deque(maxlen=20)
        self.last_loss: float | None = None
        self.last_eval: float | None = None
        self.best_eval: float | None = None      # early stopping / keep best
        self.best_step: int | None = None
        self.evals_without_gain = 0

    # ---- between steps -------------------------------------------------------------------
    def _position(self, epoch, index) -> dict:
        return {"epoch": epoch, "index": index}

    def _checkpoint(self, step, epoch, index) -> Path:
        from studio.core import checkpoints

        self.emit(events.phase("saving", step))
        path = checkpoints.save_checkpoint(
            self.run_dir, step, model=self.model, plugin=self.plugin, optimizer=self.optimizer,
            scheduler=self.scheduler, position=self._position(epoch, index),
            callbacks=self.callbacks,
            extra={"total_steps": self.total, "loss": self.last_loss,
                   "early_stopping": {"best_eval": self.best_eval, "best_step": self.best_step,
                                      "evals_without_gain": self.evals_without_gain}})
        self.emit(events.checkpoint(step, str(path)))
        return path

    def _evaluate(self, step) -> float | None:
        import torch

        from studio.core.evaluate import eval_loss

        if not self.data.eval:
            return None
        items, size = self.data.eval, self.t.batch_size
        batches = Batches([items[i:i + size] for i in range(0, len(items), size)], self.pad_id,
                          self.device)
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
        stream = micro_batches(self.data.train, t.batch_size, t.seed, epoch, index)
        max_norm = t.max_grad_norm if t.max_grad_norm > 0 else float("inf")
        window_loss = torch.zeros((), device=self.device)
        window_steps, window_tokens, window_start = 0, 0, time.perf_counter()
        train_start, train_tokens, start_step = time.perf_counter(), 0, step
        grad_norm = None
        while step < self.total:
            waited = time.perf_counter()
            self._wait_if_paused(step)
            window_start += time.perf_counter() - waited       # a pause is not training time
            if self.control.cancelled:
                path = self._checkpoint(step, epoch, index)
                self.emit(events.cancelled(step, str(path)))
                return {"step": step, "cancelled": True, "checkpoint": str(path),
                        "train_loss": self.last_loss, "eval_loss": self.last_eval}
            started = time.perf_counter()
            batches = []
            for _ in range(t.grad_accum):
                epoch, idx, items = next(stream)
                index = idx + 1
                batches.append(_collate(items, self.pad_id))
            n_trained = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches)
            step_loss = torch.zeros((), device=self.device)
            for batch in batches:
                train_tokens_b = int(batch["attention_mask"].sum())
                window_tokens += train_tokens_b
                train_tokens += train_tokens_b
                share = int((batch["labels"][:, 1:] != IGNORE).sum()) / n_trained
                batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
                with autocast_for(self.device, t.precision):
                    out = self.model(**batch)
                loss = out.loss.float() * share
                loss.backward()
                step_loss += loss.detach()
                del out, loss
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
            step_lr = float(self.optimizer.param_groups[0]["lr"])   # the rate this step used
            self.optimizer.step()
            self.scheduler.step()
            step += 1
            for cb in self.callbacks:
                cb.on_step_end(step, self.model, self.optimizer)
            self.optimizer.zero_grad(set_to_none=True)
            window_loss += step_loss
            window_steps += 1
            if step % t.log_every == 0 or step == self.total:
                self._log(step, epoch, index, window_loss, window_steps, window_tokens,
                          window_start, grad_norm, step_lr)
                window_loss = torch.zeros((), device=self.device)
                window_steps, window_tokens, window_start = 0, 0, time.perf_counter()
            self.step_times.append(time.perf_counter() - started)
            if step < self.total:
                between = time.perf_counter()
                busy = False
                if t.eval_every and step % t.eval_every == 0:
                    self._evaluate(step)
                    busy = True
                    if self.should_stop_early():
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

    def _log(self, step, epoch, index, window_loss, window_steps, window_tokens, window_start,
             grad_norm, lr) -> None:
        elapsed = max(time.perf_counter() - window_start, 1e-9)
        loss = float(window_loss) / window_steps
        self.last_loss = loss
        per_step = (sum(self.step_times) / len(self.step_times)) if self.step_times else elapsed
        self.emit(events.log(
            step=step, epoch=epoch + index / max(self.data.batches_per_epoch, 1),
            loss=loss, lr=lr,
            grad_norm=float(grad_norm) if grad_norm is not None else None,
            tokens_per_s=window_tokens / elapsed, memory_mb=memory_mb(self.device),
            eta_s=per_step * (self.total - step), progress=round(step / self.total, 4)))

    def _finish(self, step, seconds, tokens, start_step, stopped_early: bool = False) -> dict:
        from studio.core.checkpoints import checkpoint_bytes_needed

        eval_loss = self.last_eval if stopped_early else self._evaluate(step)
        final = self.run_dir / "adapter"           # the run's own folder: replaced on resume
        self.emit(events.phase("saving", step))
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


def _collate(items, pad_id):
    from studio.core.data import collate

    return collate(items, pad_id)
