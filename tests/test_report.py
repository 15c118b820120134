"""write_report on tiny finished runs: tidy CSVs, figures, Markdown, and a self-contained HTML
page rendered in headless Chromium."""

from __future__ import annotations

import base64
import csv
import io
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from sklearn.metrics import roc_auc_score

from medtransfer.api import run_study
from medtransfer.errors import DataError
from medtransfer.fileio import file_record
from medtransfer.integrity import read_record, write_record
from medtransfer.report import POOLED, comparison_rows, load_run, write_report
from medtransfer.report.analysis import CI_COLUMNS, COMPARISON_COLUMNS
from medtransfer.study import study_from_dict


def _folder(root: Path, classes: dict[str, int], seed: int, size: int = 16) -> Path:
    """Class folders whose classes differ in brightness (as tests/study/test_study.py)."""
    rng = np.random.default_rng(seed)
    for k, (name, n) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        for i in range(n):
            arr = np.clip(rng.normal(60 + 120 * k / max(1, len(classes) - 1), 30, (size, size)), 0, 255)
            Image.fromarray(arr.astype(np.uint8)).save(root / name / f"{name}_{i}.png")
    return root


def _config(tmp: Path, target: dict[str, int], split: dict) -> dict:
    src = _folder(tmp / "src", {"neg": 30, "pos": 30}, seed=1)
    tgt = _folder(tmp / "tgt", target, seed=2)
    train = {"epochs": 2, "batch_size": 16, "progress": False, "optimizer": {"name": "adam", "lr": 0.003}}
    return {
        "name": "tiny", "seed": 3, "cache_dir": str(tmp / "cache"), "preprocess": {"size": 16},
        "report": {"figure_formats": ["png"]},
        "source": {"data": {"path": str(src)}, "split": {"val_fraction": 0.2}},
        "target": {"data": {"path": str(tgt), "classes": list(target)}, "split": split},
        "model": {"name": "alexnet_small", "options": {"base": 4, "dense": [8, 8]}},
        "pretrain": {"train": train},
        "transfer": {"freeze": {"trainable_layers": 3}, "train": train},
        "variants": [{"name": "baseline"}, {"name": "bn", "model": {"batch_norm": True}},
                     {"name": "drop", "model": {"dense_dropout": 0.3}}],
    }



@pytest.fixture(scope="module")
def binary_run(tmp_path_factory, one_thread) -> Path:
    tmp = tmp_path_factory.mktemp("binary")
    split = {"test_sets": 2, "test_per_class": 6, "train_per_class": 15, "val_fraction": 0.25}
    raw = _config(tmp, {"normal": 30, "covid": 30}, split)
    raw["report"] = {"figure_formats": ["png", "svg"]}  # each figure's SVG twin checked below
    out = run_study(study_from_dict(raw), tmp / "run", echo=lambda m: None, report=False)
    write_report(out, n_boot=200, gallery_images=4)
    return out


@pytest.fixture(scope="module")
def multiclass_run(tmp_path_factory, one_thread) -> Path:
    tmp = tmp_path_factory.mktemp("multi")
    split = {"test_sets": 1, "test_per_class": 5, "train_per_class": 12, "val_fraction": 0.25}
    cfg = study_from_dict(_config(tmp, {"a": 20, "b": 20, "c": 20}, split))
    out = run_study(cfg, tmp / "run", echo=lambda m: None, report=False)
    write_report(out, n_boot=200, gallery_images=3)
    return out


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _pooled_predictions(run: Path, variant: str) -> tuple[np.ndarray, np.ndarray]:
    unit = next((run / "units").glob(f"cell-{variant}-*"))
    rows = [r for r in _csv(unit / "predictions.csv") if r["test_set"] != "val"]
    return np.array([int(r["label"]) for r in rows]), np.array([float(r["p_covid"]) for r in rows])


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.imgs: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        for key in ("href", "src"):
            if a.get(key) and tag != "img":
                self.links.append(a[key])

    def handle_data(self, data):
        self.text.append(data)


def _parse(html_text: str) -> _Page:
    page = _Page()
    page.feed(html_text)
    return page


def _assert_images_embedded(page: _Page) -> None:
    assert page.imgs, "no images"
    for src in page.imgs:
        assert src.startswith("data:image/png;base64,"), src[:60]
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            im.verify()


