"""The two units every study is made of: a pretraining on a source task, and a cell — a model
initialised from its source, transferred to a target by a strategy and evaluated. A unit's spec
is everything that determines its result; a finished unit is reused, never recomputed."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medtransfer.config import to_dict
from medtransfer.csvfile import write_csv
from medtransfer.data import ImageCache
from medtransfer.data.intensity import rescaled_norm
from medtransfer.data.offline import training_augment
from medtransfer.evaluate import compute_metrics
from medtransfer.integrity import measured
from medtransfer.models import ModelConfig, build_model, build_pretrained
from medtransfer.models.config import NAMED_WEIGHTS
from medtransfer.models.folders import folder_weights_file
from medtransfer.models.loading import HeadPolicy, load_source_weights
from medtransfer.strategies import StrategyResult, run_strategy, train_configs
from medtransfer.strategies.posthoc import apply_posthoc
from medtransfer.study.config import StudyConfig
from medtransfer.study.lockstep import unit_for
from medtransfer.study.plan import NO_SOURCE, CellJob, PretrainJob
from medtransfer.study.pruning import TrialPruned, TrialPruning
from medtransfer.study.rundir.layout import BEST, FINAL, LAST, PREDICTIONS
from medtransfer.study.rundir.unit import trained_checkpoint, unit_file
from medtransfer.study.rundir.unit_result import (
    CellResult,
    NormPair,
    PretrainResult,
    StrategyRecord,
    UnitResult,
    norm_pair,
)
from medtransfer.study.store import Unit
from medtransfer.study.tasks import LoadedTask
from medtransfer.study.variants import Variant, pretrain_model
from medtransfer.tracking import unit_callbacks
from medtransfer.train import Callback, TrainConfig, TrainEnv, fit, load_checkpoint, predict_proba
from medtransfer.train.checkpoint import lean_checkpoints, save_checkpoint
from medtransfer.train.distributed import is_main_process
from medtransfer.version import __version__

__all__ = ["Context", "ModelStart", "cell_spec", "pretrain_spec", "run_cell", "run_pretrain",
           "source_weights", "spec_key", "write_unit_predictions"]


@dataclass
class Context:
    """What units need of the runner: the study, the run folder, where to train, and how to talk."""

    cfg: StudyConfig
    out: Path
    device: torch.device
    size: int
    echo: Callable[[str], None]
    progress: bool

    def train_cfg(self, train: Any) -> Any:
        return train if self.progress else dataclasses.replace(train, progress=False)

    def callbacks(self, unit_dir: Path, name: str, spec: dict[str, Any]) -> list[Callback]:
        """TensorBoard / MLflow callbacks for one unit's training, as ``cfg.tracking`` asks (by
        rank 0 alone in a data-parallel run)."""
        if not is_main_process():
            return []
        return unit_callbacks(self.cfg.tracking, run_dir=self.out, unit_dir=unit_dir, study=self.cfg.name,
                              name=name, params=spec)

    @property
    def disk_cache(self) -> ImageCache:
        return ImageCache(self.cfg.cache_dir)


def spec_key(cfg: Any) -> Any:
    """A config as it enters a unit key: non-default values only (see ``to_dict``)."""
    return to_dict(cfg, skip_defaults=True)


def source_weights(cfg: StudyConfig, v: Variant, source: str) -> str | None:
    """The weights ``source`` starts from: its own ``weights``, else the variant's
    ``model.weights``; none for scratch cells."""
    if source == NO_SOURCE:
        return None
    return cfg.shape.weights.get(source) or v.model.weights


def seeded_build(model_cfg: ModelConfig, task: LoadedTask, size: int, seed: int) -> nn.Module:
    """Build with initial weights drawn from ``seed`` without touching the global generator."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(model_cfg, num_classes=task.images.num_classes,
                           in_chans=task.images.channels, img_size=size)


@dataclass
class ModelStart:
    """A model ready to train, the input normalisation its weights expect, what loading did."""

    model: nn.Module
    input_norm: NormPair | None
    messages: list[str]
    head_reset: bool = False


