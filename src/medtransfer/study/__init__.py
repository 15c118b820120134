"""Studies: a declarative config, resolved into units of work, run resumably."""

from medtransfer.study.config import (
    StudyConfig,
    Variant,
    load_study,
    resolve_variants,
    study_from_dict,
)
from medtransfer.study.runner import run_study

__all__ = ["StudyConfig", "Variant", "load_study", "resolve_variants", "run_study", "study_from_dict"]
