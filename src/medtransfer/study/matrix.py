"""Run a matrix study (seed 003): every source × target × strategy × repeat, per variant.

A source is pretrained weights, a data set to pretrain on, or both. Sources with data are
pretrained first (one unit per variant and source, shared by all cells; with
``repeat_pretraining`` one per repeat, shared by that repeat's cells); then each cell builds
its model from its source, transfers it by its strategy with the repeat's training seed, and is
evaluated on the target's validation and test sets. ``scratch`` strategies ignore the source
(source ``none``): they are the reference column. Repeats vary initialisation, batch order and
augmentation; with ``resample_splits`` each repeat also draws its own split of every target
(shared by that repeat's cells, so comparisons stay paired).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from medtransfer import __version__
from medtransfer.data import Augmenter, ImageCache
from medtransfer.errors import ConfigError, DataError
from medtransfer.evaluate import compute_metrics
from medtransfer.models import build_pretrained
from medtransfer.strategies import ScratchStrategy, StrategyConfig, run_strategy, strategy_from_dict
from medtransfer.study.config import SourceSpec, StudyConfig, TaskConfig, Variant, resolve_variants
from medtransfer.study.runner import (
    _split_summary,
    _write_split,
    audit_tasks,
    load_task,
    pick_device,
    split_task,
)
from medtransfer.study.store import Unit, write_text_atomic
from medtransfer.study.units import (
    LoadedTask,
    metric_rows,
    open_run,
    pretrain_unit,
    seeded_build,
    spec_key,
    tracking,
    write_predictions,
    write_results,
)
from medtransfer.train import load_checkpoint
from medtransfer.transfer import load_source_weights

NO_SOURCE = "none"  # the source column of scratch cells
COLUMNS = ("variant", "source", "target", "strategy", "repeat", "stage", "test_set", "metric", "value")


@dataclass(frozen=True)
class Cell:
    variant: str
    source: str
    target: str
    strategy: str
    repeat: int

    @property
    def label(self) -> str:
        return f"{self.variant}.{self.source}.{self.target}.{self.strategy}.r{self.repeat}"


def repeat_seed(seed: int, repeat: int) -> int:
    """Repeat 0 uses ``seed + 1`` (as a single study's transfer); others are spread apart."""
    return seed + 1 + 1000 * repeat


def pretrain_seed(seed: int, repeat: int) -> int:
    """Pretraining of repeat 0 uses the study seed (the unit a study without
    ``repeat_pretraining`` has); others are spread apart from it and from the cells' seeds."""
    return seed + 1000 * repeat


class MatrixRunner:
    """Runs one matrix study into one output folder (same store and executors as a study)."""

    def __init__(self, cfg: StudyConfig, out: Path, *, progress: bool = True,
                 echo: Callable[[str], None] = print) -> None:
        if not cfg.is_matrix:
            raise ConfigError("MatrixRunner: the config has no 'sources'/'targets'/'strategies'")
        self.cfg, self.out, self.progress, self.echo = cfg, Path(out), progress, echo
        self.variants = {v.name: v for v in resolve_variants(cfg)}
        self.strategies: dict[str, StrategyConfig] = {
            k: strategy_from_dict(raw, f"strategies.{k}") for k, raw in cfg.strategies.items()}
        self.device = pick_device(cfg.device)
        self.size = cfg.preprocess.size if isinstance(cfg.preprocess.size, int) else cfg.preprocess.size[0]
        self._pretrained: dict[tuple[str, str, int], dict[str, Any]] = {}
        self._resplit: dict[tuple[str, int], LoadedTask] = {}

    # -- plan --------------------------------------------------------------------------------
    def cells(self) -> list[Cell]:
        out = []
        for v in self.variants:
            for target in self.cfg.targets:
                for name, strategy in self.strategies.items():
                    sources = [NO_SOURCE] if isinstance(strategy, ScratchStrategy) else list(self.cfg.sources)
                    out += [Cell(v, s, target, name, r) for s in sources for r in range(self.cfg.repeats)]
        return out

    def pretrain_repeats(self) -> range:
        """The repeats that pretrain their own sources: all, or just 0 (shared by every repeat)."""
        return range(self.cfg.repeats if self.cfg.repeat_pretraining else 1)

    def pretrain_jobs(self) -> list[str]:
        return [f"pretrain:{v}:{s}:{r}" for v in self.variants for s, spec in self.cfg.sources.items()
                if spec.data is not None for r in self.pretrain_repeats()]

    def job_names(self) -> list[str]:
        return [*self.pretrain_jobs(), *(f"cell:{c.label}" for c in self.cells())]

    # -- data --------------------------------------------------------------------------------
    def prepare(self, *, write: bool = True) -> None:
        """Load and split every data set, check every model, before any training."""
        cfg, out = self.cfg, self.out
        cache = open_run(out, cfg, write=write)
        t0 = time.perf_counter()
        self.tasks: dict[str, LoadedTask] = {}
        for group, tasks in (("sources", self.source_tasks()), ("targets", cfg.targets)):
            for name, task in tasks.items():
                if task.split.folds:
                    raise ConfigError(f"'{group}.{name}.split.folds': cross-validation is not "
                                      "supported in matrix studies; use test_sets / repeats")
                self.tasks[name] = load_task(name, task, cfg, cache)
        chans = {t.images.channels for t in self.tasks.values()}
        if len(chans) > 1:
            raise DataError("the sources' and targets' images have different channel counts "
                            f"({', '.join(f'{k}: {t.images.channels}' for k, t in self.tasks.items())}); "
                            "set preprocess.channels")
        if not write:
            return
        self.echo("data: " + "; ".join(f"{k} {len(t.images)} images {t.images.class_counts()}"
                                      for k, t in self.tasks.items())
                  + f" ({time.perf_counter() - t0:.1f} s, cache {cache.hits} hits / {cache.misses} decoded)")
        for loaded in self.tasks.values():
            _write_split(out, loaded)
        if cfg.resample_splits:
            for name in cfg.targets:
                for r in range(1, cfg.repeats):
                    _write_split(out, self.target(name, r))
        self.data_summary = {
            name: {
                "role": "source" if name in cfg.sources else "target",
                "path": str(self.task_configs()[name].data.path),
                "classes": list(t.images.classes),
                "positive_class": t.images.classes[-1] if t.images.num_classes == 2 else None,
                "split": _split_summary(t),
                "skipped_images": [{"id": i, "reason": r} for i, r in t.images.skipped],
                "fingerprint": t.fingerprint,
            }
            for name, t in self.tasks.items()
        }
        write_text_atomic(out / "data.yaml", yaml.safe_dump(self.data_summary, sort_keys=False))
        self._check_models()
        self.audit_counts = self._audit() if cfg.audit else {}

    def target(self, name: str, repeat: int) -> LoadedTask:
        """Target ``name`` as repeat ``repeat`` splits it (the study's split unless resampled)."""
        if not self.cfg.resample_splits or repeat == 0:
            return self.tasks[name]
        if (name, repeat) not in self._resplit:
            base = self.tasks[name]
            task = split_task(f"{name}.r{repeat}", self.cfg.targets[name], base.images,
                              self.cfg.seed + repeat)
            self._resplit[(name, repeat)] = task
        return self._resplit[(name, repeat)]

    def source_tasks(self) -> dict[str, TaskConfig]:
        """Sources that have data to pretrain on, as tasks."""
        return {k: TaskConfig(s.data, s.split) for k, s in self.cfg.sources.items() if s.data is not None}

    def task_configs(self) -> dict[str, TaskConfig]:
        return {**self.source_tasks(), **self.cfg.targets}

    def _check_models(self) -> None:
        """Build each variant's model for each target (with each source's weights), so a bad
        architecture, option or weights file fails before the first epoch."""
        for v in self.variants.values():
            for target in self.cfg.targets:
                for spec in self.cfg.sources.values():
                    self._build(v, spec, self.tasks[target], None, seed=0)

    def _audit(self) -> dict[str, dict[str, int]]:
        return audit_tasks(self, [(self.tasks[name], task.data, None)
                                  for name, task in self.task_configs().items()])

    # -- jobs --------------------------------------------------------------------------------
    def run_job(self, name: str) -> Any:
        kind, rest = name.split(":", 1)
        if kind == "pretrain":
            variant, source, repeat = rest.split(":")
            return self._pretrain(variant, source, int(repeat))
        cell = next(c for c in self.cells() if c.label == rest)
        return self._cell(cell)

    def _pretrain(self, variant: str, source: str, repeat: int) -> dict[str, Any]:
        key = (variant, source, repeat if self.cfg.repeat_pretraining else 0)
        if key not in self._pretrained:
            spec = self.cfg.sources[source]
            label = f"{variant}.{source}" + (f".r{key[2]}" if self.cfg.repeat_pretraining else "")
            self._pretrained[key] = pretrain_unit(
                self, self.variants[variant], self.tasks[source], label=label, weights=spec.weights,
                seed=pretrain_seed(self.cfg.seed, key[2]))
        return self._pretrained[key]

    def _build(self, v: Variant, spec: SourceSpec | None, target: LoadedTask,
               pre: dict[str, Any] | None, seed: int) -> tuple[nn.Module, Any, list[str]]:
        """(model initialised from the source, its input normalisation, loading messages)."""
        classes = list(target.images.classes)
        if spec is None:
            return seeded_build(v.model, target, self.size, seed), None, []
        if pre is None and spec.data is not None:  # checking only: the architecture, not weights
            return seeded_build(v.model, target, self.size, seed), None, []
        if pre is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                built = build_pretrained(
                    dataclasses.replace(v.model, weights=spec.weights), num_classes=target.images.num_classes,
                    in_chans=target.images.channels, img_size=self.size, classes=classes,
                    head=v.transfer.head)
            return built.model, built.input_norm, built.report.messages if built.report else []
        model = seeded_build(v.model, target, self.size, seed)
        ckpt = load_checkpoint(Path(pre["dir"]) / pre["checkpoint"])
        load = load_source_weights(model, ckpt["model_state"], head=v.transfer.head,
                                   source_classes=pre["classes"], target_classes=classes)
        norm = pre.get("input_norm")
        return model, (tuple(norm[0]), tuple(norm[1])) if norm else None, load.messages

    def _cell(self, cell: Cell) -> dict[str, Any]:
        cfg, v = self.cfg, self.variants[cell.variant]
        strategy = self.strategies[cell.strategy]
        spec = cfg.sources.get(cell.source)
        pre = (self._pretrain(cell.variant, cell.source, cell.repeat)
               if spec is not None and spec.data else None)
        target = self.target(cell.target, cell.repeat)
        seed = repeat_seed(cfg.seed, cell.repeat)
        unit_spec = {
            "stage": "cell", "version": __version__, "model": spec_key(v.model),
            "transfer": spec_key(v.transfer), "strategy": spec_key(strategy),
            "preprocess": spec_key(cfg.preprocess), "seed": seed, "data": target.fingerprint,
            "source": (Path(pre["dir"]).name if pre else spec.weights if spec else NO_SOURCE),
        }
        unit = Unit(self.out, "cell", cell.label, unit_spec)
        if unit.done():
            self.echo(f"[{cell.label}] done earlier, reused ({unit.dir.name})")
            return unit.result()
        split = target.split
        self.echo(f"[{cell.label}] {strategy.kind} on {len(split.train)} target images")
        workdir = unit.start()
        model, input_norm, messages = self._build(v, spec, target, pre, seed)
        for msg in messages:
            self.echo(f"[{cell.label}] {msg}")
        augment = Augmenter(v.transfer.augment) if v.transfer.augment.enabled else None
        parts = {name: idx for name, idx in [("val", split.val), *sorted(split.tests.items())]
                 if len(idx)}
        res = run_strategy(
            strategy, model, target.part(split.train),
            target.part(split.val) if len(split.val) else None,
            {k: target.part(idx) for k, idx in parts.items() if k != "val"},
            num_classes=target.images.num_classes, seed=seed, out_dir=workdir, device=self.device,
            augment=augment, input_norm=input_norm, disk_cache=ImageCache(cfg.cache_dir),
            config_for_checkpoint={**unit_spec, "classes": list(target.images.classes)},
            callbacks=tracking(self, workdir, cell.label, unit_spec),
        )
        metrics = {name: compute_metrics(target.images.labels[idx], res.probabilities[name])
                   for name, idx in parts.items()}
        write_predictions(workdir / "predictions.csv", target, parts, res.probabilities)
        result = {"tests": {k: m for k, m in metrics.items() if k != "val"},
                  "val": metrics.get("val", {}), "strategy": res.summary(), "messages": messages}
        unit.finish(result)
        return result

    # -- whole run ---------------------------------------------------------------------------
    def run(self, *, workers: int = 1, report: bool = True, executor: str = "local",
            address: str | None = None) -> Path:
        from medtransfer.report.matrix import write_matrix_report, write_matrix_summary
        from medtransfer.study.executor import preflight, run_jobs

        preflight(executor, workers, address, self.out)
        self.prepare()
        # Pretraining first: cells of one source share its unit, which must not run twice at once.
        pre = run_jobs(self, self.pretrain_jobs(), executor=executor, workers=workers, address=address)
        cells = self.cells()
        done = run_jobs(self, [f"cell:{c.label}" for c in cells], executor=executor, workers=workers,
                        address=address)
        rows: list[dict[str, Any]] = []
        blank = dict.fromkeys(COLUMNS[:5], "-")
        for name, t in self.tasks.items():
            audit = {f"audit_{k}": n for k, n in self.audit_counts.get(name, {}).items()}
            role = "source" if name in self.cfg.sources else "target"
            rows += metric_rows({**blank, "variant": "*", role: name}, "data", name,
                          {"skipped_images": len(t.images.skipped), **audit})
        for job, result in pre.items():
            _, variant, source, repeat = job.split(":")
            source_ids = {**blank, "variant": variant, "source": source,
                          "repeat": repeat if self.cfg.repeat_pretraining else "-"}
            rows += metric_rows(source_ids, "pretrain", "val", result["val"])
        for c in cells:
            result = done[f"cell:{c.label}"]
            ids = {"variant": c.variant, "source": c.source, "target": c.target,
                   "strategy": c.strategy, "repeat": c.repeat}
            rows += metric_rows(ids, "val", "val", result["val"])
            for test_set, metrics in result["tests"].items():
                rows += metric_rows(ids, "transfer", test_set, metrics)
        write_results(self.out / "results.csv", rows, COLUMNS)
        summary = write_matrix_summary(self.out, self.cfg, rows)
        self.echo(f"results: {self.out / 'results.csv'}\nsummary: {summary}")
        if report:
            stages = [(c.strategy, stage) for c in cells
                      for stage in done[f"cell:{c.label}"].get("strategy", {}).get("stages", [])]
            self.echo(f"report: {write_matrix_report(self.out, self.cfg, rows, self.data_summary, stages)}")
        return self.out
