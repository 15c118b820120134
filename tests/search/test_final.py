"""``search.final``: keys for the tuned arms' run on the test sets alone (seed 001 stopped its final
run early on the validation loss, not its trials)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from medtransfer.document import Doc
from medtransfer.errors import ConfigError
from medtransfer.report.sections import search_section
from medtransfer.search import run_search
from medtransfer.search.arms import check_final, final_params, search_arms
from medtransfer.study import load_study, resolve_variants

pytest.importorskip("optuna")

STOP = {"monitor": "val_loss", "patience": 0}


def _units(out: Path) -> dict[str, dict]:
    """Each transfer unit's folder name → its result.json."""
    return {d.name: json.loads((d / "result.json").read_text())
            for d in (out / "units").iterdir() if (d / "result.json").is_file() and "pretrain" not in d.name}


def test_final_keys_change_the_final_run_only_and_the_trials_are_reused(tmp_path, matrix_search):
    out, space = tmp_path / "run", {"strategies.head.train.optimizer.lr": [1.0e-2]}  # a trial per arm
    run_search(matrix_search(tmp_path, space=space), out, echo=lambda m: None, progress=False, report=False)
    before = _units(out)
    final = {"strategies.head.train.restore_best": False}  # every arm's final run
    by_arm = {"a.head": {"strategies.head.train.epochs": 1, "strategies.head.train.early_stopping": STOP}}
    logs: list[str] = []
    run_search(matrix_search(tmp_path, space=space, final=final, final_by_arm=by_arm), out,
               echo=logs.append, progress=False, report=False)
    assert not [m for m in logs if "trial-" in m and "reused" not in m and "→" not in m], logs
    after = _units(out)
    trials = {k: v for k, v in after.items() if "trial-" in k}
    assert trials == {k: v for k, v in before.items() if "trial-" in k}  # same keys: reused as they were
    assert {r["epochs_run"] for r in trials.values()} == {2}
    # both final runs are new units (other configs), recorded as run: arm a's trained 1 epoch
    new = {k.split(".")[0]: after[k] for k in set(after) - set(before)}
    assert set(new) == {"cell-a-head", "cell-b-head"}
    assert (new["cell-a-head"]["epochs_run"], new["cell-b-head"]["epochs_run"]) == (1, 2)
    assert {r["tested_epoch"]["which"] for r in new.values()} == {"last"}
    assert {r["tested_epoch"]["which"] for r in trials.values()} == {"best"}
    tuned = {v.name: v for v in resolve_variants(load_study(out / "best.yaml"))}
    assert tuned["a-head"].strategies["head"].train.early_stopping.patience == 0
    assert tuned["b-head"].strategies["head"].train.early_stopping is None
    assert tuned["b-head"].strategies["head"].train.epochs == 2
    assert not tuned["a-head"].strategies["head"].train.restore_best
    text = (out / "best.yaml").read_text()
    assert ("# arm a.head, its final run only (search.final, final_by_arm; not the trials): "
            "strategies.head.train.restore_best=false, strategies.head.train.epochs=1") in text
    md = (out / "search.md").read_text().split("## Final run")[1]
    assert "| a.head | strategies.head.train.early_stopping |" in md
    assert "| b.head | strategies.head.train.restore_best | false |" in md
    assert "b.head | strategies.head.train.early_stopping" not in md
    doc = Doc(markdown=True, base=out)
    search_section(doc, SimpleNamespace(path=out))  # the report's section: it reads the run folder
    assert "arm a.head: `strategies.head.train.epochs` = `1`" in doc.render()


def test_per_study_final_keys_reach_every_variant(tmp_path, matrix_search):
    final = {"strategies.head.train.epochs": 1, "strategies.head.train.early_stopping": STOP}
    raw = matrix_search(tmp_path, per="study", space={"strategies.head.train.optimizer.lr": [1.0e-2]},
                        final=final)
    raw["sources"].pop("b")
    raw["variants"] = [{"name": "x"}, {"name": "y", "strategies": {"head": {"train": {"batch_size": 8}}}}]
    out = tmp_path / "run"
    run_search(raw, out, echo=lambda m: None, progress=False, report=False)
    best = load_study(out / "best.yaml")
    assert [v.name for v in best.variants] == ["x", "y"]
    assert best.strategies["head"]["train"]["epochs"] == 1
    assert best.strategies["head"]["train"]["early_stopping"] == STOP
    units = _units(out)
    assert sorted(v["epochs_run"] for k, v in units.items() if "trial-" in k) == [2, 2]  # as configured
    assert sorted(v["epochs_run"] for k, v in units.items() if "trial-" not in k) == [1, 1]
    assert "# arm study, its final run only" in (out / "best.yaml").read_text()


