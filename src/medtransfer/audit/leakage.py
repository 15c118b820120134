"""Leakage findings: duplicates within a set, across labels, across split parts, across data sets,
and patient groups that straddle split parts."""

from __future__ import annotations

from collections.abc import Sequence

from medtransfer.audit.config import AuditConfig
from medtransfer.audit.duplicates import DuplicatePair, MatchKind, clusters
from medtransfer.audit.findings import Finding, Severity
from medtransfer.audit.inspect import Inventory

SPLIT_BY_GROUP = ("split by patient group (data.group_column / data.group_pattern), or pass the "
                  "audit's duplicate clusters as groups to make_split, so that each cluster stays "
                  "on one side of every split")
WHAT_NEAR_IS = ("the same image re-saved, resized or cropped, or the same patient imaged again")


def _n(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


def _example(inv: Inventory, other: Inventory, p: DuplicatePair) -> str:
    sign = "=" if p.kind is MatchKind.exact else "≈"
    return f"{inv.records[p.a].id} {sign} {other.records[p.b].id} ({p.similarity:.2f})"


def _strongest(pairs: list[DuplicatePair]) -> list[DuplicatePair]:
    """Exact pairs first, then by falling similarity: the most convincing examples first."""
    return sorted(pairs, key=lambda p: (p.kind is not MatchKind.exact, -p.similarity))


def duplicate_rules(inv: Inventory, pairs: list[DuplicatePair], cfg: AuditConfig) -> list[Finding]:
    """Exact / near duplicates inside one set, with the same or with different labels."""
    out = []
    labels = inv.labels
    for kind in (MatchKind.exact, MatchKind.near):
        for cross in (False, True):
            chosen = [p for p in pairs if p.kind is kind and (labels[p.a] != labels[p.b]) == cross]
            if not chosen:
                continue
            groups = clusters(len(inv.records), chosen)
            images = sum(len(g) for g in groups)
            examples = [_example(inv, inv, p) for p in _strongest(chosen)[: cfg.max_examples]]
            data = {"pairs": len(chosen), "clusters": len(groups), "images": images}
            if kind is MatchKind.exact and not cross:
                out.append(Finding(
                    "exact_duplicate", Severity.warning,
                    f"{_n(len(groups), 'set')} of identical images ({images} images, "
                    f"{_n(images - len(groups), 'redundant copy', 'redundant copies')}): a random "
                    "split can put copies in training and test.",
                    "remove duplicates (keep one image of each set)", data, examples))
            elif kind is MatchKind.exact:
                out.append(Finding(
                    "exact_duplicate_cross_class", Severity.critical,
                    f"Identical images with different labels ({_n(len(chosen), 'pair')}): the same "
                    "image with two labels.", "check the labels; remove the wrong copies", data, examples))
            else:
                code = "near_duplicate_cross_class" if cross else "near_duplicate"
                what = " with different labels" if cross else ""
                out.append(Finding(
                    code, Severity.warning,
                    f"{_n(len(chosen), 'pair')} of near-duplicate images{what} in "
                    f"{_n(len(groups), 'cluster')} ({images} images): {WHAT_NEAR_IS}.",
                    ("check the labels (follow-up images can legitimately differ); " if cross else
                     "remove true copies; ") + SPLIT_BY_GROUP, data, examples))
    return out


def split_rules(
    inv: Inventory, pairs: list[DuplicatePair], parts: Sequence[str | None], cfg: AuditConfig,
    where: str,
) -> list[Finding]:
    """Duplicates and patient groups on two sides of the split ``parts`` (one part per record)."""
    out = []
    for kind, code, severity in ((MatchKind.exact, "exact_duplicate_cross_split", Severity.critical),
                                 (MatchKind.near, "near_duplicate_cross_split", Severity.warning)):
        leaks = [p for p in pairs if p.kind is kind and parts[p.a] is not None
                 and parts[p.b] is not None and parts[p.a] != parts[p.b]]
        if not leaks:
            continue
        sides = sorted({"/".join(sorted((str(parts[p.a]), str(parts[p.b])))) for p in leaks})
        noun = "identical" if kind is MatchKind.exact else "near-duplicate"
        examples = [f"{_example(inv, inv, p)} [{parts[p.a]} | {parts[p.b]}]"
                    for p in _strongest(leaks)[: cfg.max_examples]]
        out.append(Finding(
            code, severity,
            f"{_n(len(leaks), 'pair')} of {noun} images sit in different parts of {where} "
            f"({', '.join(sides)}): test results are inflated by images the model has seen"
            + ("." if kind is MatchKind.exact else f" ({WHAT_NEAR_IS})."),
            "remove duplicates, then " + SPLIT_BY_GROUP,
            {"pairs": len(leaks), "parts": sides}, examples))
    groups = inv.groups
    if groups is not None:
        seen: dict[str, set[str]] = {}
        for g, part in zip(groups, parts, strict=True):
            if part is not None:
                seen.setdefault(g, set()).add(part)
        leaked = {g: sorted(p) for g, p in seen.items() if len(p) > 1}
        if leaked:
            examples = [f"{g}: {', '.join(p)}" for g, p in list(leaked.items())[: cfg.max_examples]]
            out.append(Finding(
                "group_split_leak", Severity.critical,
                f"{len(leaked)} of {_n(len(seen), 'patient group')} have images in more than one part of "
                f"{where}: the model is tested on patients it was trained on.",
                "split with groups (make_split(..., groups=...)) so each group stays on one side",
                {"groups": len(leaked)}, examples))
    missing = sum(p is None for p in parts)
    if missing:
        out.append(Finding(
            "split_incomplete", Severity.info,
            f"{missing} of {len(parts)} images are in no part of {where} (not used, or the split "
            "was made from other data).", "check that the split belongs to this data",
            {"missing": missing}))
    return out


def cross_dataset_rules(
    inv: Inventory, other: Inventory, pairs: list[DuplicatePair], cfg: AuditConfig
) -> list[Finding]:
    """Images of ``inv`` that match images of ``other``."""
    if not pairs:
        return []
    exact = [p for p in pairs if p.kind is MatchKind.exact]
    near = [p for p in pairs if p.kind is MatchKind.near]
    hit_a, hit_b = len({p.a for p in pairs}), len({p.b for p in pairs})
    examples = [_example(inv, other, p) for p in _strongest(pairs)[: cfg.max_examples]]
    return [Finding(
        "cross_dataset_duplicate", Severity.critical if exact else Severity.warning,
        f"{inv.name} and {other.name} share {len(exact)} identical and {len(near)} near-duplicate "
        f"image pairs ({hit_a} images of {inv.name}, {hit_b} of {other.name}; near = "
        f"{WHAT_NEAR_IS}). Pretraining on one and testing on the other then sees test patients.",
        f"remove the matching images from one of the two sets (usually from {inv.name}, the "
        "pretraining source) before running the study",
        {"exact": len(exact), "near": len(near), "images": hit_a, "other_images": hit_b},
        examples,
    )]
