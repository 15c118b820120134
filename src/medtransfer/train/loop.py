"""The training loop: seeded, per-epoch metrics like Keras, checkpoints and a CSV history."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch import Tensor, nn

from medtransfer.config import to_dict
from medtransfer.data.sampling import Sampling, epoch_order, epoch_size
from medtransfer.errors import ConfigError, DataError
from medtransfer.evaluate import compute_metrics
from medtransfer.sigmoid_pair import has_sigmoid_pair
from medtransfer.train.allocator import tune_allocator
from medtransfer.train.batches import check_labels, loss_and_proba, predict_proba
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
from medtransfer.train.compiled import compile_model
from medtransfer.train.config import ClassWeight, FitResult, TrainConfig, metric_names
from medtransfer.train.distributed import Replicas
from medtransfer.train.env import TrainEnv
from medtransfer.train.model_checkpoint import ModelCheckpoint
from medtransfer.train.optim import (
    SchedulerName,
    build_optimizer,
    build_scheduler,
    step_scheduler,
)
from medtransfer.train.precision import Amp, resolve_precision
from medtransfer.train.resume import Resumable, data_check, find_resume
from medtransfer.train.sources import Arrays, Augment, BatchSource, ImageBatches

__all__ = [
    "ClassWeight",
    "EarlyStoppingConfig",
    "FitResult",
    "Sampling",
    "TrainConfig",
    "TrainEnv",
    "fit",
    "metric_names",
    "predict_proba",
]

log = logging.getLogger(__name__)


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


def _fp32(logits: Tensor) -> Tensor:
    """Logits in float32 (the same tensor when they already are): losses stay exact."""
    return logits if logits.dtype == torch.float32 else logits.float()


@contextlib.contextmanager
def _cudnn(dev: torch.device, deterministic: bool) -> Iterator[None]:
    """On CUDA, cuDNN deterministic (default) or benchmarking for the block; nothing elsewhere."""
    if dev.type != "cuda":
        yield
        return
    backend = torch.backends.cudnn
    saved = backend.benchmark, backend.deterministic
    backend.benchmark, backend.deterministic = not deterministic, deterministic
    try:
        yield
    finally:
        backend.benchmark, backend.deterministic = saved


def _cuda_index(dev: torch.device) -> list[int]:
    """The CUDA device whose generator ``dev`` draws from (none off CUDA)."""
    if dev.type != "cuda":
        return []
    return [dev.index if dev.index is not None else torch.cuda.current_device()]


@contextlib.contextmanager
def _seeded(dev: torch.device, seed: int) -> Iterator[None]:
    """Seed the global RNGs dropout draws from, restoring the caller's state afterwards."""
    cuda = _cuda_index(dev)
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
    train: Arrays | BatchSource,
    val: Arrays | BatchSource | None,
    cfg: TrainConfig,
    env: TrainEnv,
    *,
    augment: Augment | None = None,
    train_mode: Callable[[nn.Module], None] | None = None,
    resume: bool = False,
) -> FitResult:
    """Train ``model`` (which outputs logits) on uint8/uint16 (N, C, H, W) images, or on any
    :class:`~medtransfer.train.sources.BatchSource` (e.g. cached activations).

    Writes ``history.csv``, ``last.pt`` and ``best.pt`` to ``env.out_dir``. The same seed on the
    CPU gives bitwise-identical history and weights; the caller's global RNG state is left
    untouched. ``augment(batch, generator)`` gets [0, 1] floats on the device and a generator
    there (image arrays only). A non-finite training or validation loss ends training before
    that epoch is recorded (``StopReason.non_finite_loss``). On Ctrl-C the current weights are
    saved to ``last.pt`` (``extra.partial_epoch``), callbacks' ``on_fit_end`` run, and the
    KeyboardInterrupt is re-raised so that a study stops rather than moving on. The model is
    left in eval mode, with the best weights loaded if ``cfg.restores_best``. ``val_loss``
    ignores class weights (as Keras); under ``cfg.compat: keras`` a class-weighted training loss
    is divided by the batch size, as Keras's ``sum_over_batch_size``. ``env.callbacks`` run
    after the built-in CSV log, checkpoints, early stopping and progress bar. Under torchrun
    with an initialized process group, fit trains with DDP (each process takes its share of every
    batch; only rank 0 writes files): see :mod:`medtransfer.train.distributed`.

    Each epoch's ``last.pt`` (``checkpoint_every: epoch``) also holds what a resume needs:
    scheduler, random generators, history and callback states. With ``resume``, a ``last.pt``
    in ``env.out_dir`` written by this same training (config, seed, device and labels) is
    continued from its epoch, bitwise as if never interrupted (CPU, fp32); one that does not
    match is trained afresh, with a warning (see :mod:`medtransfer.train.resume`). Under
    ``resume``, Ctrl-C leaves ``last.pt`` at the last finished epoch, to resume from.
    """
    t0 = time.perf_counter()
    tune_allocator()
    train_src = _source("train", train, env, augment)
    val_src = None if val is None else _source("val", val, env, None)
    if val_src is not None and val_src.sample_shape != train_src.sample_shape:
        raise DataError(
            f"val images have shape {val_src.sample_shape} per image, train {train_src.sample_shape}"
        )
    run = _Fit(model, train_src, val_src, cfg, env, train_mode, resume)
    run.loop()
    return run.result(t0)


