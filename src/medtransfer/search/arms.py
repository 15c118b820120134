"""What a search tunes: its arms, each trial's variant, and the tuned study written back.

With ``search.per: arm`` every arm of the study — a variant × source × target × strategy, as the
report compares them — is tuned on its own: its trials are variants restricted to that arm
(``only``, ``only_sources``, ``only_targets``), and the tuned study has one variant per arm with its
best point. With ``per: study`` one trial lays the same point over every variant, and the tuned
study keeps the study's variants with the best point in the shared sections. ``search.final``'s
keys (and ``final_by_arm``'s of one arm) are laid over the tuned study only, never over a trial.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from medtransfer.config import closest, deep_merge, to_dict
from medtransfer.errors import ConfigError
from medtransfer.study import StudyConfig, VariantSpec, make_plan, resolve_variants
from medtransfer.study.backbones import backbone_from
from medtransfer.study.plan import NO_SOURCE
from medtransfer.study.search_config import SECTIONS, SearchConfig, nested, overlap
from medtransfer.study.variants import check_models

__all__ = ["SearchArm", "check_final", "check_space", "checked_arms", "search_arms", "trial_specs",
           "tuned_config"]


@dataclass(frozen=True)
class SearchArm:
    """One tuned unit of comparison: ``variant`` on ``source`` × ``target`` × ``strategy`` (each
    None for ``per: study``, which tunes every arm at once), with the searched keys that apply."""

    name: str  # names its trials' variants and its Optuna study: letters, digits, '-', '_'
    label: str  # how tables show it: the report's arm label, e.g. imagenet.head or resnet50
    variants: tuple[VariantSpec, ...]  # the study's variants it covers (one for per: arm)
    source: str | None = None
    target: str | None = None
    strategy: str | None = None
    space: tuple[str, ...] = ()  # the searched keys that change its cells


def _flat(tree: Any, prefix: str = "") -> list[str]:
    """Dotted paths of a nested mapping's leaves."""
    if not isinstance(tree, dict):
        return [prefix] if prefix else []
    return [p for k, v in tree.items() for p in _flat(v, f"{prefix}.{k}" if prefix else str(k))]


def _check_fixed(cfg: StudyConfig, search: SearchConfig) -> None:
    """A key a variant sets cannot be searched or set by ``final``: the trial's or the final
    run's value would silently replace it (or, per study, be replaced by it)."""
    for i, spec in enumerate(cfg.variants):
        fixed = _flat({s: getattr(spec, s) for s in SECTIONS})
        groups = [("search.space", search.space), ("search.final", search.final),
                  *((f"search.final_by_arm.{a}", keys) for a, keys in search.final_by_arm.items())]
        for where, keys in groups:
            for key in keys:
                hit = next((f for f in fixed if overlap(key, f)), None)
                if hit is not None:
                    what = "a searched key" if where == "search.space" else "a key of the final run"
                    raise ConfigError(f"'{where}.{key}': variants[{i}] ({spec.name}) sets '{hit}'; "
                                      f"{what} cannot also be fixed by a variant (remove one of them)")


def _applies(key: str, strategy: str | None) -> bool:
    """Whether searched ``key`` changes cells of ``strategy`` (other strategies' keys do not)."""
    parts = key.split(".")
    return parts[0] != "strategies" or strategy is None or parts[1] == strategy


def _arm_label(parts: dict[str, str], shown: dict[str, bool]) -> str:
    return ".".join(parts[k] for k in ("variant", "source", "target", "strategy") if shown[k]) \
        or parts["variant"]


def search_arms(cfg: StudyConfig, search: SearchConfig) -> list[SearchArm]:
    """The arms ``search`` tunes, in the order the study plans them; errors name the keys of a
    combination that cannot work."""
    _check_fixed(cfg, search)
    if search.per == "study":
        return [SearchArm("study", "study", tuple(cfg.variants), space=tuple(search.space))]
    plan = make_plan(cfg)
    specs = {s.name: s for s in cfg.variants}
    keys = list(dict.fromkeys((c.variant, c.source, c.target, c.strategy) for c in plan.cells))
    shown = {"variant": len(specs) > 1, "source": cfg.is_matrix,
             "target": len({k[2] for k in keys}) > 1, "strategy": cfg.is_matrix}
    arms = []
    for variant, source, target, strategy in keys:
        upstream = backbone_from(plan.variant(variant).strategies[strategy])
        if upstream is not None:
            raise ConfigError(f"'search.per': arm tunes each arm on its own, but strategy '{strategy}' "
                              f"takes its backbone from strategy '{upstream}' (backbone_from), so its "
                              "cells depend on another arm's; use search.per: study")
        label = _arm_label({"variant": variant, "source": source, "target": target,
                            "strategy": strategy}, shown)
        space = tuple(k for k in search.space if _applies(k, strategy if cfg.is_matrix else None))
        arms.append(SearchArm(label.replace(".", "-"), label, (specs[variant],), source, target, strategy,
                              space))
    return arms


def final_params(search: SearchConfig, arm: SearchArm) -> dict[str, Any]:
    """The keys the final run of ``arm`` sets (``search.final``'s and its own of ``final_by_arm``;
    those of its strategy)."""
    keys = {**search.final, **search.final_by_arm.get(arm.label, {})}
    return {k: v for k, v in keys.items() if _applies(k, arm.strategy)}


