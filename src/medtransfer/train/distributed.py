"""One training spread over processes with PyTorch DDP, launched by ``torchrun`` or by Slurm's
``srun`` (gloo on the CPU, NCCL on CUDA).

A script calls :func:`init_distributed` (it reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``,
or under ``srun`` Slurm's ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS`` and ``SLURM_LOCALID``, and
returns this process's device), then :func:`medtransfer.train.fit` as usual, then
:func:`cleanup`; ``examples/ddp_train.py`` is such a script. When a process group of more than
one process is initialized, ``fit`` trains the same model as one process would, up to float
rounding:

- every process draws the same seeded epoch order and takes contiguous rows of each global
  batch of ``batch_size`` (row counts differ by at most one). Each minimizes
  ``W * sum(w_i * loss_i over its rows) / sum(w_i over the whole batch)``; DDP averages the
  gradients over the ``W`` processes, which gives exactly the gradient of the full batch's
  weighted mean loss, also for an uneven last batch and with class weights. A process with no
  rows (a last batch smaller than ``W``) runs the batch's first image with weight 0, so that it
  still joins the gradient all-reduce with a zero gradient.
- augmentation runs on the whole global batch, with the generator every process seeds alike,
  before the rows are taken: each image gets the augmentation one process would give it.
- before any backward pass the processes all-reduce the batch's loss sum and a non-finite flag,
  so they agree on stopping; the history's training metrics are computed from every process's
  predictions, gathered in batch order.
- validation is split the same way and gathered, so every process computes the same history row
  from the same arrays: early stopping, the scheduler and the best epoch agree everywhere.
- only rank 0 writes ``history.csv`` and checkpoints and shows a progress bar; when fit ends,
  rank 0's (restored best) weights are broadcast to all processes, then all wait at a barrier.

Not equal to one process, only equal in distribution: dropout and other randomness inside the
model (each process draws its own masks), and batch norm in training mode (batch statistics are
per process; DDP copies rank 0's running statistics to the others, use ``SyncBatchNorm`` for
global statistics). ``batch_size`` stays the global batch size. User callbacks run in every
process (check :func:`is_main_process` before writing). Every trainable parameter must take part
in each forward pass (DDP's default, ``find_unused_parameters=False``). End with :func:`cleanup`
rather than ``destroy_process_group`` alone (see there).
"""

from __future__ import annotations

import gc
import math
import os
import re
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from medtransfer.config import check_choice
from medtransfer.errors import ConfigError

__all__ = [
    "LaunchEnv",
    "Replicas",
    "barrier",
    "cleanup",
    "first_host",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "launch_env",
    "leave",
    "slurm_env",
]

# Slurm's step ids of a job's batch script, its extern step and an interactive allocation: no srun
# step, so SLURM_NTASKS there counts tasks that were never started.
_NOT_SRUN_STEPS = {"4294967293", "4294967294", "4294967295"}


@dataclass(frozen=True)
class LaunchEnv:
    """What the launcher (torchrun, or Slurm's srun) tells each process it starts; ``master``:
    rank 0's host and port where the launcher does not set ``MASTER_ADDR``/``MASTER_PORT``."""

    rank: int
    world_size: int
    local_rank: int
    launcher: str = "torchrun"
    master: tuple[str, int] | None = None


def _env_int(key: str, low: int, below: int | None = None, default: str | None = None,
             setter: str = "torchrun", world: str = "WORLD_SIZE") -> int:
    raw = os.environ.get(key, default)
    try:
        value = int(raw) if raw is not None else None
    except ValueError:
        value = None
    if value is None or value < low or (below is not None and value >= below):
        allowed = f"an integer >= {low}" + ("" if below is None else f" and < {world} ({below})")
        raise ConfigError(f"environment variable {key}: got {raw!r}; allowed: {allowed} ({setter} sets it)")
    return value


def launch_env() -> LaunchEnv | None:
    """``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as torchrun sets them; else, in a task that
    Slurm's ``srun`` started, ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS`` (else ``SLURM_NTASKS``)
    and ``SLURM_LOCALID`` (see :func:`slurm_env`); None when neither launched this process."""
    if "WORLD_SIZE" not in os.environ:
        return slurm_env()
    world = _env_int("WORLD_SIZE", 1)
    return LaunchEnv(rank=_env_int("RANK", 0, world), world_size=world,
                     local_rank=_env_int("LOCAL_RANK", 0, default="0"))


