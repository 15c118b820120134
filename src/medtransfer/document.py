"""A small document builder that renders the same content as HTML (self-contained: CSS inline,
images as base64 data URIs, no scripts) or as Markdown (images linked), plus number formats: the
report, the model card and a search's summary are written with it."""

from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path
from typing import Any

# The files a figure may be saved as (report.figure_formats): the PNG, which documents embed, and
# the vector twins they link where saved.
FIGURE_FORMATS = ("png", "svg", "pdf")
VECTOR_FORMATS = FIGURE_FORMATS[1:]

__all__ = ["FIGURE_FORMATS", "VECTOR_FORMATS", "Doc", "fmt", "p_text"]

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1100px;
color:#222;line-height:1.45;padding:0 1rem}
h1{border-bottom:2px solid #335;padding-bottom:.3rem}h2{margin-top:2.2rem;border-bottom:1px solid #ccd}
table{border-collapse:collapse;margin:.6rem 0 1.2rem;font-size:.85rem}
th,td{border:1px solid #ccd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#eef0f6}tr:nth-child(even) td{background:#fafbfd}
pre{background:#f5f6f8;border:1px solid #dde;padding:.6rem;overflow-x:auto;font-size:.8rem;max-height:32rem}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(500px,1fr));gap:1rem;align-items:start}
figure{margin:0}figure img{max-width:100%;height:auto;border:1px solid #dde}
figcaption{font-size:.8rem;color:#555}
code{background:#f0f1f4;padding:0 .2rem}li{margin:.2rem 0}
"""


def fmt(x: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals; NaN/None as an en dash."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{float(x):.{digits}f}"


def p_text(p: float) -> str:
    """``p=0.027`` style; ``p<0.001`` below that; en dash when undefined."""
    if p is None or not math.isfinite(p):
        return "–"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _inline(text: str) -> str:
    """Escape, then the two Markdown marks used in the report: **bold** and `code`."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


class Doc:
    """Append-only document; :meth:`render` gives HTML or Markdown."""

    def __init__(self, *, markdown: bool, base: Path) -> None:
        self.markdown, self.base = markdown, base
        self.parts: list[str] = []
        self._title = ""

    def title(self, text: str) -> None:
        self._title = text
        self.parts.append(f"# {text}\n" if self.markdown else f"<h1>{html.escape(text)}</h1>")

    def heading(self, text: str, level: int = 2) -> None:
        if self.markdown:
            self.parts.append(f"{'#' * level} {text}\n")
        else:
            self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def para(self, text: str) -> None:
        self.parts.append(f"{text}\n" if self.markdown else f"<p>{_inline(text)}</p>")

    def bullets(self, items: list[str]) -> None:
        if not items:
            return
        if self.markdown:
            self.parts.append("\n".join(f"- {i}" for i in items) + "\n")
        else:
            self.parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")

    def code(self, text: str) -> None:
        if self.markdown:
            self.parts.append(f"```yaml\n{text.rstrip()}\n```\n")
        else:
            self.parts.append("<details open><summary>config.yaml</summary>"
                              f"<pre>{html.escape(text)}</pre></details>")

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        if self.markdown:
            lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
                     "|" + "|".join("---" for _ in header) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            self.parts.append("\n".join(lines) + "\n")
            return
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def images(self, items: list[tuple[str, Path]]) -> None:
        """PNGs (caption, path) in a grid: embedded as data URIs in HTML, linked (with their SVG
        or PDF twins where saved) in Markdown."""
        out = []
        for caption, png in items:
            rel = png.relative_to(self.base) if png.is_relative_to(self.base) else png
            twins = [s for s in VECTOR_FORMATS if png.with_suffix(f".{s}").is_file()]
            if self.markdown:
                links = ", ".join(f"[{s.upper()}]({Path(rel).with_suffix(f'.{s}')})" for s in twins)
                out.append(f"![{caption}]({rel})" + (f" ({links})" if links else "") + "\n")
                continue
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            cap = html.escape(caption)
            out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{cap}">'
                       f"<figcaption>{cap} — <code>{html.escape(str(rel))}</code>"
                       + "".join(f" (+ .{s})" for s in twins) +
                       "</figcaption></figure>")
        self.parts.append("\n".join(out) if self.markdown else '<div class="figs">' + "".join(out) + "</div>")

    def render(self) -> str:
        if self.markdown:
            return "\n".join(self.parts)
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self._title)}</title><style>{CSS}</style></head><body>\n"
                + "\n".join(self.parts) + "\n</body></html>\n")
