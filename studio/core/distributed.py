"""Training on several devices at once through accelerate: data parallel (DDP) or fully sharded
(FSDP2), as `training.sharding` says.

`training.devices` > 1 (or 0 = every visible GPU) makes the process that calls run_training
rank 0: it starts ranks 1..N-1 as helper processes (`python -m studio.core.training RUN_DIR`),
then every rank initialises the process group through accelerate (NCCL on GPUs, gloo on CPUs) and
wraps the model in DistributedDataParallel. Each optimizer step takes N x grad_accum consecutive
micro-batches of the one shuffled stream, rank r the r-th of every N: the same examples, order and
loss (the mean over all trained tokens of the step) as one process with grad_accum x N, so runs
resume exactly and compare with single-device runs. Rank 0 alone writes events, checkpoints,
evaluations and the adapter; it broadcasts pause / cancel / early-stop decisions so every rank
stops at the same step. A helper dies with its parent (it watches the parent's pid).

`training.sharding = "fsdp"` keeps that data split and loss, but instead of a whole copy of the
model per rank, accelerate's FSDP2 (fsdp2_prepare_model) shards every decoder layer, the embeddings
and the head across the ranks: each rank holds 1/N of the parameters (the frozen base included),
of the gradients and of the optimizer state, and all-gathers one layer at a time to compute. Every
rank then takes part in evaluation and saving: the trainable tensors and the optimizer state are
gathered whole and rank 0 writes the same files as a single-device run (Dist.gathered): the
checkpoint does not depend on how the model was split, a resume shards it again
(shard_optimizer_state) and the adapter loads anywhere. A quantized base, the 8-bit optimizers and
Adafactor are not made for sharded parameters; check_sharding refuses them up front.

Already inside a distributed launch (`accelerate launch` / `torchrun` set WORLD_SIZE), nothing is
spawned: each process is the rank the launcher made it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from studio.errors import UserError

HELPER_TIMEOUT = timedelta(days=2)       # a long pause of rank 0 keeps the others waiting


def requested_devices(devices: int) -> int:
    """How many processes `training.devices` asks for here (0 = every visible GPU, else 1)."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if devices == 0:
        return max(1, gpus)
    if gpus and devices > gpus:
        raise UserError(f"training.devices is {devices} but this machine has {gpus} GPU(s).",
                        field="training.devices", fix=f"use at most {gpus}, or 0 for all of them")
    return devices


def planned_world(devices: int) -> int:
    """How many ranks a run will have: the launcher's WORLD_SIZE, else `training.devices`."""
    return int(os.environ["WORLD_SIZE"]) if outside_launch() else requested_devices(devices)


def check_sharding(recipe, quantization: str, world: int) -> None:
    """UserError (with the fix) where `training.sharding = "fsdp"` on `world` ranks cannot work;
    called before any model is loaded or rank started. One rank trains as usual (no sharding)."""
    t = recipe.training
    if t.sharding != "fsdp" or world <= 1:
        return
    if quantization:
        from_method = not recipe.model.quantization
        raise UserError(
            f"FSDP cannot shard a {quantization} quantized base model"
            + (f" (method '{recipe.method.id}' quantizes it)" if from_method else "") + ".",
            path=recipe.source, field="method.id" if from_method else "model.quantization",
            fix=("use an unquantized method such as lora with training.sharding = \"fsdp\", or "
                 "keep it with training.sharding = \"ddp\"") if from_method else
                ("train the unquantized base (model.quantization = \"\") with FSDP, or keep "
                 "the quantized base with training.sharding = \"ddp\""))
    if t.optimizer != "adamw":
        raise UserError(f"FSDP shards the optimizer state across the devices; optimizer "
                        f"'{t.optimizer}' cannot step sharded parameters.", path=recipe.source,
                        field="training.optimizer",
                        fix='use optimizer = "adamw" (FSDP already splits its state N ways), or '
                            'keep this optimizer with training.sharding = "ddp"')


