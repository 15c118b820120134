"""Studies: a declarative config, resolved into units of work, run resumably."""

from typing import Any

from medtransfer.study.config import StudyConfig, Variant, load_study, resolve_variants, study_from_dict

__all__ = ["StudyConfig", "Variant", "load_study", "resolve_variants", "run_study", "study_from_dict"]


def __getattr__(name: str) -> Any:
    # The runner imports the report, which imports study.config: load the runner on first use.
    if name == "run_study":
        from medtransfer.study.runner import run_study

        return run_study
    raise AttributeError(f"module 'medtransfer.study' has no attribute {name!r}")
