"""Every seed's study as shipped (examples/seed000.yaml … seed004.yaml), shrunk to tiny sizes and
one epoch, run end to end on ../shared/data (skipped where that folder is absent). The weights files
the configs name are replaced by randomly initialised files of the same layout (Keras's ``.h5``
layout for ``keras:`` files, written with h5py; skipped where h5py is absent): what is tested is
that each config runs whole, not its numbers. A missing weights file is an error naming it."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from medtransfer.api import run_study
from medtransfer.config import read_yaml
from medtransfer.errors import MedTransferError
from medtransfer.models import create_model
from medtransfer.search import run_search
from medtransfer.study import load_study, study_from_dict

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
EXAMPLES = ROOT / "examples"
SEEDS = ["seed000", "seed001", "seed002", "seed003", "seed004"]
SIZE = {"seed004": 75}  # Inception's smallest input; the others run at 32 px
# the arms each search tunes on its own: seed 001's two weight sources, seed 004's four networks
SEARCHED = {"seed001": {"imagenet.head", "chexnet.head"},
            "seed004": {"resnet50", "resnet152", "inception_v3", "inception_resnet_v2"}}
REPORTED = {"seed003"}  # report settings: differences, filters, activation maximisation; the
# others skip the report (seed 004's feature maps too: four large networks' figures take minutes),
# which every shape's report test covers, to keep the suite short


# the models behind each weights file a seed config names, and the small dense layers they get here
FILES = {"densenet121-a639ec97.pth": "densenet121", "chexnet_model.pth.tar": "densenet121",
         "vgg16-397923af.pth": "vgg16", "resnet50-0676ba61.pth": "resnet50",
         "resnet152-394f9c45.pth": "resnet152", "inception_v3.tv_in1k.safetensors": "inception_v3",
         "inception_resnet_v2.tf_in1k.safetensors": "inception_resnet_v2"}
DENSE = {"vgg16": [64, 64], "alexnet_krizhevsky": [64, 64, 16]}


def _state(name: str) -> dict[str, torch.Tensor]:
    """A random state dict in the layout of the file a seed config names."""
    arch = FILES[name]
    options = {"dense": tuple(DENSE[arch])} if arch in DENSE else {}
    state = create_model(arch, num_classes=1000, in_chans=3, img_size=224, **options).state_dict()
    if not name.startswith("chexnet"):
        return state
    out = {}  # arnoweng/CheXNet: module.densenet121.…, old norm.1 names, a 14-output classifier
    for key, value in state.items():
        if "denselayer" in key:
            for new, old in (("norm1", "norm.1"), ("conv1", "conv.1"), ("norm2", "norm.2"),
                             ("conv2", "conv.2")):
                key = key.replace(f".{new}.", f".{old}.")
        if key.startswith("classifier."):
            key, value = key.replace("classifier.", "classifier.0."), value[:14]
        out[f"module.densenet121.{key}"] = value
    return out


def _small_models(node: Any) -> None:
    """VGG16's and seed 000's AlexNet's 4096-wide dense layers made small (their files match)."""
    if isinstance(node, dict):
        if node.get("name") in DENSE:
            node["options"] = {**node.get("options", {}), "dense": DENSE[node["name"]]}
        for v in node.values():
            _small_models(v)
    elif isinstance(node, list):
        for v in node:
            _small_models(v)


def _shrink(node: Any, key: str = "") -> Any:
    """The config with every size, epoch count and data cap made tiny."""
    if isinstance(node, dict):
        out = {k: _shrink(v, k) for k, v in node.items()}
        if "epochs" in out:
            out["epochs"] = 1
        if "batch_size" in out:
            out["batch_size"] = 8
        if key == "split" or "val_fraction" in out:
            out["val_fraction"] = max(out.get("val_fraction", 0.1), 0.25)  # 2+ per class of 8
            if out.get("folds"):
                out["folds"] = 2
            else:
                out["train_per_class"] = 8 if not isinstance(out.get("train_per_class"), dict) else \
                    {c: 8 for c in out["train_per_class"]}
            if out.get("test_sets"):
                out.update(test_sets=2, test_per_class=4)
            if out.get("test_fraction"):
                out["test_fraction"] = 0.01  # ~9 per class of the 1 800 COVID X-rays
            if out.get("imbalance"):
                out["imbalance"] = {c: 0.5 for c in out["imbalance"]}
        if key == "data" and str(out.get("path", "")).endswith(".npz"):
            out["npz_splits"] = ["test"]
        if key == "feature_maps":
            out["images"] = 1
        if key == "activation_max":
            out.update(filters=2, steps=2)
        return out
    if isinstance(node, list):
        return [_shrink(v) for v in node]
    return node


def _keras_file(name: str, path: Path, size: int) -> None:
    """A random Keras-2 ``.h5`` file in the layout of Keras's VGG16 file ``name`` (``_notop``:
    the conv layers only), with this test's small dense layers, for ``size`` px images."""
    h5py = pytest.importorskip("h5py", reason="keras: weight files need h5py (extra 'keras')")
    model = create_model("vgg16", num_classes=1000, in_chans=3, img_size=size, layout="keras",
                         dense=tuple(DENSE["vgg16"]))
    kinds = (nn.Conv2d,) if "_notop" in name else (nn.Conv2d, nn.Linear)
    layers = [m for m in model.modules() if isinstance(m, kinds)]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([f"layer_{i}".encode() for i in range(len(layers))])
        for i, m in enumerate(layers):
            w = m.weight.detach().numpy()
            group = f.create_group(f"layer_{i}")
            group.attrs["weight_names"] = np.array([b"kernel", b"bias"])
            group["kernel"] = w.transpose(2, 3, 1, 0) if w.ndim == 4 else w.T
            group["bias"] = m.bias.detach().numpy()


