"""Targets a user registers from measurements of their own device (``nas hw add``).

A user target is a JSON record in the user registry (``$NAS_CONFIG/targets`` or
``~/.config/nas/targets``): the supernet and space it was fitted on, the latency law
(:mod:`nas.hardware._user_laws`), the measurements it came from (file and sha256) and
the law's leave-one-out error on them. ``get_hardware(NAME)`` finds it (through the
``user`` scheme, so ``user:NAME`` works too), so it serves wherever a target name does.

Which law: the few-shot law where the space has reference devices (the other targets
that price its subnets without running them), the per-layer law otherwise. A
reference whose figures change after the fit (its fingerprint differs) makes the target
refuse to answer until it is refitted: its weights were fitted to the old figures.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas._files import read_text, write_text_atomic
from nas._hardware import HARDWARE, HARDWARE_SCHEMES, HardwareTarget, Provenance, get_hardware
from nas._registry import UnknownNameError
from nas._space import Config
from nas._supernet import Supernet
from nas._task import Task
from nas.hardware._local_model import prediction_errors
from nas.hardware._macs import Seq2SeqShape
from nas.hardware._user_laws import FewShotLaw, LatencyLaw, PerLayerLaw, law_from_dict
from nas.hardware._user_measurements import Measurements

CONFIG_ENV = "NAS_CONFIG"
SCHEME = "user"
FORMAT_VERSION = 1
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
MIN_MEASUREMENTS = 5
"""The fewest measurements any law is fitted on: its leave-one-out error needs a few."""
METHODS = ("auto", FewShotLaw.method, PerLayerLaw.method)
REFIT = "nas hw add {name} --supernet {supernet} --from CSV --force"


def config_dir() -> Path:
    """The user's configuration folder: ``$NAS_CONFIG``, else ``$XDG_CONFIG_HOME/nas``,
    else ``~/.config/nas``."""
    override = os.environ.get(CONFIG_ENV)
    if override:
        return Path(override)
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "nas"


def targets_dir() -> Path:
    return config_dir() / "targets"


def record_path(name: str) -> Path:
    return targets_dir() / f"{name}.json"


def user_target_names() -> list[str]:
    folder = targets_dir()
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def check_new_name(name: str, *, force: bool) -> None:
    """Refuse a name that is malformed, a built-in target's, or (without ``force``) a
    user target's already.

    Raises:
        ValueError: the name is not usable, saying what would be.
        FileExistsError: a user target of that name exists and ``force`` is off.
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"target name {name!r} must be 1-63 lower-case letters, digits, "
                         "'.', '_' or '-', starting with a letter or digit (e.g. myboard)")
    if name in HARDWARE or name in HARDWARE_SCHEMES:
        raise ValueError(f"target name {name!r} is taken by a built-in target; choose another")
    if record_path(name).exists() and not force:
        raise FileExistsError(f"a target named {name!r} exists ({record_path(name)}); choose "
                              f"another name, or pass --force to replace it")


@dataclass(frozen=True)
class UserTargetRecord:
    """What ``nas hw add`` saves: enough to answer, and to say where figures come from."""

    name: str
    description: str
    supernet: str
    family: str
    space: str
    task: str
    law: dict[str, Any]
    references: dict[str, str]
    """Reference target -> its fingerprint when the law was fitted."""
    measurements: dict[str, Any]
    """``path``, ``sha256``, ``subnets``, ``rows``, ``min_ms``, ``max_ms``."""
    errors: dict[str, float]
    """Leave-one-out errors of the law on the measurements."""
    created: str
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: Path) -> UserTargetRecord:
        try:
            data = json.loads(text)
            if data.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format version {data.get('format_version')!r}, this "
                                 f"version reads {FORMAT_VERSION}")
            return cls(**data)
        except (json.JSONDecodeError, TypeError, AttributeError, ValueError) as err:
            raise ValueError(f"{source} is not a target record this version reads ({err}); "
                             f"remove it with `nas hw remove {source.stem}` and add it again"
                             ) from None

    @property
    def method(self) -> str:
        return str(self.law["method"])

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


