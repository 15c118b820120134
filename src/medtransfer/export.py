"""Hand a trained model to someone else: ONNX (torch's dynamo exporter) or a ``torch.export``
program (``.pt2``, loaded with ``torch.export.load``), with its preprocessing in a sidecar JSON (and,
for ONNX, in the model's metadata). Both are traced by ``torch.export`` with a dynamic batch size.

The exported graph takes float images in [0, 1], shape (N, C, H, W) at the recorded size and
colour (pixel / 255 for 8-bit, / 65535 for 16-bit files), normalises them itself and returns
class probabilities (N, K) in the order of ``classes``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from medtransfer.config import check_choice
from medtransfer.errors import ConfigError
from medtransfer.fileio import write_text_atomic
from medtransfer.inference import LoadedModel
from medtransfer.model_card import model_card
from medtransfer.train.batches import logits_to_proba
from medtransfer.version import __version__

__all__ = ["FORMATS", "Exportable", "export_model", "model_metadata"]

FORMATS = ("onnx", "pt2")
OPSET = 18  # the dynamo exporter's lowest
# TorchScript (torch.jit.trace) is deprecated by torch; torch.export's .pt2 replaces it
_RENAMED = {"torchscript": "pt2"}


class Exportable(nn.Module):
    """The network with its input normalisation in front and probabilities at the end."""

    def __init__(self, model: LoadedModel) -> None:
        super().__init__()
        self.net = model.module
        mean, std = model.input_norm if model.input_norm is not None else ([0.0], [1.0])
        chans = model.in_chans
        for name, values in (("mean", mean), ("std", std)):
            tensor = torch.tensor(list(values), dtype=torch.float32).expand(chans).reshape(1, -1, 1, 1)
            self.register_buffer(name, tensor.clone())

    mean: Tensor
    std: Tensor

    def forward(self, x: Tensor) -> Tensor:
        return logits_to_proba(self.net((x - self.mean) / self.std))


def model_metadata(model: LoadedModel, fmt: str) -> dict[str, Any]:
    """What a user of the exported file needs to feed it and read its output."""
    height, width = model.preprocess.hw
    norm = model.input_norm
    return {
        "format": fmt, "medtransfer_version": __version__, "classes": model.classes,
        "input": {"name": "image", "shape": ["N", model.in_chans, height, width], "dtype": "float32",
                  "range": "[0, 1]: pixel / 255 (8-bit) or / 65535 (16-bit), after resizing to "
                           f"{height}x{width} (bilinear) as {model.preprocess.color.value}",
                  "colour": model.preprocess.color.value,
                  "percentile_stretch": None if model.preprocess.percentiles is None else {
                      "percentiles": list(model.preprocess.percentiles),
                      "how": "before the division, each resized image's [low, high] percentiles (all "
                             "channels) stretched to the full 8/16-bit range, values outside clipped"},
                  "normalisation_inside_model": None if norm is None else {"mean": list(norm[0]),
                                                                           "std": list(norm[1])}},
        "output": {"name": "probabilities", "shape": ["N", len(model.classes)]},
        "threshold": model.threshold, "threshold_rule": "Youden's J on the unit's validation images"
        if model.threshold is not None else None,
        "positive_class": model.classes[-1] if len(model.classes) == 2 else None,
        "arm": model.arm, "target": model.target, "unit": str(model.unit),
        # inside the graph: probabilities averaged over these test-time transforms, logits / T
        "posthoc": model.info.get("posthoc"),
    }


def export_model(model: LoadedModel, out: str | Path,
                 fmt: Literal["onnx", "pt2"] = "onnx") -> tuple[Path, Path]:
    """Write the model to ``out``, its metadata to ``out`` + ``.json`` and its model card to
    ``<stem>_model_card.md``; returns the model and metadata paths."""
    if fmt in _RENAMED:
        raise ConfigError(f"'format': got {fmt!r}, which torch deprecates (torch.jit.trace); use "
                          f"{_RENAMED[fmt]!r}: a torch.export program, loaded with torch.export.load")
    check_choice("format", fmt, FORMATS)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    wrapper = Exportable(model).eval()
    height, width = model.preprocess.hw
    example = (torch.rand(2, model.in_chans, height, width),)
    batch = {"x": {0: torch.export.Dim("N", min=1)}}  # Exportable.forward's argument
    meta = model_metadata(model, fmt)
    if fmt == "pt2":
        with torch.no_grad():
            torch.export.save(torch.export.export(wrapper, example, dynamic_shapes=batch), str(out))
    else:
        _onnx(wrapper, example, batch, out, meta)
    sidecar = out.with_name(out.name + ".json")
    write_text_atomic(sidecar, json.dumps(meta, indent=2))
    write_text_atomic(out.with_name(f"{out.stem}_model_card.md"), model_card(model))
    return out, sidecar


def _onnx(wrapper: nn.Module, example: tuple[Tensor], batch: dict[str, Any], out: Path,
          meta: dict[str, Any]) -> None:
    try:
        import onnx
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError as exc:
        raise ConfigError(f"format 'onnx' needs the {exc.name} package: pip install "
                          "'medtransfer[export]'") from exc
    program = torch.onnx.export(wrapper, example, input_names=["image"], output_names=["probabilities"],
                                dynamic_shapes=batch, opset_version=OPSET, dynamo=True, verbose=False)
    if program is None:  # a torch without the dynamo exporter's return value
        raise ConfigError("format 'onnx' needs torch >= 2.6: pip install 'medtransfer[export]'")
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = "medtransfer", json.dumps(meta)
    onnx.save(proto, str(out))