def start_model(ctx: Context, v: Variant, task: LoadedTask, *, seed: int, weights: str | None,
                pretrained: PretrainResult | None = None, head: HeadPolicy | None = None,
                model_cfg: ModelConfig | None = None) -> ModelStart:
    """``v.model`` for ``task``: initialised from ``seed``, then from a finished pretraining
    (``pretrained``: its result), else from ``weights`` (imagenet / file: / run:). The output
    layer is kept or reset as ``head`` says (default: the variant's ``transfer.head``). A
    pretraining's weights are its ``transfer_checkpoint`` (``pretrain.transfer_from: last``), else
    its best. ``model_cfg`` replaces ``v.model`` (a pretraining's ``pretrain.model``)."""
    head = v.transfer.head if head is None else head
    v = v if model_cfg is None else dataclasses.replace(v, model=model_cfg)
    if pretrained is not None:
        model = seeded_build(v.model, task, ctx.size, seed)
        ckpt = load_checkpoint(unit_file(pretrained, pretrained.transfer_checkpoint or pretrained.checkpoint))
        load = load_source_weights(model, ckpt["model_state"], head=head,
                                   source_classes=pretrained.classes, target_classes=task.classes,
                                   fold_batch_norm=bool(v.pretrain.model))
        return ModelStart(model, pretrained.input_norm, load.messages, bool(load.reset))
    rescale = ctx.cfg.preprocess.rescale  # a trained unit's (pretrained, run:) norm has it already
    if weights is None:
        return ModelStart(seeded_build(v.model, task, ctx.size, seed),
                          norm_pair(rescaled_norm(None, rescale, task.images.channels)), [])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        built = build_pretrained(dataclasses.replace(v.model, weights=weights),
                                 num_classes=task.images.num_classes, in_chans=task.images.channels,
                                 img_size=ctx.size, classes=task.classes, head=head)
    report = built.report
    norm = built.input_norm if weights.startswith("run:") else rescaled_norm(
        built.input_norm, rescale, task.images.channels)
    return ModelStart(built.model, norm_pair(norm), report.messages if report else [],
                      bool(report and report.reset))


def weights_stamp(weights: str | None, model_name: str | None = None) -> str | None:
    """``weights`` with a hash of its file's content for ``file:`` and ``keras:`` weights and a
    model folder's ``pretrained`` weights (``model_name``), so changing the file redoes the units
    that start from it."""
    if weights is None:
        return weights
    if weights.startswith(("file:", "keras:")):
        path: Path | None = Path(weights.split(":", 1)[1]).expanduser()
    elif weights in NAMED_WEIGHTS and model_name is not None:
        path = folder_weights_file(model_name)
    else:
        return weights
    if path is None or not path.is_file():
        return weights
    return f"{weights}#sha256={measured(path)['sha256'][:16]}"


def pretrain_spec(cfg: StudyConfig, v: Variant, job: PretrainJob, source: LoadedTask) -> dict[str, Any]:
    """What identifies a pretraining unit (its key is this spec's hash)."""
    weights = source_weights(cfg, v, job.source)
    spec: dict[str, Any] = {
        "stage": "pretrain", "version": __version__,
        # the model it trains (pretrain.model laid over model), so both spellings share a unit
        "model": spec_key(pretrain_model(v)), "pretrain": spec_key(dataclasses.replace(v.pretrain, model={})),
        "preprocess": spec_key(cfg.preprocess), "seed": job.seed, "data": source.fingerprint,
    }
    if weights is not None:
        spec["weights"] = weights_stamp(weights, pretrain_model(v).name)
    return spec


def cell_spec(cfg: StudyConfig, v: Variant, job: CellJob, target: LoadedTask, pretrained_dir: str | None,
              upstream_dir: str | None) -> dict[str, Any]:
    """What identifies a cell (or trial) unit, given the folder names of the pretraining it
    starts from and of its upstream cell (``backbone_from``), if any."""
    weights = None if pretrained_dir is not None else source_weights(cfg, v, job.source)
    source_id = pretrained_dir if pretrained_dir is not None else weights_stamp(weights, v.model.name)
    spec: dict[str, Any] = {
        "stage": "cell", "version": __version__, "model": spec_key(v.model),
        "transfer": spec_key(v.transfer), "strategy": spec_key(v.strategies[job.strategy]),
        "preprocess": spec_key(cfg.preprocess), "seed": job.seed, "data": target.fingerprint,
        "source": source_id or NO_SOURCE, "fold": job.fold,
    }
    if job.evaluate == "val":
        spec["evaluate"] = "val"  # a search trial: test images are never looked at
    spec.update(cfg.evaluate.key())  # calibration / tta, only when on
    if upstream_dir is not None:
        spec["upstream"] = upstream_dir  # the unit whose trained model is the backbone
    if job.pruning is not None:
        spec["pruning"] = job.pruning.key()  # a pruned trial's result depends on its search
    return spec


