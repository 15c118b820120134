"""Hyperparameter search over any study key of any study shape (seeds 001 and 004), with
Optuna's samplers.

``search.space`` maps dotted keys of the ``model``, ``pretrain``, ``transfer`` and ``strategies``
sections (e.g. ``model.name``, ``model.weights``, ``strategies.ft.finetune.optimizer.lr``) to a
list (grid values, or choices for random/TPE) or a range ``{low, high, log, step}``. Each trial is
a variant: its cells are pretrained and transferred by the study's one runner — early stopping
and the best checkpoint as the config says — and scored on the targets' **validation** sets (the
objective is the mean over the trial's cells); test images are not looked at. The trials,
sorted by the objective, go to ``trials.csv`` and ``search.md``, with a figure per searched key
of the score per value (``plots/search_<key>.png``, seed 001's bar and box plots, also shown in
``report.html``); the best trial's settings are
written back as a runnable study config ``best.yaml``, which is then run once, on the tests, into
the same folder (``results.csv``, ``summary.md``, ``report.html``). Trials are units: a rerun
reuses them, and with a seeded sampler it proposes the same trials, so it does no work.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from medtransfer.config import check_choice, deep_merge, from_dict, to_dict
from medtransfer.errors import ConfigError, MedTransferError
from medtransfer.fileio import write_text_atomic

SECTIONS = ("model", "pretrain", "transfer", "strategies")
SAMPLERS = ("grid", "random", "tpe")


@dataclass(frozen=True)
class ObjectiveConfig:
    """A validation metric of the transfer stage (``auc``, ``f1``, ``accuracy``, ``loss``, …)."""

    metric: str = "auc"
    direction: Literal["maximize", "minimize"] = "maximize"

    def __post_init__(self) -> None:
        check_choice("search.objective.direction", self.direction, ("maximize", "minimize"))
        natural = "minimize" if self.metric in ("loss", "brier", "ece") else "maximize"
        if self.direction != natural:
            raise ConfigError(f"'search.objective.direction': got {self.direction!r} for metric "
                              f"{self.metric!r}; set {natural} (the better direction of that metric)")


@dataclass(frozen=True)
class SearchConfig:
    space: dict[str, Any]
    sampler: Literal["grid", "random", "tpe"] = "grid"
    trials: int | None = None  # budget; grid: every combination when None
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    top_k: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("search.sampler", self.sampler, SAMPLERS)
        if not self.space:
            raise ConfigError("'search.space': empty; give at least one key, e.g. "
                              "transfer.train.optimizer.lr: [1.0e-4, 1.0e-3]")
        for key, spec in self.space.items():
            where = f"search.space.{key}"
            if key.split(".", 1)[0] not in SECTIONS or "." not in key:
                raise ConfigError(f"'{where}': keys are dotted paths into {', '.join(SECTIONS)} "
                                  "(e.g. transfer.train.optimizer.lr, model.name)")
            if isinstance(spec, dict):
                if self.sampler == "grid":
                    raise ConfigError(f"'{where}': a range needs sampler random or tpe; grid takes a list")
                unknown = set(spec) - {"low", "high", "log", "step"}
                if unknown or not {"low", "high"} <= set(spec):
                    raise ConfigError(f"'{where}': a range is {{low, high[, log][, step]}}; got {spec!r}")
            elif not isinstance(spec, list) or not spec:
                raise ConfigError(f"'{where}': expected a non-empty list of values or a range "
                                  f"{{low, high}}, got {spec!r}")
        if self.trials is not None and self.trials < 1:
            raise ConfigError(f"'search.trials': got {self.trials}; allowed: an integer >= 1")
        if self.sampler != "grid" and self.trials is None:
            raise ConfigError(f"'search.trials': sampler {self.sampler} needs a budget (trials: N)")

    def n_trials(self) -> int:
        if self.sampler != "grid":
            assert self.trials is not None
            return self.trials
        size = math.prod(len(v) for v in self.space.values())
        return size if self.trials is None else min(size, self.trials)


def nested(params: dict[str, Any]) -> dict[str, Any]:
    """``{"transfer.train.batch_size": 16}`` → ``{"transfer": {"train": {"batch_size": 16}}}``."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _suggest(trial: Any, key: str, spec: Any) -> Any:
    if isinstance(spec, list):
        return trial.suggest_categorical(key, spec)
    low, high = spec["low"], spec["high"]
    if isinstance(low, int) and isinstance(high, int) and not spec.get("log"):
        return trial.suggest_int(key, low, high, step=spec.get("step", 1))
    return trial.suggest_float(key, float(low), float(high), log=bool(spec.get("log", False)),
                               step=spec.get("step"))


