"""A search tunes each arm on its own (seeds 001 and 004): every variant × source × target ×
strategy gets its own trials and best point, and the tuned arms are tested and compared."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from medtransfer.errors import ConfigError
from medtransfer.search import run_search
from medtransfer.search.arms import search_arms
from medtransfer.study import load_study, resolve_variants, study_from_dict


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_each_source_gets_its_own_trials_and_best_and_the_tuned_arms_are_compared(tmp_path, matrix_search):
    out = tmp_path / "run"
    run_search(matrix_search(tmp_path), out, echo=lambda m: None, progress=False)
    trials = _csv(out / "trials.csv")
    assert sorted((t["arm"], t["strategies.head.train.optimizer.lr"]) for t in trials) == [
        ("a.head", "0.0001"), ("a.head", "0.01"), ("b.head", "0.0001"), ("b.head", "0.01")]
    assert all(t["state"] == "complete" for t in trials)
    # best.yaml: one variant per arm, pinned to it, with that arm's own best learning rate
    tuned = {v.name: v for v in resolve_variants(load_study(out / "best.yaml"))}
    assert set(tuned) == {"a-head", "b-head"}
    for arm, source in (("a-head", "a"), ("b-head", "b")):
        best = next(t for t in trials if t["arm"] == f"{source}.head" and t["rank"] == "1")
        assert tuned[arm].sources == (source,) and list(tuned[arm].strategies) == ["head"]
        lr = float(best["strategies.head.train.optimizer.lr"])
        assert tuned[arm].strategies["head"].train.optimizer.lr == lr
    # every tuned arm ran once on the tests, on the same images: the report pairs them
    rows = [r for r in _csv(out / "results.csv") if r["stage"] == "transfer"]
    assert {(r["variant"], r["source"], r["test_set"]) for r in rows if r["metric"] == "auc"} == {
        ("a-head", "a", "test_1"), ("b-head", "b", "test_1")}
    pairs = {(r["arm"], r["reference"]) for r in _csv(out / "comparisons.csv")}
    assert pairs == {("b-head", "a-head")}  # labelled by the tuned variant alone: it pins its arm
    md = (out / "search.md").read_text()
    assert "## Best of each arm" in md and "## a.head: Top 2" in md and "## b.head: Top 2" in md
    assert (out / "plots" / "search_a_head__strategies_head_train_optimizer_lr.png").is_file()
    assert "each arm tuned on its own" in (out / "report.html").read_text()


def test_variants_are_each_searched_and_tested_with_their_own_best(tmp_path, tiny_study_config):
    raw = tiny_study_config(tmp_path)  # variants baseline and bn (seed 004's architectures, in small)
    raw["search"] = {"space": {"transfer.train.optimizer.lr": [1.0e-4, 1.0e-2]}}
    out = tmp_path / "run"
    run_search(raw, out, echo=lambda m: None, progress=False, report=False)
    trials = _csv(out / "trials.csv")
    assert sorted(t["arm"] for t in trials) == ["baseline", "baseline", "bn", "bn"]
    tuned = {v.name: v for v in resolve_variants(load_study(out / "best.yaml"))}
    assert set(tuned) == {"baseline", "bn"} and tuned["bn"].model.batch_norm
    for name in ("baseline", "bn"):
        best = next(t for t in trials if t["arm"] == name and t["rank"] == "1")
        assert tuned[name].transfer.train.optimizer.lr == float(best["transfer.train.optimizer.lr"])
    rows = _csv(out / "results.csv")
    assert {r["variant"] for r in rows if r["stage"] == "transfer"} == {"baseline", "bn"}


def test_per_study_shares_one_point_and_keeps_every_variant(tmp_path, tiny_study_config):
    raw = tiny_study_config(tmp_path)
    raw["search"] = {"space": {"transfer.train.optimizer.lr": [1.0e-4, 1.0e-2]}, "per": "study"}
    out = tmp_path / "run"
    run_search(raw, out, echo=lambda m: None, progress=False, report=False)
    trials = _csv(out / "trials.csv")
    assert [t["arm"] for t in trials] == ["study", "study"]
    best = load_study(out / "best.yaml")
    assert [v.name for v in best.variants] == ["baseline", "bn"]
    assert best.transfer.train.optimizer.lr == float(trials[0]["transfer.train.optimizer.lr"])
    assert {r["variant"] for r in _csv(out / "results.csv") if r["stage"] == "transfer"} == {"baseline", "bn"}


def test_combinations_that_cannot_work_name_the_keys(tmp_path, matrix_search, tiny_study_config):
    raw = tiny_study_config(tmp_path)
    raw["variants"][1]["transfer"] = {"train": {"optimizer": {"lr": 0.1}}}
    raw["search"] = {"space": {"transfer.train.optimizer.lr": [1.0e-4, 1.0e-2]}}
    with pytest.raises(ConfigError, match=r"'search.space.transfer.train.optimizer.lr': variants\[1\] \(bn\) "
                                          r"sets 'transfer.train.optimizer.lr'"):
        run_search(raw, tmp_path / "a")
    assert not (tmp_path / "a").exists()  # refused before anything is written
    raw = matrix_search(tmp_path, per="arm")
    raw["strategies"] = {"ft": {"kind": "freeze", "train": raw["strategies"]["head"]["train"]},
                         "svm": {"kind": "features", "classifier": "svm", "backbone_from": "ft"}}
    raw["search"]["space"] = {"strategies.ft.train.optimizer.lr": [1.0e-4, 1.0e-2]}
    with pytest.raises(ConfigError, match=r"strategy 'svm' takes its backbone from strategy 'ft'.*per: st"):
        run_search(raw, tmp_path / "b")
    raw["search"]["space"] = {"model.head": [{"hidden": [4]}, {"hidden": [8]}]}
    with pytest.raises(ConfigError, match=r"'search.space.model.head': .*numbers, strings, booleans or null"):
        run_search(raw, tmp_path / "c")


def test_keys_of_another_strategy_do_not_multiply_an_arms_trials(tmp_path, matrix_search):
    raw = matrix_search(tmp_path)
    raw["sources"].pop("b")
    raw["strategies"]["scratch"] = {"kind": "scratch", "train": raw["strategies"]["head"]["train"]}
    raw["search"]["space"]["strategies.scratch.train.batch_size"] = [8, 16]
    cfg = study_from_dict(raw)
    arms = {a.label: a.space for a in search_arms(cfg, cfg.search)}
    assert arms == {"a.head": ("strategies.head.train.optimizer.lr",),
                    "none.scratch": ("strategies.scratch.train.batch_size",)}


def test_best_yaml_reruns_as_it_is(tmp_path, matrix_search):
    out = tmp_path / "run"
    run_search(matrix_search(tmp_path, sampler="random", trials=1), out, echo=lambda m: None,
               progress=False, report=False)
    text = (out / "best.yaml").read_text()
    assert "# arm a.head: trial-001" in text and "# arm b.head: trial-001" in text
    assert yaml.safe_load(text)["variants"][0]["only_sources"] == ["a"]
