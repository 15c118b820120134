"""Studies: a declarative config, planned into jobs, run resumably into a run folder."""

from medtransfer.study.config import (
           StudyConfig,
           Variant,
           VariantSpec,
           load_study,
           resolve_variants,
           study_from_dict,
)
from medtransfer.study.executors import ExecutorSettings
from medtransfer.study.plan import CellJob, Plan, PretrainJob, make_plan
from medtransfer.study.runner import Runner

__all__ = ["CellJob", "ExecutorSettings", "Plan", "PretrainJob", "Runner", "StudyConfig", "Variant",
           "VariantSpec", "load_study", "make_plan", "resolve_variants", "study_from_dict"]
