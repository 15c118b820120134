"""medtransfer: transfer-learning studies for medical image classification.

The Python API (imported lazily, so ``import medtransfer`` stays cheap):

- :func:`run_study` — run a study (a config, a YAML path) and write its tables and report;
- :func:`load_study` — read a study YAML into a checked :class:`~medtransfer.study.StudyConfig`;
- :func:`load_run` — a finished run folder's records (arms, results, predictions);
- :func:`create_model` — a registered architecture by name, ready for ``num_classes``/``in_chans``;
- :func:`run_audit` — shortcuts, duplicates and leakage in a data set;
- :func:`load_model` / :func:`predict` — a finished run's model and its predictions on new images.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from medtransfer.version import __version__

_API = {
    "run_study": "medtransfer.api",
    "load_study": "medtransfer.study",
    "load_run": "medtransfer.report",
    "create_model": "medtransfer.models",
    "run_audit": "medtransfer.audit",
    "load_model": "medtransfer.inference",
    "predict": "medtransfer.inference",
}

__all__ = ["__version__", "create_model", "load_model", "load_run", "load_study", "predict", "run_audit",
           "run_study"]

if TYPE_CHECKING:
    from medtransfer.api import run_study
    from medtransfer.audit import run_audit
    from medtransfer.inference import load_model, predict
    from medtransfer.models import create_model
    from medtransfer.report import load_run
    from medtransfer.study import load_study


class _Package(types.ModuleType):
    """This package's module type: an API function is imported from its module on first use.

    The hook lives on the class, not in the module's namespace, so ``help(medtransfer)`` neither
    lists it as a function nor imports (torch and all) every API module while it looks around.
    """

    def __getattr__(self, name: str) -> Any:
        module = _API.get(name)
        if module is None:
            raise AttributeError(f"module 'medtransfer' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(self, name, value)
        return value


sys.modules[__name__].__class__ = _Package
