"""One study run as several data-parallel processes: ``torchrun --nproc-per-node N -m
medtransfer run ...``, or N tasks of Slurm's ``srun``.

Every process runs the same units in the same order, and every training is shared among them as
:mod:`medtransfer.train.distributed` describes (``batch_size`` stays the global batch). Rank 0
alone writes: the run folder's records, the units, the manifest, the results and the report.

- :func:`data_parallel` joins the launcher's process group for one run and leaves it after.
- :class:`LockstepUnit` stands in for a unit: rank 0 holds the unit's lock, finds it done (to
  reuse) or not and tells the other ranks; all compute it together — rank 0 in the unit's
  folder, each other rank in a scratch folder of its own, removed when the unit ends — and all
  return what rank 0 recorded (so a cell on any rank starts from rank 0's pretraining files).

Everything between trainings (loading data, feature extraction, a linear probe, predicting the
validation and test sets) runs in full on every rank; only the trainings are shared.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch.distributed as dist

from medtransfer.errors import ConfigError
from medtransfer.study.executors import ExecutorSettings
from medtransfer.study.rundir.unit_result import UnitResult
from medtransfer.study.store import Unit
from medtransfer.train.distributed import Replicas, init_distributed, is_distributed, launch_env, leave

__all__ = ["RANK_TIMEOUT", "LockstepUnit", "data_parallel", "unit_for"]

# How long the other ranks wait for rank 0 working alone (the run folder's records and data
# audit before the first unit); PyTorch's default (10 min for NCCL) is too short for a large audit.
RANK_TIMEOUT = timedelta(hours=2)


@contextmanager
def data_parallel(device: str, executor: ExecutorSettings | None = None) -> Iterator[Replicas]:
    """This process's place among the processes a launcher started for one run: joins their
    process group (gloo on the CPU, NCCL with the GPU of the local rank) and leaves it on exit.
    One process (no launcher, or a group the caller joined already): nothing to join."""
    launched = launch_env()
    if launched is None or launched.world_size == 1 or is_distributed():
        yield Replicas.current()
        return
    copies = f"{launched.world_size} data-parallel processes ({launched.launcher})"
    if executor is not None and (executor.kind != "local" or executor.workers != 1):
        raise ConfigError(f"--executor {executor.kind} --workers {executor.workers}: a run as {copies} "
                          "trains each unit on all of them, one unit after another; drop --executor / "
                          "--workers, or start one process")
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"'device': got {device!r}; in a run as {copies} each process uses the CPU or "
                          "the GPU of its local rank: allowed: auto, cpu, cuda")
    init_distributed(device, timeout=RANK_TIMEOUT)
    try:
        yield Replicas.current()
    finally:
        leave()  # rank 0 may still write results and a report: no one waits for anyone


def unit_for(root: Path, kind: str, name: str, spec: dict[str, Any], *, share: bool = False) -> Unit:
    """The unit to compute: a :class:`LockstepUnit` in a data-parallel run, else a plain one."""
    cls = LockstepUnit if is_distributed() else Unit
    return cls(root, kind, name, spec, share=share)


def _from_rank0(value: Any) -> Any:
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


R = TypeVar("R", bound=UnitResult)


class LockstepUnit(Unit):
    """A unit computed by every rank at once, decided and written by rank 0 (see the module).
    Every rank must make the same calls in the same order: :meth:`claimed` and :meth:`finish`
    are collective."""

    def __init__(self, root: Path, kind: str, name: str, spec: dict[str, Any], *,
                 share: bool = False) -> None:
        self.rank = dist.get_rank()
        self._decided: tuple[bool, UnitResult | None] | None = None
        self._scratch: Path | None = None
        super().__init__(root, kind, name, spec, share=share)

    @contextmanager
    def claimed(self) -> Iterator[Unit]:
        """Rank 0 holds the lock and tells the others whether the unit is done (and its
        result); the others compute beside it without touching the unit's folder."""
        if self.rank == 0:
            with super().claimed():
                done = super().done()
                self._decided = _from_rank0((done, super().result() if done else None, str(self.dir)))[:2]
                yield self
            return
        done, result, folder = _from_rank0(None)
        self._decided = (done, result)
        self.dir = Path(folder) if done else self.own_dir
        try:
            yield self
        finally:
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
                self._scratch = None

    def done(self) -> bool:
        return self._decided[0] if self._decided is not None else super().done()

    def problem(self) -> str | None:
        if self.rank == 0 or self._decided is None:
            return super().problem()
        return None if self._decided[0] else "computed by rank 0"

    def result(self) -> UnitResult:
        if self.rank == 0 or self._decided is None or self._decided[1] is None:
            return super().result()
        return self._decided[1]

    def start(self, *args: Any, **kwargs: Any) -> Path:
        """Rank 0: the unit's folder; another rank: a fresh scratch folder of its own."""
        if self.rank == 0:
            return super().start(*args, **kwargs)
        self._scratch = Path(tempfile.mkdtemp(prefix=f"medtransfer-rank{self.rank}-"))
        return self._scratch

    def finish(self, result: R) -> R:
        """Rank 0 records the result and hands it to every rank."""
        data = super().finish(result) if self.rank == 0 else None
        shared: R = _from_rank0(data)
        return shared