def test_report_writes_tidy_csvs_figures_and_markdown(binary_run):
    out = binary_run
    for name in ("report.html", "report.md", "metrics_ci.csv", "comparisons.csv", "summary.md"):
        assert (out / name).is_file(), name
    pngs = sorted(p.stem for p in (out / "plots").glob("*.png"))
    assert {p.stem for p in (out / "plots").glob("*.svg")} == set(pngs)
    for stem in ("roc", "calibration", "forest_auc", "forest_accuracy", "confusion_bn", "gradcam_drop",
                 "learning_pretrain_baseline", "learning_transfer_bn"):
        assert stem in pngs
    cmp = _csv(out / "comparisons.csv")
    assert list(cmp[0]) == COMPARISON_COLUMNS
    assert {(r["variant"], r["test_set"], r["metric"]) for r in cmp} == {
        (v, t, m) for v in ("bn", "drop") for t in ("test_1", "test_2", POOLED) for m in ("auc", "accuracy")}
    for r in cmp:
        assert r["reference"] == "baseline"
        assert float(r["p_holm"]) >= float(r["p"]) - 1e-12
        assert r["significant"] == str(float(r["p_holm"]) < 0.05).lower()
        assert float(r["ci_low"]) <= float(r["diff"]) <= float(r["ci_high"])
    pooled_auc = next(r for r in cmp if (r["variant"], r["test_set"], r["metric"]) == ("bn", POOLED, "auc"))
    y, p_bn = _pooled_predictions(out, "bn")
    _, p_base = _pooled_predictions(out, "baseline")
    assert float(pooled_auc["estimate"]) == pytest.approx(roc_auc_score(y, p_bn), abs=1e-5)
    assert float(pooled_auc["reference_estimate"]) == pytest.approx(roc_auc_score(y, p_base), abs=1e-5)
    assert pooled_auc["method"] == "DeLong" and int(pooled_auc["n"]) == 24
    ci = _csv(out / "metrics_ci.csv")
    assert list(ci[0]) == CI_COLUMNS
    results = {(r["variant"], r["test_set"], r["metric"]): float(r["value"])
               for r in _csv(out / "results.csv") if r["stage"] == "transfer"}
    for r in ci:
        if r["operating_point"] == "default" and r["test_set"] != POOLED and r["metric"] == "accuracy":
            assert float(r["estimate"]) == pytest.approx(results[(r["variant"], r["test_set"], "accuracy")])
        assert 0.0 <= float(r["ci_low"]) <= float(r["ci_high"]) <= 1.0
    assert {r["operating_point"] for r in ci} == {"", "default", "youden_val"}
    md = (out / "report.md").read_text()
    assert "| variant |" in md and "](plots/roc.png)" in md and "Holm" in md
    # What trained, and on which path: each variant's row names cached or full and why.
    transfer = md[md.index("## Transfer training"):].split("\n## ")[0].split("\n### ")[0]
    rows = [line for line in transfer.splitlines() if line.startswith("| ") and "variant" not in line]
    variants = [v.name for v in load_run(out).config.variants]
    assert [r.split(" | ")[0].strip("| ") for r in rows] == variants
    assert all(re.search(r"\| (cached|full): ", r) for r in rows), rows


def test_report_html_is_self_contained(binary_run):
    page = _parse((binary_run / "report.html").read_text())
    assert "script" not in page.tags and "link" not in page.tags
    assert not [u for u in page.links if u.startswith(("http:", "https:", "//"))]
    assert page.tags.count("table") >= 8
    _assert_images_embedded(page)
    assert len(page.imgs) == len(list((binary_run / "plots").glob("*.png")))
    text = " ".join(page.text)
    assert "bn vs baseline (pooled): AUC" in text and "DeLong p" in text and "significant at 0.05" in text
    assert "Grad-CAM gallery" in text and "Dead ReLU filters" in text