def _sampler(cfg: SearchConfig) -> Any:
    import optuna

    if cfg.sampler == "grid":
        return optuna.samplers.GridSampler(cfg.space, seed=cfg.seed)
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=cfg.seed)
    return optuna.samplers.TPESampler(seed=cfg.seed)


def _table(rows: list[dict[str, Any]], keys: list[str], metric: str) -> tuple[list[str], list[list[str]]]:
    head = ["rank", "trial", *keys, f"val {metric}", "best epoch", "state"]
    body = [[str(r["rank"]), r["trial"], *(str(r["params"].get(k)) for k in keys),
             "–" if r["value"] is None else f"{r['value']:.4f}", str(r.get("best_epoch", "–")), r["state"]]
            for r in rows]
    return head, body


def _check_space(cfg: Any, search: SearchConfig) -> None:
    """Every key must exist: a typo would otherwise fail every trial, one by one."""
    from medtransfer.study.config import VariantSpec, resolve_variants

    first = {k: v[0] if isinstance(v, list) else v["low"] for k, v in search.space.items()}
    if any(k.startswith("strategies.") for k in first) and not cfg.is_matrix:
        raise ConfigError("'search.space': 'strategies.' keys need a matrix study (sources, targets, "
                          "strategies); this study's strategy is its 'transfer' section")
    try:
        resolve_variants(dataclasses.replace(cfg, variants=[VariantSpec("check", **nested(first))]))
    except ConfigError as exc:
        raise ConfigError(f"'search.space': {exc}") from None


def _score(results: dict[Any, dict[str, Any]], metric: str) -> tuple[float, Any]:
    """The objective over a trial's cells (their mean) and the best epoch of the first cell."""
    values = []
    for result in results.values():
        value = result["val"].get(metric)
        if value is None:
            raise ConfigError(f"'search.objective.metric': got {metric!r}; "
                              f"validation metrics: {', '.join(sorted(result['val']))}")
        values.append(float(value))
    return sum(values) / len(values), next(iter(results.values())).get("best_epoch")


def run_search(raw: dict[str, Any], out: Path, *, base: Path | None = None, progress: bool = True,
               report: bool = True, echo: Callable[[str], None] = print,
               source_name: str = "<config>") -> Path:
    """Run the search that ``raw`` (a study config with a ``search`` section) declares, then the
    best configuration on the tests, holding ``out``'s run lock throughout; returns ``out``."""
    from medtransfer.study.lock import run_lock

    with run_lock(out):
        return _search(raw, out, base=base, progress=progress, report=report, echo=echo,
                       source_name=source_name)


