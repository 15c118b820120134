"""Models named by a folder as users download them, offline: timm's layout (config.json +
model.safetensors / pytorch_model.bin, as push_to_hf_hub writes it) by path, and hf-hub: names
from the Hugging Face cache (models--ORG--NAME/snapshots/<rev>/, refs/main) with HF_HUB_OFFLINE=1.
The folders hold random weights."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants
import pytest
import timm
import torch
from timm.models import save_for_hf

from medtransfer.errors import ConfigError
from medtransfer.models import ModelConfig, build_pretrained, check_model, create_model
from medtransfer.study.units import weights_stamp

VIT = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 16, "num_heads": 2}


def _vit(seed: int = 0, **extra) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return timm.create_model("vit_tiny_patch16_224", num_classes=0, **{**VIT, **extra})


@pytest.fixture
def folder(tmp_path) -> Path:
    path = tmp_path / "dinoish"
    save_for_hf(_vit(), str(path), safe_serialization=True)
    return path


@pytest.fixture
def hf_cache(tmp_path, monkeypatch, folder) -> str:
    """``org/tiny-vit`` in a Hugging Face cache laid out as huggingface_hub writes it."""
    cache = tmp_path / "hub"
    rev = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--org--tiny-vit"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    snapshot = repo / "snapshots" / rev
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((folder / name).read_bytes())
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return "org/tiny-vit"


def test_a_folder_gives_architecture_weights_and_normalisation(folder):
    cfg = ModelConfig(name=f"timm:local-dir:{folder}", weights="pretrained", in_chans_policy="repeat")
    assert check_model(cfg, hw=(16, 16), in_chans=1) is not None
    built = build_pretrained(cfg, num_classes=2, in_chans=1, img_size=16)
    assert type(built.model).__name__ == "VisionTransformer" and built.model.patch_embed.grid_size == (2, 2)
    source = _vit()
    assert torch.equal(built.model.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)
    assert built.model.pos_embed.shape[1] == 1 + 4  # resampled by timm from 32 px to 16 px
    assert built.input_norm == ((0.5,), (0.5,))  # config.json's mean/std, averaged for grey
    assert built.weights is not None and built.weights.input_size == 32
    said = "trained on 32 px images (config.json); the model takes 16 px"
    assert built.report is not None and any(said in m for m in built.report.messages)
    assert built.weights.path == folder.resolve() / "model.safetensors"
    # weights: null builds the folder's architecture from config.json, randomly initialised
    plain = create_model(f"timm:local-dir:{folder}", num_classes=3, in_chans=3, img_size=16)
    assert len(plain.blocks) == 2 and plain.head.out_features == 3


def test_hf_hub_names_resolve_offline_from_the_cache(hf_cache, folder):
    cfg = ModelConfig(name=f"timm:hf-hub:{hf_cache}", weights="pretrained")
    built = build_pretrained(cfg, num_classes=2, in_chans=3, img_size=32)
    assert torch.equal(built.model.blocks[0].attn.qkv.weight, _vit().blocks[0].attn.qkv.weight)
    assert built.input_norm == ((0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ConfigError, match=r"hf-hub:org/absent is not in the Hugging Face cache .*downloads"):
        check_model(ModelConfig(name="timm:hf-hub:org/absent"), hw=(32, 32), in_chans=3)


def test_bad_folders_and_weights_are_named(tmp_path, folder):
    with pytest.raises(ConfigError, match="no such folder"):
        check_model(ModelConfig(name=f"timm:local-dir:{tmp_path / 'nope'}"), hw=(32, 32), in_chans=3)
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "open_clip_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="has no config.json .*open_clip"):
        check_model(ModelConfig(name=f"timm:local-dir:{clip}"), hw=(32, 32), in_chans=3)
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"architecture": "vit_enormous_patch1"}))
    with pytest.raises(ConfigError, match="names architecture 'vit_enormous_patch1'"):
        check_model(ModelConfig(name=f"timm:local-dir:{odd}"), hw=(32, 32), in_chans=3)
    with pytest.raises(ConfigError, match="use weights: pretrained"):
        check_model(ModelConfig(name=f"timm:local-dir:{folder}", weights="imagenet"), hw=(32, 32), in_chans=3)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="has no weights file"):
        check_model(ModelConfig(name=f"timm:local-dir:{folder}", weights="pretrained"), hw=(32, 32),
                    in_chans=3)


def test_the_unit_key_follows_the_folders_weights_file(folder):
    name = f"timm:local-dir:{folder}"
    first = weights_stamp("pretrained", name)
    assert first is not None and first.startswith("pretrained#sha256=")
    save_for_hf(_vit(seed=1), str(folder), safe_serialization=True)
    assert weights_stamp("pretrained", name) != first
    assert weights_stamp("pretrained", "timm:resnet10t") == "pretrained"
