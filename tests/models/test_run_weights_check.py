"""``run:`` weights are loaded only as their unit's result.json vouches for them (size and
SHA-256, issue 13); anything else is an error naming the file and what is wrong."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from medtransfer.fileio import file_record
from medtransfer.models import ModelConfig, create_model
from medtransfer.models.pretrained import build_pretrained
from medtransfer.models.weights import WeightsError
from medtransfer.train import save_checkpoint


def _unit(tmp_path: Path) -> Path:
    """A finished pretrain unit folder: best.pt and a result.json vouching for it."""
    src = create_model("alexnet_small", num_classes=2, in_chans=1, img_size=32)
    best = save_checkpoint(tmp_path / "units" / "pretrain-x" / "best.pt", model_state=src.state_dict(),
                           config={"model": {"name": "alexnet_small"}, "classes": ["a", "b"]},
                           epoch=2, metrics={})
    (best.parent / "result.json").write_text(json.dumps({"checkpoint": "best.pt",
                                                         "files": {"best.pt": file_record(best)}}))
    return best.parent


def _load(spec: str) -> None:
    build_pretrained(ModelConfig(name="alexnet_small", weights=spec), num_classes=2, in_chans=1,
                     img_size=32, classes=["a", "b"])


def _flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # torch.load would read this file without complaint
    path.write_bytes(bytes(raw))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _result(text: str) -> Callable[[Path], None]:
    return lambda best: (best.parent / "result.json").write_text(text)


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "flipped_bit": (_flip, r"best\.pt differs from the file its unit's .*result\.json recorded \(SHA-256"),
    "truncated": (_truncate, r"best\.pt has \d+ bytes, but its unit's .*result\.json recorded \d+"),
    "deleted": (Path.unlink, r"best\.pt is missing"),
    "result_cut": (_result('{"checkpoint": "be'), r"result\.json is unreadable"),
    "result_empty": (_result("{}"), r"result\.json records no size and SHA-256 of best\.pt"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("target", ["folder", "file"])
def test_damaged_run_weights_are_refused_naming_the_file(tmp_path, damage, target):
    unit = _unit(tmp_path)
    spec = f"run:{unit}" if target == "folder" else f"run:{unit / 'best.pt'}"
    _load(spec)  # intact: loads
    harm, message = DAMAGE[damage]
    harm(unit / "best.pt")
    if target == "file" and damage == "deleted":
        message = r"does not exist"
    with pytest.raises(WeightsError, match=rf"'model\.weights': .*{message}"):
        _load(spec)
