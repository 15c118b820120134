"""The one way to rebuild a unit's trained model: its architecture from the unit's spec, its
weights from the checkpoint its ``result.json`` vouches for (checked first), and the input
normalisation it was trained with. A ``features`` unit is its saved backbone, the strategy's
layer and pooling, and its classifier (the MLP head's checkpoint, or scikit-learn's arrays)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from medtransfer.config import from_dict
from medtransfer.errors import DataError
from medtransfer.models import ModelConfig, build_model
from medtransfer.strategies.config import FeaturesStrategy
from medtransfer.strategies.features import MLPHead, layer_features
from medtransfer.strategies.linear_head import FeatureModel, load_head
from medtransfer.study.rundir.layout import BACKBONE, CLASSIFIER, UNIT_SPEC
from medtransfer.study.rundir.run import RunDir
from medtransfer.study.rundir.unit import REDO, UnitInfo
from medtransfer.study.rundir.unit_result import CellResult, NormPair
from medtransfer.train.checkpoint import load_checkpoint

__all__ = ["TrainedModel", "is_features", "unit_model"]


@dataclass
class TrainedModel:
    """A unit's trained network (in eval mode) and the input normalisation it expects."""

    module: nn.Module
    input_norm: NormPair | None


def is_features(unit: UnitInfo) -> bool:
    """Whether the unit is a ``features`` cell (a classifier on frozen features)."""
    return isinstance(unit.result, CellResult) and unit.result.strategy_kind == "features"


def _network(unit: UnitInfo, num_classes: int, in_chans: int, img_size: int) -> tuple[nn.Module, ModelConfig]:
    """The unit's architecture, untrained (built without touching the global random generator)."""
    cfg = from_dict(ModelConfig, unit.spec.get("model", {}), f"{unit.dir.name}/{UNIT_SPEC} spec.model")
    with torch.random.fork_rng(devices=[]):
        return build_model(cfg, num_classes=num_classes, in_chans=in_chans, img_size=img_size), cfg


def _num_classes(run: RunDir, unit: UnitInfo) -> int:
    return len(unit.result.classes) if unit.kind == "pretrain" else len(run.classes(str(unit.job["target"])))


def unit_model(run: RunDir, unit: UnitInfo, *, in_chans: int | None = None,
               backbone_only: bool = False) -> TrainedModel:
    """The trained model of ``unit`` (a pretraining or a cell of ``run``); with
    ``backbone_only``, a features unit's backbone alone (the network it took features from)."""
    num_classes = _num_classes(run, unit)
    chans = run.config.preprocess.channels if in_chans is None else in_chans
    size = run.config.preprocess.hw[0]
    norm = unit.result.input_norm
    if not is_features(unit):
        model, _ = _network(unit, num_classes, chans, size)
        model.load_state_dict(load_checkpoint(unit.checkpoint)["model_state"])
        return TrainedModel(model.eval(), norm)
    if not unit.has(BACKBONE):
        raise DataError(f"{unit.dir}: no {BACKBONE}; this features unit was made by an earlier version, "
                        "which did not keep its backbone: rerun the study")
    backbone, model_cfg = _network(unit, num_classes, chans, size)
    backbone.load_state_dict(torch.load(unit.file(BACKBONE), map_location="cpu", weights_only=True))
    if backbone_only:
        return TrainedModel(backbone.eval(), norm)
    raw = {k: v for k, v in unit.spec.get("strategy", {}).items() if k != "kind"}
    cfg = from_dict(FeaturesStrategy, raw, f"{unit.dir.name}/{UNIT_SPEC} spec.strategy")
    head: nn.Module
    if cfg.classifier == "mlp":
        strategy = unit.cell.strategy
        dim = int(strategy.extra["features_dim"]) if strategy is not None else 0
        head = MLPHead(dim, model_cfg.outputs(num_classes), cfg.mlp,
                       sigmoid_pair=model_cfg.binary_output == "sigmoid_pair")
        head.load_state_dict(load_checkpoint(unit.checkpoint)["model_state"])
    else:
        if unit.has(CLASSIFIER):
            unit.file(CLASSIFIER)
        elif (unit.dir / CLASSIFIER).is_file():
            raise DataError(f"{unit.dir / CLASSIFIER}: not recorded in the unit's result.json" + REDO)
        head = load_head(unit.dir)
    model = FeatureModel(backbone.eval(), layer_features(backbone, cfg.layer, cfg.pool), head.eval())
    return TrainedModel(model.eval(), norm)
