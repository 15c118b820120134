"""The study config: what to pretrain, on which source, how to transfer, to which target.

Variants (seed 000's baseline / augmentation / dropout / batch norm) are overrides laid over the
shared ``model``, ``pretrain`` and ``transfer`` sections, so each differs only where it says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtransfer.config import ConfigError, deep_merge, from_dict, read_yaml, to_dict
from medtransfer.data import AugmentConfig, DataConfig, PreprocessConfig, SplitConfig
from medtransfer.models import ModelConfig
from medtransfer.train import TrainConfig
from medtransfer.transfer import FreezeConfig, HeadPolicy


@dataclass(frozen=True)
class TaskConfig:
    """A data set and how it is split."""

    data: DataConfig
    split: SplitConfig = field(default_factory=SplitConfig)


@dataclass(frozen=True)
class PretrainConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class TransferConfig:
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    head: HeadPolicy = HeadPolicy.AUTO
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class VariantSpec:
    """One arm of the study: a name and the overrides that make it differ."""

    name: str
    model: dict[str, Any] = field(default_factory=dict)
    pretrain: dict[str, Any] = field(default_factory=dict)
    transfer: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(
                f"'variants': name {self.name!r} must be letters, digits, '-' or '_' (it names folders)"
            )


@dataclass(frozen=True)
class StudyConfig:
    name: str
    source: TaskConfig
    target: TaskConfig
    seed: int = 0
    device: str = "auto"
    cache_dir: Path | None = None
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    variants: list[VariantSpec] = field(default_factory=lambda: [VariantSpec("baseline")])
    audit: bool = True  # audit both data sets (shortcuts, duplicates, leakage) before training

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        if not names:
            raise ConfigError("'variants': the study needs at least one variant")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"'variants': names must be unique; repeated: {', '.join(dupes)}")
        if self.device not in ("auto", "cpu") and not self.device.startswith(("cuda", "mps")):
            raise ConfigError(f"'device': got {self.device!r}; allowed: auto, cpu, cuda, cuda:N, mps")


@dataclass(frozen=True)
class Variant:
    """A variant with every override applied: what actually runs."""

    name: str
    model: ModelConfig
    pretrain: PretrainConfig
    transfer: TransferConfig


def resolve_variants(cfg: StudyConfig) -> list[Variant]:
    base_model, base_pre, base_tr = to_dict(cfg.model), to_dict(cfg.pretrain), to_dict(cfg.transfer)
    out = []
    for i, spec in enumerate(cfg.variants):
        where = f"variants[{i}] ({spec.name})"
        out.append(
            Variant(
                name=spec.name,
                model=from_dict(ModelConfig, deep_merge(base_model, spec.model), f"{where}.model"),
                pretrain=from_dict(
                    PretrainConfig, deep_merge(base_pre, spec.pretrain), f"{where}.pretrain"
                ),
                transfer=from_dict(
                    TransferConfig, deep_merge(base_tr, spec.transfer), f"{where}.transfer"
                ),
            )
        )
    return out


def _resolve_path(value: Any, base: Path) -> Any:
    if isinstance(value, str) and not value.startswith("demo:") and not Path(value).is_absolute():
        return str((base / value).resolve())
    return value


def load_study(path: str | Path, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read a study YAML; relative data paths are taken relative to the YAML file's folder."""
    path = Path(path)
    raw = read_yaml(path)
    if overrides:
        raw = deep_merge(raw, overrides)
    return study_from_dict(raw, base=path.resolve().parent, source_name=str(path))


def study_from_dict(
    raw: dict[str, Any], *, base: Path | None = None, source_name: str = "<config>"
) -> StudyConfig:
    base = base or Path.cwd()
    raw = dict(raw)
    for task in ("source", "target"):
        data = raw.get(task, {}).get("data") if isinstance(raw.get(task), dict) else None
        if isinstance(data, dict) and "path" in data:
            raw[task] = deep_merge(raw[task], {"data": {"path": _resolve_path(data["path"], base)}})
    if isinstance(raw.get("cache_dir"), str):
        raw["cache_dir"] = _resolve_path(raw["cache_dir"], base)
    try:
        cfg = from_dict(StudyConfig, raw)
        resolve_variants(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{source_name}: {exc}") from None
    return cfg