def run_pretrain(ctx: Context, v: Variant, job: PretrainJob, source: LoadedTask, *,
                 announce: bool = True) -> PretrainResult:
    """Train ``v.model`` on the source task (from its weights, if any); reused, and shared
    between variants and repeats, when the same unit is done (said only if ``announce``)."""
    weights = source_weights(ctx.cfg, v, job.source)
    spec = pretrain_spec(ctx.cfg, v, job, source)
    unit = unit_for(ctx.out, "pretrain", job.label, spec, share=True)
    with unit.claimed():
        if unit.done():
            if announce:
                ctx.echo(f"[{job.label}] pretraining: done earlier, reused ({unit.dir.name})")
            return _pretrain_result(unit.result())
        _say_redo(ctx, job.label, unit)
        ctx.echo(f"[{job.label}] pretraining on {len(source.split.train)} source images"
                 + (f" from {weights}" if weights else ""))
        # last.pt / best.pt of a killed attempt: fit resumes from its last finished epoch
        workdir = unit.start(keep=(LAST, BEST))
        return unit.finish(_pretrain(ctx, v, job, source, workdir, spec, weights))


def _say_redo(ctx: Context, label: str, unit: Unit) -> None:
    """Say why a unit that was once finished is computed again."""
    if unit.result_path.is_file():
        ctx.echo(f"[{label}] redone: {unit.problem()}")


def _pretrain(ctx: Context, v: Variant, job: PretrainJob, source: LoadedTask, workdir: Path,
              spec: dict[str, Any], weights: str | None) -> PretrainResult:
    """Train the pretraining unit in ``workdir``; returns its result."""
    start = start_model(ctx, v, source, seed=job.seed, weights=weights, head=HeadPolicy.AUTO,
                        model_cfg=pretrain_model(v))
    for msg in start.messages:
        ctx.echo(f"[{job.label}] {msg}")
    train, augment = training_augment(source.part(source.split.train), v.pretrain.augment, job.seed)
    env = TrainEnv(job.seed, workdir, source.images.num_classes, ctx.device, start.input_norm,
                   ctx.callbacks(workdir, job.label, spec), {**spec, "classes": source.classes})
    res = fit(start.model, train, source.part(source.split.val),
              ctx.train_cfg(v.pretrain.train), env, augment=augment, resume=True)
    val_x, val_y = source.part(source.split.val)
    proba = predict_proba(start.model, val_x, batch_size=v.pretrain.train.batch_size, device=ctx.device,
                          input_norm=start.input_norm, precision=v.pretrain.train.precision,
                          channels_last=v.pretrain.train.channels_last)
    val = compute_metrics(val_y, proba)
    best = res.history[res.best_epoch - 1] if res.best_epoch > 0 else {}
    val["loss"] = float(best.get("val_loss", float("nan")))
    final = None
    if v.pretrain.transfers_last:  # (the other ranks of a data-parallel run wrote no last.pt)
        final = _keep_final(workdir, res.last_path) if is_main_process() else FINAL
    record = compat_record(ctx.cfg, pretrain_model(v), [v.pretrain.train], res.best_epoch, len(res.history))
    if not v.pretrain.train.keep_optimizer:
        lean_checkpoints(workdir)
    return PretrainResult(
        val=val, checkpoint=(res.best_path or res.last_path).name, classes=list(source.classes),
        best_epoch=res.best_epoch, stop_reason=res.stop_reason.value, epochs_run=len(res.history),
        seconds=res.seconds, images_per_second=res.images_per_second, precision=res.precision,
        transfer_checkpoint=final, compile=v.pretrain.train.compile, input_norm=start.input_norm, **record)


def _pretrain_result(result: Any) -> PretrainResult:
    if not isinstance(result, PretrainResult):
        raise TypeError(f"{result.dir}: not a pretraining's result")
    return result


