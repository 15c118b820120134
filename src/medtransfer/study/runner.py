"""Run a study: load and split both data sets, pretrain each variant on the source, transfer it
to the target, evaluate on every target test set, and write tidy results.

Everything that can be checked is checked before the first epoch, and every finished unit is
kept on disk, so a bad input or a crash loses nothing already computed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from medtransfer import __version__
from medtransfer.data import (
    Augmenter,
    DataConfig,
    ImageCache,
    ImageSet,
    load_dataset,
    make_folds,
    make_split,
)
from medtransfer.errors import ConfigError, DataError
from medtransfer.evaluate import compute_metrics
from medtransfer.models import build_model
from medtransfer.report import write_report, write_summary
from medtransfer.strategies import train_stage
from medtransfer.study.config import StudyConfig, TaskConfig, Variant, VariantSpec, resolve_variants
from medtransfer.study.store import Unit, write_text_atomic
from medtransfer.study.units import (
    LoadedTask,
    fingerprint,
    metric_rows,
    open_run,
    pretrain_unit,
    seeded_build,
    spec_key,
    tracking,
    train_cfg,
    write_predictions,
    write_results,
)
from medtransfer.train import load_checkpoint, predict_proba
from medtransfer.transfer import freeze, load_source_weights

log = logging.getLogger("medtransfer")
RESULT_COLUMNS = ("variant", "stage", "test_set", "metric", "value")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_task(role: str, task: TaskConfig, cfg: StudyConfig, cache: ImageCache) -> LoadedTask:
    return split_task(role, task, load_dataset(task.data, cfg.preprocess, cache), cfg.seed)


def split_task(role: str, task: TaskConfig, images: ImageSet, seed: int) -> LoadedTask:
    """Loaded images split as ``task.split`` says, drawn from ``seed``."""
    classes = list(images.classes)
    try:
        if task.split.folds:
            if role != "target":
                raise ConfigError(f"'{role}.split.folds': cross-validation is for the target task")
            folds = make_folds(images.labels, task.split.folds, seed, groups=images.groups,
                               val_fraction=task.split.val_fraction, classes=classes)
            return LoadedTask(role, images, folds[0], fingerprint(images, folds), folds)
        split = make_split(images.labels, task.split, seed, origin=images.origin, classes=classes,
                           groups=images.groups)
    except DataError as exc:
        raise DataError(f"{role} data {task.data.path}: {exc}") from None
    return LoadedTask(role, images, split, fingerprint(images, [split]))


def _split_summary(task: LoadedTask) -> dict[str, Any]:
    """Images per class in each part; for cross-validation, in each fold's held-out part."""
    classes = list(task.images.classes)
    if not task.folds:
        return task.split.summary(task.images.labels, classes)
    return {f"fold_{i + 1}": f.summary(task.images.labels, classes)["test"]
            for i, f in enumerate(task.folds)}


def _write_split(out: Path, task: LoadedTask) -> None:
    rows = []
    parts = [("train", task.split.train), ("val", task.split.val), *sorted(task.split.tests.items())]
    if task.folds:  # each image is held out in exactly one fold
        parts = [(f"fold_{i + 1}", f.tests["test"]) for i, f in enumerate(task.folds)]
    for part, idx in parts:
        for i in idx:
            rows.append((part, task.images.ids[i], task.images.classes[task.images.labels[i]]))
    path = out / "splits" / f"{task.name}.csv"
    text = "part,id,label\n" + "".join(f"{p},{i},{c}\n" for p, i, c in rows)
    write_text_atomic(path, text)


def _check_models(variants: list[Variant], source: LoadedTask, target: LoadedTask, size: int) -> None:
    """Build every model once and apply its freezing, so config errors surface before training."""
    for v in variants:
        for task in (source, target):
            model = build_model(
                v.model, num_classes=task.images.num_classes, in_chans=task.images.channels,
                img_size=size,
            )
        freeze(model, v.transfer.freeze)


def audit_tasks(runner: Any, items: list[tuple[LoadedTask, DataConfig, DataConfig | None]]
                ) -> dict[str, dict[str, int]]:
    """Audit each task (against a second data set, if given) with its split; an audit is reused
    while the task's fingerprint is unchanged. Returns critical/warning counts per task."""
    from medtransfer.audit import AuditConfig, run_audit, split_parts

    counts: dict[str, dict[str, int]] = {}
    for task, data, against in items:
        where = runner.out / "audit" / task.name
        stamp = where / "fingerprint.txt"
        if stamp.is_file() and stamp.read_text() == task.fingerprint:
            found = yaml.safe_load((where / "audit.json").read_text())
            severities = [f["severity"] for f in found.get("findings", [])]
        else:
            res = run_audit(data, against=against, cfg=AuditConfig(seed=runner.cfg.seed),
                            split=split_parts(task.images.ids, task.split), out=where)
            write_text_atomic(stamp, task.fingerprint)
            severities = [str(f.severity) for f in res.findings]
        counts[task.name] = {s: severities.count(s) for s in ("critical", "warning")}
        runner.echo(f"audit {task.name}: {counts[task.name]['critical']} critical, "
                    f"{counts[task.name]['warning']} warnings — {where / 'audit.md'}")
    return counts


