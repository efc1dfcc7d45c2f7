"""Data-parallel training on torch.distributed: the world a process belongs to, and how it is started.

One Hydra job is one run, whatever the number of processes. Three ways start the processes, one code path
runs in each:
- `trainer.devices=N`: the job spawns N processes on this machine (torch.multiprocessing, spawn), hands each
  the config it composed and checked (resolved, plain), a free rendezvous port and its share of the cores.
- `torchrun --nproc-per-node N -m trainlab train ...`: RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / PORT.
- submitit on SLURM (hydra/launcher=submitit_slurm, tasks per node = GPUs): SLURM_PROCID / SLURM_NTASKS /
  SLURM_LOCALID, the first node of SLURM_JOB_NODELIST as the rendezvous host.
The engine is torch.distributed: DistributedDataParallel averages the gradients (gloo on CPU, nccl on CUDA);
metrics are reduced here as sums and counts; rank 0 alone writes files and the console.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from trainlab.errors import TrainlabError

TIMEOUT = datetime.timedelta(minutes=10)  # a collective that waits this long for a rank ends the run


@dataclass(frozen=True)
class World:
    """Where this process stands among the processes of one run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    # -- collectives (no-ops in a world of one) ------------------------------------------------------

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over the ranks, in place (sums and counts: a mean is taken after)."""
        if self.active:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def totals(self, *values) -> list[float]:
        """Sums and counts (device tensors or numbers) summed over the ranks, in float64, as Python numbers:
        the means are taken from them after (not a mean of the ranks' means)."""
        device = next(v.device for v in values if isinstance(v, torch.Tensor))
        stacked = torch.stack([torch.as_tensor(v, device=device).double() for v in values])
        return self.sum(stacked).tolist()

    def gather(self, value: Any) -> list:
        """Every rank's `value` (picklable), in rank order, on every rank."""
        if not self.active:
            return [value]
        import torch.distributed as dist

        values: list = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def share(self, value: Any) -> Any:
        """Rank 0's `value`, on every rank."""
        if not self.active:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def share_tensors(self, tensors) -> None:
        """Rank 0's values of `tensors` copied into every rank's (in place), e.g. the best weights."""
        if self.active:
            import torch.distributed as dist

            for tensor in tensors:
                dist.broadcast(tensor, src=0)


SINGLE = World()
_world = SINGLE


def current() -> World:
    """The world of this process (a world of one unless a distributed run set it)."""
    return _world


def from_environment(environ=os.environ) -> Optional[World]:
    """The world torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK; MASTER_ADDR/PORT for the rendezvous) when
    it has more than one process; None otherwise."""
    if "RANK" in environ and int(environ.get("WORLD_SIZE", "1")) > 1:
        return World(int(environ["RANK"]), int(environ["WORLD_SIZE"]), int(environ.get("LOCAL_RANK", 0)))
    return None


def submitit_world(environ=os.environ) -> Optional[World]:
    """Inside a submitit job of several tasks (hydra/launcher=submitit_slurm with tasks_per_node > 1, or
    submitit_local): this task's world, its rendezvous variables exported by submitit's own helper (the
    first node of the job, a port from the job id). None for a job of one task, or outside submitit."""
    if "SUBMITIT_EXECUTOR" not in environ:
        return None
    from submitit.helpers import TorchDistributedEnvironment

    job = TorchDistributedEnvironment()
    if job.world_size <= 1:
        return None
    job.export(set_cuda_visible_devices=False)  # each rank picks cuda:LOCAL_RANK itself
    return World(job.rank, job.world_size, job.local_rank)


def free_port() -> int:
    """A TCP port free on this machine now (the rendezvous of one spawned run; parallel jobs get their own)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def join(world: World, device: torch.device) -> None:
    """Join the process group of `world` (env:// rendezvous) and make it this process's world."""
    import torch.distributed as dist

    global _world
    if device.type == "cuda":
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend_for(device), rank=world.rank, world_size=world.size, timeout=TIMEOUT,
                                device_id=torch.device("cuda", world.local_rank) if device.type == "cuda" else None)
    _world = world


def leave() -> None:
    import torch.distributed as dist

    import gc

    global _world
    if dist.is_initialized():
        # DistributedDataParallel's reducer must be gone before its process group: one freed after it (at
        # interpreter exit) aborts the process with SIGABRT (~1 exit in 5 with gloo, torch 2.14)
        gc.collect()
        if _world.active:
            dist.barrier()  # no rank tears its connections down while another still uses them
        dist.destroy_process_group()
    _world = SINGLE


def rank_device(device: torch.device, world: World) -> torch.device:
    """The device of this rank: its own GPU (cuda:LOCAL_RANK) on CUDA, else the device as it is."""
    return torch.device("cuda", world.local_rank) if device.type == "cuda" else device


# -- trainer.devices=N: spawned processes on this machine ---------------------------------------------


class RankFailed(TrainlabError):
    """A rank of a spawned run ended with an error: `rank`, and its message as that rank reported it."""

    def __init__(self, rank: int, kind: str, message: str):
        super().__init__(f"rank {rank}: {message}")
        self.rank, self.kind, self.message = rank, kind, message


def launch(plain_cfg: dict, run_dir: Path, choices: dict, devices: int, threads: int) -> None:
    """Run one training job as `devices` processes of this machine and wait for them. The first rank to
    fail names the error (the others are ended within seconds: no hang); a signal to this process is
    passed to every rank once (the ranks stop together at their next log point)."""
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    context = mp.get_context("spawn")
    errors = context.SimpleQueue()
    port = int(os.environ.get("MASTER_PORT") or free_port())
    import logging

    logging.getLogger("trainlab").info("data parallel: %d processes, rendezvous at 127.0.0.1:%d, %d threads each",
                                       devices, port, threads)
    with spawn_as_default():
        processes = mp.start_processes(_rank_main, args=(devices, plain_cfg, str(run_dir), choices, port, threads,
                                                         errors, log_files()), nprocs=devices, join=False,
                                       start_method="spawn")
    received: list[int] = []

    def forward(signum, frame):
        received.append(signum)
        for process in processes.processes:
            if process.is_alive():
                os.kill(process.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    failure = None
    try:
        while True:
            try:
                if processes.join(grace_period=3):
                    break
            except ProcessException as error:  # one rank ended badly: the others are ended by join
                failure = error
                break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    reports = []
    while not errors.empty():
        reports.append(errors.get())
    if failure is None and not reports:
        return
    reports.sort(key=lambda report: report[3])  # the first failure in time: the others follow from it
    if reports:
        rank, kind, message, _ = reports[0]
        if kind == "KeyboardInterrupt" or received:
            from trainlab.train import Interrupted

            raise Interrupted(received[0] if received else signal.SIGINT)
        if kind == "TrainingDiverged":
            from trainlab.errors import TrainingDiverged

            raise TrainingDiverged(message, {"rank": rank})
        raise RankFailed(rank, kind, message)
    raise RankFailed(getattr(failure, "error_index", -1), "exit", str(failure).strip())


@contextlib.contextmanager
def spawn_as_default():
    """multiprocessing's default start method set to spawn while the ranks start: a spawned child re-applies
    its parent's default, and inside a joblib (loky) worker that is 'loky', which a fresh child cannot find
    (hydra/launcher=joblib with trainer.devices=N)."""
    import multiprocessing

    previous = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method("spawn", force=True)
    try:
        yield
    finally:
        try:
            multiprocessing.set_start_method(previous, force=True)
        except ValueError:  # a start method only its own package knows how to find: leave spawn
            pass


def log_files() -> list[tuple[str, Optional[str], int]]:
    """The files the job's root logger writes (Hydra's <run>/train.log): (path, format, level) each, for
    rank 0 to write its lines (the console's epoch lines) where a single process would."""
    import logging

    return [(handler.baseFilename, handler.formatter._fmt if handler.formatter else None, handler.level)
            for handler in logging.getLogger().handlers if isinstance(handler, logging.FileHandler)]


def _log_like_the_job(files: list[tuple[str, Optional[str], int]]) -> None:
    import logging

    root = logging.getLogger()
    for path, form, level in files:
        handler = logging.FileHandler(path, mode="a")
        handler.setFormatter(logging.Formatter(form))
        handler.setLevel(level)
        root.addHandler(handler)
    if files:
        root.setLevel(logging.INFO)


def _rank_main(rank: int, size: int, plain_cfg: dict, run_dir: str, choices: dict, port: int, threads: int,
               errors, files: list) -> None:
    """One spawned rank: its own process group (signals come from the launching job, once), the rendezvous
    environment, its share of the cores; then the run as rank `rank` of `size`."""
    import time

    os.setpgrp()  # a Ctrl-C reaches the job, which passes it on once; not every rank twice
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(threads)
    if rank == 0:
        _log_like_the_job(files)
    try:
        from omegaconf import OmegaConf

        from trainlab.commands import train

        train.run_rank(OmegaConf.create(plain_cfg), Path(run_dir), World(rank, size, rank), choices)
    except BaseException as error:  # noqa: BLE001 - reported to the job, which shows the first one
        from trainlab.errors import one_line

        message = one_line(error)[0]  # the job shows it in one line
        kind = "KeyboardInterrupt" if isinstance(error, KeyboardInterrupt) else type(error).__name__
        errors.put((rank, kind, message, time.time()))
        sys.exit(130 if kind == "KeyboardInterrupt" else 1)