def load_record(name: str) -> UserTargetRecord:
    """The saved record of user target ``name``.

    Raises:
        UnknownNameError: no built-in or user target has that name.
    """
    path = record_path(name) if isinstance(name, str) and NAME_PATTERN.fullmatch(name) else None
    if path is None or not path.is_file():
        known = ", ".join([*HARDWARE.names(), *user_target_names()])
        raise UnknownNameError(f"unknown hardware target {name!r}; known: {known} (add your "
                               "own device with `nas hw add NAME --supernet S --from CSV`)")
    return UserTargetRecord.from_json(read_text(path, expected="a target record"), source=path)


class UserTarget(HardwareTarget):
    """A device the user measured, predicted by the law fitted on those measurements."""

    def __init__(self, record: UserTargetRecord) -> None:
        self.record = record
        self.name = record.name
        self.description = record.description

    @functools.cached_property
    def law(self) -> LatencyLaw:
        for reference, fitted in self.record.references.items():
            now = get_hardware(reference).fingerprint
            if now != fitted:
                raise ValueError(
                    f"target {self.name!r} was fitted to {reference!r} as it was then "
                    f"(fingerprint {fitted}); it is now {now}: refit with `"
                    + REFIT.format(name=self.name, supernet=self.record.supernet) + "`")
        return law_from_dict(self.record.law)

    def _latency_ms(self, supernet: Supernet, config: Config, task: Task) -> float:
        if supernet.space.name != self.record.space:
            raise ValueError(f"target {self.name!r} was fitted on subnets of space "
                             f"{self.record.space!r} (supernet {self.record.supernet!r}); "
                             f"this subnet is of {supernet.space.name!r}")
        law = self.law
        return float(law.predict(law.design(supernet, [config], task))[0])

    def shape_latency_ms(self, shape: Seq2SeqShape, task: Task) -> float:
        """The latency of an encoder-decoder of these layer shapes (a pruned HAT subnet),
        priced as :meth:`latency_ms` prices the subnets it was fitted on.

        Raises:
            ValueError: the target was not fitted on HAT subnets.
        """
        law = self.law
        return float(law.predict(law.shape_design([shape], task))[0])

    def provenance(self) -> Provenance:
        r, m = self.record, self.record.measurements
        chosen = r.errors
        law = (f"a power law of {', '.join(r.references)} (few-shot)"
               if r.method == FewShotLaw.method else "the structured per-layer model")
        return Provenance(
            method="predicted",
            source=(f"{law} fitted on {m['subnets']} subnets of {r.supernet} measured on "
                    f"the device ({m['path']}, sha256 {m['sha256'][:12]}) on {r.created}"),
            error=dict(chosen),
            notes=(
                f"Error is leave-one-out on the {m['subnets']} measurements: each predicted "
                f"by the law fitted on the others (MAPE {chosen['mape']:.1%}, Spearman "
                f"{chosen['spearman']:.3f}, Kendall tau {chosen['kendall_tau']:.3f}).",
                f"Measured latencies span {m['min_ms']:.3g}-{m['max_ms']:.3g} ms; subnets "
                "outside that range are extrapolated.",
            ),
            details={"law": r.law, "references": r.references, "measurements": m,
                     "supernet": r.supernet, "space": r.space, "task": r.task,
                     "errors": r.errors, "record": str(record_path(r.name))},
        )

    @property
    def fingerprint(self) -> str:
        return f"user:{self.name}:{self.record.digest}"


def _user_target(name: str) -> HardwareTarget:
    return UserTarget(load_record(name.removeprefix(f"{SCHEME}:")))


HARDWARE_SCHEMES.register(SCHEME, description="a target added with `nas hw add`")(_user_target)


# -- fitting -------------------------------------------------------------------------------


def default_references(supernet: Supernet, probe: Config, task: Task) -> list[str]:
    """The built-in targets that price ``supernet``'s subnets without running them and
    are the same on every machine (predicted or published): the few-shot prior."""
    names = []
    for name in HARDWARE.names():
        target = get_hardware(name)
        if target.measures:
            continue
        try:
            if target.provenance().method not in ("predicted", "measured"):
                continue
            target.latency_ms(supernet, probe, task)
        except (ValueError, OSError):
            continue
        names.append(name)
    return names