def _laid_over(spec: VariantSpec, params: dict[str, Any]) -> dict[str, Any]:
    """The variant's overrides with ``params`` laid over them."""
    extra = nested(params)
    return {s: deep_merge(getattr(spec, s), extra.get(s, {})) for s in SECTIONS}


def arm_spec(cfg: StudyConfig, arm: SearchArm, spec: VariantSpec, name: str,
             params: dict[str, Any]) -> VariantSpec:
    """``spec`` with ``params`` laid over it, named ``name``, restricted to ``arm``'s cells."""
    keep: dict[str, Any] = {} if arm.strategy is None or not cfg.is_matrix else {
        "only": [arm.strategy], "only_targets": [arm.target],
        "only_sources": None if arm.source == NO_SOURCE else [arm.source]}
    return VariantSpec(name, **_laid_over(spec, params), **keep)


def trial_specs(cfg: StudyConfig, arm: SearchArm, trial: str, params: dict[str, Any]) -> list[VariantSpec]:
    """The variants one trial of ``arm`` runs (``trial`` names them), each checked: a ConfigError
    is the trial's own (an impossible combination)."""
    specs = [arm_spec(cfg, arm, v, f"{v.name if arm.strategy is None else arm.name}-{trial}", params)
             for v in arm.variants]
    trial_cfg = dataclasses.replace(cfg, variants=specs, search=None)
    check_models(trial_cfg, resolve_variants(trial_cfg))  # options and layers, on the meta device
    return specs


def _first_point(search: SearchConfig) -> dict[str, Any]:
    """Every searched key's first value (a range's low end): a point the checks resolve."""
    return {k: v[0] if isinstance(v, list) else v["low"] for k, v in search.space.items()}


def _resolve(cfg: StudyConfig, where: str, params: dict[str, Any]) -> None:
    """The study with one variant of ``params`` must resolve; errors are prefixed with ``where``."""
    if any(k.startswith("strategies.") for k in params) and not cfg.is_matrix:
        raise ConfigError(f"'{where}': 'strategies.' keys need a matrix study (sources, targets, "
                          "strategies); this study's strategy is its 'transfer' section")
    try:
        resolve_variants(dataclasses.replace(cfg, variants=[VariantSpec("check", **nested(params))],
                                             search=None))
    except ConfigError as exc:
        raise ConfigError(f"'{where}': {exc}") from None


def check_space(cfg: StudyConfig, search: SearchConfig) -> None:
    """Every searched key must exist: a typo would otherwise fail every trial, one by one."""
    _resolve(cfg, "search.space", _first_point(search))


def check_final(cfg: StudyConfig, search: SearchConfig, arms: list[SearchArm]) -> None:
    """Every key of ``search.final`` and ``final_by_arm`` must exist and take its value (with the
    space's first point), and ``final_by_arm`` must name arms of the study."""
    labels = [a.label for a in arms]
    for label in search.final_by_arm:
        if label not in labels:
            hint = closest(label, labels)
            raise ConfigError(f"'search.final_by_arm.{label}': no such arm"
                              + (f"; did you mean {hint!r}?" if hint else ";")
                              + f" The arms (as search.md labels them): {', '.join(labels)}")
    groups = [("search.final", search.final, None),
              *((f"search.final_by_arm.{a}", keys, a) for a, keys in search.final_by_arm.items())]
    first = _first_point(search)
    for where, keys, owner in groups:
        for key, value in keys.items():
            _resolve(cfg, f"{where}.{key}", {key: value})
            arm = next((a for a in arms if a.label == owner), None)
            if arm is not None and not _applies(key, arm.strategy):
                raise ConfigError(f"'{where}.{key}': arm {owner} runs strategy {arm.strategy}; the key "
                                  "would be ignored")
        _resolve(cfg, where, {**first, **search.final, **keys})  # together with the searched keys


def checked_arms(cfg: StudyConfig, search: SearchConfig, source: str = "") -> list[SearchArm]:
    """The arms ``search`` tunes, after its space and final keys are checked; errors are
    prefixed with ``source`` (the config file)."""
    try:
        check_space(cfg, search)
        arms = search_arms(cfg, search)
        check_final(cfg, search, arms)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None
    return arms


def tuned_config(raw: dict[str, Any], cfg: StudyConfig, search: SearchConfig,
                 best: dict[str, dict[str, Any]], arms: list[SearchArm]) -> dict[str, Any]:
    """The study as tuned, a runnable config: per arm, a variant per arm with its best point
    (named like the arm); per study, the best point in the shared sections; either with
    ``search.final``'s keys laid over. ``best`` maps an arm's name to its chosen params (empty for
    an arm no searched key applies to)."""
    out = {k: v for k, v in raw.items() if k not in ("search", "name")}
    if search.per == "study":
        params = nested({**best["study"], **final_params(search, arms[0])})
        out.update({s: deep_merge(raw.get(s) or {}, params[s]) for s in SECTIONS if s in params})
    else:
        tuned = []
        for arm in arms:
            spec = arm_spec(cfg, arm, arm.variants[0], arm.name if cfg.is_matrix else arm.variants[0].name,
                            {**best[arm.name], **final_params(search, arm)})
            tuned.append(to_dict(spec, skip_defaults=True))
        out["variants"] = tuned
    return {"name": f"{cfg.name}_best", **out}