@dataclass
class Dist:
    """This process's place in a data-parallel run (world 1: a plain single-process run)."""
    rank: int = 0
    world: int = 1
    device: str = "cpu"
    accelerator: object = None
    helpers: list = field(default_factory=list)
    saved_env: dict = field(default_factory=dict)    # what rank 0 set for itself, to restore
    sharding: str = "ddp"                           # "fsdp": the model is sharded (FSDP2)
    fsdp_plugin: object = None

    @property
    def sharded(self) -> bool:
        return self.active and self.sharding == "fsdp"

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    # ---- collectives (no-ops in a single process) ---------------------------------------
    def sum(self, values: list[float]) -> list[float]:
        if not self.active:
            return list(values)
        import torch
        import torch.distributed as td

        tensor = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        td.all_reduce(tensor)
        return tensor.tolist()

    def flag(self, value: bool) -> bool:
        """Rank 0's `value`, on every rank."""
        if not self.active:
            return bool(value)
        import torch
        import torch.distributed as td

        tensor = torch.tensor([1 if value else 0], device=self._comm_device())
        td.broadcast(tensor, src=0)
        return bool(tensor.item())

    def share(self, value):
        """Rank 0's `value` (any picklable object), on every rank."""
        if not self.active:
            return value
        import torch.distributed as td

        box = [value]
        td.broadcast_object_list(box, src=0)
        return box[0]

    # ---- FSDP (sharding = "fsdp") --------------------------------------------------------
    def shard(self, model):
        """Shard `model` in place with accelerate's FSDP2 (fsdp2_prepare_model): one unit per
        decoder layer (the model's _no_split_modules), the embeddings and the head, the root for
        the rest; frozen and trained parameters share units. Returns the model."""
        from accelerate.utils.fsdp_utils import fsdp2_prepare_model

        layers = decoder_layer_classes(model)
        if not layers:
            raise UserError("FSDP shards a model per decoder layer, and this model names no "
                            "decoder layer class (its _no_split_modules is empty).",
                            field="training.sharding",
                            fix='train it with training.sharding = "ddp"')
        self.fsdp_plugin.transformer_cls_names_to_wrap = layers
        state = self.accelerator.state
        if getattr(state, "fsdp_plugin", None) is None:
            # accelerate keeps FSDP for accelerators (a CPU run is MULTI_CPU); its FSDP2
            # preparation itself runs on CPUs with gloo as well
            state.fsdp_plugin = self.fsdp_plugin
        return fsdp2_prepare_model(self.accelerator, model)

    @contextmanager
    def gathered(self, model):
        """On every rank (collective): the trainable parameters all-gathered whole. While the
        block runs, rank 0's model holds them (on the CPU) in place of its shards, so the method's
        save and the checkpoint see the same tensors as in a single-device run; the frozen base
        stays sharded. The shards are back afterwards and training goes on. Nothing when the
        model is not sharded."""
        if not self.sharded:
            yield
            return
        import torch
        from torch.distributed.fsdp import FSDPModule
        from torch.distributed.tensor import DTensor

        for module in model.modules():           # every unit sharded: no state_dict hook swaps
            if isinstance(module, FSDPModule):   # the gathered tensors back
                module.reshard()
        swapped, whole = [], {}
        with torch.no_grad():
            for module in model.modules():
                for name, param in list(module._parameters.items()):
                    if not (isinstance(param, DTensor) and param.requires_grad):
                        continue
                    if id(param) not in whole:       # tied parameters: gathered once
                        full = param.full_tensor()
                        whole[id(param)] = (torch.nn.Parameter(full.to("cpu"))
                                            if self.main else None)
                        del full
                    if self.main:
                        swapped.append((module, name, param))
                        setattr(module, name, whole[id(param)])
        try:
            yield
        finally:
            for module, name, param in swapped:
                setattr(module, name, param)

    def full_optimizer_state(self, optimizer) -> dict:
        """optimizer.state_dict() with every sharded tensor gathered whole on the CPU (a
        collective): the same dict a single-device run saves. Rank 0's is the one to write."""
        state = optimizer.state_dict()
        if not self.sharded:
            return state
        from torch.distributed.tensor import DTensor

        out = {}
        for index in sorted(state["state"]):
            out[index] = {key: (value.full_tensor().to("cpu") if isinstance(value, DTensor)
                                else value)
                          for key, value in sorted(state["state"][index].items())}
        return {"state": out, "param_groups": state["param_groups"]}

    def shard_optimizer_state(self, state: dict, optimizer) -> dict:
        """A saved (whole) optimizer state made to fit `optimizer`'s sharded parameters: each
        tensor shaped like its parameter becomes this rank's shard of it (no communication)."""
        if not self.sharded:
            return state
        from torch.distributed.tensor import DTensor, distribute_tensor

        params = [p for group in optimizer.param_groups for p in group["params"]]
        out = {}
        for index, values in state["state"].items():
            param = params[int(index)]
            out[index] = {
                key: (distribute_tensor(value.to(param.device), param.device_mesh,
                                        param.placements, src_data_rank=None)
                      if isinstance(param, DTensor) and hasattr(value, "shape")
                      and value.dim() > 0 and tuple(value.shape) == tuple(param.shape) else value)
                for key, value in values.items()}
        return {"state": out, "param_groups": state["param_groups"]}

    def _comm_device(self) -> str:
        return self.device if self.device.startswith("cuda") else "cpu"

    def close(self, timeout: float = 60.0) -> None:
        """Leave the process group; rank 0 waits for its helpers (and stops any that hang)."""
        if self.active:
            import torch.distributed as td

            if td.is_initialized():
                td.destroy_process_group()
        deadline = time.monotonic() + timeout
        for proc in self.helpers:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        self.helpers = []
        for key, value in self.saved_env.items():      # this process is no rank any more
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self.saved_env = {}
        if self.accelerator is not None:
            from accelerate.state import AcceleratorState, PartialState

            AcceleratorState._reset_state(reset_partial_state=True)
            PartialState._reset_state()
            self.accelerator = None