def test_multiclass_single_test_set_report(multiclass_run):
    cmp = _csv(multiclass_run / "comparisons.csv")
    assert {r["test_set"] for r in cmp} == {"test_1"}
    auc = next(r for r in cmp if r["metric"] == "auc")
    assert auc["method"].startswith("paired bootstrap")
    ci = _csv(multiclass_run / "metrics_ci.csv")
    assert "youden_val" not in {r["operating_point"] for r in ci}
    assert {r["metric"] for r in ci} >= {"auc", "balanced_accuracy", "f1", "ece", "brier"}
    page = _parse((multiclass_run / "report.html").read_text())
    _assert_images_embedded(page)
    assert {p.name for p in (multiclass_run / "plots").glob("roc*.png")} == {
        "roc_baseline.png", "roc_bn.png", "roc_drop.png"}  # one-vs-rest curves per variant


def test_single_variant_and_moved_data_still_give_a_report(binary_run, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(binary_run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["target"]["data"]["path"] = str(tmp_path / "moved")
    cfg["variants"] = [{"name": "baseline"}]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    # The report reads what ran from the manifest: keep the baseline's jobs only.
    manifest = read_record(run / "manifest.json")  # rewritten with its digest, as medtransfer would
    manifest["jobs"] = {k: e for k, e in manifest["jobs"].items() if e["variant"] == "baseline"}
    write_record(run / "manifest.json", manifest)
    (run / "plots").rename(tmp_path / "old_plots")
    write_report(run, n_boot=50)
    text = " ".join(_parse((run / "report.html").read_text()).text)
    assert "Grad-CAM gallery" in text and "Not drawn:" in text and "moved" in text
    assert "Only one variant" in text
    assert not list((run / "plots").glob("gradcam_*")) and not list((run / "plots").glob("forest_*"))
    assert (run / "comparisons.csv").read_text().strip() == ",".join(COMPARISON_COLUMNS)


def test_run_without_test_sets_gets_a_report_saying_so(binary_run, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(binary_run, run, ignore=shutil.ignore_patterns("plots", "*.pt"))
    for pred in (run / "units").glob("cell-*/predictions.csv"):
        lines = pred.read_text().splitlines()
        kept = [ln for ln in lines[1:] if ln.startswith("val,")]
        pred.write_text("\n".join([lines[0], *kept]) + "\n")
        # result.json vouches for its predictions: record the edited file, or the report refuses it
        result = read_record(pred.parent / "result.json")
        result["files"]["predictions.csv"] = file_record(pred)
        result["prediction_rows"] = {"val": len(kept)}
        write_record(pred.parent / "result.json", result)
    write_report(run, n_boot=50)
    text = " ".join(_parse((run / "report.html").read_text()).text)
    assert "no test sets" in text and "Not drawn: the run has no test images" in text
    assert len(_csv(run / "metrics_ci.csv")) == 0 and len(_csv(run / "comparisons.csv")) == 0


def test_comparison_reference_and_load_errors(binary_run, tmp_path):
    run = load_run(binary_run)
    rows = comparison_rows(run, "bn", metrics=["auc", "f1"], n_boot=50)
    assert {r["variant"] for r in rows} == {"baseline", "drop"} and {r["reference"] for r in rows} == {"bn"}
    assert {r["method"] for r in rows} == {"DeLong", "paired bootstrap"}
    assert comparison_rows(load_run(binary_run), "bn", metrics=["auc", "f1"], n_boot=50) == rows  # seeded
    assert all(math.isfinite(r["p_holm"]) for r in rows)
    with pytest.raises(DataError, match="reference: got 'nope'.*baseline, bn, drop"):
        comparison_rows(run, "nope")
    with pytest.raises(DataError, match="does not exist"):
        load_run(tmp_path / "missing")
    (tmp_path / "half").mkdir()
    with pytest.raises(DataError, match="config.yaml"):
        load_run(tmp_path / "half")


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_report_renders_in_headless_chromium(binary_run, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    url = (binary_run / "report.html").resolve().as_uri()
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,4000", url],
                   check=True, capture_output=True, timeout=120)
    with Image.open(shot) as im:
        assert im.size == (1280, 4000)
        grey = np.asarray(im.convert("L"), dtype=np.float64)
    assert grey.std() > 10 and (grey < 128).mean() > 0.01  # text, tables and figures were painted
    dom = subprocess.run([*flags, "--dump-dom", url], check=True, capture_output=True, text=True,
                         timeout=120).stdout
    page = _parse(dom)
    assert page.tags.count("table") >= 8 and page.tags.count("figure") >= 10
    _assert_images_embedded(page)
