"""The small demo data sets that ship inside the package (MedMNIST v2 subsets, CC BY 4.0).

``demo_source`` (PneumoniaMNIST subset, chest X-ray) is the source task and ``demo_target``
(BreastMNIST, breast ultrasound) the target task; both are 28×28 grayscale ``.npz`` files in
MedMNIST's key format, plus a ``classes`` key with the class names. Use them as
``DataConfig(path="demo:demo_source")`` or via :func:`demo_path`. Licence and citation:
``medtransfer/demo_data/ATTRIBUTION.md``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from medtransfer.config import check_choice
from medtransfer.errors import DataError

DEMO_CLASSES: dict[str, list[str]] = {
    "demo_source": ["normal", "pneumonia"],
    "demo_target": ["malignant", "benign_or_normal"],
}
DEMO_NAMES: tuple[str, ...] = tuple(DEMO_CLASSES)
DEMO_PREFIX = "demo:"  # a DataConfig path "demo:<name>" loads the bundled set <name>


def demo_path(name: str) -> Path:
    """Filesystem path of the bundled demo data set ``name`` (one of :data:`DEMO_NAMES`)."""
    check_choice("demo data set", name, DEMO_NAMES, error=DataError)
    resource = files("medtransfer").joinpath("demo_data", f"{name}.npz")
    path = Path(str(resource))
    if not path.is_file():
        raise DataError(
            f"demo data file {path} is missing; reinstall medtransfer or run "
            "scripts/make_demo_data.py from a source checkout"
        )
    return path
