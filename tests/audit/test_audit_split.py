"""audit_split on a loaded ImageSet and a Split, and grouped splitting as the cure."""

from __future__ import annotations

import shutil

import numpy as np

from medtransfer.audit import AuditConfig, Severity, audit_split, run_audit, split_parts
from medtransfer.data import DataConfig, PreprocessConfig, Split, SplitConfig, load_dataset, make_split
from medtransfer.data.splits import group_leaks

CFG = AuditConfig(probe=False)


def _with_copies(make_phantoms):
    root = make_phantoms({"a": {"n": 12}, "b": {"n": 12}})
    for c in "ab":
        for i in range(3):
            shutil.copy(root / c / f"img{i:03d}.png", root / c / f"img{i:03d}_copy.png")
    return root


def test_duplicates_across_parts_are_found_and_grouping_fixes_them(make_phantoms):
    root = _with_copies(make_phantoms)
    images = load_dataset(DataConfig(path=root), PreprocessConfig(size=32))
    first = images.ids.index("a/img000.png")
    copy = images.ids.index("a/img000_copy.png")
    rest = np.setdiff1d(np.arange(len(images)), [first, copy])
    split = Split(train=np.sort(np.r_[rest[:-4], first]), val=rest[-4:], tests={"test_1": np.array([copy])})
    result = audit_split(images, split, CFG)
    leak = result.find("exact_duplicate_cross_split")[0]
    assert leak.severity is Severity.critical
    assert leak.examples == ["a/img000.png = a/img000_copy.png (1.00) [train | test_1]"]

    # The audit's duplicate clusters, used as groups, keep every copy with its original.
    groups = result.duplicate_groups(images.ids)
    cfg = SplitConfig(test_sets=2, test_per_class=3, val_fraction=0.2)
    for seed in range(5):
        grouped = make_split(images.labels, cfg, seed, groups=groups)
        assert group_leaks(grouped, groups) == {}
        assert "exact_duplicate_cross_split" not in audit_split(images, grouped, CFG).codes()


def test_patient_groups_across_parts(make_phantoms):
    root = make_phantoms({"a": {"n": 8, "prefix": "P"}, "b": {"n": 8, "prefix": "Q"}})
    data = DataConfig(path=root, group_pattern=r"^([PQ]\d\d)")  # P000..P007 → P00, a 'patient'
    images = load_dataset(data, PreprocessConfig(size=16))
    assert images.groups is not None and len(set(images.groups)) == 2
    naive = make_split(images.labels, SplitConfig(test_fraction=0.25, val_fraction=0.0), 0)
    found = audit_split(images, naive, CFG).find("group_split_leak")
    assert found and found[0].data == {"groups": 2}


def test_split_parts_round_trip(make_phantoms):
    root = _with_copies(make_phantoms)
    images = load_dataset(DataConfig(path=root), PreprocessConfig(size=16))
    split = make_split(images.labels, SplitConfig(test_fraction=0.3), 0)
    parts = split_parts(images.ids, split)
    assert len(parts) == len(images) and set(parts.values()) == {"train", "val", "test"}
    from_files = run_audit(root, cfg=CFG, split=parts)
    in_memory = audit_split(images, split, CFG)
    leaks = in_memory.find("exact_duplicate_cross_split")
    assert leaks and from_files.find("exact_duplicate_cross_split") == leaks