def check_references(names: Sequence[str], supernet: Supernet, probe: Config,
                     task: Task) -> list[str]:
    """``names`` checked: each a target that prices this supernet without running it."""
    checked = []
    for name in names:
        target = get_hardware(name)
        if target.measures:
            raise ValueError(f"--reference {name!r} measures each subnet on a device; a "
                             "reference must price subnets without running them (e.g. a "
                             "device model such as rpi4)")
        try:
            target.latency_ms(supernet, probe, task)
        except ValueError as err:
            raise ValueError(f"--reference {name!r} cannot price this supernet's subnets: "
                             f"{err}") from None
        checked.append(name)
    return checked


def leave_one_out_errors(measured: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """:func:`prediction_errors` plus Spearman's rank correlation (a search ranks)."""
    from scipy.stats import spearmanr

    return {**prediction_errors(measured, predicted),
            "spearman": float(spearmanr(measured, predicted).statistic)}


@dataclass(frozen=True)
class FitResult:
    law: LatencyLaw
    errors: dict[str, float]
    """Leave-one-out errors of the law on the measurements."""


def fit_law(supernet: Supernet, task: Task, data: Measurements, *,
            references: Sequence[str], method: str = "auto",
            progress: Callable[[str], None] | None = None) -> FitResult:
    """Fit the law ``method`` names on ``data``; ``auto`` is few-shot where there are
    references, per-layer otherwise. (Choosing by leave-one-out MAPE instead picked the
    per-layer law on some NB201 draws, whose ranking of the other cells was far worse:
    Spearman 0.88 against 0.96; ``benchmarks/bench_user_target.py``.)

    Raises:
        ValueError: an unknown method, few-shot without references, or fewer
            measurements than the law needs (saying how many).
    """
    if method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == FewShotLaw.method and not references:
        raise ValueError(f"few-shot needs reference targets and none price supernet "
                         f"{supernet.space.name!r} subnets; use --method {PerLayerLaw.method}")
    y = np.asarray(data.latency_ms, float)
    if len(y) < MIN_MEASUREMENTS:
        raise ValueError(f"a latency law needs at least {MIN_MEASUREMENTS} measured subnets, "
                         f"{data.path} has {len(y)}; measure more")
    few_shot = method == FewShotLaw.method or (method == "auto" and references)
    law: LatencyLaw = FewShotLaw(references) if few_shot else PerLayerLaw()
    if progress is not None:
        progress(f"fitting the {law.method} law on {len(y)} subnets")
    X = law.design(supernet, data.configs, task)
    if len(y) < law.min_samples():
        raise ValueError(f"the {law.method} law needs at least {law.min_samples()} measured "
                         f"subnets, {data.path} has {len(y)}; measure more")
    errors = leave_one_out_errors(y, law.leave_one_out(X, y))
    return FitResult(law.fit(X, y), errors)


def save_target(name: str, *, supernet_name: str, supernet: Supernet, task: Task,
                data: Measurements, result: FitResult, description: str = "",
                force: bool = False) -> UserTargetRecord:
    """Write the record of a fitted target to the user registry (refusing a taken
    name without ``force``) and return it."""
    check_new_name(name, force=force)
    law = result.law
    references = list(getattr(law, "references", ()))
    record = UserTargetRecord(
        name=name,
        description=description or f"your device, fitted on {len(data)} measured subnets "
                                   f"of {supernet_name}",
        supernet=supernet_name, family=supernet.family, space=supernet.space.name,
        task=task.name,
        law=law.to_dict(),
        references={r: get_hardware(r).fingerprint for r in references},
        measurements={"path": str(data.path.resolve()), "sha256": data.sha256,
                      "subnets": len(data), "rows": data.rows,
                      "min_ms": float(np.min(data.latency_ms)),
                      "max_ms": float(np.max(data.latency_ms))},
        errors=result.errors,
        created=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    )
    targets_dir().mkdir(parents=True, exist_ok=True)
    write_text_atomic(record_path(name), record.to_json())
    return record


def remove_target(name: str) -> Path:
    """Delete user target ``name``'s record.

    Raises:
        ValueError: ``name`` is a built-in target.
        UnknownNameError: no user target has that name.
    """
    if name in HARDWARE:
        raise ValueError(f"{name!r} is a built-in target; only targets added with "
                         "`nas hw add` can be removed")
    load_record(name)
    path = record_path(name)
    path.unlink()
    return path
