"""Findings: what differs between the classes in ways a model could learn instead of the disease.

Every finding has a stable ``code``, a :class:`Severity`, a plain-language message with the numbers
behind it, and what to do about it. Rules compare each acquisition property across classes by its
*separability* (ROC AUC of that property alone, see :func:`separability`) and by values that occur
in one class only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from medtransfer.audit.config import AuditConfig
from medtransfer.audit.inspect import ColourKind, Inventory
from medtransfer.audit.probe import ProbeResult, record_value, separability


class Severity(StrEnum):
    """How much a finding matters: ``critical`` findings invalidate results until fixed."""

    info = "info"
    warning = "warning"
    critical = "critical"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "critical": 2}[self.value]


@dataclass(frozen=True)
class Finding:
    """One audit result: ``code`` is stable (for tests and tools), ``message`` for people."""

    code: str
    severity: Severity
    message: str
    action: str
    data: dict[str, Any] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity.value, "message": self.message,
                "action": self.action, "data": self.data, "examples": self.examples}


GREYSCALE_ACTION = "convert to grayscale (preprocess.color: grayscale)"
REENCODE_ACTION = "re-encode all images to one format (e.g. lossless PNG) before training"


def _by_class(inv: Inventory, name: str) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = {c: Counter() for c in inv.classes}
    for r in inv.records:
        out[inv.classes[r.label]][str(record_value(r, name))] += 1
    return out


def _exclusive(table: dict[str, Counter[str]], counts: dict[str, int], level: str,
               min_share: float) -> bool:
    """``level`` is common (>= min_share) in some class and at least 10x rarer in another."""
    shares = [table[c][level] / counts[c] for c in table if counts[c]]
    return max(shares) >= min_share and min(shares) <= max(shares) / 10


def _holders(table: dict[str, Counter[str]], counts: dict[str, int], level: str) -> str:
    shares = {c: table[c][level] / max(1, counts[c]) for c in table}
    top = max(shares.values())
    return " and ".join(c for c, v in shares.items() if v > top / 10)


def _share_text(table: dict[str, Counter[str]], counts: dict[str, int], levels: list[str],
                noun: str) -> str:
    parts = []
    for c, tally in table.items():
        n = sum(tally[lv] for lv in levels)
        parts.append(f"{c}: {n} of {counts[c]} images are {noun}")
    return "; ".join(parts)


def class_balance(inv: Inventory, cfg: AuditConfig) -> list[Finding]:
    counts = inv.class_counts()
    big, small = max(counts.values()), max(1, min(counts.values()))
    if big / small < cfg.imbalance_ratio:
        return []
    text = ", ".join(f"{c} {n}" for c, n in counts.items())
    return [Finding(
        "class_imbalance", Severity.warning,
        f"Classes are imbalanced: {text} (largest/smallest = {big / small:.1f}).",
        "train with sampling: oversample (or class_weight: balanced) and judge models by "
        "balanced accuracy and per-class recall, not accuracy",
        {"counts": counts, "ratio": round(big / small, 3)},
    )]


def categorical_rules(inv: Inventory, cfg: AuditConfig) -> list[Finding]:
    """File format, colour use, mode and bit depth by class."""
    counts, labels, out = inv.class_counts(), inv.labels, []
    specs = [
        ("format", "format_imbalance", "file format", REENCODE_ACTION, Severity.warning),
        # L versus RGB alone is harmless once preprocessing converts every image alike; colour
        # content and bit depth have their own rules.
        ("mode", "mode_by_class", "PIL mode", GREYSCALE_ACTION + ", which treats all modes alike",
         Severity.info),
        ("bit_depth", "bit_depth_by_class", "bit depth", "re-export all images at one bit depth",
         Severity.warning),
    ]
    for name, code, noun, action, severity in specs:
        table = _by_class(inv, name)
        levels = sorted({lv for t in table.values() for lv in t})
        if len(levels) < 2:
            continue
        auc = separability([record_value(r, name) for r in inv.records], labels, categorical=True)
        odd = [lv for lv in levels if _exclusive(table, counts, lv, cfg.min_share)]
        if auc < cfg.feature_auc and not odd:
            continue
        # Name the level that gives the label away: one found in some classes only, else the
        # one whose share differs most between classes ("JPEG").
        spread = {lv: np.ptp([table[c][lv] / max(1, counts[c]) for c in table]) for lv in levels}
        level = min(odd, key=lambda lv: sum(table[c][lv] for c in table)) if odd else max(
            spread, key=lambda lv: spread[lv])
        unit = f"{level} ({noun})" if name != "format" else level
        verdict = (f"{level} occurs (almost) only in {_holders(table, counts, level)}, so it gives "
                   f"those images' label away" if odd else f"{noun} predicts the label")
        out.append(Finding(
            code, severity,
            f"{_share_text(table, counts, [level], unit)} — {verdict} (AUC {auc:.2f} from {noun} "
            "alone, over all images).",
            action,
            {"by_class": {c: dict(t) for c, t in table.items()}, "auc": round(auc, 4)},
        ))
    out += _colour_rule(inv, cfg)
    return out


def _colour_rule(inv: Inventory, cfg: AuditConfig) -> list[Finding]:
    counts = inv.class_counts()
    table = _by_class(inv, "colour")
    grey = {ColourKind.grayscale.value, ColourKind.grayscale_rgb.value}
    coloured = sorted({lv for t in table.values() for lv in t} - grey)
    out = []
    stored_rgb = sum(t[ColourKind.grayscale_rgb.value] for t in table.values())
    if stored_rgb:
        out.append(Finding(
            "grey_stored_as_rgb", Severity.info,
            f"{stored_rgb} of {len(inv.records)} images are grayscale stored as RGB (three equal "
            "channels): grayscale input loses nothing.",
            GREYSCALE_ACTION, {"count": stored_rgb},
        ))
    if not coloured:
        return out
    non_grey = {c: sum(t[lv] for lv in coloured) for c, t in table.items()}
    auc = separability([r.colour.value not in grey for r in inv.records], inv.labels, True)
    shares = [non_grey[c] / max(1, counts[c]) for c in table]
    if auc < cfg.feature_auc and not (max(shares) >= cfg.min_share and min(shares) <= max(shares) / 10):
        return out
    detail = []
    for c, t in table.items():
        kinds = ", ".join(f"{t[lv]} {lv.replace('_', ' ')}" for lv in coloured if t[lv])
        detail.append(f"{c}: {non_grey[c]} of {counts[c]} images are not grey" +
                      (f" ({kinds})" if kinds else ""))
    holders = " and ".join(c for c, v in zip(table, shares, strict=True) if v > max(shares) / 10)
    severity = Severity.critical if auc >= cfg.probe_critical_auc else Severity.warning
    out.append(Finding(
        "colour_by_class", severity,
        "; ".join(detail) + f" — colour is (almost) only found in {holders}, so it gives those "
        f"images' label away (AUC {auc:.2f} from colour alone, over all images).",
        GREYSCALE_ACTION + "; tinted film photos and coloured annotations also differ in contrast "
        "and content, so look at them and consider removing them",
        {"by_class": {c: dict(t) for c, t in table.items()}, "auc": round(auc, 4)},
        [r.id for r in inv.records if r.colour.value not in grey][: cfg.max_examples],
    ))
    return out


def _medians(inv: Inventory, name: str) -> dict[str, float]:
    values: dict[str, list[float]] = {c: [] for c in inv.classes}
    for r in inv.records:
        values[inv.classes[r.label]].append(float(record_value(r, name)))
    return {c: round(float(np.nanmedian(v)), 3) if v else float("nan") for c, v in values.items()}


def numeric_rules(inv: Inventory, cfg: AuditConfig) -> list[Finding]:
    """Image size, file size (within a format), image statistics and markers by class."""
    labels, out = inv.labels, []
    sizes = Counter(f"{r.width}×{r.height}" for r in inv.records)
    if len(sizes) == 1:
        out.append(Finding("image_sizes", Severity.info,
                           f"All {len(inv.records)} images are {next(iter(sizes))} pixels.", "nothing"))
    else:
        auc = max(separability([record_value(r, f) for r in inv.records], labels)
                  for f in ("width", "height", "aspect"))
        if auc >= cfg.feature_auc:
            w, h = _medians(inv, "width"), _medians(inv, "height")
            text = "; ".join(f"{c}: median {w[c]:.0f}×{h[c]:.0f}" for c in inv.classes)
            out.append(Finding(
                "size_by_class", Severity.warning,
                f"Image size differs by class ({text}; {len(sizes)} distinct sizes) — size predicts "
                f"the label (AUC {auc:.2f}).",
                "resize or crop all images to one size and aspect before export; the model's input "
                "resizing keeps resampling artefacts",
                {"auc": round(auc, 4), "median_width": w, "median_height": h},
            ))
    out += _file_size_rule(inv, cfg)
    stats = [
        ("border_by_class", ("dark_border", "bright_border"), Severity.warning,
         "black or white border (fraction of the outer 5% band)",
         "crop or pad all images the same way (borders come from scanners and exports)"),
        ("markers_by_class", ("corner_text",), Severity.warning,
         "bright text-like marks in the corners",
         "mask or crop burnt-in text and side markers, or check with saliency maps that the "
         "model ignores them"),
        ("intensity_by_class", ("mean", "std", "p01", "p50", "p99"), Severity.info,
         "grey-level statistics", "may be disease signal or acquisition (exposure, processing); "
         "compare histograms per source, consider histogram equalisation"),
    ]
    for code, names, severity, noun, action in stats:
        aucs = {n: separability([getattr(r, n) for r in inv.records], labels) for n in names}
        best = max(aucs, key=lambda n: aucs[n])
        if aucs[best] < cfg.feature_auc:
            continue
        med = _medians(inv, best)
        text = ", ".join(f"{c} {v:.2f}" for c, v in med.items())
        out.append(Finding(
            code, severity,
            f"The classes differ in {noun}: median {best} {text} (AUC {aucs[best]:.2f}).",
            action, {"auc": {n: round(a, 4) for n, a in aucs.items()}, "median": med},
        ))
    return out


def _file_size_rule(inv: Inventory, cfg: AuditConfig) -> list[Finding]:
    results = []
    for fmt in sorted({r.format for r in inv.records}):
        idx = [i for i, r in enumerate(inv.records) if r.format == fmt and r.file_bytes > 0]
        labels = inv.labels[idx]
        if len(idx) < 10 or (np.bincount(labels) >= 5).sum() < 2:
            continue
        auc = separability([inv.records[i].file_bytes for i in idx], labels)
        kb = {c: [inv.records[i].file_bytes / 1024 for i in idx if inv.records[i].label == k]
              for k, c in enumerate(inv.classes)}
        results.append((auc, fmt, {c: round(float(np.median(v)), 1) for c, v in kb.items() if v}))
    over = [r for r in sorted(results, reverse=True) if r[0] >= cfg.feature_auc]
    if not over:
        return []
    text = "; ".join(f"{fmt}: median " + ", ".join(f"{c} {v:.0f} KB" for c, v in med.items())
                     + f" (AUC {auc:.2f})" for auc, fmt, med in over)
    return [Finding(
        "file_size_by_class", Severity.warning,
        f"File sizes differ by class within one format ({text}): the classes were compressed, "
        "processed or scanned differently.",
        REENCODE_ACTION + "; look for different sources behind the classes",
        {"by_format": {fmt: {"auc": round(auc, 4), "median_kb": med} for auc, fmt, med in over}},
    )]


def name_rule(inv: Inventory, cfg: AuditConfig) -> list[Finding]:
    """File-name prefixes that reveal several collections, each inside one class."""
    table = _by_class(inv, "name_token")
    counts = inv.class_counts()
    tokens = {t for tally in table.values() for t in tally}
    common = {c: [t for t, n in tally.most_common() if n >= cfg.min_share * counts[c]]
              for c, tally in table.items()}
    exclusive = all(sum(1 for c in table if table[c][t]) == 1 for t in tokens)
    if not exclusive or not any(len(v) > 1 for v in common.values()):
        return []
    formats = _tokens_formats(inv)
    text = "; ".join(
        f"{c} = " + ", ".join(f"'{t}' ({table[c][t]}, {formats[t]})" for t in common[c])
        for c in table
    )
    return [Finding(
        "name_pattern_by_class", Severity.warning,
        f"File names reveal {len(tokens)} collections, each found in one class only: {text}. A "
        "model can learn the collection (its scanner, format, processing) instead of the disease.",
        "evaluate per collection and, to test generalisation, split by collection "
        "(data.group_pattern: '^(\\D*)'); better, take every class from every collection",
        {"by_class": {c: dict(t) for c, t in table.items()}},
    )]


def _tokens_formats(inv: Inventory) -> dict[str, str]:
    per: dict[str, Counter[str]] = {}
    for r in inv.records:
        per.setdefault(r.name_token, Counter())[r.format] += 1
    return {t: ", ".join(f"{n * 100 // sum(c.values())}% {f}" for f, n in c.most_common(2))
            for t, c in per.items()}


def probe_rule(probe: ProbeResult | None, cfg: AuditConfig) -> list[Finding]:
    if probe is None:
        return []
    top = ", ".join(f"{f} (AUC drop {d:.2f})" for f, d in probe.importance[:4]) or "none stands out"
    groups = ", ".join(f"{g} {a:.2f}" for g, a in sorted(probe.group_auc.items(), key=lambda x: -x[1]))
    text = (f"cross-validated ROC AUC {probe.auc:.2f} ± {probe.auc_std:.2f} ({probe.folds}-fold "
            f"{probe.model} on {len(probe.features)} metadata features: format, size, mode, colour, "
            f"file size). Most telling: {top}. Each group alone: {groups or 'n/a'}.")
    data = probe.to_dict()
    if probe.auc >= cfg.probe_auc:
        severity = Severity.critical if probe.auc >= cfg.probe_critical_auc else Severity.warning
        return [Finding(
            "metadata_shortcut", severity, "Metadata alone predicts the label: " + text,
            "remove the cues before training: " + REENCODE_ACTION + ", " + GREYSCALE_ACTION +
            ", one image size; then rerun the audit, and test on data from another source", data,
        )]
    return [Finding("metadata_probe", Severity.info, "Metadata does not predict the label: " + text,
                    "nothing", data)]


def unreadable_rule(inv: Inventory, cfg: AuditConfig) -> list[Finding]:
    if not inv.unreadable:
        return []
    return [Finding(
        "unreadable_file", Severity.warning,
        f"{len(inv.unreadable)} file(s) could not be read: {inv.unreadable[0][0]}: "
        f"{inv.unreadable[0][1]}.",
        "fix or remove them (preprocess.on_error: skip drops them at load time)",
        {"count": len(inv.unreadable)}, [i for i, _ in inv.unreadable][: cfg.max_examples],
    )]
