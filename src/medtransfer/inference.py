"""Use a finished run's model on new images: load an arm's trained network with the preprocessing
it was trained with (size, colour, normalisation, classes), and predict class probabilities for
image files, folders or a CSV of paths.

    model = load_model("runs/my_study", arm="bn")
    rows = predict(["new/xray1.png", "new/folder"], model)
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medtransfer.calibration import PosthocModel
from medtransfer.config import check_device
from medtransfer.csvfile import write_csv
from medtransfer.data import PreprocessConfig
from medtransfer.data.images import IMAGE_EXTENSIONS, ColorMode, decode_image
from medtransfer.errors import ConfigError, DataError, ImageDecodeError
from medtransfer.study.rundir import Arm, NormPair, RunDir, load_run, unit_model, youden_threshold
from medtransfer.study.rundir.unit_result import CellResult, UnitResult
from medtransfer.study.runner import pick_device
from medtransfer.train import predict_proba

__all__ = ["LoadedModel", "expand_paths", "load_model", "predict", "write_predictions"]


@dataclass
class LoadedModel:
    """A trained network with what it needs to be used: classes, preprocessing, normalisation,
    and the threshold chosen on its validation images (binary tasks)."""

    module: nn.Module
    classes: list[str]
    preprocess: PreprocessConfig
    input_norm: NormPair | None
    unit: Path
    arm: str
    target: str
    threshold: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def in_chans(self) -> int:
        return 3 if self.preprocess.color is ColorMode.RGB else 1

    def predict_proba(self, images: np.ndarray, *, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
        """(N, K) probabilities for preprocessed (N, C, H, W) uint8/uint16 images."""
        return predict_proba(self.module, images, batch_size=batch_size, device=device,
                             input_norm=self.input_norm)


def _pick(run: RunDir, arm: str | None, target: str | None) -> Arm:
    targets = list(run.arms)
    if target is None:
        if len(targets) > 1:
            raise ConfigError(f"'target': this run has several targets ({', '.join(targets)}); name one")
        target = targets[0]
    if target not in run.arms:
        raise ConfigError(f"'target': got {target!r}; this run's targets: {', '.join(targets)}")
    arms = run.arms[target]
    if arm is None:
        if len(arms) > 1:
            raise ConfigError(f"'variant': this run has several ({', '.join(a.label for a in arms)}); "
                              "name one")
        return arms[0]
    found = [a for a in arms if a.label == arm]
    if not found:
        raise ConfigError(f"'variant': got {arm!r}; this run's: {', '.join(a.label for a in arms)}")
    return found[0]


def load_model(run_dir: str | Path, *, arm: str | None = None, target: str | None = None,
               fold: int = 1) -> LoadedModel:
    """The trained model of ``arm`` (a variant name, or a matrix arm's label) on ``target``
    (repeat 0; with cross-validation, fold ``fold``)."""
    run = load_run(run_dir)
    chosen = _pick(run, arm, target)
    if not 1 <= fold <= len(chosen.cells):
        raise ConfigError(f"'fold': got {fold}; arm {chosen.label!r} has {len(chosen.cells)} fold(s)")
    unit = chosen.cells[fold - 1]
    classes = run.classes(chosen.target)
    trained = unit_model(run, unit)
    threshold = youden_threshold(run.predictions(chosen)) if len(classes) == 2 else None
    module, posthoc = with_posthoc(trained.module, unit.result)  # the unit's evaluate: TTA / temperature
    return LoadedModel(module, classes, run.config.preprocess, trained.input_norm, unit.dir, chosen.label,
                       chosen.target, threshold, {"run": str(run.path), "spec": unit.spec, **posthoc})


def with_posthoc(module: nn.Module, result: UnitResult) -> tuple[nn.Module, dict[str, Any]]:
    """``module`` with the TTA and temperature its unit was evaluated with (result.json's
    ``posthoc``), and that record; as it is when the unit has none."""
    record = result.posthoc if isinstance(result, CellResult) else None
    if not isinstance(record, dict):
        return module, {}
    wrapped = PosthocModel(module, record.get("tta") or (), float(record.get("temperature", 1.0)))
    return wrapped.eval(), {"posthoc": record}


def expand_paths(items: Iterable[str | Path]) -> list[Path]:
    """Image files from files, folders (searched recursively, sorted) and CSVs (a ``path``
    column, relative to the CSV's folder)."""
    out: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            out += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        elif item.suffix.lower() == ".csv":
            with item.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                if "path" not in (reader.fieldnames or []):
                    raise DataError(f"{item}: needs a 'path' column; has {reader.fieldnames}")
                out += [(item.parent / row["path"]) for row in reader]
        elif item.exists():
            out.append(item)
        else:
            raise DataError(f"{item}: no such file or folder")
    return out


def predict(paths: Sequence[str | Path], model: LoadedModel, *, use_threshold: bool = False,
            batch_size: int = 64, device: str = "auto",
            cam_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per image: ``path``, ``predicted``, ``p_<class>`` per class, the ``threshold``
    used (binary: 0.5, or the validation-chosen one with ``use_threshold``) and ``error`` (an
    unreadable image gets its reason and no prediction; the others are still predicted). With
    ``cam_dir``, a Grad-CAM overlay per image for its predicted class (column ``cam``).
    ``device``: auto (CUDA where available, else CPU), cpu, cuda, cuda:N or mps;
    ``batch_size`` images go through the network at once."""
    if batch_size < 1:
        raise ConfigError(f"'batch_size': got {batch_size!r}; expected an integer >= 1")
    check_device("device", device)
    dev = pick_device(device)
    ready: dict[str, Callable[[], bool]] = {"cuda": torch.cuda.is_available,
                                            "mps": torch.backends.mps.is_available}
    if dev.type in ready and not ready[dev.type]():
        raise ConfigError(f"'device': got {device!r}, but this machine has no {dev.type.upper()} device "
                          "torch can use; use auto or cpu")
    files = expand_paths(paths)
    arrays: list[np.ndarray] = []
    ok: list[int] = []
    rows: list[dict[str, Any]] = []
    for k, path in enumerate(files):
        rows.append({"path": str(path), "predicted": "", **{f"p_{c}": "" for c in model.classes},
                     "threshold": "", "error": "", **({"cam": ""} if cam_dir is not None else {})})
        try:
            arrays.append(decode_image(path, model.preprocess))
            ok.append(k)
        except ImageDecodeError as exc:
            rows[-1]["error"] = str(exc)
    if not arrays:
        return rows
    wide = any(a.dtype == np.uint16 for a in arrays)
    batch = np.stack([a.astype(np.uint16) * 257 if wide and a.dtype == np.uint8 else a for a in arrays])
    proba = model.predict_proba(batch, batch_size=batch_size, device=str(dev))
    model.module.cpu()  # Grad-CAM and later calls take CPU tensors
    binary = len(model.classes) == 2
    threshold = model.threshold if use_threshold and model.threshold is not None else 0.5
    labels = [int(p[1] >= threshold) if binary else int(np.argmax(p)) for p in proba]
    for k, p, label in zip(ok, proba, labels, strict=True):
        rows[k].update({f"p_{c}": float(q) for c, q in zip(model.classes, p, strict=True)},
                       predicted=model.classes[label], threshold=threshold if binary else "")
    if cam_dir is not None:
        _write_cams(Path(cam_dir), model, batch, labels, [rows[k] for k in ok])
    return rows


def _write_cams(out: Path, model: LoadedModel, batch: np.ndarray, labels: list[int],
                rows: list[dict[str, Any]]) -> None:
    from PIL import Image

    from medtransfer.explain import cam_maps, overlay

    out.mkdir(parents=True, exist_ok=True)
    net = model.module.net if isinstance(model.module, PosthocModel) else model.module  # maps of one view
    maps = cam_maps(net, batch, method="gradcam", target=labels, input_norm=model.input_norm)
    for k, (row, picture) in enumerate(zip(rows, overlay(batch, maps), strict=True)):
        # Numbered: images of one name in different folders must not overwrite each other.
        path = out / f"{k:05d}_{Path(row['path']).stem}_gradcam.png"
        Image.fromarray(picture).save(path)
        row["cam"] = str(path)


def write_predictions(rows: list[dict[str, Any]], out: str | Path) -> Path:
    """``predict``'s rows as CSV (probabilities with 6 significant digits; paths, classes and
    messages formula-safe: a cell a spreadsheet would run gets a leading ``'``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_csv(out, rows, list(rows[0]) if rows else ["path"])
