"""Audit results as terminal text, as a Markdown report section, and as files on disk."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from medtransfer.audit.findings import Finding
from medtransfer.audit.result import AuditResult
from medtransfer.fileio import write_text_atomic

_WIDTH = 100


def _counts(mapping: dict[str, Any], limit: int = 3) -> str:
    items = list(mapping.items())
    text = ", ".join(f"{k} {v}" for k, v in items[:limit])
    return text + (f", +{len(items) - limit} more" if len(items) > limit else "")


def _title(result: AuditResult) -> str:
    counts = ", ".join(f"{c} {n}" for c, n in result.counts.items())
    where = f"{result.kind}, {result.path}" if result.path else result.kind
    return f"{result.name} ({where}): {sum(result.counts.values())} images: {counts}"


def _table_rows(result: AuditResult) -> list[list[str]]:
    rows = []
    for c, s in result.per_class.items():
        rows.append([c, str(s["images"]), _counts(s["formats"]), _counts(s["colour"]),
                     _counts(s["sizes"], 1) + (f" ({s['distinct_sizes']} sizes)" if s["distinct_sizes"] > 1
                                               else ""),
                     f"{s['median_kb']:.0f}", f"{s['median_mean']:.2f}", f"{s['median_dark_border']:.2f}",
                     _counts(s["name_tokens"], 2)])
    return rows


_HEADER = ["class", "images", "formats", "colour", "size", "median KB", "mean grey", "dark border",
           "name prefixes"]


def _finding_text(f: Finding, indent: str = "  ") -> list[str]:
    wrap = textwrap.TextWrapper(width=_WIDTH, initial_indent=indent, subsequent_indent=indent)
    lines = [f"{f.severity.value.upper():<9} {f.code}"]
    lines += wrap.wrap(f.message)
    lines += wrap.wrap("→ " + f.action)
    if f.examples:
        lines += wrap.wrap("e.g. " + "; ".join(f.examples[:3]))
    return lines


def format_audit(result: AuditResult) -> str:
    """Human-readable audit for the terminal: findings worst first, then a per-class table."""
    lines = [f"Data audit of {_title(result)} — {result.seconds:.1f} s", ""]
    own = result.findings
    if not own:
        lines.append("No findings.")
    for f in own:
        lines += [*_finding_text(f), ""]
    rows = [_HEADER, *_table_rows(result)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADER))]
    lines.append("Per class:")
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
              for r in rows]
    if result.against is not None:
        lines += ["", "=" * _WIDTH, format_audit(result.against)]
    return "\n".join(lines)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def audit_markdown(result: AuditResult, level: int = 2) -> str:
    """A Markdown report section: findings table, per-class table, duplicates summary."""
    h = "#" * level
    out = [f"{h} Data audit: {result.name}", "", f"{_title(result)}.", ""]
    if result.findings:
        out += ["| severity | finding | what to do |", "|---|---|---|"]
        for f in result.findings:
            text = f"**{f.code}**: {f.message}"
            if f.examples:
                text += " E.g. " + "; ".join(f"`{e}`" for e in f.examples[:3])
            out.append(f"| {f.severity.value} | {_md_cell(text)} | {_md_cell(f.action)} |")
    else:
        out.append("No findings.")
    out += ["", "| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in _table_rows(result)]
    if result.against is not None:
        out += ["", audit_markdown(result.against, level + 1)]
    return "\n".join(out) + "\n"


def write_audit(result: AuditResult, out: Path) -> tuple[Path, Path]:
    """Write ``audit.json`` and ``audit.md`` into the folder ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "audit.json", out / "audit.md"
    write_text_atomic(json_path, result.to_json() + "\n")
    write_text_atomic(md_path, audit_markdown(result))
    return json_path, md_path
