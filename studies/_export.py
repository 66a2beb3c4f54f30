"""Export the subnets of a study as standalone checkpoints (``nas export``).

The study records the supernet's name and checkpoint hash; export loads that supernet,
refuses one whose weights differ (the stored accuracy would not describe the export),
extracts each dense subnet and saves it with the study's figures as metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nas._supernet import Supernet, get_supernet
from nas.studies._pareto import front_of
from nas.studies._report import study_problem
from nas.studies._storage import default_storage
from nas.studies._study import Study, StudyMismatchError, TrialRecord, load_study


def export_trial(
    study: str | Study,
    trial: int,
    out: str | Path,
    *,
    storage: str | None = None,
    overwrite: bool = False,
    supernet: Supernet | None = None,
) -> Path:
    """Write the dense subnet of ``trial`` to ``out`` (``model.safetensors`` + ``config.json``).

    Args:
        study: a study name or an open study.
        trial: the trial number.
        out: the directory to write.
        storage: the storage URL (default :func:`default_storage`).
        overwrite: replace an existing export in ``out``.
        supernet: the supernet to extract from (default: the shipped supernet the study
            names, loaded through the registry).

    Returns:
        ``out`` as a path.

    Raises:
        StudyNotFoundError: no such study.
        ValueError: no such trial, or the trial failed.
        StudyMismatchError: the supernet's checkpoint is not the study's.
        FileExistsError: ``out`` holds an export and ``overwrite`` is false.
    """
    opened = _open(study, storage)
    record = _trial(opened, trial)
    net = _supernet(opened, supernet)
    return _export(opened, record, net, Path(out), overwrite=overwrite)


def export_pareto(
    study: str | Study,
    out: str | Path,
    *,
    storage: str | None = None,
    overwrite: bool = False,
    supernet: Supernet | None = None,
) -> list[Path]:
    """Export every subnet of the study's feasible Pareto front to ``out/trial-<n>``,
    and write ``out/pareto.json`` listing them with their metrics.

    Raises:
        the same as :func:`export_trial`; ValueError when the front is empty.
    """
    opened = _open(study, storage)
    front = front_of(opened.trials(), study_problem(opened))
    if not front:
        raise ValueError(f"study {opened.name!r} has no feasible trial to export")
    net = _supernet(opened, supernet)
    root = Path(out)
    written = [
        _export(opened, record, net, root / f"trial-{record.number}", overwrite=overwrite)
        for record in front
    ]
    index = [
        {"trial": r.number, "path": p.name, "metrics": r.metrics, "config": r.config}
        for r, p in zip(front, written, strict=True)
    ]
    (root / "pareto.json").write_text(
        json.dumps({"study": opened.name, "subnets": index}, indent=2) + "\n"
    )
    return written


def _open(study: str | Study, storage: str | None) -> Study:
    return study if isinstance(study, Study) else load_study(study, storage or default_storage())


def _trial(study: Study, number: int) -> TrialRecord:
    trials = study.trials()
    for record in trials:
        if record.number == number:
            if record.failed:
                raise ValueError(f"trial {number} of study {study.name!r} failed; "
                                 "there is no subnet to export")
            return record
    span = f"trials 0 to {trials[-1].number}" if trials else "no trials"
    raise ValueError(f"study {study.name!r} has no trial {number} (it has {span})")


def _supernet(study: Study, supernet: Supernet | None) -> Supernet:
    if supernet is None:
        supernet = get_supernet(study.meta.supernet)
    if supernet.checkpoint_hash != study.meta.checkpoint_hash:
        raise StudyMismatchError(
            f"study {study.name!r} was run on checkpoint {study.meta.checkpoint_hash[:12]} of "
            f"supernet {study.meta.supernet!r}, but the supernet given has checkpoint "
            f"{supernet.checkpoint_hash[:12]}"
        )
    return supernet


def _export(
    study: Study, record: TrialRecord, supernet: Supernet, out: Path, *, overwrite: bool
) -> Path:
    from nas import save_subnet  # the core's lazy re-export of the supernets' exporter

    model = supernet.extract(supernet.space.config(record.config))
    meta = study.meta
    metadata: dict[str, Any] = {
        "study": study.name,
        "trial": record.number,
        "supernet": meta.supernet,
        "checkpoint_hash": meta.checkpoint_hash,
        "space": meta.space,
        "task": meta.task or supernet.task_name,
        "hardware": meta.hardware,
        "hardware_fingerprint": meta.hardware_fingerprint,
        "config": record.config,
        "metrics": record.metrics,
    }
    return Path(save_subnet(model, out, family=supernet.family, metadata=metadata,
                            overwrite=overwrite))