class StudyRunner:
    """Runs one study into one output folder."""

    def __init__(self, cfg: StudyConfig, out: Path, *, progress: bool = True,
                 echo: Callable[[str], None] = print) -> None:
        self.cfg, self.out, self.progress, self.echo = cfg, Path(out), progress, echo
        self.variants = resolve_variants(cfg)
        self.device = pick_device(cfg.device)
        self.size = cfg.preprocess.size if isinstance(cfg.preprocess.size, int) else cfg.preprocess.size[0]

    def prepare(self, *, write: bool = True) -> None:
        """Load and split both data sets and check every variant's model, before any training."""
        cfg, out = self.cfg, self.out
        cache = open_run(out, cfg, write=write)
        t0 = time.perf_counter()
        self.source = source = load_task("source", cfg.task("source"), cfg, cache)
        self.target = target = load_task("target", cfg.task("target"), cfg, cache)
        if not write:
            return
        self.echo(
            f"data: source {len(source.images)} images {source.images.class_counts()}, "
            f"target {len(target.images)} images {target.images.class_counts()} "
            f"({time.perf_counter() - t0:.1f} s, cache {cache.hits} hits / {cache.misses} decoded)"
        )
        if source.images.channels != target.images.channels:
            raise DataError("source and target images have different channel counts")
        _check_models(self.variants, source, target, self.size)
        for task in (source, target):
            _write_split(out, task)
        self.data_summary = {
            t.name: {
                "path": str(cfg.task(t.name).data.path),
                "classes": list(t.images.classes),
                "positive_class": t.images.classes[-1] if t.images.num_classes == 2 else None,
                "split": _split_summary(t),
                "skipped_images": [{"id": i, "reason": r} for i, r in t.images.skipped],
                "fingerprint": t.fingerprint,
            }
            for t in (source, target)
        }
        write_text_atomic(out / "data.yaml", yaml.safe_dump(self.data_summary, sort_keys=False))
        self.audit_counts = self._audit() if cfg.audit else {}

    def _audit(self) -> dict[str, dict[str, int]]:
        cfg = self.cfg
        return audit_tasks(self, [(self.source, cfg.task("source").data, cfg.task("target").data),
                                  (self.target, cfg.task("target").data, None)])

    def run_variant(self, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Pretrain and transfer one variant (each unit reused if already done)."""
        v = next(v for v in self.variants if v.name == name)
        pre = pretrain_unit(self, v, self.source, label=v.name)
        if not self.target.folds:
            return pre, self._transfer(v, pre, self.source, self.target)
        tests: dict[str, dict[str, float]] = {}
        for i in range(len(self.target.folds)):
            tests.update(self._transfer(v, pre, self.source, self.target, fold=i)["tests"])
        return pre, {"tests": tests}

    def job_names(self) -> list[str]:
        """Independent jobs of this study (call after :meth:`prepare`); executors run them in
        any order and any process via :meth:`run_job`, sharing the unit store."""
        return [v.name for v in self.variants]

    def run_job(self, name: str) -> Any:
        """Run one job (each unit reused if already done); returns plain, picklable data."""
        return self.run_variant(name)

    def run(self, *, workers: int = 1, report: bool = True, executor: str = "local",
            address: str | None = None) -> Path:
        from medtransfer.study.executor import preflight, run_jobs

        preflight(executor, workers, address, self.out)
        self.prepare()

        outcomes = run_jobs(self, self.job_names(), executor=executor, workers=workers,
                            address=address)
        rows: list[dict[str, Any]] = []
        for t in (self.source, self.target):
            audit = {f"audit_{k}": v for k, v in self.audit_counts.get(t.name, {}).items()}
            counts = {"skipped_images": len(t.images.skipped), **audit}
            rows += metric_rows({"variant": "*"}, "data", t.name, counts)
        for v in self.variants:
            pre, tr = outcomes[v.name]
            rows += metric_rows({"variant": v.name}, "pretrain", "val", pre["val"])
            for test_set, metrics in tr["tests"].items():
                rows += metric_rows({"variant": v.name}, "transfer", test_set, metrics)
        write_results(self.out / "results.csv", rows, RESULT_COLUMNS)
        summary = write_summary(self.out, self.cfg, rows, self.data_summary)
        self.echo(f"results: {self.out / 'results.csv'}\nsummary: {summary}")
        if report:
            self.echo(f"report: {write_report(self.out)}")
        return self.out

    # -- units -------------------------------------------------------------------------------
    def run_trial(self, name: str, overrides: dict[str, Any]) -> dict[str, Any]:
        """A search trial: the study's model/pretrain/transfer with ``overrides`` laid over them,
        pretrained and transferred, evaluated on the validation set only (never the tests)."""
        v = resolve_variants(dataclasses.replace(self.cfg, variants=[VariantSpec(name, **overrides)]))[0]
        pre = pretrain_unit(self, v, self.source, label=name)
        return self._transfer(v, pre, self.source, self.target, tests=False)

    def _transfer(self, v: Variant, pre: dict[str, Any], source: LoadedTask,
                  target: LoadedTask, fold: int | None = None, *, tests: bool = True) -> dict[str, Any]:
        cfg = self.cfg
        split = target.split if fold is None or target.folds is None else target.folds[fold]
        label = v.name if fold is None else f"{v.name}-fold{fold + 1}"
        spec = {
            "stage": "transfer", "version": __version__,
            "model": spec_key(v.model), "transfer": spec_key(v.transfer),
            "preprocess": spec_key(cfg.preprocess), "seed": cfg.seed, "data": target.fingerprint,
            "source_unit": Path(pre["dir"]).name, "fold": fold,
        }
        if not tests:
            spec["evaluate"] = "val"  # a search trial: test images are never looked at
        unit = Unit(self.out, "trial" if not tests else "transfer", label, spec)
        if unit.done():
            self.echo(f"[{label}] transfer: done earlier, reused ({unit.dir.name})")
            return unit.result()
        self.echo(f"[{label}] transfer to {len(split.train)} target images")
        workdir = unit.start()
        model = seeded_build(v.model, target, self.size, cfg.seed + 1)
        ckpt = load_checkpoint(Path(pre["dir"]) / pre["checkpoint"])
        load = load_source_weights(
            model, ckpt["model_state"], head=v.transfer.head, source_classes=pre["classes"],
            target_classes=list(target.images.classes),
        )
        for msg in load.messages:
            self.echo(f"[{label}] {msg}")
        augment = Augmenter(v.transfer.augment) if v.transfer.augment.enabled else None
        stage = train_stage(
            "transfer", model, v.transfer.freeze, train_cfg(self, v.transfer.train), v.transfer.cache,
            target.part(split.train), target.part(split.val) if len(split.val) else None,
            seed=cfg.seed + 1, out_dir=workdir, num_classes=target.images.num_classes,
            augment=augment, device=self.device,
            config_for_checkpoint={**spec, "classes": list(target.images.classes)},
            callbacks=tracking(self, workdir, label, spec), disk_cache=ImageCache(cfg.cache_dir),
        )
        self.echo(f"[{label}] {stage.path} path: {stage.reason}")
        assert stage.fit is not None and stage.freeze is not None
        res, frozen = stage.fit, stage.freeze
        # Validation predictions are kept too: thresholds and calibration are chosen on them.
        tests_named = {("test" if fold is None else f"fold_{fold + 1}") if k == "test" else k: idx
                       for k, idx in split.tests.items()}
        parts = {name: idx for name, idx in [("val", split.val), *sorted(tests_named.items())]
                 if len(idx) and (tests or name == "val")}
        proba = {name: predict_proba(model, target.part(idx)[0], batch_size=v.transfer.train.batch_size,
                                     device=self.device) for name, idx in parts.items()}
        metrics = {name: compute_metrics(target.images.labels[idx], proba[name])
                   for name, idx in parts.items()}
        if "val" in metrics and res.best_epoch > 0:
            metrics["val"]["loss"] = float(res.history[res.best_epoch - 1].get("val_loss", float("nan")))
        write_predictions(workdir / "predictions.csv", target, parts, proba)
        result = {
            "tests": {k: m for k, m in metrics.items() if k != "val"}, "val": metrics.get("val", {}),
            "best_epoch": res.best_epoch, "stop_reason": res.stop_reason.value,
            "epochs_run": len(res.history), "seconds": res.seconds,
            "trainable_layers": frozen.trainable, "trainable_params": frozen.trainable_params,
            "frozen_params": frozen.frozen_params, "head_reset": bool(load.reset),
            "messages": load.messages, "path": stage.path, "path_reason": stage.reason,
        }
        unit.finish(result)
        return result

def make_runner(cfg: StudyConfig, out: Path, *, progress: bool = True,
                echo: Callable[[str], None] = print) -> Any:
    """The runner for ``cfg``'s shape: :class:`StudyRunner` or, for sources × targets ×
    strategies, :class:`medtransfer.study.matrix.MatrixRunner` (same interface)."""
    if cfg.is_matrix:
        from medtransfer.study.matrix import MatrixRunner

        return MatrixRunner(cfg, out, progress=progress, echo=echo)
    return StudyRunner(cfg, out, progress=progress, echo=echo)


def run_study(cfg: StudyConfig, out: Path, *, progress: bool = True, workers: int = 1,
              report: bool = True, echo: Callable[[str], None] = print, executor: str = "local",
              address: str | None = None) -> Path:
    """Run ``cfg`` into ``out``; ``workers`` > 1 runs jobs in parallel processes (``executor``
    ``local``) or Ray tasks (``ray``, on the cluster at ``address``, else a local Ray); ``report``
    writes CIs, paired comparisons, plots and ``report.html`` at the end."""
    return make_runner(cfg, out, progress=progress, echo=echo).run(
        workers=workers, report=report, executor=executor, address=address)