def _weights(node: Any, tmp: Path, size: int = 32) -> Any:
    """``file:`` and ``keras:`` weights replaced by random files of the same layout in ``tmp``."""
    if isinstance(node, dict):
        return {k: _weights(v, tmp, size) for k, v in node.items()}
    if isinstance(node, list):
        return [_weights(v, tmp, size) for v in node]
    if isinstance(node, str) and node.startswith("keras:"):
        path = tmp / Path(node[6:]).name
        if not path.exists():
            _keras_file(path.name, path, size)
        return f"keras:{path}"
    if isinstance(node, str) and node.startswith("file:"):
        name = Path(node[5:]).name
        path = tmp / name.replace(".safetensors", ".pt")
        if not path.exists():
            torch.save(_state(name), path)
        return f"file:{path}"
    return node


def _raw(seed: str, tmp: Path, cache: Path) -> dict[str, Any]:
    raw = _shrink(read_yaml(EXAMPLES / f"{seed}.yaml"))
    _small_models(raw)
    raw.update(name=seed, cache_dir=str(cache), audit=False, repeats=1)
    raw["report"] = {**raw.get("report", {}), "figure_formats": ["png"]}
    if "targets" in raw:  # a matrix: its first target and at most two sources, to stay seconds
        raw["targets"] = dict(list(raw["targets"].items())[:1])
        raw["sources"] = dict(list(raw["sources"].items())[:2])
        groups = raw.get("report", {}).get("target_groups", {})  # of the targets kept, if any
        groups = {g: [t for t in names if t in raw["targets"]] for g, names in groups.items()}
        if groups:
            raw["report"]["target_groups"] = {g: names for g, names in groups.items() if names}
    raw["preprocess"] = {**raw["preprocess"], "size": SIZE.get(seed, 32)}
    model = raw.get("model", {})
    if model.get("head", {}).get("pool_size"):
        model["head"]["pool_size"] = 1  # DenseNet's 1×1 map at 32 px
    search = raw.get("search")
    if search:  # one trial (every key's first value), then the best config on the tests
        search["space"] = {k: [1] if k.endswith(".epochs") else v[:1] for k, v in search["space"].items()}
    return _weights(raw, tmp, raw["preprocess"]["size"])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    if not (SHARED / "cxr" / "covid").is_dir():
        pytest.skip(f"shared data folder {SHARED} is absent")
    return tmp_path_factory.mktemp("seed-cache")  # images decoded once for all five seeds


@pytest.mark.integration
@pytest.mark.parametrize("seed", SEEDS)
def test_seed_config_runs_whole_when_shrunk(seed, tmp_path, cache, one_thread):
    raw = _raw(seed, tmp_path, cache)
    out = tmp_path / "run"
    report = seed in REPORTED
    if "search" in raw:
        run_search(raw, out, base=EXAMPLES, progress=False, echo=lambda m: None, report=report)
    else:
        run_study(study_from_dict(raw, base=EXAMPLES), out, progress=False, echo=lambda m: None,
                  report=report)
    with (out / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    cfg = study_from_dict({k: v for k, v in raw.items() if k != "search"}, base=EXAMPLES)
    variants = {v.name for v in cfg.variants}
    if "search" in raw:  # every arm searched on its own, and every tuned arm tested
        with (out / "trials.csv").open() as fh:
            assert {t["arm"] for t in csv.DictReader(fh)} == SEARCHED[seed]
        variants = {v.name for v in load_study(out / "best.yaml").variants}
        assert variants == {a.replace(".", "-") for a in SEARCHED[seed]}
    assert {r["variant"] for r in rows} - {"*"} == variants
    aucs = [float(r["value"]) for r in rows if r["metric"] == "auc" and r["stage"] != "pretrain"]
    assert aucs and all(0.0 <= a <= 1.0 for a in aucs)
    if cfg.is_matrix and "search" not in raw:  # every strategy a variant runs has results
        ran = {(r["variant"], r["strategy"]) for r in rows
               if r["stage"] != "pretrain" and r["variant"] != "*"}
        want = {(v.name, s) for v in _variants(cfg) for s in v.strategies}
        assert ran == want
        assert (out / "target_means.csv").is_file()  # a matrix's means over targets
    assert (out / "report.html").is_file() == report


def _variants(cfg: Any) -> list[Any]:
    from medtransfer.study import resolve_variants

    return resolve_variants(cfg)


@pytest.mark.parametrize("seed", ["seed001"])
def test_a_missing_weights_file_is_named_before_anything_is_written(seed, tmp_path):
    raw = read_yaml(EXAMPLES / f"{seed}.yaml")
    raw.pop("search", None)
    raw["sources"]["imagenet"]["weights"] = f"file:{tmp_path / 'absent.pth'}"
    with pytest.raises(MedTransferError, match=r"absent\.pth"):
        run_study(study_from_dict(raw, base=EXAMPLES), tmp_path / "run", progress=False,
                  echo=lambda m: None)
    assert not (tmp_path / "run" / "splits").exists()
