"""run_audit on synthetic folders with planted problems: each gives the expected finding."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from medtransfer.audit import (
    AuditConfig,
    Severity,
    audit_markdown,
    format_audit,
    run_audit,
)
from medtransfer.data import DataConfig

FAST = AuditConfig(probe_folds=3)


def test_jpeg_colour_class_is_a_metadata_shortcut(make_phantoms, tmp_path):
    root = make_phantoms({"normal": {"n": 15}, "tb": {"n": 15, "ext": ".jpg", "tinted": True}})
    result = run_audit(root, cfg=FAST, out=tmp_path / "audit")
    fmt = result.find("format_imbalance")[0]
    assert "normal: 0 of 15 images are JPEG; tb: 15 of 15 images are JPEG" in fmt.message
    assert fmt.data["by_class"] == {"normal": {"PNG": 15}, "tb": {"JPEG": 15}}
    colour = result.find("colour_by_class")[0]
    assert colour.severity is Severity.critical and colour.data["by_class"]["tb"] == {"tinted": 15}
    shortcut = result.find("metadata_shortcut")[0]
    assert shortcut.severity is Severity.critical
    assert result.probe is not None and result.probe.auc > 0.9
    assert result.probe.group_auc["format"] > 0.9 and result.probe.group_auc["colour"] > 0.9
    assert result.findings[0].severity is Severity.critical  # worst first
    assert result.worst is Severity.critical
    # Nothing was duplicated, so nothing may be reported as such.
    assert not {c for c in result.codes() if "duplicate" in c}
    saved = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert saved["worst"] == "critical" and saved["counts"] == {"normal": 15, "tb": 15}
    assert {f["code"] for f in saved["findings"]} == result.codes()
    assert "| critical |" in (tmp_path / "audit" / "audit.md").read_text()


def test_clean_data_has_no_shortcut(make_phantoms):
    root = make_phantoms({"a": {"n": 12}, "b": {"n": 12}})
    result = run_audit(DataConfig(path=root), cfg=FAST)
    assert result.worst is Severity.info
    assert "metadata_probe" in result.codes() and "image_sizes" in result.codes()
    assert result.probe is not None and result.probe.auc < FAST.probe_auc
    assert result.probe.features == ["file_kb", "bytes_per_pixel"]  # nothing else varies


def test_sizes_and_colour_minority(make_phantoms, ph):
    root = make_phantoms({"a": {"n": 12, "size": 64}, "b": {"n": 12, "size": [96, 128]}})
    grey = np.asarray(Image.open(root / "b" / "img000.png"))
    ph.save(np.stack([grey] * 3, axis=2), root / "b" / "img000.png")  # grey stored as RGB
    result = run_audit(root, cfg=FAST)
    size = result.find("size_by_class")[0]
    assert size.data["median_width"] == {"a": 64.0, "b": 112.0}
    assert result.find("grey_stored_as_rgb")[0].data["count"] == 1
    assert "colour_by_class" not in result.codes()  # grey stored as RGB is not colour


def test_exact_duplicate_with_two_labels_is_critical(make_phantoms):
    root = make_phantoms({"a": {"n": 8}, "b": {"n": 8}})
    shutil.copy(root / "a" / "img003.png", root / "b" / "copy.png")
    result = run_audit(root, cfg=AuditConfig(probe=False))
    found = result.find("exact_duplicate_cross_class")
    assert len(found) == 1 and found[0].severity is Severity.critical
    assert found[0].examples == ["a/img003.png = b/copy.png (1.00)"]
    assert result.duplicate_clusters == [["a/img003.png", "b/copy.png"]]


def test_exact_duplicate_re_encoded_keeps_pixels(make_phantoms):
    root = make_phantoms({"a": {"n": 8}, "b": {"n": 8}})
    Image.open(root / "a" / "img001.png").save(root / "a" / "again.bmp")  # same pixels, new bytes
    result = run_audit(root, cfg=AuditConfig(probe=False))
    found = result.find("exact_duplicate")[0]
    assert found.data == {"pairs": 1, "clusters": 1, "images": 2}
    assert found.examples == ["a/again.bmp = a/img001.png (1.00)"]


def test_noised_copy_is_a_near_duplicate(make_phantoms, ph):
    root = make_phantoms({"a": {"n": 10}, "b": {"n": 10}})
    source = np.asarray(Image.open(root / "a" / "img004.png"))
    ph.save(ph.noisy(source, np.random.default_rng(1)), root / "a" / "noisy.png")
    result = run_audit(root, cfg=AuditConfig(probe=False))
    near = result.find("near_duplicate")[0]
    assert near.data == {"pairs": 1, "clusters": 1, "images": 2}
    assert near.examples[0].startswith("a/img004.png ≈ a/noisy.png")
    pair = result.duplicates[0]
    assert pair["kind"] == "near" and pair["similarity"] >= 0.65 and pair["hamming"] <= 10
    groups = result.duplicate_groups(["a/img004.png", "a/noisy.png", "b/img000.png"])
    assert groups[0] == groups[1] != groups[2]


def test_duplicate_across_given_split_and_run_directory(make_phantoms, tmp_path):
    root = make_phantoms({"a": {"n": 8}, "b": {"n": 8}})
    shutil.copy(root / "b" / "img002.png", root / "b" / "img_copy.png")
    ids = [f"{c}/img{i:03d}.png" for c in "ab" for i in range(8)] + ["b/img_copy.png"]
    parts = {i: "train" for i in ids} | {"b/img_copy.png": "test_1"}
    result = run_audit(root, cfg=AuditConfig(probe=False), split=parts)
    leak = result.find("exact_duplicate_cross_split")[0]
    assert leak.severity is Severity.critical and leak.data["parts"] == ["test_1/train"]
    run = tmp_path / "run"
    (run / "splits").mkdir(parents=True)
    (run / "splits" / "source.csv").write_text("part,id,label\nval,x/other.png,x\n")
    rows = "".join(f"{p},{i},{i[0]}\n" for i, p in parts.items())
    (run / "splits" / "target.csv").write_text("part,id,label\n" + rows)
    again = run_audit(root, cfg=AuditConfig(probe=False), split=run)  # picks target.csv
    assert again.find("exact_duplicate_cross_split")[0].data == leak.data


def test_patient_group_across_split(tmp_path, make_phantoms):
    root = make_phantoms({"a": {"n": 6}, "b": {"n": 6}})
    rows = ["path,label,patient"] + [f"{c}/img{i:03d}.png,{c},p{i // 2}{c}" for c in "ab" for i in range(6)]
    index = root / "index.csv"
    index.write_text("\n".join(rows) + "\n")
    data = DataConfig(path=index, group_column="patient")
    parts = {f"{c}/img{i:03d}.png": "train" if i % 2 == 0 else "test" for c in "ab" for i in range(6)}
    result = run_audit(data, cfg=AuditConfig(probe=False), split=parts)
    leak = result.find("group_split_leak")[0]
    assert leak.severity is Severity.critical and leak.data == {"groups": 6}
    whole = {f"{c}/img{i:03d}.png": "train" if i < 4 else "test" for c in "ab" for i in range(6)}
    assert "group_split_leak" not in run_audit(data, cfg=AuditConfig(probe=False), split=whole).codes()


def test_cross_dataset_duplicates(make_phantoms, ph, tmp_path):
    source = make_phantoms({"a": {"n": 6}, "b": {"n": 6}}, root=tmp_path / "src", seed=1)
    target = make_phantoms({"x": {"n": 6}, "y": {"n": 6}}, root=tmp_path / "tgt", seed=2)
    shutil.copy(source / "a" / "img001.png", target / "x" / "shared.png")
    grey = np.asarray(Image.open(source / "b" / "img002.png"))
    ph.save(ph.noisy(grey, np.random.default_rng(3)), target / "y" / "near.png")
    result = run_audit(source, against=target, cfg=AuditConfig(probe=False))
    cross = result.find("cross_dataset_duplicate")[0]
    assert cross.severity is Severity.critical
    assert cross.data == {"exact": 1, "near": 1, "images": 2, "other_images": 2}
    assert {(r["a"], r["b"], r["kind"]) for r in result.cross_duplicates} == {
        ("a/img001.png", "x/shared.png", "exact"), ("b/img002.png", "y/near.png", "near")}
    assert result.against is not None and result.against.name == "tgt"
    text = format_audit(result)
    assert "cross_dataset_duplicate" in text and "Data audit of tgt" in text
    assert "## Data audit: src" in audit_markdown(result) and "### Data audit: tgt" in audit_markdown(result)


def test_npz_official_splits_are_checked(tmp_path, ph):
    rng = np.random.default_rng(0)
    train = np.stack([ph.phantom(rng, 28) for _ in range(8)])
    test = np.stack([ph.phantom(rng, 28) for _ in range(4)])
    test[0] = train[5]
    labels = np.array([0, 1] * 4, dtype=np.uint8)[:, None]
    np.savez(tmp_path / "m.npz", train_images=train, train_labels=labels, val_images=test,
             val_labels=labels[:4], test_images=test[1:], test_labels=labels[1:4])
    result = run_audit(tmp_path / "m.npz", cfg=AuditConfig(probe=False))
    leak = result.find("exact_duplicate_cross_split")
    assert leak and "official splits" in leak[0].message and result.split is not None
    assert result.split["parts"] == {"train": 8, "val": 4, "test": 3}
    assert leak[0].data == {"pairs": 4, "parts": ["test/val", "train/val"]}
    assert result.per_class["0"]["formats"] == {"npz": 7}


def test_unreadable_files_are_reported_not_fatal(make_phantoms):
    root = make_phantoms({"a": {"n": 5}, "b": {"n": 5}})
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    result = run_audit(root, cfg=AuditConfig(probe=False))
    found = result.find("unreadable_file")[0]
    assert found.examples == ["a/broken.png"] and result.counts == {"a": 5, "b": 5}


def test_class_imbalance(make_phantoms):
    result = run_audit(make_phantoms({"a": {"n": 12}, "b": {"n": 4}}), cfg=AuditConfig(probe=False))
    assert result.find("class_imbalance")[0].data == {"counts": {"a": 12, "b": 4}, "ratio": 3.0}


def test_probe_is_seeded(make_phantoms):
    spec = {"a": {"n": 12}, "b": {"n": 12, "ext": ".jpg"}}
    root = make_phantoms(spec)
    one = run_audit(root, cfg=AuditConfig(probe_folds=3, seed=4)).probe
    two = run_audit(root, cfg=AuditConfig(probe_folds=3, seed=4)).probe
    assert one is not None and two is not None and one.to_dict() == two.to_dict()


@pytest.mark.parametrize("kwargs", [{"probe": False}, {"probe_model": "logistic", "probe_folds": 3}])
def test_probe_options(make_phantoms, kwargs):
    root = make_phantoms({"a": {"n": 10}, "b": {"n": 10, "ext": ".jpg"}})
    result = run_audit(root, cfg=AuditConfig(**kwargs))
    if kwargs.get("probe") is False:
        assert result.probe is None and "metadata_shortcut" not in result.codes()
    else:
        assert result.probe is not None and result.probe.model == "logistic"
        assert result.probe.auc > 0.9 and "metadata_shortcut" in result.codes()
