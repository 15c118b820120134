"""What the commands that read a study config or write a file do (``run``, ``demo``, ``check``,
``predict``, ``export``); :mod:`medtransfer.cli` parses the arguments.

A config mistake is named by where it comes from (the file, or the ``--set`` that caused it),
every data path is checked before anything is written, and an output path that cannot be
written is named before any work is done.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from medtransfer.config import config_error, deep_merge, problems_of, read_yaml
from medtransfer.errors import ConfigError, MedTransferError

if TYPE_CHECKING:
    from medtransfer.study import StudyConfig

__all__ = ["check_command", "load_config", "run_command", "use_model_command", "writable_file"]


def parse_set(items: list[str]) -> dict[str, Any]:
    """``a.b=1`` pairs into a nested override mapping (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. pretrain.train.epochs=5")
        key, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({type(exc).__name__}); "
                              "quote it, e.g. --set 'name=\"my study\"'") from None
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: '{p}' was given a value by an earlier --set")
            node = child
        node[leaf] = parsed
    return out


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    """Each override as the user wrote it (``--set a.b=1``, ``--device cpu``) → ``KEY=VALUE``."""
    found = {f"--set {item}": item for item in args.set or []}
    if getattr(args, "device", None):
        found[f"--device {args.device}"] = f"device={args.device}"
    return found


def _blame(problems: list[str], from_file: set[str], overrides: dict[str, str], path: Path) -> list[str]:
    """Each problem named by where it comes from: the file, or the override that caused it."""
    out = []
    for problem in problems:
        if problem in from_file:
            out.append(f"{path}: {problem}")
            continue
        flags = [flag for flag, item in overrides.items() if _names(problem, item.split("=", 1)[0])]
        out.append(f"{flags[0]}: {problem}" if flags else f"{path} with {' '.join(overrides)}: {problem}")
    return out


def _names(problem: str, key: str) -> bool:
    """Whether ``problem`` is about config key ``key`` (``a.b.c``) or a key inside it."""
    parent, _, leaf = key.rpartition(".")
    unknown = f"unknown key '{leaf}'" + (f" in '{parent}'" if parent else "")
    return f"'{key}'" in problem or f"'{key}." in problem or problem.startswith(unknown)


def load_config(args: argparse.Namespace) -> tuple[Path, dict[str, Any], StudyConfig]:
    """The config file with ``--set``/``--device``/``--import`` laid over it, and the checked
    study (of a search: the study it searches around, its ``search`` section checked too). A
    mistake a ``--set`` caused is blamed on that ``--set``, the others on the file."""
    from medtransfer.study import study_from_dict

    path = Path(args.config)
    overrides = _overrides(args)
    file_raw = read_yaml(path)
    raw = deep_merge(file_raw, parse_set(list(overrides.values())))
    if getattr(args, "imports", None):  # recorded in config.yaml: workers and the report import them too
        before = raw.get("imports") or []
        raw["imports"] = [*before, *(m for m in args.imports if m not in before)]
    base = path.resolve().parent

    def build(data: dict[str, Any]) -> StudyConfig:
        return study_from_dict(data, base=base, source_name="")  # its search section too

    try:
        return path, raw, build(raw)
    except ConfigError as exc:
        problems = problems_of(exc)
        if not overrides:
            raise config_error(problems, str(path)) from None
        try:
            build(file_raw)
            from_file: set[str] = set()
        except ConfigError as alone:
            from_file = set(problems_of(alone))
        raise config_error(_blame(problems, from_file, overrides, path)) from None


def run_folder(args: argparse.Namespace, path: Path, raw: dict[str, Any], cfg: StudyConfig) -> Path:
    """Where ``run`` writes and ``check`` looks: ``--out``, else ``runs/<name>`` (of a search, its
    config's name or else the file's stem)."""
    if args.out:
        return Path(args.out)
    return Path("runs") / (str(raw.get("name", path.stem)) if "search" in raw else cfg.name)


