"""Optional experiment tracking: TensorBoard event files and MLflow runs, as training callbacks.

Off by default. ``tracking: {tensorboard: true}`` writes event files into each unit's
``tensorboard/`` folder (``tensorboard --logdir RUN_DIR/units``); ``tracking: {mlflow: true}``
logs each unit as an MLflow run — its parameters (the unit's spec), per-epoch metrics and
``history.csv`` — to ``mlflow_uri`` (default: a SQLite store ``RUN_DIR/mlflow.db``, artifacts
beside it), in the experiment named like the study. The results never depend on tracking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtransfer.errors import ConfigError
from medtransfer.train.callbacks import Callback, TrainState

__all__ = ["MLflowLogger", "TensorBoardLogger", "TrackingConfig", "flat_params", "unit_callbacks"]


@dataclass(frozen=True)
class TrackingConfig:
    tensorboard: bool = False  # event files in each unit's tensorboard/ folder
    mlflow: bool = False  # log params, metrics and artifacts to an MLflow tracking store
    mlflow_uri: str | None = None  # e.g. sqlite:///mlflow.db or http://host:5000
    experiment: str | None = None  # default: the study's name

    @property
    def enabled(self) -> bool:
        return self.tensorboard or self.mlflow


def _require(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"'tracking': {module} is not installed; pip install 'medtransfer[{extra}]' "
                          "or switch it off") from None


def flat_params(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested config data as ``a.b.c: value`` strings (MLflow params are flat strings)."""
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for k, v in data.items():
            out.update(flat_params(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): str(data)[:500]}


class TensorBoardLogger(Callback):
    """Every epoch's metrics as scalars (train and ``val_`` ones side by side)."""

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self.writer: Any = None

    def on_fit_start(self, state: TrainState) -> None:
        _require("tensorboard", "tracking")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.log_dir))

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            if math.isfinite(value):
                group = "val" if key.startswith("val_") else "train"
                self.writer.add_scalar(f"{key.removeprefix('val_')}/{group}", value, state.epoch)
        self.writer.flush()

    def teardown(self, state: TrainState) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class MLflowLogger(Callback):
    """One MLflow run per fit: params at the start, metrics per epoch, history.csv at the end."""

    def __init__(self, uri: str, experiment: str, run_name: str, params: dict[str, Any],
                 artifacts: Path | None = None) -> None:
        self.uri, self.experiment, self.run_name, self.params = uri, experiment, run_name, params
        self.artifacts = artifacts
        self.client: Any = None
        self.run_id: str | None = None

    def on_fit_start(self, state: TrainState) -> None:
        mlflow = _require("mlflow", "tracking")
        self.client = mlflow.MlflowClient(tracking_uri=self.uri)
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            exp_id = exp.experiment_id
        else:  # artifacts beside the store, not in ./mlruns of whatever the working directory is
            where = self.artifacts.resolve().as_uri() if self.artifacts is not None else None
            exp_id = self.client.create_experiment(self.experiment, artifact_location=where)
        run = self.client.create_run(exp_id, run_name=self.run_name)
        self.run_id = run.info.run_id
        for key, value in flat_params(self.params).items():
            self.client.log_param(self.run_id, key, value)

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            if math.isfinite(value):
                self.client.log_metric(self.run_id, key, value, step=state.epoch)

    def on_fit_end(self, state: TrainState) -> None:
        history = state.out_dir / "history.csv"
        if history.is_file():
            self.client.log_artifact(self.run_id, str(history))
        self.client.set_tag(self.run_id, "stop_reason", state.stop_reason.value)
        self.client.set_terminated(self.run_id, "FINISHED")

    def teardown(self, state: TrainState) -> None:
        if self.run_id is not None and self.client is not None:
            run = self.client.get_run(self.run_id)
            if run.info.status == "RUNNING":  # fit raised: say so rather than leave it running
                self.client.set_terminated(self.run_id, "FAILED")


def default_uri(run_dir: Path) -> str:
    return f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"


def unit_callbacks(cfg: TrackingConfig, *, run_dir: Path, unit_dir: Path, study: str, name: str,
                   params: dict[str, Any]) -> list[Callback]:
    """The tracking callbacks ``cfg`` asks for, for one unit's fit (none when off)."""
    out: list[Callback] = []
    if cfg.tensorboard:
        out.append(TensorBoardLogger(unit_dir / "tensorboard"))
    if cfg.mlflow:
        out.append(MLflowLogger(cfg.mlflow_uri or default_uri(run_dir), cfg.experiment or study, name,
                                params, artifacts=None if cfg.mlflow_uri else run_dir / "mlartifacts"))
    return out