def _search(raw: dict[str, Any], out: Path, *, base: Path | None, progress: bool, report: bool,
            echo: Callable[[str], None], source_name: str) -> Path:
    import optuna

    from medtransfer.api import run_study
    from medtransfer.study import Runner, VariantSpec, study_from_dict

    raw = dict(raw)
    try:
        search = from_dict(SearchConfig, raw.pop("search"), "search")
    except ConfigError as exc:
        raise ConfigError(f"{source_name}: {exc}") from None
    cfg = study_from_dict(raw, base=base, source_name=source_name)
    _check_space(cfg, search)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "search.yaml", yaml.safe_dump({**to_dict(cfg), "search": to_dict(search)},
                                                          sort_keys=False))
    runner = Runner(cfg, out, progress=progress, echo=echo)
    runner.prepare()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=search.objective.direction, sampler=_sampler(search))
    rows: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        params = {k: _suggest(trial, k, spec) for k, spec in search.space.items()}
        name = f"trial-{trial.number + 1:03d}"
        row: dict[str, Any] = {"trial": name, "params": params}
        try:
            results = runner.run_variants([VariantSpec(name, **nested(params))])
        except ConfigError as exc:  # an impossible combination: recorded (NaN fails it in Optuna)
            rows.append({**row, "value": None, "state": f"failed: {exc}"})
            echo(f"[{name}] failed: {exc}")
            return math.nan
        value, best_epoch = _score(results, search.objective.metric)
        rows.append({**row, "value": value, "state": "complete", "best_epoch": best_epoch})
        echo(f"[{name}] {params} → val {search.objective.metric} {value:.4f}")
        return value

    # The grid sampler stops the study itself once every point is done.
    study.optimize(objective, n_trials=search.n_trials(), catch=())
    finite = lambda r: r["value"] is not None and math.isfinite(r["value"])  # noqa: E731
    sign = -1.0 if search.objective.direction == "maximize" else 1.0
    rows.sort(key=lambda r: (not finite(r), sign * r["value"] if finite(r) else 0.0, r["trial"]))
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    _write_trials(out, rows, list(search.space), search)
    if not any(finite(r) for r in rows):
        raise MedTransferError(f"search: none of the {len(rows)} trials gave a finite validation "
                               f"{search.objective.metric}; see {out / 'trials.csv'}")
    best = rows[0]
    best_raw = {**raw, **{s: deep_merge(raw.get(s) or {}, nested(best["params"]).get(s, {}))
                          for s in SECTIONS if s in raw or s in nested(best["params"])}}
    best_raw["variants"] = [{"name": "best"}]
    best_raw.pop("name", None)
    best_raw = {"name": f"{cfg.name}_best", **best_raw}
    chosen = ", ".join(f"{k}={v}" for k, v in best["params"].items())
    header = (f"# Best of {len(rows)} trials of search '{cfg.name}' by validation "
              f"{search.objective.metric}: {best['trial']} ({chosen}; {best['value']:.4f}).\n"
              "# Settings at their default value are left out. Run: medtransfer run best.yaml\n")
    write_text_atomic(out / "best.yaml", header + yaml.safe_dump(
        to_dict(study_from_dict(best_raw, base=base), skip_defaults=True), sort_keys=False))
    echo(f"best: {best['trial']} {best['params']} (val {search.objective.metric} {best['value']:.4f}) "
         f"→ {out / 'best.yaml'}; evaluating it once on the test sets")
    return run_study(study_from_dict(best_raw, base=base), out, progress=progress, report=report, echo=echo)


def _write_trials(out: Path, rows: list[dict[str, Any]], keys: list[str], search: SearchConfig) -> None:
    from medtransfer.csvfile import write_csv
    from medtransfer.document import Doc
    from medtransfer.plots import search_figures

    metric = search.objective.metric
    flat = [{**r, **r["params"], f"val_{metric}": math.nan if r["value"] is None else r["value"]}
            for r in rows]
    write_csv(out / "trials.csv", flat, ["rank", "trial", *keys, f"val_{metric}", "best_epoch", "state"])
    head, body = _table(rows, keys, metric)
    doc = Doc(markdown=True, base=out)
    doc.title(f"Search: {len(rows)} trials ({search.sampler}), objective validation {metric} "
              f"({search.objective.direction})")
    doc.heading(f"Top {min(search.top_k, len(body))}")
    doc.table(head, body[: search.top_k])
    doc.heading("All trials")
    doc.table(head, body)
    logs = [k for k, v in search.space.items() if isinstance(v, dict) and v.get("log")]
    plots = search_figures(out / "plots", rows, keys, metric, logs)
    if plots:
        doc.heading("Validation score per hyperparameter value")
        doc.para("Each key's values: the mean ± sd over the trials that used it (bar) and their spread "
                 "(box); a scatter for a sampled range. The other keys vary across each value's trials.")
        doc.images([(p.caption, p.png) for p in plots])
    doc.para("Selected on the validation set only; `best.yaml` is evaluated once on the test sets "
             "(results.csv, summary.md, report.html in this folder).")
    write_text_atomic(out / "search.md", doc.render())