def run_command(args: argparse.Namespace) -> int:
    """``medtransfer run`` / ``demo``: nothing is written before the config and data paths pass."""
    from medtransfer.api import LogEcho, check_data_paths, run_log, run_study
    from medtransfer.study import ExecutorSettings
    from medtransfer.train.distributed import launch_env

    if args.workers < 1:
        raise ConfigError(f"--workers: got {args.workers}; expected an integer >= 1")
    executor = ExecutorSettings(args.executor, args.workers, args.address,
                                cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
                                retries=args.retries,
                                runtime_env=read_yaml(args.runtime_env) if args.runtime_env else None)
    launched = launch_env()  # torchrun / srun: the ranks of one data-parallel run (study.lockstep)
    if launched is not None and launched.world_size > 1 and "search" in read_yaml(Path(args.config)):
        raise ConfigError(f"{args.config}: a search runs its trials one process each; it cannot run as "
                          f"{launched.world_size} data-parallel processes ({launched.launcher}): "
                          "start it with one process (--workers N runs trials in parallel)")
    path, raw, cfg = load_config(args)
    check_data_paths(cfg, str(path))  # before --out is made: a bad path leaves nothing behind
    if "search" in raw:  # a search: its trials on validation, then the best config on the tests
        from medtransfer.search import plan_search, run_search

        out = run_folder(args, path, raw, cfg)
        plan = plan_search(raw, base=path.resolve().parent, source_name=str(path))  # before run.log is made
        with run_log(out):
            run_search(raw, out, base=path.resolve().parent, progress=not args.no_progress,
                       report=not args.no_report, source_name=str(path), echo=LogEcho(),
                       executor=executor, plan=plan)
        print(f"trials: {out / 'search.md'}\nbest config: {out / 'best.yaml'}")
        return 0
    out = run_folder(args, path, raw, cfg)
    run_study(cfg, out, progress=not args.no_progress, report=not args.no_report, executor=executor,
              echo=LogEcho())
    if launched is None or launched.rank == 0:  # the other ranks of a data-parallel run wrote nothing
        print(f"table: {out / 'summary.md'}")
    return 0


def check_command(args: argparse.Namespace) -> int:
    """``medtransfer check``: the resolved config and the plan; trains and writes nothing."""
    from medtransfer.check import check_search, check_study, format_check

    path, raw, cfg = load_config(args)
    if "search" in raw:
        out = run_folder(args, path, raw, cfg)
        report = check_search(cfg, out, source=str(path))
        print(format_check(report, out))
        warned = " (with the warnings above)" if report.search and report.search.warnings else ""
        print(f"ok: the config, its search and its data pass{warned}; nothing was trained, nothing "
              "written to the run folder")
        return 0
    out = run_folder(args, path, raw, cfg)
    print(format_check(check_study(cfg, out, source=str(path)), out))
    print("ok: the config and its data pass; nothing was trained, nothing written to the run folder")
    return 0


def writable_file(path: str | Path, flag: str) -> Path:
    """``path`` as a file the command may write: not a folder, in a folder that exists (made if
    need be) and takes new files; otherwise an error naming ``flag``, the path and what is wrong."""
    path = Path(path)
    if path.is_dir():
        raise MedTransferError(f"{flag} {path}: is a folder; expected a file name, e.g. {path / 'out'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".medtransfer-probe-"):
            pass
    except OSError as exc:
        raise MedTransferError(f"{flag} {path}: cannot write in {path.parent} "
                               f"({exc.strerror or exc}); expected a writable folder") from None
    return path


def writable_folder(path: str | Path, flag: str) -> Path:
    """``path`` as a folder the command may fill (made if need be); else an error naming it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MedTransferError(f"{flag} {path}: is a file; expected a folder")
    writable_file(path / "probe", flag)
    return path


def use_model_command(args: argparse.Namespace) -> int:
    """``medtransfer predict`` / ``export``: the output paths are checked before the model loads,
    and a write that still fails is named, not a traceback."""
    from medtransfer.inference import load_model, predict, write_predictions

    out = writable_file(args.out, "--out")
    if getattr(args, "cam", None):
        writable_folder(args.cam, "--cam")
    model = load_model(args.run_dir, arm=args.variant, target=args.target, fold=args.fold)
    try:
        if args.command == "export":
            from medtransfer.export import export_model

            path, sidecar = export_model(model, out, args.format)
            print(f"exported {model.arm} ({model.unit.name}): {path}, {sidecar}")
            return 0
        rows = predict(args.paths, model, use_threshold=args.threshold == "val", cam_dir=args.cam,
                       device=args.device, batch_size=args.batch_size)
        write_predictions(rows, out)
    except OSError as exc:  # e.g. the folder turned read-only, or the disk filled, meanwhile
        raise MedTransferError(f"cannot write {exc.filename or out}: {exc.strerror or exc}") from None
    bad = [r for r in rows if r["error"]]
    for r in bad:
        print(f"skipped: {r['error']}", file=sys.stderr)
    print(f"predicted {len(rows) - len(bad)} of {len(rows)} images with {model.arm} "
          f"({model.unit.name}): {out}")
    return 0 if len(bad) < len(rows) else 2