def _source(name: str, data: Arrays | BatchSource, env: TrainEnv,
            augment: Augment | None) -> BatchSource:
    if isinstance(data, tuple | list):
        return ImageBatches(name, data, env.num_classes, env.device, augment=augment,
                            input_norm=env.input_norm)
    if augment is not None:
        raise ConfigError("fit: augment applies to image arrays; give it to the batch source")
    check_labels(name, data.labels, env.num_classes)
    return data


def _check_monitors(cfg: TrainConfig, has_val: bool) -> None:
    """Fail before the first epoch, not after it, when a monitor names an unlogged metric."""
    logged = dict.fromkeys(metric_names(has_val), math.nan)
    require_metric("checkpoint_monitor", cfg.checkpoint_monitor, logged)
    if cfg.early_stopping is not None:
        require_metric("early_stopping.monitor", cfg.early_stopping.monitor, logged)
    if cfg.scheduler.name is SchedulerName.plateau:
        require_metric("scheduler.monitor", cfg.scheduler.monitor, logged)


def _callbacks(cfg: TrainConfig, env: TrainEnv, reps: Replicas) -> tuple[ModelCheckpoint, list[Callback]]:
    """The checkpointer, and every callback in the order they run (built-in ones first)."""
    every = "epoch" if cfg.checkpoint_every == "auto" else cfg.checkpoint_every
    ckpt = ModelCheckpoint(env.out_dir, cfg.checkpoint_monitor, cfg.checkpoint_mode, every=every,
                           write_files=reps.is_main)
    builtin: list[Callback] = [CSVLogger(env.out_dir / "history.csv"), ckpt] if reps.is_main else [ckpt]
    if cfg.early_stopping is not None:
        builtin.append(EarlyStopping.from_config(cfg.early_stopping))
    return ckpt, [*builtin, ProgressBar(cfg.progress and reps.is_main), *env.callbacks]


