"""Run the audit: inspect a data set (and optionally a second one and a split), collect findings."""

from __future__ import annotations

import csv
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medtransfer.audit.config import AuditConfig
from medtransfer.audit.duplicates import DuplicatePair, clusters, find_duplicates
from medtransfer.audit.findings import (
    Finding,
    categorical_rules,
    class_balance,
    name_rule,
    numeric_rules,
    probe_rule,
    unreadable_rule,
)
from medtransfer.audit.inspect import Inventory, inspect_arrays, inspect_source
from medtransfer.audit.leakage import cross_dataset_rules, duplicate_rules, split_rules
from medtransfer.audit.probe import run_probe
from medtransfer.audit.render import write_audit
from medtransfer.audit.result import AuditResult
from medtransfer.data.config import DataConfig
from medtransfer.data.sources import ImageSet
from medtransfer.data.splits import Split
from medtransfer.errors import DataError
from medtransfer.fileio import cell_in

SplitSpec = Path | str | Mapping[str, str]


def _as_data(data: DataConfig | Path | str) -> DataConfig:
    return data if isinstance(data, DataConfig) else DataConfig(path=Path(data))


def run_audit(
    data: DataConfig | Path | str,
    *,
    against: DataConfig | Path | str | None = None,
    cfg: AuditConfig | None = None,
    out: Path | str | None = None,
    split: SplitSpec | None = None,
) -> AuditResult:
    """Audit ``data`` (a folder, CSV or npz) for shortcuts and leakage.

    ``against`` audits a second data set too and looks for images the two share. ``split`` is a
    run directory (its ``splits/*.csv`` matching these ids), one such CSV, or a mapping image id →
    part: duplicates and patient groups across its parts are reported. An npz's official splits
    are checked the same way. With ``out``, ``audit.json`` and ``audit.md`` are written there.
    """
    cfg = cfg or AuditConfig()
    inv = inspect_source(_as_data(data), cfg)
    parts = _parts(inv, split)
    result = audit_inventory(inv, cfg, parts=parts, where=_split_name(split))
    if against is not None:
        other = inspect_source(_as_data(against), cfg)
        result.against = audit_inventory(other, cfg)
        pairs = find_duplicates(inv, cfg, other)
        result.findings = _sorted(result.findings + cross_dataset_rules(inv, other, pairs, cfg))
        result.cross_duplicates = _pair_rows(inv, other, pairs)
    if out is not None:
        write_audit(result, Path(out))
    return result


def audit_split(
    images: ImageSet, split: Split, cfg: AuditConfig | None = None, *, name: str = "images"
) -> AuditResult:
    """Leakage of an in-memory split: duplicates (of the decoded, resized pixels) and patient
    groups that sit in more than one part. No file metadata is available here."""
    cfg = cfg or AuditConfig()
    inv = inspect_arrays(images.images, images.labels, images.classes, images.ids, cfg, name=name,
                         groups=images.groups)
    parts: list[str | None] = [None] * len(images.ids)
    for part, idx in split.parts.items():
        for i in np.asarray(idx).tolist():
            parts[i] = part
    return audit_inventory(inv, cfg, parts=parts, where="the split", leakage_only=True)


def split_parts(ids: Sequence[str], split: Split) -> dict[str, str]:
    """Image id → part name (train, val, test_1, ...) for ``run_audit(split=...)``."""
    return {ids[i]: part for part, idx in split.parts.items() for i in np.asarray(idx).tolist()}