def decoder_layer_classes(model) -> list[str]:
    """Class names of the model's decoder layers (its _no_split_modules that it really has)."""
    names = list(getattr(model, "_no_split_modules", None) or [])
    present = {type(module).__name__ for module in model.modules()}
    return [name for name in names if name in present]


def outside_launch() -> bool:
    """True inside `accelerate launch` / `torchrun` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def setup(devices: int, run_dir: str | Path, resume: bool, sharding: str = "ddp") -> Dist:
    """The run's Dist: single process, a rank of an outside launch, or rank 0 of `devices`
    processes whose helpers this starts. `sharding` "fsdp" readies accelerate's FSDP2."""
    import torch

    outside = outside_launch()
    world = planned_world(devices)
    if world <= 1:
        return Dist(device="cuda" if torch.cuda.is_available() else "cpu")
    helpers, saved = [], {}
    if not outside:
        mine = dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
                    WORLD_SIZE=str(world), RANK="0", LOCAL_RANK="0")
        saved = {key: os.environ.get(key) for key in mine}
        os.environ.update(mine)
        for rank in range(1, world):
            env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank),
                       PEFT_STUDIO_PARENT_PID=str(os.getpid()))
            cmd = [sys.executable, "-m", "studio.core.training", str(run_dir)]
            if resume:
                cmd.append("--resume")
            log = open(Path(run_dir) / f"rank{rank}.log", "ab")     # noqa: SIM115 - the child's
            helpers.append(subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True))
            log.close()
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import FullyShardedDataParallelPlugin, InitProcessGroupKwargs

    if not outside:
        # accelerate keeps one process-wide state: a single-process one made earlier in this
        # process (a Trainer, an earlier run) would make this rank believe it is alone
        AcceleratorState._reset_state(reset_partial_state=True)
    plugin = None
    if sharding == "fsdp":
        if outside:      # the launched rank's first (plain) state: made again, with FSDP
            AcceleratorState._reset_state()
        saved.setdefault("ACCELERATE_USE_FSDP", os.environ.get("ACCELERATE_USE_FSDP"))
        plugin = FullyShardedDataParallelPlugin(fsdp_version=2, reshard_after_forward=True,
                                                auto_wrap_policy="transformer_based_wrap")
    try:
        acc = Accelerator(cpu=not torch.cuda.is_available(), fsdp_plugin=plugin,
                          kwargs_handlers=[InitProcessGroupKwargs(timeout=HELPER_TIMEOUT)])
    except BaseException:
        for proc in helpers:
            proc.kill()
        Dist(saved_env=saved).close()
        raise
    # accelerate names a CPU rank's device "cpu:<local rank>"; torch has one CPU device, and
    # torch.load cannot map a checkpoint onto "cpu:0" (a resume would fail): plain "cpu"
    device = "cpu" if acc.device.type == "cpu" else str(acc.device)
    return Dist(rank=acc.process_index, world=acc.num_processes, device=device,
                accelerator=acc, helpers=helpers, saved_env=saved, sharding=sharding,
                fsdp_plugin=plugin)


def watch_parent(pid: int) -> None:
    """A helper whose rank 0 is gone has nothing to do: exit (collectives would hang)."""
    while True:
        time.sleep(1.0)
        try:
            os.kill(pid, 0)
        except OSError:
            os._exit(3)
