"""The medtransfer command: run a study, report on it, use its model, audit data, list keys."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from importlib import resources
from pathlib import Path

from medtransfer.errors import ConfigError, MedTransferError
from medtransfer.version import __version__

DESCRIPTION = ("Transfer-learning studies for medical image classification: run a study config, "
               "report on a run, predict with or export its model, audit a data set.")
_CONSOLE = "medtransfer-console"  # marks the console handler main() installs


def setup_logging(verbosity: int = 0) -> None:
    """Console logging for the ``medtransfer`` loggers: -q warnings only, -v debug, else info."""
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    logger = logging.getLogger("medtransfer")
    for old in [h for h in logger.handlers if h.get_name() == _CONSOLE]:
        logger.removeHandler(old)
    handler = logging.StreamHandler(sys.stdout)  # progress lines stay on stdout, as print's did
    handler.set_name(_CONSOLE)
    handler.setFormatter(logging.Formatter("%(message)s" if level > logging.DEBUG
                                           else "%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level)
    logger.addHandler(handler)
    logger.setLevel(min(level, logging.INFO))  # run.log gets INFO even with -q


def demo_config_path() -> Path:
    return Path(str(resources.files("medtransfer") / "configs" / "demo.yaml"))


def _cache(args: argparse.Namespace) -> int:
    from medtransfer.data import ImageCache

    store = ImageCache(Path(args.dir) if args.dir else None)
    if args.clear:
        freed = store.clear(None if args.clear == "all" else args.clear)
        print(f"cleared {'the cache' if args.clear == 'all' else args.clear} in {store.root}: "
              f"{freed / 2**20:.1f} MiB freed")
        return 0
    print(f"cache: {store.root}")
    for name, (files, size) in store.usage().items():
        print(f"  {name:<10} {files:>8} entries {size / 2**20:>10.1f} MiB")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` names; returns the exit status. A closed output pipe
    (``medtransfer keys | head``) ends quietly, Ctrl-C with a line saying a rerun resumes."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:
        with contextlib.suppress(OSError):  # no second error when Python flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE: what a shell reports for a tool whose reader went away
    except KeyboardInterrupt:
        print("\ninterrupted; rerun to resume", file=sys.stderr)
        return 130  # 128 + SIGINT


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medtransfer", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"medtransfer {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more messages (debug)")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a study config")
    run.add_argument("config", help="study YAML file")
    run.add_argument("--out", help="run directory (default: runs/<study name>)")
    demo = sub.add_parser("demo", help="run the demo study (four regularisations of a pretraining, each "
                          "transferred) on the embedded demo data")
    demo.add_argument("--out", help="run directory (default: runs/demo)")
    check = sub.add_parser("check", help="check a study config without running it: the resolved config, "
                           "data counts per split, the units to train and those a run folder has done "
                           "(reused), estimated disk; exits 2 on any problem; trains and writes nothing")
    check.add_argument("config", help="study YAML file")
    check.add_argument("--out", help="the run directory to compare with (default: runs/<study name>)")
    for p in (run, demo, check):
        p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default: the config's device)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config key, e.g. --set pretrain.train.epochs=5")
        p.add_argument("--import", dest="imports", action="append", metavar="MODULE",
                       help="import a Python module first (its @register_model models can then "
                       "be named), e.g. --import my_pkg.models; adds to the config's imports")
    for p in (run, demo):
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        p.add_argument("--no-report", action="store_true", help="skip report.html (CIs, tests, plots)")
        p.add_argument("--workers", type=int, default=1,
                       help="jobs run in parallel in this many processes / Ray tasks (default 1)")
        p.add_argument("--executor", choices=["local", "ray"], default="local",
                       help="local processes (default) or a Ray cluster")
        p.add_argument("--address", help="Ray cluster address HOST:PORT (default: $RAY_ADDRESS, as `ray job "
                       "submit` sets it, else start a Ray here)")
        p.add_argument("--cpus-per-worker", type=float, metavar="N",
                       help="CPUs each worker asks Ray for, and its torch threads (default: an equal share "
                       "of this machine's CPUs; 1 on a Ray cluster)")
        p.add_argument("--gpus-per-worker", type=float, metavar="N",
                       help="Ray: GPUs each worker asks for, fractions share one (default: 1 with a CUDA "
                       "device, else 0)")
        p.add_argument("--retries", type=int, metavar="N",
                       help="Ray: how often a job lost with its worker (killed, node lost) runs again "
                       "(default 3); errors raised by a job are not retried")
        p.add_argument("--runtime-env", metavar="FILE",
                       help="Ray: a YAML/JSON runtime_env for the workers (working_dir, py_modules, pip, "
                       "env_vars), e.g. to ship --import modules to the cluster's nodes")
    sub.add_parser("models", help="list registered architectures (timm:<arch> and "
                   "torchvision:<arch> name any other)")
    keys = sub.add_parser("keys", help="every study config key: type, default, allowed values, meaning")
    keys.add_argument("section", nargs="?", help="only keys under this section, e.g. pretrain.train or data")
    fmt = keys.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true", help="as Markdown tables (docs/config.md)")
    fmt.add_argument("--json-schema", action="store_true", help="as a JSON Schema of a study YAML")
    rep = sub.add_parser("report", help="summary tables, CIs, paired comparisons, plots and Grad-CAM as "
                         "report.html, rewritten from what a run recorded")
    rep.add_argument("run_dir", help="a finished run directory")
    rep.add_argument("--reference", help="variant the others are compared with (default: the first)")
    rep.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    rep.add_argument("--gallery", type=int, default=4, help="Grad-CAM images per variant (0: none)")
    pred = sub.add_parser("predict", help="class probabilities of new images from a finished run's model")
    pred.add_argument("run_dir", help="a finished run directory")
    pred.add_argument("paths", nargs="+", help="image files, folders, or a CSV with a 'path' column")
    pred.add_argument("--out", required=True, help="CSV to write (path, predicted, p_<class>..., threshold)")
    exp = sub.add_parser("export", help="a finished run's model as ONNX or a torch.export program "
                         "(.pt2), with its preprocessing in a sidecar JSON")
    exp.add_argument("run_dir", help="a finished run directory")
    exp.add_argument("--format", choices=["onnx", "pt2"], default="onnx",
                     help="onnx (default) or pt2: a torch.export program (torch.export.load)")
    exp.add_argument("--out", required=True, help="model file to write (FILE.json beside it)")
    for p in (pred, exp):
        p.add_argument("--variant", help="the variant (or a matrix arm's label) to use")
        p.add_argument("--target", help="the target, in a study with several")
        p.add_argument("--fold", type=int, default=1, help="cross-validation: the fold's model (default 1)")
    pred.add_argument("--cam", metavar="DIR", help="also write a Grad-CAM overlay per image into DIR")
    pred.add_argument("--threshold", choices=["default", "val"], default="default",
                      help="binary tasks: 0.5 (default) or the threshold chosen on validation data")
    pred.add_argument("--device", default="auto", help="auto (default: cuda if available), cpu, cuda, "
                      "cuda:N or mps")
    pred.add_argument("--batch-size", type=_positive, default=64, help="images per forward pass (default 64)")
    aud = sub.add_parser("audit", help="look for shortcuts, duplicates and leakage in a data set")
    aud.add_argument("data", help="class-per-folder tree, CSV (path,label[,group]) or MedMNIST .npz")
    aud.add_argument("--against", help="a second data set (e.g. the target): shared or near-identical images")
    aud.add_argument("--split", help="a run directory or its splits/<role>.csv: leakage across parts")
    aud.add_argument("--out", help="folder for audit.json and audit.md")
    cache = sub.add_parser("cache", help="size of the disk cache (decoded images, features, "
                           "frozen-prefix activations); --clear frees it")
    cache.add_argument("--dir", help="cache folder (default: $MEDTRANSFER_CACHE or ~/.cache/medtransfer; "
                       "a study's cache_dir)")
    cache.add_argument("--clear", nargs="?", const="all", metavar="SECTION",
                       help="delete the whole cache, or one section (images, features, prefix, ...)")
    prev = sub.add_parser("augment-preview", help="PNG grids of training images and augmented versions "
                          "of them, per variant and stage that augments")
    prev.add_argument("config", help="study YAML file")
    prev.add_argument("--out", required=True, help="folder for augment_<variant>_<stage>_<task>.png")
    prev.add_argument("--n", type=int, default=16, help="training images per grid (default 16)")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"got {value}; expected an integer >= 1")
    return value


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.verbose - args.quiet)
    if args.command in ("predict", "export", "report"):  # run and demo: the study runner tunes
        from medtransfer.train.allocator import tune_allocator

        tune_allocator()  # before the first tensor: inference and report's Grad-CAM gain too
    try:
        if args.command == "models":
            from medtransfer.catalog import MODEL_NAMES  # not the registry: no torch import

            print("\n".join(MODEL_NAMES))
            print("and timm:<arch> (timm.list_models()), torchvision:<arch> "
                  "(torchvision.models.list_models())", file=sys.stderr)
            return 0
        if args.command == "report":
            from medtransfer.report import summarize, write_report
            from medtransfer.study.lock import run_lock

            run_dir = Path(args.run_dir)
            # a run still writing into the folder would change what the report reads
            busy = "Wait for that run to finish (or stop it), then run the report again"
            with run_lock(run_dir, advice=busy) if run_dir.is_dir() else contextlib.nullcontext():
                print(f"summary: {summarize(run_dir)}")
                path = write_report(run_dir, reference=args.reference, n_boot=args.n_boot,
                                    gallery_images=args.gallery)
            print(f"report: {path}")
            return 0
        if args.command == "audit":
            from medtransfer.audit import format_audit, run_audit

            res = run_audit(Path(args.data), against=args.against and Path(args.against),
                            out=args.out and Path(args.out), split=args.split and Path(args.split))
            print(format_audit(res))
            if args.out:
                print(f"saved: {Path(args.out) / 'audit.json'}, {Path(args.out) / 'audit.md'}")
            return 0
        if args.command == "cache":
            return _cache(args)
        if args.command == "keys":
            return _keys(args)
        if args.command in ("predict", "export"):
            from medtransfer.commands import use_model_command

            return use_model_command(args)
        if args.command == "check":
            from medtransfer.commands import check_command

            return check_command(args)
        if args.command == "augment-preview":
            from medtransfer.study import load_study
            from medtransfer.study.preview import preview_augmentation

            for path in preview_augmentation(load_study(args.config), args.out, n=args.n):
                print(f"saved: {path}")
            return 0
        if args.command == "demo":
            args.config = demo_config_path()
            args.out = args.out or "runs/demo"
        from medtransfer.commands import run_command

        return run_command(args)
    except MedTransferError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _keys(args: argparse.Namespace) -> int:
    from medtransfer.catalog import format_keys, keys_markdown, load_keys, load_schema, select_keys

    if args.json_schema:
        import json

        if args.section:
            raise ConfigError("keys --json-schema: gives the whole study's schema; drop the section")
        print(json.dumps(load_schema(), indent=2))
        return 0
    found = select_keys(load_keys(), args.section)
    print(keys_markdown(found) if args.markdown else format_keys(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