def _cell_result(result: Any) -> CellResult:
    if not isinstance(result, CellResult):
        raise TypeError(f"{result.dir}: not a cell's result")
    return result


def _keep_final(workdir: Path, last: Path) -> str:
    """The last epoch's weights as ``final.pt`` (weights only), which transfer starts from with
    ``pretrain.transfer_from: last``: lean units drop ``last.pt`` where ``best.pt`` exists."""
    data = load_checkpoint(last)
    save_checkpoint(workdir / FINAL, model_state=data["model_state"], config=data["config"],
                    epoch=data["epoch"], metrics=data["metrics"],
                    extra={k: v for k, v in data["extra"].items() if k != "resume"})
    return FINAL


def compat_record(cfg: StudyConfig, model: ModelConfig, trains: list[TrainConfig], best_epoch: int,
                  epochs_run: int) -> dict[str, Any]:
    """Which weights were evaluated (``tested_epoch``: the best epoch's or the last's, as the
    final training's ``restore_best`` resolved) and, where any section follows Keras, what
    ``compat`` each part ran with."""
    final = trains[-1] if trains else None
    restored = final is not None and final.restores_best and best_epoch > 0
    out: dict[str, Any] = {"tested_epoch": {"which": "best" if restored else "last",
                                            "epoch": best_epoch if restored else epochs_run}}
    parts = {"model": model.compat or "torch", "train": sorted({t.compat or "torch" for t in trains}),
             "preprocess.resize": cfg.preprocess.resize or "antialias"}
    if parts["model"] != "torch" or parts["train"] != ["torch"] or parts["preprocess.resize"] != "antialias":
        out["compat"] = parts
    return out


def _last_stage(res: StrategyResult) -> dict[str, Any]:
    """What the report's training table shows of the stage that produced the final model."""
    stage = res.stages[-1]
    out: dict[str, Any] = {"path": stage.path, "path_reason": stage.reason}
    if stage.freeze is not None:
        out.update(trainable_layers=stage.freeze.trainable, trainable_params=stage.freeze.trainable_params,
                   frozen_params=stage.freeze.frozen_params)
    if stage.fit is not None:
        out.update(best_epoch=stage.fit.best_epoch, stop_reason=stage.fit.stop_reason.value,
                   epochs_run=len(stage.fit.history), seconds=stage.fit.seconds,
                   precision=stage.fit.precision)
    return out


def run_cell(ctx: Context, v: Variant, job: CellJob, target: LoadedTask,
             pretrained: PretrainResult | None, upstream: UnitResult | None = None) -> CellResult:
    """Start ``v``'s model from the cell's source — or from the model its ``upstream`` cell
    trained (``backbone_from``; that cell's result) — transfer it to ``target`` by the cell's
    strategy, and evaluate it on the validation set and (unless a trial) every test set."""
    weights = None if pretrained is not None else source_weights(ctx.cfg, v, job.source)
    upstream = None if upstream is None else _cell_result(upstream)
    spec = cell_spec(ctx.cfg, v, job, target, None if pretrained is None else pretrained.dir.name,
                     None if upstream is None else upstream.dir.name)
    unit = unit_for(ctx.out, job.kind, job.label, spec, share=True)
    with unit.claimed():
        if unit.done():
            ctx.echo(f"[{job.label}] done earlier, reused ({unit.dir.name})")
            return _cell_result(unit.result())
        _say_redo(ctx, job.label, unit)
        workdir = unit.start()
        try:
            result = _cell(ctx, v, job, target, pretrained, workdir, spec, weights, upstream)
        except TrialPruned as pruned:
            ctx.echo(f"[{job.label}] pruned after epoch {pruned.epoch}")
            result = CellResult(tests={}, val={}, classes=list(target.classes), pruned_at=pruned.epoch,
                                pruned_value=pruned.value)
        return unit.finish(result)


def _upstream_start(ctx: Context, v: Variant, target: LoadedTask, seed: int,
                    upstream: CellResult) -> ModelStart:
    """The model an upstream cell trained (its checked checkpoint) and its input normalisation."""
    model = seeded_build(v.model, target, ctx.size, seed)
    model.load_state_dict(load_checkpoint(trained_checkpoint(upstream))["model_state"])
    return ModelStart(model, upstream.input_norm, [f"backbone: the model trained by {upstream.dir.name}"])


