"""The documentation: the mkdocs site builds with warnings as errors (broken links and anchors,
pages left out of the nav, docstrings the API page cannot render), README.md's relative links
lead to files, and user pages name no issue numbers."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
ISSUE = re.compile(r"\bissues? \d+", re.IGNORECASE)
# pages that may tell the project's history: development notes and the changelog
HISTORY_PAGES = {"development.md", "changelog.md"}
# kept by the seeds' maintainer; its "issue 25" references are to be reworded there
NOT_YET_CHECKED: set[str] = set()


DOCS_MODULES = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers")


def test_the_site_builds_strictly(tmp_path):
    missing = [m for m in DOCS_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the docs packages are not installed ({', '.join(missing)}); "
                    "pip install '.[docs]' to build the site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    assert (tmp_path / "site" / "index.html").is_file()
    # the API page rendered the package's docstrings (mkdocstrings found the modules)
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    assert "medtransfer.study.StudyConfig" in api and ":func:" not in api


def _relative_links(text: str) -> list[str]:
    links = [m[1] for m in LINK.finditer(text)]
    return [link.split("#", 1)[0] for link in links
            if not re.match(r"[a-z][a-z0-9+.-]*:", link) and not link.startswith("#")]


def test_readme_links_lead_to_files():
    links = _relative_links((ROOT / "README.md").read_text(encoding="utf-8"))
    assert "docs/studies.md" in links  # the README points into the docs
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_readme_stays_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 250, f"README.md has {lines} lines; move reference material into docs/"


@pytest.mark.parametrize("page", ["README.md", *sorted(
    p.name for p in DOCS.glob("*.md") if p.name not in HISTORY_PAGES | NOT_YET_CHECKED)])
def test_user_pages_name_no_issue_numbers(page):
    path = ROOT / page if page == "README.md" else DOCS / page
    hits = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if ISSUE.search(line)]
    assert not hits, (f"{page} names issue numbers (history goes to docs/development.md or the "
                      f"changelog): {hits}")


def _seed_counts() -> dict[str, tuple[int, int, int]]:
    """Faithful / approximate / not available rows of each seed's table in docs/seeds.md."""
    counts: dict[str, list[int]] = {}
    seed = None
    for line in (DOCS / "seeds.md").read_text().splitlines():
        if m := re.match(r"## Seed (\d+)", line):
            seed = m.group(1)
            counts[seed] = [0, 0, 0]
        elif seed and re.match(r"\| \d+ \|", line):
            verdict = line.rstrip(" |").rsplit("|", 1)[-1].strip()
            kind = next(k for k, word in enumerate(("faithful", "approximate", "not available"))
                        if verdict.startswith(word))
            counts[seed][kind] += 1
    return {s: (c[0], c[1], c[2]) for s, c in counts.items()}


def test_the_seed_fidelity_counts_quoted_are_the_tables_counts():
    counts = _seed_counts()
    assert set(counts) == {"000", "001", "002", "003", "004"}
    summary = (DOCS / "seeds.md").read_text()
    readme = (ROOT / "README.md").read_text()
    studies = (DOCS / "seed-studies.md").read_text()
    for seed, (f, a, n) in counts.items():
        assert re.search(rf"\| \[{seed}\]\(#seed-{seed}\) \| {f} \| {a} \| {n} \(\d+\) \| {f + a + n} \|",
                         summary), seed
        assert re.search(rf"{seed}:\s+{f} / {a} / {n}\b", readme), seed
        assert re.search(rf"seed {seed}\s+{f} / {a} / {n}\b", studies), seed