class _Fit:
    """One fit's moving parts: optimizer, callbacks, generators and the epoch loop."""

    def __init__(self, model: nn.Module, train: BatchSource, val: BatchSource | None,
                 cfg: TrainConfig, env: TrainEnv,
                 train_mode: Callable[[nn.Module], None] | None, resume: bool = False) -> None:
        self.model, self.train, self.val, self.cfg, self.env = model, train, val, cfg, env
        self.train_mode = train_mode or nn.Module.train
        self.sigmoid_pair = has_sigmoid_pair(model)  # its loss: binary cross-entropy per output
        dev = env.device
        self.amp: Amp = resolve_precision(cfg.precision, dev, "train.precision")
        self.scaler = self.amp.scaler()
        model.to(dev)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        if cfg.compile:
            compile_model(model, dev)
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise ConfigError("fit: the model has no trainable parameters (requires_grad is False)")
        self.optimizer = build_optimizer(trainable, cfg.optimizer, cfg.compat, model=model)
        self.scheduler = build_scheduler(self.optimizer, cfg.scheduler, cfg.epochs, cfg.compat)
        _check_monitors(cfg, val is not None)
        self.weights = _class_weights(cfg.class_weight, train.labels, env.num_classes, dev)
        self.reps = Replicas.current()
        self.ckpt, self.callbacks = _callbacks(cfg, env, self.reps)
        self.state = TrainState(
            model=model,
            optimizer=self.optimizer,
            out_dir=env.out_dir,
            max_epochs=cfg.epochs,
            batches_per_epoch=math.ceil(epoch_size(train.labels, cfg.sampling) / cfg.batch_size),
            checkpoint_config=(
                {"train": to_dict(cfg)} if env.checkpoint_config is None else env.checkpoint_config
            ),
            checkpoint_extra={
                "seed": env.seed,
                "num_classes": env.num_classes,
                "input_norm": None if env.input_norm is None else [list(v) for v in env.input_norm],
            },
        )
        shuffle_seed, augment_seed, self.torch_seed = (
            np.random.SeedSequence(env.seed).generate_state(3).tolist())
        self.shuffle_gen = torch.Generator().manual_seed(shuffle_seed)
        self.augment_gen = torch.Generator(device=dev).manual_seed(augment_seed)
        self.seconds, self.images = 0.0, 0.0  # training steps only
        self.net = self.reps.wrap(model, dev)
        self.ckpt.defer_last = self.ckpt.every == "epoch"  # last.pt once the epoch is over
        self.parts = Resumable(self.state, model, self.optimizer, self.scheduler, self.scaler,
                               {"shuffle": self.shuffle_gen, "augment": self.augment_gen}, _cuda_index(dev),
                               data_check(env.seed, dev, {"train": train.labels,
                                                          "val": None if val is None else val.labels}))
        self.resume = resume and self.ckpt.defer_last
        self.resume_from = find_resume(
            self.ckpt.last_path, config=self.state.checkpoint_config, check=self.parts.check,
            epochs=cfg.epochs, per_epoch=self.ckpt.defer_last, ddp=self.reps.active,
        ) if resume else None

    def loop(self) -> None:
        """Epochs until done, stopped or interrupted, with the callbacks' hooks around them."""
        state, cbs = self.state, self.callbacks
        in_epoch = False
        with _seeded(self.env.device, self.reps.seed(self.torch_seed)), \
                _cudnn(self.env.device, self.cfg.deterministic):
            try:
                if self.resume_from is not None:
                    self.parts.restore(self.resume_from)
                for cb in cbs:
                    cb.on_fit_start(state)
                if self.resume_from is not None:
                    self.parts.resumed(cbs, self.resume_from)
                while state.epoch < self.cfg.epochs and not state.should_stop:
                    state.epoch += 1
                    for cb in cbs:
                        cb.on_epoch_start(state)
                    in_epoch = True
                    metrics = self.run_epoch()
                    if metrics is None:
                        state.should_stop, state.stop_reason = True, StopReason.non_finite_loss
                        break
                    state.history.append(metrics)
                    for cb in cbs:
                        cb.on_epoch_end(state, metrics)
                    in_epoch = False
                    step_scheduler(self.scheduler, self.cfg.scheduler, metrics)
                    if self.ckpt.defer_last and self.reps.is_main:
                        self.ckpt.flush_last(state, self.parts.snapshot(cbs))
                for cb in cbs:
                    cb.on_fit_end(state)
            except KeyboardInterrupt:
                self._interrupted(in_epoch)
                raise
            finally:
                for cb in cbs:
                    cb.teardown(state)

    def _interrupted(self, in_epoch: bool) -> None:
        state = self.state
        state.should_stop, state.stop_reason = True, StopReason.interrupted
        if not self.resume:  # else last.pt stays at the last finished epoch: resumable
            self.ckpt.write_last(
                state,
                state.history[-1] if state.history else {},
                extra={"stop_reason": StopReason.interrupted.value, "partial_epoch": in_epoch},
                epoch=len(state.history),
            )
        for cb in self.callbacks:
            cb.on_fit_end(state)

    def run_epoch(self) -> dict[str, float] | None:
        """The epoch's history row, or None if a loss or prediction was not finite."""
        metrics = {"lr": float(self.optimizer.param_groups[0]["lr"])}
        t = time.perf_counter()
        self.train_mode(self.model)
        order = epoch_order(self.train.labels, self.cfg.sampling, self.shuffle_gen)
        out = self._train_epoch(order)
        self.seconds += time.perf_counter() - t
        if out is None:
            return None
        self.reps.sync_buffers(self.model)
        metrics.update(_metrics("", *out))
        if self.val is not None:
            val_loss, val_proba = self._evaluate(self.val)
            if not (math.isfinite(val_loss) and np.isfinite(val_proba).all()):
                return None
            metrics.update(_metrics("val_", val_loss, self.val.labels, val_proba))
        return metrics

    def _train_epoch(self, order: np.ndarray) -> tuple[float, np.ndarray, np.ndarray] | None:
        """One pass in ``order``: (weighted mean loss, labels, probabilities as predicted during
        the epoch), or None as soon as a batch's loss or probabilities are not finite (before
        stepping). With DDP, this process trains on its rows of each batch (see
        ``Replicas.batch_loss``)."""
        labels, weights, reps, dev = self.train.labels, self.weights, self.reps, self.env.device
        keras_mean = self.cfg.keras and weights is not None  # Keras: sum(w·loss) / batch size
        class_w = None if weights is None or not reps.active or keras_mean else weights.double().cpu().numpy()
        loss_sum, weight_sum = 0.0, 0.0
        probas: list[np.ndarray] = []
        for start in range(0, len(order), self.cfg.batch_size):
            batch = order[start : start + self.cfg.batch_size]
            rows, real = reps.rows(len(batch))
            yb = torch.from_numpy(labels[batch[rows]]).to(dev)
            self.optimizer.zero_grad(set_to_none=True)
            logits = self._forward(self.net, self.train.train_batch(batch, rows, self.augment_gen))
            losses, proba = loss_and_proba(logits, yb, self.env.num_classes, sigmoid_pair=self.sigmoid_pair)
            wb = torch.ones_like(losses) if weights is None else weights[yb]
            batch_w = float(len(batch)) if class_w is None else float(class_w[labels[batch]].sum())
            step = reps.batch_loss(losses, wb, proba, real, batch_w, per_sample=keras_mean)
            if step is None:
                return None
            loss, batch_sum, batch_w, batch_loss = step
            self._step(loss)
            loss_sum += batch_sum
            weight_sum += batch_w
            probas.append(proba.detach().cpu().numpy()[: len(proba) if real else 0])
            self.images += len(batch)
            for cb in self.callbacks:
                cb.on_train_batch_end(self.state, batch_loss, len(batch))
        return loss_sum / weight_sum, labels[order], reps.gather_batches(probas)

    def _forward(self, net: nn.Module, x: Tensor) -> Tensor:
        """Float32 logits of ``x``: under autocast for bf16/fp16, in NHWC if ``channels_last``."""
        if self.cfg.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.amp.autocast():
            logits = net(x)
        return _fp32(logits)

    def _step(self, loss: Tensor) -> None:
        """Backward and optimizer step; through the gradient scaler for fp16."""
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def _evaluate(self, source: BatchSource) -> tuple[float, np.ndarray]:
        """Unweighted mean loss and (N, K) probabilities, in eval mode without gradients; with
        DDP each process evaluates its rows and all get the gathered result."""
        labels, size = source.labels, self.cfg.batch_size
        self.model.eval()
        rows, real = self.reps.rows(len(labels))
        mine = np.arange(len(labels))[rows] if real else np.arange(0)
        loss_sum, probas = 0.0, []
        with torch.no_grad():
            for start in range(0, len(mine), size):
                idx = mine[start : start + size]
                yb = torch.from_numpy(labels[idx]).to(self.env.device)
                losses, proba = loss_and_proba(self._forward(self.model, source.eval_batch(idx)), yb,
                                               self.env.num_classes, sigmoid_pair=self.sigmoid_pair)
                loss_sum += float(losses.sum())
                probas.append(proba.cpu().numpy())
        return self.reps.gather_eval(loss_sum, probas, len(labels))

    def result(self, t0: float) -> FitResult:
        """Restore the best weights (if asked), leave the model in eval mode, and report. Without
        restoring, ``best.pt`` is removed once training ends: the model is the last epoch's, and
        whatever loads the unit's model later (``best.pt``, else ``last.pt``) gets that one."""
        model, ckpt = self.model, self.ckpt
        best_path = ckpt.best_path
        if self.cfg.restores_best and ckpt.best_path is not None and self.reps.is_main:
            model.load_state_dict(ckpt.best_model_state())
        elif best_path is not None and self.state.stop_reason is not StopReason.interrupted:
            if self.reps.is_main:
                best_path.unlink(missing_ok=True)
            best_path = None
        self.reps.finish(model)  # the other processes take rank 0's weights
        if self.cfg.channels_last:
            model.to(memory_format=torch.contiguous_format)
        model.eval()
        return FitResult(
            history=self.state.history,
            stop_reason=self.state.stop_reason,
            best_epoch=ckpt.best_epoch,
            best_metric=ckpt.best,
            best_path=best_path,
            last_path=ckpt.last_path,
            seconds=time.perf_counter() - t0,
            images_per_second=self.images / self.seconds if self.seconds > 0 else math.nan,
            precision=self.amp.name,
        )
