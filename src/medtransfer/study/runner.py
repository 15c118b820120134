"""Run a study: load and split its data sets, check every model, then run the plan's jobs —
pretrainings, then cells — and write tidy results.

Everything that can be checked is checked before the first epoch, and every finished unit is
kept on disk, so a bad input or a crash loses nothing already computed. The run folder records
``config.yaml``, ``data.yaml``, ``splits/``, ``audit/``, ``units/``, ``manifest.json`` (job →
unit → result) and ``results.csv``; tables and the report are made from these files by
:mod:`medtransfer.report`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml

from medtransfer.config import to_dict
from medtransfer.data import ImageCache
from medtransfer.errors import DataError
from medtransfer.fileio import write_text_atomic
from medtransfer.freezing import freeze
from medtransfer.models import build_model, build_pretrained
from medtransfer.models.loading import HeadPolicy
from medtransfer.strategies import ScratchStrategy, freeze_configs
from medtransfer.study.config import StudyConfig, TaskConfig, VariantSpec
from medtransfer.study.executors import ExecutorSettings, InProcess, Session, open_session, preflight
from medtransfer.study.load import study_from_dict
from medtransfer.study.lock import run_lock
from medtransfer.study.manifest import Manifest
from medtransfer.study.plan import (
    CellJob,
    Job,
    Plan,
    PretrainJob,
    make_plan,
)
from medtransfer.study.pruning import PruneTarget
from medtransfer.study.results import result_rows, write_results
from medtransfer.study.rundir.unit_result import CellResult, PretrainResult, UnitResult
from medtransfer.study.tasks import LoadedTask, audit_tasks, data_summary, load_task, split_task, write_split
from medtransfer.study.units import Context, run_cell, run_pretrain, source_weights
from medtransfer.study.variants import Variant, resolve_variants
from medtransfer.train.allocator import tune_allocator
from medtransfer.train.distributed import is_main_process

__all__ = ["Runner", "pick_device"]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _ignore(*args: Any) -> None:
    pass


def _echo_flush(msg: str) -> None:
    print(msg, flush=True)


def worker_runner(cfg_data: dict[str, Any], out: str,
                  echo: Callable[[str], None] | None = None) -> Runner:
    """A prepared runner in a worker process (the executors' factory); variants beyond the
    study's own (search trials) come with their jobs."""
    runner = Runner(study_from_dict(cfg_data), Path(out), progress=False, echo=echo or _echo_flush)
    runner.prepare(write=False)
    return runner


class Runner:
    """Runs the jobs of one study in one run folder."""

    def __init__(self, cfg: StudyConfig, out: Path, *, progress: bool = True,
                 echo: Callable[[str], None] = print) -> None:
        # absolute: workers (a Ray actor's working directory is not this process's) write here too
        self.cfg, self.out = cfg, Path(out).absolute()
        tune_allocator()  # before the data are decoded: every later allocation benefits
        size = cfg.preprocess.hw[0]
        self.ctx = Context(cfg, self.out, pick_device(cfg.device), size, echo, progress)
        self.variants: dict[str, Variant] = {v.name: v for v in resolve_variants(cfg)}
        self.tasks: dict[str, LoadedTask] = {}
        self.audit_counts: dict[str, dict[str, int]] = {}
        self._resplit: dict[tuple[str, int], LoadedTask] = {}
        self._pretrained: dict[PretrainJob, PretrainResult] = {}
        self._cells: dict[CellJob, CellResult] = {}  # upstream cells' results (backbone_from)
        self._manifest: Manifest | None = None
        self._session: Session | None = None

    @property
    def device_name(self) -> str:
        return self.cfg.device

    @property
    def echo(self) -> Callable[[str], None]:
        return self.ctx.echo

    def add_variant(self, spec: VariantSpec) -> Variant:
        """A variant beyond the study's own (a search trial); its jobs carry ``spec``, so workers
        add it too."""
        v = resolve_variants(dataclasses.replace(self.cfg, variants=[spec]))[0]
        self.variants[v.name] = v
        return v

    def factory(self) -> Callable[..., Runner]:
        """A picklable callable that builds this runner again in a worker process."""
        return functools.partial(worker_runner, to_dict(self.cfg), str(self.out))

    @contextmanager
    def session(self, settings: ExecutorSettings) -> Iterator[Session]:
        """Run :meth:`execute`'s jobs on ``settings``' workers, started once for the block."""
        with open_session(settings, self, self.factory()) as session:
            self._session = session
            try:
                yield session
            finally:
                self._session = None

    # -- data ----------------------------------------------------------------------------------
    def task_configs(self) -> dict[str, tuple[str, TaskConfig]]:
        """Every data set: name → (role, task): the sources with data, then the targets."""
        shape = self.cfg.shape
        sources = {k: ("source", task) for k, task in shape.sources.items() if task is not None}
        return {**sources, **{k: ("target", t) for k, t in shape.targets.items()}}

    def prepare(self, *, write: bool = True) -> None:
        """Load and split every data set, check every model, write the run folder's records
        (``write``) and audit the data, before any training."""
        cfg, out = self.cfg, self.out
        if write:
            out.mkdir(parents=True, exist_ok=True)
            write_text_atomic(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        cache = ImageCache(cfg.cache_dir)
        t0 = time.perf_counter()
        self.tasks = {name: load_task(name, role, task, cfg, cache)
                      for name, (role, task) in self.task_configs().items()}
        chans = {t.images.channels for t in self.tasks.values()}
        if len(chans) > 1:
            raise DataError("the data sets' images have different channel counts ("
                            + ", ".join(f"{k}: {t.images.channels}" for k, t in self.tasks.items())
                            + "); set preprocess.channels")
        if not write:
            return
        self.echo("data: " + "; ".join(
            f"{k} {len(t.own or t.images)} images {(t.own or t.images).class_counts()}"
            + "".join(f", external {e} {len(x)} images {x.class_counts()}" for e, x in t.externals.items())
            for k, t in self.tasks.items())
                  + f" ({time.perf_counter() - t0:.1f} s, cache {cache.hits} hits / {cache.misses} decoded)")
        self._check_models()
        for task in self.tasks.values():
            write_split(out, task)
        for name, task in self.tasks.items():
            for r in range(1, cfg.repeats) if cfg.resample_splits and task.role == "target" else ():
                write_split(out, self.target(name, r))
        summary = {name: data_summary(t) for name, t in self.tasks.items()}
        write_text_atomic(out / "data.yaml", yaml.safe_dump(summary, sort_keys=False))
        self.audit_counts = self._audit() if cfg.audit else {}

    def _audit(self) -> dict[str, dict[str, int]]:
        """Each data set with its split; a source also against the target when there is one."""
        targets = [t for t in self.tasks.values() if t.role == "target"]
        against = targets[0].config.data if len(targets) == 1 else None
        return audit_tasks(self.out, self.cfg.seed,
                           [(t, against if t.role == "source" else None) for t in self.tasks.values()],
                           self.echo)

    def _check_models(self) -> None:
        """Build each variant's model for every data set, freeze it as each strategy says and
        open every pretrained weights file, so a bad architecture, option, layer name or
        weights file fails before the first epoch (each model built once: with its weights
        where a source has some)."""
        size, opened = self.ctx.size, set()
        sources = list(self.cfg.shape.sources)
        for v in self.variants.values():
            built: dict[str, torch.nn.Module] = {}  # data set → a model of it, with weights if any
            transfers = any(not isinstance(st, ScratchStrategy) for st in v.strategies.values())
            for s in sources if transfers else ():  # a variant that only trains from scratch
                weights = source_weights(self.cfg, v, s)
                if weights is None:
                    continue
                tasks = [self.tasks[s]] if s in self.tasks else [t for t in self.tasks.values()
                                                                  if t.role == "target"]
                for t in tasks:
                    key = (repr(v.model), weights, t.name)
                    if key not in opened:
                        opened.add(key)
                        head = v.transfer.head if t.role == "target" else HeadPolicy.AUTO
                        loaded = build_pretrained(dataclasses.replace(v.model, weights=weights),
                                                  num_classes=t.images.num_classes,
                                                  in_chans=t.images.channels, img_size=size,
                                                  classes=t.classes, head=head)
                        built.setdefault(t.name, loaded.model)
            for t in self.tasks.values():
                model = built.get(t.name)
                if model is None:  # no weights file for this data set: the plain architecture
                    model = build_model(v.model, num_classes=t.images.num_classes, in_chans=t.images.channels,
                                        img_size=size)
                for strategy in v.strategies.values() if t.role == "target" else ():
                    for fz in freeze_configs(strategy):
                        freeze(model, fz)

    def target(self, name: str, repeat: int) -> LoadedTask:
        """Target ``name`` as repeat ``repeat`` splits it (the study's split unless resampled)."""
        if not self.cfg.resample_splits or repeat == 0:
            return self.tasks[name]
        if (name, repeat) not in self._resplit:
            base = self.tasks[name]
            self._resplit[(name, repeat)] = split_task(f"{name}.r{repeat}", "target", base.config,
                                                       base.own or base.images, self.cfg.seed + repeat,
                                                       base.externals, base.fixed_test)
        return self._resplit[(name, repeat)]

    # -- jobs ----------------------------------------------------------------------------------
    def run_job(self, job: Job) -> UnitResult:
        """Run one job (its unit reused if already done); returns its (picklable) result."""
        if job.variant not in self.variants and job.spec is not None:
            self.add_variant(job.spec)  # a search trial's variant, in a worker
        if isinstance(job, PretrainJob):
            return self.pretrained(job)
        # A worker meets a cell's pretraining already done by the pretraining phase: no message.
        pre = self.pretrained(job.pretrain, announce=False) if job.pretrain is not None else None
        up = None
        if job.upstream is not None:  # done in an earlier wave (a worker reuses its unit)
            up = self._cells.get(job.upstream) or self.run_job(job.upstream)
        return run_cell(self.ctx, self.variants[job.variant], job, self.target(job.target, job.repeat), pre,
                        upstream=up)

    def pretrained(self, job: PretrainJob, *, announce: bool = True) -> PretrainResult:
        """The result of pretraining ``job`` (run now unless done earlier)."""
        if job not in self._pretrained:
            self._pretrained[job] = run_pretrain(self.ctx, self.variants[job.variant], job,
                                                 self.tasks[job.source], announce=announce)
        return self._pretrained[job]

    def execute(self, plan: Plan) -> dict[Job, UnitResult]:
        """Run the plan's pretrainings, then its cells, on the open :meth:`session` (else here);
        each finished job goes into the manifest."""
        if self._manifest is None:
            self._manifest = Manifest(self.out, self.cfg.name)
        manifest = self._manifest
        session = self._session or InProcess(self)
        outcomes: dict[Job, UnitResult] = {}
        # Pretraining first: cells of one source share its unit, which must not run twice at once;
        # then the cells, each after the cell whose trained model it takes (backbone_from).
        record = manifest.record if is_main_process() else _ignore  # rank 0 writes (data-parallel run)
        for jobs in (plan.pretrains, *plan.cell_waves()):
            outcomes.update(session.run(jobs, record))
            self._cells.update({j: r for j, r in outcomes.items() if isinstance(r, CellResult)
                                and isinstance(j, CellJob)})
        return outcomes

    def run(self, executor: ExecutorSettings | None = None) -> Path:
        """Run the whole study on ``executor``'s workers (default: this process), holding the run
        folder's lock; returns the run folder."""
        executor = executor or ExecutorSettings()
        preflight(executor, self.out)
        with run_lock(self.out):
            self.prepare()
            plan = make_plan(self.cfg)
            with self.session(executor):
                outcomes = self.execute(plan)
            rows = result_rows(plan, outcomes, self.tasks, self.audit_counts,
                               repeat_pretraining=self.cfg.repeat_pretraining)
            write_results(self.out / "results.csv", rows)
        self.echo(f"results: {self.out / 'results.csv'}")
        return self.out

    def follow(self) -> None:
        """A data-parallel run's rank other than 0 (:mod:`~medtransfer.study.lockstep`): load the
        data, then compute every unit together with rank 0, in the same order; write nothing."""
        self.prepare(write=False)
        self.execute(make_plan(self.cfg))

    def run_variants(self, specs: Sequence[VariantSpec], *, evaluate: str = "val",
                     prune: Callable[[CellJob], PruneTarget | None] | None = None,
                     ) -> dict[CellJob, CellResult]:
        """Pretrain and transfer extra variants (search trials), scored on validation only by
        default; ``prune`` gives a cell the trial it reports to (called in plan order). Returns
        each cell's result."""
        plan = make_plan(self.cfg, [self.add_variant(s) for s in specs], evaluate=evaluate)  # type: ignore[arg-type]
        if prune is not None:
            plan = dataclasses.replace(plan, cells=tuple(dataclasses.replace(c, pruning=prune(c))
                                                         for c in plan.cells))
        outcomes = self.execute(plan)
        return {c: _cell(outcomes[c]) for c in plan.cells}


def _cell(result: UnitResult) -> CellResult:
    if not isinstance(result, CellResult):
        raise TypeError(f"{result.dir}: not a cell's result")
    return result