def _cell(ctx: Context, v: Variant, job: CellJob, target: LoadedTask, pretrained: PretrainResult | None,
          workdir: Path, spec: dict[str, Any], weights: str | None,
          upstream: CellResult | None = None) -> CellResult:
    """Transfer and evaluate the cell in ``workdir``; returns its result."""
    strategy = v.strategies[job.strategy]
    split = target.fold(job.fold)
    ctx.echo(f"[{job.label}] {strategy.kind} on {len(split.train)} target images")
    start = (_upstream_start(ctx, v, target, job.seed, upstream) if upstream is not None else
             start_model(ctx, v, target, seed=job.seed, weights=weights, pretrained=pretrained))
    for msg in start.messages:
        ctx.echo(f"[{job.label}] {msg}")
    tests = {} if job.evaluate == "val" else {
        (f"fold_{job.fold + 1}" if job.fold is not None and k == "test" else k): idx
        for k, idx in sorted(split.tests.items())}
    parts = {name: idx for name, idx in [("val", split.val), *tests.items()] if len(idx)}
    train, augment = training_augment(target.part(split.train), v.transfer.augment, job.seed)
    callbacks = [*ctx.callbacks(workdir, job.label, spec),
                 *([TrialPruning(job.pruning)] if job.pruning is not None else [])]
    env = TrainEnv(job.seed, workdir, target.images.num_classes, ctx.device, start.input_norm,
                   callbacks, {**spec, "classes": target.classes}, ctx.disk_cache)
    res = run_strategy(
        strategy, start.model, train,
        target.part(split.val) if len(split.val) else None,
        {k: target.part(idx) for k, idx in parts.items() if k != "val"}, env, augment=augment,
    )
    summary = _last_stage(res)
    ctx.echo(f"[{job.label}] {summary['path']} path: {summary['path_reason']}")
    post = apply_posthoc(ctx.cfg.evaluate, strategy, res, {k: target.part(idx) for k, idx in parts.items()},
                         env)  # evaluate: calibration / TTA (nothing when off)
    metrics = {name: {**compute_metrics(target.images.labels[idx], res.probabilities[name]),
                      **post.metrics.get(name, {})} for name, idx in parts.items()}
    final = res.stages[-1].fit
    if "val" in metrics and final is not None and final.best_epoch > 0:
        metrics["val"]["loss"] = float(final.history[final.best_epoch - 1].get("val_loss", float("nan")))
    write_unit_predictions(workdir / PREDICTIONS, target, parts, res.probabilities)
    if not any(t.keep_optimizer for t in train_configs(strategy)):
        lean_checkpoints(workdir)
    trains = train_configs(strategy)
    record = compat_record(ctx.cfg, v.model, trains, final.best_epoch if final else 0,
                           len(final.history) if final else 0)
    if final is None:  # features: no epochs, the classifier is what it is
        record.pop("tested_epoch")
    if "precision" in res.extra:
        summary["precision"] = res.extra["precision"]  # features: of the feature extraction
    return CellResult(
        tests={k: m for k, m in metrics.items() if k != "val"}, val=metrics.get("val", {}),
        classes=list(target.classes), strategy=StrategyRecord.from_json(res.summary(), "strategy"),
        messages=list(start.messages), head_reset=start.head_reset,
        prediction_rows={k: len(idx) for k, idx in parts.items()},
        compile=any(t.compile for t in train_configs(strategy)), input_norm=start.input_norm,
        posthoc=post.record.get("posthoc"), **record, **summary)


def write_unit_predictions(path: Path, target: LoadedTask, parts: Mapping[str, np.ndarray],
                           proba: Mapping[str, np.ndarray]) -> None:
    """A cell's ``predictions.csv``: ``test_set,id,label,p_<class>...`` for every evaluated part
    (val included: thresholds and calibration are chosen on it)."""
    rows = ([name, str(target.images.ids[i]), int(target.images.labels[i]), *(float(q) for q in p)]
            for name, idx in parts.items() for i, p in zip(idx, proba[name], strict=True))
    write_csv(path, rows, ["test_set", "id", "label", *(f"p_{c}" for c in target.classes)])
