"""The study database (an Optuna storage), Pareto fronts, hypervolume, reports and
checkpoint export."""

from nas._pareto import (
    ParetoArchive,
    hypervolume,
    hypervolume_defined,
    normalised_points,
    pareto_front,
)
from nas.studies._audit import LostConfig, RepeatedConfig, StaleTrial, StudyAudit, audit_study
from nas.studies._export import export_pareto, export_trial
from nas.studies._html_report import build_report
from nas.studies._pareto import ParetoPoint, front_of, pareto_points, search_hypervolume
from nas.studies._report import describe_study, study_problem, study_supernet
from nas.studies._storage import default_storage, open_storage
from nas.studies._study import (
    NewTrial,
    Study,
    StudyMeta,
    StudyMismatchError,
    StudyNotFoundError,
    StudySummary,
    TrialRecord,
    delete_study,
    list_studies,
    load_study,
    open_study,
    stored_meta,
)
from nas.studies._tables import study_dataframe, write_study_table

__all__ = [
    "LostConfig",
    "NewTrial",
    "ParetoArchive",
    "ParetoPoint",
    "RepeatedConfig",
    "StaleTrial",
    "Study",
    "StudyAudit",
    "StudyMeta",
    "StudyMismatchError",
    "StudyNotFoundError",
    "StudySummary",
    "TrialRecord",
    "audit_study",
    "build_report",
    "default_storage",
    "delete_study",
    "describe_study",
    "export_pareto",
    "export_trial",
    "front_of",
    "hypervolume",
    "hypervolume_defined",
    "list_studies",
    "load_study",
    "normalised_points",
    "open_storage",
    "open_study",
    "pareto_front",
    "pareto_points",
    "search_hypervolume",
    "stored_meta",
    "study_dataframe",
    "study_problem",
    "study_supernet",
    "write_study_table",
]
