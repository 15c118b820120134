"""The training loop: seeded, per-epoch metrics like Keras, checkpoints and a CSV history."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch import Tensor, nn

from medtransfer.config import to_dict
from medtransfer.data.sampling import Sampling, epoch_order, epoch_size
from medtransfer.errors import ConfigError, DataError
from medtransfer.evaluate import compute_metrics
from medtransfer.train.batches import (
    InputNorm,
    batches,
    check_split,
    input_norm_tensors,
    loss_and_proba,
    predict_proba,
    to_float,
)
from medtransfer.train.callbacks import (
    TRAIN_METRICS,
    Callback,
    CSVLogger,
    EarlyStopping,
    EarlyStoppingConfig,
    ProgressBar,
    StopReason,
    TrainState,
    require_metric,
)
from medtransfer.train.config import ClassWeight, FitResult, TrainConfig, metric_names
from medtransfer.train.distributed import Replicas
from medtransfer.train.model_checkpoint import ModelCheckpoint
from medtransfer.train.optim import (
    SchedulerName,
    build_optimizer,
    build_scheduler,
    step_scheduler,
)

__all__ = [
    "ClassWeight",
    "EarlyStoppingConfig",
    "FitResult",
    "Sampling",
    "TrainConfig",
    "fit",
    "metric_names",
    "predict_proba",
]

Augment = Callable[[Tensor, torch.Generator], Tensor]


def _class_weights(
    kind: ClassWeight, labels: np.ndarray, num_classes: int, dev: torch.device
) -> Tensor | None:
    if kind is ClassWeight.none:
        return None
    missing = np.flatnonzero(np.bincount(labels, minlength=num_classes) == 0).tolist()
    if missing:
        raise DataError(
            f"class_weight 'balanced': class(es) {missing} have no training samples; "
            "every class must occur in the training labels"
        )
    w = compute_class_weight("balanced", classes=np.arange(num_classes), y=labels)
    return torch.tensor(w, dtype=torch.float32, device=dev)


@contextlib.contextmanager
def _seeded(dev: torch.device, seed: int) -> Iterator[None]:
    """Seed the global RNGs dropout draws from, restoring the caller's state afterwards."""
    cuda = []
    if dev.type == "cuda":
        cuda = [dev.index if dev.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda, device_type="cuda" if cuda else None):
        # Not torch.manual_seed: that would also reseed (unforked) CUDA devices.
        torch.random.default_generator.manual_seed(seed)
        for index in cuda:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