def test_final_errors_name_the_keys(tmp_path, matrix_search, tiny_study_config):
    def fails(match: str, where: str, **search) -> None:
        with pytest.raises(ConfigError, match=match):
            run_search(matrix_search(tmp_path, **search), tmp_path / where)
        assert not (tmp_path / where).exists()  # refused before anything is written

    fails(r"'search.final.strategies.head.train.early_stoping': unknown key .*did you mean 'early_stopping'",
          "a", final={"strategies.head.train.early_stoping": STOP})
    fails(r"'search.final.strategies.head.train.early_stopping': .*'patiense'.*did you mean 'patience'",
          "b", final={"strategies.head.train.early_stopping": {"patiense": 0}})
    fails(r"'search.final.strategies.head.train.optimizer': "
          r"'search.space.strategies.head.train.optimizer.lr' searches it", "c",
          final={"strategies.head.train.optimizer": {"name": "sgd"}})
    fails(r"'search.final_by_arm.a.hed': no such arm; did you mean 'a.head'\? The arms .*: a.head, b.head",
          "d", final_by_arm={"a.hed": {"strategies.head.train.epochs": 1}})
    fails(r"'search.final_by_arm.a.head.strategies.head.train.early_stopping.patience': "
          r"'search.final.strategies.head.train.early_stopping' sets it for every arm", "e",
          final={"strategies.head.train.early_stopping": STOP},
          final_by_arm={"a.head": {"strategies.head.train.early_stopping.patience": 1}})
    fails(r"'search.final.seed': keys are dotted paths", "f", final={"seed": 1})
    fails(r"'search.final_by_arm': per: study", "g", per="study",
          final_by_arm={"study": {"strategies.head.train.epochs": 1}})
    fails(r"'search.final.strategies.other.train.epochs': unknown key 'other'.* Valid keys: head", "h",
          final={"strategies.other.train.epochs": 1})
    raw = matrix_search(tmp_path, final_by_arm={"a.head": {"strategies.scratch.train.epochs": 1}})
    raw["strategies"]["scratch"] = {"kind": "scratch", "train": raw["strategies"]["head"]["train"]}
    with pytest.raises(ConfigError, match=r"'search.final_by_arm.a.head.strategies.scratch.train.epochs': "
                                          r"arm a.head runs strategy head; the key would be ignored"):
        run_search(raw, tmp_path / "k")
    raw = tiny_study_config(tmp_path)
    raw["variants"][1]["transfer"] = {"train": {"epochs": 3}}
    raw["search"] = {"space": {"transfer.train.optimizer.lr": [1.0e-3]},
                     "final": {"transfer.train.epochs": 1}}
    with pytest.raises(ConfigError, match=r"'search.final.transfer.train.epochs': variants\[1\] \(bn\) sets"):
        run_search(raw, tmp_path / "i")
    raw["variants"].pop(1)
    raw["search"]["final"] = {"strategies.head.train.epochs": 1}
    with pytest.raises(ConfigError, match=r"'search.final.strategies.head.train.epochs': 'strategies.' "
                                          r"keys need a matrix study"):
        run_search(raw, tmp_path / "j")


def test_seed001_stops_only_its_imagenet_models_final_run_early():
    examples = Path(__file__).resolve().parents[2] / "examples"
    cfg = load_study(examples / "seed001.yaml")
    assert cfg.search is not None
    arms = search_arms(cfg, cfg.search)
    check_final(cfg, cfg.search, arms)
    final = {a.label: final_params(cfg.search, a) for a in arms}
    assert final["imagenet.head"]["strategies.head.train.early_stopping"] == STOP  # Keras's defaults
    assert "strategies.head.train.early_stopping" not in final["chexnet.head"]
    assert {f["strategies.head.train.restore_best"] for f in final.values()} == {False}  # Keras's fit
