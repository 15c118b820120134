"""Studies: a declarative config, planned into jobs, run resumably into a run folder."""

from medtransfer.study.config import StudyConfig, StudyShape
from medtransfer.study.executors import ExecutorSettings
from medtransfer.study.load import load_study, study_from_dict
from medtransfer.study.plan import CellJob, Plan, PretrainJob, make_plan
from medtransfer.study.runner import Runner
from medtransfer.study.sections import VariantSpec
from medtransfer.study.variants import Variant, resolve_variants

__all__ = ["CellJob", "ExecutorSettings", "Plan", "PretrainJob", "Runner", "StudyConfig", "StudyShape",
           "Variant", "VariantSpec", "load_study", "make_plan", "resolve_variants", "study_from_dict"]