def slurm_env() -> LaunchEnv | None:
    """The ranks of the tasks of an ``srun`` job step (None outside one, e.g. in the batch script
    itself, where ``SLURM_NTASKS`` counts tasks that no one started). Rank 0 listens at
    ``MASTER_ADDR`` (default: the first host of ``SLURM_STEP_NODELIST`` / ``SLURM_JOB_NODELIST``)
    and ``MASTER_PORT`` (default: 15000 + the job id's last four digits)."""
    env = os.environ
    if "SLURM_PROCID" not in env or "SLURM_STEP_ID" not in env or env["SLURM_STEP_ID"] in _NOT_SRUN_STEPS:
        return None
    size_key = "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS"
    world = _env_int(size_key, 1, default="1", setter="srun")
    rank = _env_int("SLURM_PROCID", 0, world, setter="srun", world=size_key)
    local = _env_int("SLURM_LOCALID", 0, default="0", setter="srun")
    if world == 1:
        return LaunchEnv(rank, world, local, "slurm")
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or ""
    host = env.get("MASTER_ADDR") or first_host(nodes)
    if not host:
        raise ConfigError("srun started this task, but neither MASTER_ADDR nor SLURM_STEP_NODELIST / "
                          "SLURM_JOB_NODELIST names rank 0's host; export MASTER_ADDR")
    job = re.sub(r"\D", "", env.get("SLURM_JOB_ID", "")) or "0"
    port = _env_int("MASTER_PORT", 1, default=str(15000 + int(job[-4:])), setter="you or srun")
    return LaunchEnv(rank, world, local, "slurm", (host, port))


def first_host(nodelist: str) -> str:
    """The first host of a Slurm host list: ``gpu[07-09,12],cpu1`` → ``gpu07``."""
    match = re.match(r"([^,\[]*)(?:\[([^\]]*)\])?([^,]*)", nodelist.strip())
    if match is None:
        return ""
    prefix, ranges, suffix = match.groups()
    first = (ranges or "").split(",")[0].split("-")[0]
    return f"{prefix}{first}{suffix}"


def init_distributed(device: str = "auto", backend: str | None = None,
                     timeout: timedelta | None = None) -> torch.device:
    """Join the launcher's process group (if not joined yet) and return this process's device.

    ``device``: ``cuda`` (``cuda:LOCAL_RANK``, NCCL), ``cpu`` (gloo) or ``auto`` (CUDA when
    available). Outside torchrun and srun, or with one process, nothing is initialized and
    ``fit`` runs as usual. ``backend`` overrides the choice (``gloo`` or ``nccl``); ``timeout``:
    how long a collective call waits for the other processes (default: PyTorch's).
    """
    check_choice("device", device, ("auto", "cpu", "cuda"))
    if backend is not None:
        check_choice("backend", backend, ("gloo", "nccl"))
    env = launch_env()
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda and not torch.cuda.is_available():
        raise ConfigError("'device': got 'cuda', but no CUDA device is available; allowed: cpu, auto")
    dev = torch.device("cpu")
    if cuda:
        dev = torch.device("cuda", env.local_rank if env else torch.cuda.current_device())
        torch.cuda.set_device(dev)  # NCCL and the object collectives use the current device
    if env is None or env.world_size == 1 or dist.is_initialized():
        return dev
    init = "env://" if env.master is None else f"tcp://{env.master[0]}:{env.master[1]}"
    dist.init_process_group(backend or ("nccl" if cuda else "gloo"), init_method=init,
                            rank=env.rank, world_size=env.world_size, timeout=timeout)
    return dev