def _metrics(prefix: str, loss: float, labels: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    m = compute_metrics(labels, proba)
    return {f"{prefix}{k}": v for k, v in (("loss", loss), *((k, m[k]) for k in TRAIN_METRICS[1:]))}


def fit(
    model: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray] | None,
    cfg: TrainConfig,
    *,
    seed: int,
    out_dir: str | Path,
    num_classes: int,
    augment: Augment | None = None,
    input_norm: InputNorm | None = None,
    device: str | torch.device = "cpu",
    train_mode: Callable[[nn.Module], None] | None = None,
    config_for_checkpoint: dict[str, Any] | None = None,
    callbacks: Sequence[Callback] = (),
) -> FitResult:
    """Train ``model`` (which outputs logits) on uint8/uint16 (N, C, H, W) images.

    Writes ``history.csv``, ``last.pt`` and ``best.pt`` to ``out_dir``. The same seed on the CPU
    gives bitwise-identical history and weights; the caller's global RNG state is left untouched.
    ``augment(batch, generator)`` gets [0, 1] floats on ``device`` and a generator on ``device``.
    A non-finite training or validation loss ends training before that epoch is recorded
    (``StopReason.non_finite_loss``). On Ctrl-C the current weights are saved to ``last.pt``
    (``extra.partial_epoch``), callbacks' ``on_fit_end`` run, and the KeyboardInterrupt is
    re-raised so that a study stops rather than moving on. The model is left in eval mode, with
    the best weights loaded if ``cfg.restore_best``. ``val_loss`` ignores class weights (as Keras).
    ``callbacks`` run after the built-in CSV log, checkpoints, early stopping and progress bar.
    Under torchrun with an initialized process group, fit trains with DDP (each process takes its
    share of every batch; only rank 0 writes files): see :mod:`medtransfer.train.distributed`.
    """
    t0 = time.perf_counter()
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed: got {seed!r}; allowed: an integer >= 0")
    if num_classes < 2:
        raise ConfigError(f"num_classes: got {num_classes!r}; allowed: an integer >= 2")
    x_train, y_train = check_split("train", train, num_classes)
    val_split = None if val is None else check_split("val", val, num_classes)
    channels = x_train.shape[1]
    if val_split is not None and val_split[0].shape[1:] != x_train.shape[1:]:
        raise DataError(
            f"val images have shape {val_split[0].shape[1:]} per image, train {x_train.shape[1:]}"
        )
    dev = torch.device(device)
    mean, std = input_norm_tensors(input_norm, channels, dev)
    out_dir = Path(out_dir)
    model.to(dev)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ConfigError("fit: the model has no trainable parameters (requires_grad is False)")
    optimizer = build_optimizer(trainable, cfg.optimizer)
    scheduler = build_scheduler(optimizer, cfg.scheduler, cfg.epochs)

    # Fail before the first epoch, not after it, when a monitor names an unlogged metric.
    logged = dict.fromkeys(metric_names(val_split is not None), math.nan)
    require_metric("checkpoint_monitor", cfg.checkpoint_monitor, logged)
    if cfg.early_stopping is not None:
        require_metric("early_stopping.monitor", cfg.early_stopping.monitor, logged)
    if cfg.scheduler.name is SchedulerName.plateau:
        require_metric("scheduler.monitor", cfg.scheduler.monitor, logged)

    weights = _class_weights(cfg.class_weight, y_train, num_classes, dev)
    reps = Replicas.current()
    every = "epoch" if cfg.checkpoint_every == "auto" else cfg.checkpoint_every
    ckpt = ModelCheckpoint(out_dir, cfg.checkpoint_monitor, cfg.checkpoint_mode, every=every,
                           write_files=reps.is_main)
    builtin: list[Callback] = [CSVLogger(out_dir / "history.csv"), ckpt] if reps.is_main else [ckpt]
    if cfg.early_stopping is not None:
        builtin.append(EarlyStopping.from_config(cfg.early_stopping))
    cbs = [*builtin, ProgressBar(cfg.progress and reps.is_main), *callbacks]
    state = TrainState(
        model=model,
        optimizer=optimizer,
        out_dir=out_dir,
        max_epochs=cfg.epochs,
        batches_per_epoch=math.ceil(epoch_size(y_train, cfg.sampling) / cfg.batch_size),
        checkpoint_config=(
            {"train": to_dict(cfg)} if config_for_checkpoint is None else config_for_checkpoint
        ),
        checkpoint_extra={
            "seed": seed,
            "num_classes": num_classes,
            "input_norm": None if input_norm is None else [list(v) for v in input_norm],
        },
    )
    shuffle_seed, augment_seed, torch_seed = np.random.SeedSequence(seed).generate_state(3).tolist()
    shuffle_gen = torch.Generator().manual_seed(shuffle_seed)
    augment_gen = torch.Generator(device=dev).manual_seed(augment_seed)
    timing = {"seconds": 0.0, "images": 0.0}  # training steps only
    net = reps.wrap(model, dev)

    def train_input(batch: np.ndarray, rows: slice) -> Tensor:
        if augment is None:
            return (to_float(x_train[batch[rows]], dev) - mean) / std
        # The whole (global) batch: with DDP each image gets the augmentation one process gives it.
        return (augment(to_float(x_train[batch], dev), augment_gen)[rows] - mean) / std

    def on_batch(loss: float, n: int) -> None:
        timing["images"] += n
        for cb in cbs:
            cb.on_train_batch_end(state, loss, n)

    def run_epoch() -> dict[str, float] | None:
        """The epoch's history row, or None if a loss or prediction was not finite."""
        metrics = {"lr": float(optimizer.param_groups[0]["lr"])}
        t = time.perf_counter()
        (train_mode or nn.Module.train)(model)
        order = epoch_order(y_train, cfg.sampling, shuffle_gen)
        out = _train_epoch(net, optimizer, y_train, order, cfg.batch_size, dev,
                           num_classes, weights, train_input, on_batch, reps)
        timing["seconds"] += time.perf_counter() - t
        if out is None:
            return None
        reps.sync_buffers(model)
        metrics.update(_metrics("", *out))
        if val_split is not None:
            val_loss, val_proba = _evaluate(model, val_split, cfg.batch_size, dev, num_classes,
                                            lambda x: (x - mean) / std, reps)
            if not (math.isfinite(val_loss) and np.isfinite(val_proba).all()):
                return None
            metrics.update(_metrics("val_", val_loss, val_split[1], val_proba))
        return metrics

    in_epoch = False
    with _seeded(dev, reps.seed(torch_seed)):
        try:
            for cb in cbs:
                cb.on_fit_start(state)
            while state.epoch < cfg.epochs and not state.should_stop:
                state.epoch += 1
                for cb in cbs:
                    cb.on_epoch_start(state)
                in_epoch = True
                metrics = run_epoch()
                if metrics is None:
                    state.should_stop, state.stop_reason = True, StopReason.non_finite_loss
                    break
                state.history.append(metrics)
                for cb in cbs:
                    cb.on_epoch_end(state, metrics)
                in_epoch = False
                step_scheduler(scheduler, cfg.scheduler, metrics)
            for cb in cbs:
                cb.on_fit_end(state)
        except KeyboardInterrupt:
            state.should_stop, state.stop_reason = True, StopReason.interrupted
            ckpt.write_last(
                state,
                state.history[-1] if state.history else {},
                extra={"stop_reason": StopReason.interrupted.value, "partial_epoch": in_epoch},
                epoch=len(state.history),
            )
            for cb in cbs:
                cb.on_fit_end(state)
            raise
        finally:
            for cb in cbs:
                cb.teardown(state)

    if cfg.restore_best and ckpt.best_path is not None and reps.is_main:
        model.load_state_dict(ckpt.best_model_state())
    reps.finish(model)  # the other processes take rank 0's weights
    model.eval()
    return FitResult(
        history=state.history,
        stop_reason=state.stop_reason,
        best_epoch=ckpt.best_epoch,
        best_metric=ckpt.best,
        best_path=ckpt.best_path,
        last_path=ckpt.last_path,
        seconds=time.perf_counter() - t0,
        images_per_second=(
            timing["images"] / timing["seconds"] if timing["seconds"] > 0 else math.nan
        ),
    )


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    labels: np.ndarray,
    order: np.ndarray,
    batch_size: int,
    dev: torch.device,
    num_classes: int,
    weights: Tensor | None,
    train_input: Callable[[np.ndarray, slice], Tensor],
    on_batch: Callable[[float, int], None],
    reps: Replicas,
) -> tuple[float, np.ndarray, np.ndarray] | None:
    """One pass in ``order``: (weighted mean loss, labels, probabilities as predicted during the
    epoch), or None as soon as a batch's loss or probabilities are not finite (before stepping).
    With DDP, this process trains on its rows of each batch (see ``Replicas.batch_loss``)."""
    class_w = None if weights is None or not reps.active else weights.double().cpu().numpy()
    loss_sum, weight_sum = 0.0, 0.0
    probas: list[np.ndarray] = []
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        rows, real = reps.rows(len(batch))
        yb = torch.from_numpy(labels[batch[rows]]).to(dev)
        optimizer.zero_grad(set_to_none=True)
        losses, proba = loss_and_proba(model(train_input(batch, rows)), yb, num_classes)
        wb = torch.ones_like(losses) if weights is None else weights[yb]
        batch_w = float(len(batch)) if class_w is None else float(class_w[labels[batch]].sum())
        step = reps.batch_loss(losses, wb, proba, real, batch_w)
        if step is None:
            return None
        loss, batch_sum, batch_w, batch_loss = step
        loss.backward()
        optimizer.step()
        loss_sum += batch_sum
        weight_sum += batch_w
        probas.append(proba.detach().cpu().numpy()[: len(proba) if real else 0])
        on_batch(batch_loss, len(batch))
    return loss_sum / weight_sum, labels[order], reps.gather_batches(probas)


def _evaluate(
    model: nn.Module,
    split: tuple[np.ndarray, np.ndarray],
    batch_size: int,
    dev: torch.device,
    num_classes: int,
    prepare: Callable[[Tensor], Tensor],
    reps: Replicas,
) -> tuple[float, np.ndarray]:
    """Unweighted mean loss and (N, K) probabilities, in eval mode without gradients; with DDP
    each process evaluates its rows and all get the gathered result."""
    images, labels = split
    model.eval()
    rows, real = reps.rows(len(labels))
    mine = np.arange(len(labels))[rows] if real else np.arange(0)
    loss_sum, probas = 0.0, []
    with torch.no_grad():
        for idx, xb in batches(images, mine, batch_size, dev):
            yb = torch.from_numpy(labels[idx]).to(dev)
            losses, proba = loss_and_proba(model(prepare(xb)), yb, num_classes)
            loss_sum += float(losses.sum())
            probas.append(proba.cpu().numpy())
    return reps.gather_eval(loss_sum, probas, len(labels))
