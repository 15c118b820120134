"""The report opens with "What this study found": the best arm with its CI, the significant
comparisons, external drops and critical audit findings, in sentences (Markdown, HTML, Chromium)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from medtransfer.api import run_study
from medtransfer.report import write_report
from medtransfer.study import study_from_dict
from test_report import _chromium, _config, _parse


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_thread) -> Path:
    tmp = tmp_path_factory.mktemp("findings")
    split = {"test_sets": 2, "test_per_class": 6, "train_per_class": 15, "val_fraction": 0.25}
    out = run_study(study_from_dict(_config(tmp, {"normal": 30, "covid": 30}, split)), tmp / "run",
                    echo=lambda m: None, n_boot=100, gallery_images=0)
    return out


def _best(run: Path, metric: str) -> dict[str, str]:
    with (run / "metrics_ci.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["test_set"] == "pooled" and r["metric"] == metric
                and r["operating_point"] in ("", "default")]
    return max(rows, key=lambda r: float(r["estimate"]))


def test_findings_come_first_and_name_the_best_arm(run):
    md = (run / "report.md").read_text(encoding="utf-8")
    headings = [ln for ln in md.splitlines() if ln.startswith("## ")]
    assert headings[0] == "## What this study found" and headings[-1] == "## Configuration"
    section = md.split("## What this study found", 1)[1].split("\n## ", 1)[0]
    auc, acc = _best(run, "auc"), _best(run, "accuracy")
    assert f"Best AUC: **{auc['arm']}**, {float(auc['estimate']):.3f} (95% CI " in section
    assert f"Best accuracy: **{acc['arm']}**" in section
    assert "all internal test sets pooled" in section
    # every comparison is either stated as significant or the section says none is
    assert "after Holm's correction" in section or "Holm-adjusted" in section
    assert "data audit" in section
    assert "fold 1" not in md  # no cross-validation in this study: no fold wording


def test_findings_state_critical_audit_findings(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("plots", "*.pt"))
    audit = copy / "audit" / "target" / "audit.json"
    audit.parent.mkdir(parents=True, exist_ok=True)
    report = json.loads(audit.read_text()) if audit.is_file() else {}
    report["findings"] = [*report.get("findings", []), {
        "severity": "critical", "code": "shortcut_probe", "message": "a probe on image borders alone "
        "predicts the class (AUC 0.97)", "action": "crop the borders"}]
    audit.write_text(json.dumps(report))
    write_report(copy, n_boot=50, gallery_images=0)
    page = _parse((copy / "report.html").read_text(encoding="utf-8"))
    text = " ".join(page.text)
    assert "The data audit of target found a critical problem (shortcut_probe): a probe on image " \
           "borders alone predicts the class (AUC 0.97). What to do: crop the borders" in text
    assert text.index("What this study found") < text.index("Data audit (shortcuts")


def test_findings_render_in_headless_chromium(run, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", (run / "report.html").resolve().as_uri()], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    text = " ".join(" ".join(_parse(dom).text).split())  # text nodes joined, whitespace collapsed
    assert "What this study found" in text and f"Best AUC: {_best(run, 'auc')['arm']}" in text