def is_distributed() -> bool:
    """Whether a process group of more than one process is initialized."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    """True in rank 0 of a process group, and in a process that is not in one."""
    return not is_distributed() or dist.get_rank() == 0


def barrier() -> None:
    """Wait for all processes of the group; nothing without one."""
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (after the last collective call)."""
    if dist.is_available() and dist.is_initialized():
        # A DDP wrapper still alive (in a reference cycle) when the group goes would abort the
        # process when it is collected later; and no process should leave while others talk.
        gc.collect()
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def leave() -> None:
    """Leave the process group at once, waiting for no one: for a process whose last
    collective call is behind it while others still work alone (rank 0 writing a report)."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


@dataclass(frozen=True)
class Replicas:
    """The processes of one :func:`fit`: ``world_size`` 1 (no communication, the exact
    single-process arithmetic) or the ranks of an initialized DDP process group."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> Replicas:
        return cls(dist.get_rank(), dist.get_world_size()) if is_distributed() else cls()

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def seed(self, seed: int) -> int:
        """The seed of this process's global RNG (dropout): rank 0 keeps ``seed``, the others
        get their own so that their masks are not copies of rank 0's."""
        if self.rank == 0:
            return seed
        return int(np.random.SeedSequence([seed, self.rank]).generate_state(1)[0])

    def wrap(self, model: nn.Module, dev: torch.device) -> nn.Module:
        """The module to run training steps through: ``model`` or its DDP wrapper."""
        if not self.active:
            return model
        if dev.type != "cuda":
            return DistributedDataParallel(model)
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return DistributedDataParallel(model, device_ids=[index])

    def rows(self, n: int) -> tuple[slice, bool]:
        """This process's rows of a batch of ``n`` (contiguous, in rank order) and whether they
        are real; an empty share becomes the first row, to be weighted 0."""
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        stop = start + base + (self.rank < extra)
        return (slice(start, stop), True) if stop > start else (slice(0, 1), False)

    def batch_loss(
        self, losses: Tensor, weights: Tensor, proba: Tensor, real: bool, batch_weight: float,
        *, per_sample: bool = False,
    ) -> tuple[Tensor, float, float, float] | None:
        """The loss to backpropagate and the whole batch's weighted loss sum, weight sum and mean
        loss; None when a loss or probability of the batch is not finite in any process (all
        processes agree before anyone calls backward). ``batch_weight``: the whole batch's
        weight sum (used with more than one process). ``per_sample``: the weighted sum is
        divided by the number of samples instead of the weight sum (Keras's reduction; then
        ``batch_weight`` is the whole batch's size)."""
        if not self.active:
            total = weights.new_tensor(float(len(weights))) if per_sample else weights.sum()
            loss = (losses * weights).sum() / total
            if not (torch.isfinite(loss) and torch.isfinite(proba).all()):
                return None
            return loss, float((losses.detach() * weights).sum()), float(total), loss.item()
        if not real:
            weights = torch.zeros_like(weights)
        local = (losses * weights).sum()
        ok = not real or bool(torch.isfinite(proba).all())  # a dummy row is checked where it is real
        stats = torch.stack([local.detach().double(), local.new_tensor(float(not ok), dtype=torch.float64)])
        dist.all_reduce(stats)
        total, bad_count = stats.tolist()
        if bad_count > 0 or not math.isfinite(total):
            return None
        # DDP divides the summed gradients by world_size: this makes them the full-batch mean's.
        return local * (self.world_size / batch_weight), total, batch_weight, total / batch_weight

    def gather_batches(self, parts: list[np.ndarray]) -> np.ndarray:
        """Every process's per-batch rows, concatenated in batch order (rank order within one)."""
        if not self.active:
            return np.concatenate(parts)
        everyone: list[list[np.ndarray] | None] = [None] * self.world_size
        dist.all_gather_object(everyone, parts)
        return np.concatenate([p[b] for b in range(len(parts)) for p in everyone if p is not None])

    def gather_eval(self, loss_sum: float, parts: list[np.ndarray], n: int) -> tuple[float, np.ndarray]:
        """Mean loss over ``n`` samples and the rows of every process, in rank order."""
        if not self.active:
            return loss_sum / n, np.concatenate(parts)
        everyone: list[tuple[float, list[np.ndarray]] | None] = [None] * self.world_size
        dist.all_gather_object(everyone, (loss_sum, parts))
        got = [e for e in everyone if e is not None]
        return sum(s for s, _ in got) / n, np.concatenate([a for _, ps in got for a in ps])

    def sync_buffers(self, model: nn.Module) -> None:
        """Copy rank 0's buffers (batch norm running statistics) to every process."""
        if self.active:
            for buf in model.buffers():
                dist.broadcast(buf, 0)

    def finish(self, model: nn.Module) -> None:
        """Give every process rank 0's weights and buffers, then wait for all processes."""
        if self.active:
            for value in model.state_dict().values():
                if isinstance(value, Tensor):
                    dist.broadcast(value, 0)
            dist.barrier()