def audit_inventory(
    inv: Inventory,
    cfg: AuditConfig,
    *,
    parts: Sequence[str | None] | None = None,
    where: str = "the split",
    leakage_only: bool = False,
) -> AuditResult:
    """Findings for an already inspected data set."""
    start = time.perf_counter()
    findings: list[Finding] = []
    probe = None
    if not leakage_only:
        probe = run_probe(inv, cfg) if cfg.probe else None
        for rule in (unreadable_rule, class_balance, categorical_rules, numeric_rules, name_rule):
            findings += rule(inv, cfg)
        findings += probe_rule(probe, cfg)
    pairs = find_duplicates(inv, cfg)
    findings += duplicate_rules(inv, pairs, cfg)
    split_info = None
    if parts is None and inv.origin is not None and len(set(inv.origin)) > 1:
        parts, where = inv.origin, "the official splits"
    if parts is not None:
        findings += split_rules(inv, pairs, parts, cfg, where)
        split_info = {"where": where, "parts": dict(Counter(p for p in parts if p is not None))}
    ids = inv.ids
    return AuditResult(
        name=inv.name, path=inv.path, kind=inv.kind, classes=list(inv.classes),
        counts=inv.class_counts(), findings=_sorted(findings), per_class=_per_class(inv),
        probe=probe, duplicates=_pair_rows(inv, inv, pairs),
        duplicate_clusters=[[ids[i] for i in c] for c in clusters(len(ids), pairs)],
        seconds=inv.seconds + time.perf_counter() - start, config=cfg, split=split_info,
    )


def _sorted(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: -f.severity.rank)


def _pair_rows(a: Inventory, b: Inventory, pairs: list[DuplicatePair]) -> list[dict[str, Any]]:
    return [{"a": a.records[p.a].id, "b": b.records[p.b].id, "kind": p.kind.value,
             "label_a": a.classes[a.records[p.a].label], "label_b": b.classes[b.records[p.b].label],
             "hamming": p.distance, "similarity": p.similarity} for p in pairs]


def _per_class(inv: Inventory) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for k, c in enumerate(inv.classes):
        rs = [r for r in inv.records if r.label == k]
        if not rs:
            continue

        def med(values: list[float]) -> float:
            return round(float(np.median(values)), 3)

        out[c] = {
            "images": len(rs),
            "formats": dict(Counter(r.format for r in rs).most_common()),
            "colour": dict(Counter(r.colour.value for r in rs).most_common()),
            "modes": dict(Counter(f"{r.mode}/{r.bit_depth}-bit" for r in rs).most_common()),
            "sizes": dict(Counter(f"{r.width}×{r.height}" for r in rs).most_common(3)),
            "distinct_sizes": len({(r.width, r.height) for r in rs}),
            "median_kb": med([r.file_bytes / 1024 for r in rs]),
            "median_mean": med([r.mean for r in rs]), "median_std": med([r.std for r in rs]),
            "median_dark_border": med([r.dark_border for r in rs]),
            "exif": sum(r.exif for r in rs),
            "name_tokens": dict(Counter(r.name_token for r in rs).most_common(3)),
        }
    return out


def _split_name(split: SplitSpec | None) -> str:
    if split is None or isinstance(split, Mapping):
        return "the split"
    return f"the split {split}"


def _parts(inv: Inventory, split: SplitSpec | None) -> list[str | None] | None:
    if split is None:
        return None
    if isinstance(split, Mapping):
        mapping = {str(k): str(v) for k, v in split.items()}
    else:
        mapping = read_split_csv(Path(split), inv.ids)
    parts = [mapping.get(i) for i in inv.ids]
    if all(p is None for p in parts):
        raise DataError(f"{_split_name(split)} names none of the {len(inv.ids)} images of {inv.path}")
    return parts


def read_split_csv(path: Path, ids: Sequence[str] | None = None) -> dict[str, str]:
    """Image id → part from a run's ``splits/<role>.csv``; for a run directory, the CSV that
    shares the most ids with ``ids``."""
    if path.is_dir():
        candidates = sorted((path / "splits").glob("*.csv")) or sorted(path.glob("*.csv"))
        if not candidates:
            raise DataError(f"{path} holds no splits/*.csv: expected a run directory of medtransfer run")
        tables = [read_split_csv(c) for c in candidates]
        wanted = set(ids or [])
        return max(tables, key=lambda t: len(wanted & set(t)))
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in ("part", "id") if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(missing)}; expected part,id,label")
            return {cell_in(row["id"] or ""): cell_in(row["part"] or "") for row in reader}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read split file {path}: {exc}") from exc
