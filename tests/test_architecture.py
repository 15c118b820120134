"""The package's import structure: no import circles between files (lazy imports inside functions
included) and no arrow running back up the layers, so a reader can follow a study from
``cli`` down to ``data`` without returning upward."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import medtransfer

ROOT = Path(medtransfer.__file__).parent

# Lower layers never import higher ones; modules of one layer may import each other (no circles).
LAYERS = [
    {"errors", "version"},
    {"config", "fileio", "catalog", "integrity", "csvfile", "document"},
    {"calibration", "data", "evaluate", "explain", "freezing", "sigmoid_pair", "stats"},
    {"models", "plots", "train"},
    {"strategies", "tracking", "audit"},
    {"study"},
    {"report"},
    {"api", "inference"},
    {"model_card"},
    {"export"},
    {"search", "check"},
    {"commands"},
    {"cli", "__main__"},
    {"__init__"},  # the package root: its API reaches the layers below, so nothing may import it
]
RANK = {name: k for k, layer in enumerate(LAYERS) for name in layer}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, package: str | None = None) -> Iterator[tuple[int, str]]:
    """(line, module) of every medtransfer import in ``path``, at any depth (lazy ones too)."""
    if package is None:
        package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([base] if base else [])])
            # "from pkg import mod" imports the module pkg.mod where one exists.
            names = [f"{base}.{a.name}" if _file(f"{base}.{a.name}") else base for a in node.names]
        else:
            continue
        for name in names:
            if name == "medtransfer" or name.startswith("medtransfer."):
                yield node.lineno, name


def _file(module: str) -> Path | None:
    base = ROOT.parent.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _graph(faces: bool = False) -> dict[Path, dict[Path, int]]:
    """File → imported file → line. Package faces (``__init__.py``) are targets only with
    ``faces`` (for the layers: importing ``medtransfer.report`` is importing the report layer);
    the circle check leaves them out, as a face imports its own package's files by design."""
    graph: dict[Path, dict[Path, int]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        edges: dict[Path, int] = {}
        for line, name in _imports(path):
            target = _file(name)
            if target is not None and target != path and (faces or target.name != "__init__.py"):
                edges.setdefault(target, line)
        graph[path] = edges
    return graph


def _cycles(graph: dict[Path, dict[Path, int]]) -> list[list[Path]]:
    """Strongly connected components of more than one file (Tarjan)."""
    index: dict[Path, int] = {}
    low: dict[Path, int] = {}
    stack: list[Path] = []
    found: list[list[Path]] = []

    def visit(v: Path) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in graph:
        if v not in index:
            visit(v)
    return found


def _top(path: Path) -> str:
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


def test_no_import_circles():
    circles = [" <-> ".join(str(p.relative_to(ROOT)) for p in c) for c in _cycles(_graph())]
    assert not circles, f"files that import each other: {circles}"


def test_every_top_level_module_has_a_layer():
    tops = {_top(p) for p in ROOT.rglob("*.py") if p != ROOT / "__init__.py"}
    assert tops <= set(RANK), f"give these a layer in LAYERS: {sorted(tops - set(RANK))}"


def test_no_import_runs_back_up_the_layers():
    upward = []
    for path, edges in _graph(faces=True).items():
        for target, line in edges.items():
            a, b = _top(path), _top(target)
            if RANK[b] > RANK[a]:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {target.relative_to(ROOT)} "
                              f"({a} is below {b})")
    assert not upward, "\n".join(upward)


def test_the_walker_sees_lazy_and_relative_imports(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("import os\n\ndef f():\n    from ..data import images\n    import medtransfer.errors\n")
    assert list(_imports(source, package="medtransfer.study")) == [
        (4, "medtransfer.data.images"), (5, "medtransfer.errors")]
    assert _cycles({Path("a"): {Path("b"): 1}, Path("b"): {Path("a"): 1}, Path("c"): {}}) == [
        [Path("b"), Path("a")]]


def test_using_a_model_and_searching_do_not_read_runs_through_the_report():
    """``inference``, ``model_card`` and ``search`` read a run through ``study.rundir`` (issue 27)."""
    files = [ROOT / "inference.py", ROOT / "model_card.py", *sorted((ROOT / "search").glob("*.py"))]
    through = [f"{path.relative_to(ROOT)}:{line} imports {target}" for path in files
               for line, target in _imports(path)
               if target == "medtransfer.report" or target.startswith("medtransfer.report.")]
    assert not through, "\n".join(through)
