"""An audit's result: findings (worst first) and the numbers behind them, as strict JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from medtransfer.audit.config import AuditConfig
from medtransfer.audit.findings import Finding, Severity
from medtransfer.audit.probe import ProbeResult
from medtransfer.config import to_dict

__all__ = ["AuditResult"]


@dataclass
class AuditResult:
    """Findings (worst first) and the numbers behind them for one data set."""

    name: str
    path: str
    kind: str
    classes: list[str]
    counts: dict[str, int]
    findings: list[Finding]
    per_class: dict[str, dict[str, Any]]
    probe: ProbeResult | None
    duplicates: list[dict[str, Any]]
    duplicate_clusters: list[list[str]]
    seconds: float
    config: AuditConfig
    split: dict[str, Any] | None = None
    against: AuditResult | None = None
    cross_duplicates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def worst(self) -> Severity | None:
        """The highest severity among the findings (of this set and the cross-set check)."""
        return max((f.severity for f in self.findings), key=lambda s: s.rank, default=None)

    def codes(self) -> set[str]:
        """Codes of this set's findings (including cross-data-set ones, not ``against``'s own)."""
        return {f.code for f in self.findings}

    def find(self, code: str) -> list[Finding]:
        return [f for f in self.findings if f.code == code]

    def duplicate_groups(self, ids: Sequence[str]) -> list[str]:
        """A group id per image of ``ids``: its duplicate cluster, else the image itself.

        Pass it as ``make_split(..., groups=...)`` to keep duplicates on one side."""
        cluster_of = {i: f"dup{k}" for k, members in enumerate(self.duplicate_clusters) for i in members}
        return [cluster_of.get(i, i) for i in ids]

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name, "path": self.path, "kind": self.kind, "classes": self.classes,
            "counts": self.counts, "seconds": round(self.seconds, 2),
            "worst": None if self.worst is None else self.worst.value,
            "findings": [f.to_dict() for f in self.findings], "per_class": self.per_class,
            "probe": None if self.probe is None else self.probe.to_dict(),
            "duplicates": self.duplicates, "duplicate_clusters": self.duplicate_clusters,
            "split": self.split, "config": to_dict(self.config),
            "against": None if self.against is None else self.against.to_dict(),
            "cross_duplicates": self.cross_duplicates,
        }
        return _finite(out)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)


def _finite(value: Any) -> Any:
    """NaN and infinities → None, so the JSON is strict."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
