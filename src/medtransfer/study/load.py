"""Reading a study config: a YAML file or a mapping, paths made absolute relative to the file,
the modules of ``imports`` imported first, every variant's model checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medtransfer.config import (
    ConfigError,
    config_error,
    deep_merge,
    from_dict,
    problems_of,
    read_yaml,
)
from medtransfer.models import import_modules
from medtransfer.study.config import StudyConfig
from medtransfer.study.variants import check_models, resolve_variants


def _resolve_path(value: Any, base: Path) -> Any:
    if isinstance(value, str) and not value.startswith("demo:") and not Path(value).is_absolute():
        return str((base / value).resolve())
    return value


def _resolve_task(task: Any, base: Path) -> Any:
    """A task/source mapping with its data path and file:/run: weights made absolute."""
    if not isinstance(task, dict):
        return task
    out = dict(task)
    data = out.get("data")
    if isinstance(data, dict) and "path" in data:
        out["data"] = {**data, "path": _resolve_path(data["path"], base)}
    if isinstance(out.get("external"), dict):
        out["external"] = {k: _resolve_task(v, base) for k, v in out["external"].items()}
    split = out.get("split")
    if isinstance(split, dict) and isinstance(split.get("test_from"), str):
        out["split"] = {**split, "test_from": _resolve_path(split["test_from"], base)}
    weights = out.get("weights")
    if isinstance(weights, str) and weights.startswith(("file:", "run:", "keras:")):
        scheme, rest = weights.split(":", 1)
        out["weights"] = f"{scheme}:{_resolve_path(rest, base)}"
    return out


def _resolve_model(model: Any, base: Path) -> Any:
    """A model mapping with a relative ``timm:local-dir:PATH`` name made absolute."""
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        return model
    for prefix in ("timm:local-dir:", "local-dir:"):
        if model["name"].startswith(prefix):
            return {**model, "name": prefix + _resolve_path(model["name"][len(prefix):], base)}
    return model


def load_study(path: str | Path, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read a study YAML; relative data paths are taken relative to the YAML file's folder."""
    path = Path(path)
    raw = read_yaml(path)
    if overrides:
        raw = deep_merge(raw, overrides)
    return study_from_dict(raw, base=path.resolve().parent, source_name=str(path))


def study_from_dict(
    raw: dict[str, Any], *, base: Path | None = None, source_name: str = "<config>"
) -> StudyConfig:
    base = base or Path.cwd()
    raw = dict(raw)
    for task in ("source", "target"):
        if task in raw:
            raw[task] = _resolve_task(raw[task], base)
    for group in ("sources", "targets"):
        if isinstance(raw.get(group), dict):
            raw[group] = {k: _resolve_task(v, base) for k, v in raw[group].items()}
    if isinstance(raw.get("cache_dir"), str):
        raw["cache_dir"] = _resolve_path(raw["cache_dir"], base)
    if "model" in raw:
        raw["model"] = _resolve_model(raw["model"], base)
    if isinstance(raw.get("variants"), list):
        raw["variants"] = [{**v, "model": _resolve_model(v["model"], base)}
                           if isinstance(v, dict) and "model" in v else v for v in raw["variants"]]
    try:
        imports = raw.get("imports") or []
        if not isinstance(imports, list):
            raise ConfigError(f"'imports': got {imports!r}; expected a list of module names, "
                              "e.g. [my_pkg.models]")
        import_modules(imports)
        cfg = from_dict(StudyConfig, raw)
        check_models(cfg, resolve_variants(cfg))
    except ConfigError as exc:
        raise config_error(problems_of(exc), source_name) from None
    return cfg
