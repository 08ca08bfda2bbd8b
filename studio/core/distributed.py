"""Training on several devices at once: data parallel through accelerate (DDP).

`training.devices` > 1 (or 0 = every visible GPU) makes the process that calls run_training
rank 0: it starts ranks 1..N-1 as helper processes (`python -m studio.core.training RUN_DIR`),
then every rank initialises the process group through accelerate (NCCL on GPUs, gloo on CPUs) and
wraps the model in DistributedDataParallel. Each optimizer step takes N x grad_accum consecutive
micro-batches of the one shuffled stream, rank r the r-th of every N: the same examples, order and
loss (the mean over all trained tokens of the step) as one process with grad_accum x N, so runs
resume exactly and compare with single-device runs. Rank 0 alone writes events, checkpoints,
evaluations and the adapter; it broadcasts pause / cancel / early-stop decisions so every rank
stops at the same step. A helper dies with its parent (it watches the parent's pid).

Already inside a distributed launch (`accelerate launch` / `torchrun` set WORLD_SIZE), nothing is
spawned: each process is the rank the launcher made it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
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


@dataclass
class Dist:
    """This process's place in a data-parallel run (world 1: a plain single-process run)."""
    rank: int = 0
    world: int = 1
    device: str = "cpu"
    accelerator: object = None
    helpers: list = field(default_factory=list)
    saved_env: dict = field(default_factory=dict)    # what rank 0 set for itself, to restore

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


def outside_launch() -> bool:
    """True inside `accelerate launch` / `torchrun` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def setup(devices: int, run_dir: str | Path, resume: bool) -> Dist:
    """The run's Dist: single process, a rank of an outside launch, or rank 0 of `devices`
    processes whose helpers this starts."""
    import torch

    outside = outside_launch()
    world = int(os.environ["WORLD_SIZE"]) if outside else requested_devices(devices)
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
    from accelerate.utils import InitProcessGroupKwargs

    if not outside:
        # accelerate keeps one process-wide state: a single-process one made earlier in this
        # process (a Trainer, an earlier run) would make this rank believe it is alone
        AcceleratorState._reset_state(reset_partial_state=True)
    try:
        acc = Accelerator(cpu=not torch.cuda.is_available(),
                          kwargs_handlers=[InitProcessGroupKwargs(timeout=HELPER_TIMEOUT)])
    except BaseException:
        for proc in helpers:
            proc.kill()
        Dist(saved_env=saved).close()
        raise
    return Dist(rank=acc.process_index, world=acc.num_processes, device=str(acc.device),
                accelerator=acc, helpers=helpers, saved_env=saved)


def watch_parent(pid: int) -> None:
    """A helper whose rank 0 is gone has nothing to do: exit (collectives would hang)."""
    while True:
        time.sleep(1.0)
        try:
            os.kill(pid, 0)
        except OSError:
            os._exit(3)
