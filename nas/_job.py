"""The main job as a library call: resolve names, check the budget, open the study, run.

The CLI's ``nas search`` is a thin shell around :func:`prepare_search` and
:func:`run_prepared`; notebooks and scripts can call them directly.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from dataclasses import dataclass

import numpy as np

from nas._driver import QueueDriver
from nas._evaluator import MEMORY_METRIC, BaseEvaluator, Evaluator, PredictedEvaluator
from nas._hardware import HardwareTarget, get_hardware, no_quantized_latency
from nas._problem import Constraint, Objective, Problem, accuracy_latency_problem
from nas._search import SearchResult, run_search
from nas._space import Config, SearchSpace
from nas._supernet import SpaceModel, Supernet, get_space, get_supernet
from nas._task import Task, get_task
from nas._units import format_mb
from nas.algorithms import ALGORITHMS, canonical_algorithm, get_algorithm, require_algorithm
from nas.quant import BITS_PREFIX, check_mode, joint_space, size_bytes
from nas.quant._evaluator import QuantizedEvaluator
from nas.quant._subnet import BYTES_PER_MB
from nas.studies import Study, StudyMeta, default_storage, open_study, stored_meta

logger = logging.getLogger(__name__)


PREDICTED_ALGORITHM = "evo-budget"
"""The algorithm of a ``--space`` search left without ``--algorithm``: its evaluations cost
a fraction of a millisecond, so thousands are run, and the default (``ehvi``, a GP per
ask) would spend minutes per hundred. ``evo-budget`` (evolution at OFA's tutorial sizes,
half the parents the best feasible by accuracy, the rest by Pareto rank and crowding)
reaches OFA's tutorial figure on Note10 at 25 ms for 10 seeds of 10 within 5,000
evaluations; NSGA-II (population 20), the former default, for 5 of 10, since its front
keeps one or two parents at the budget (``benchmarks/bench_ofa_published.py``)."""


class InfeasibleBudgetError(ValueError):
    """No subnet of the space can meet the budget on the target."""


@dataclass(frozen=True)
class SearchRequest:
    """Everything ``nas search`` is asked for."""

    supernet: str
    hardware: str
    budget_ms: float | None
    """The latency budget; None: the study's own, or for a new study none: the whole
    front, its hypervolume normalised by ``latency_reference_ms``."""
    evals: int
    seed: int | None = None
    algorithm: str | None = None
    study: str | None = None
    storage: str | None = None
    eval_limit: int | None = None
    change_budget: bool = False
    """Continue an existing study under ``budget_ms`` although it has another budget."""
    quantize: str | None = None
    """``none``, ``int8`` or ``mixed`` (:data:`nas.quant.QUANTIZE_MODES`); None: the
    study's own, or ``none``."""
    size_objective: bool = False
    """Minimise ``size_mb`` too."""
    size_budget_mb: float | None = None
    """``size_mb <= size_budget_mb`` (implies the size objective)."""
    memory_objective: bool = False
    """Minimise ``memory_mb`` too (the target's peak memory of one batch-1 inference)."""
    memory_budget_mb: float | None = None
    """``memory_mb <= memory_budget_mb`` (implies the memory objective)."""
    space: str | None = None
    """Search this published space (``nas.SPACES``) instead of a supernet: accuracy comes
    from ``accuracy_predictor``; ``supernet`` is then empty."""
    accuracy_predictor: str | None = None
    """``ofa:PATH`` or a fitted predictor's folder (``--space`` searches only); None:
    the study's own."""
    workers: int | None = None
    """Worker processes that will evaluate (``--workers``): an algorithm that asks one
    config at a time (the Optuna samplers) is asked for this many at once instead
    (:func:`worker_batch`), unless the study has its own batch."""
    batch: int | None = None
    """Filled from the study or :func:`worker_batch`; what the algorithm's batch_size is."""
    latency_reference_ms: float | None = None
    """Without a budget, what the hypervolume divides latency by: filled from the study,
    else by :func:`prepare_search` (:func:`slowest_latency`)."""

    @property
    def memory(self) -> bool:
        """Whether memory is an objective (a budget makes it one)."""
        return self.memory_objective or self.memory_budget_mb is not None

    @property
    def subject(self) -> str:
        """The space or supernet searched (default study names, messages)."""
        return self.space or self.supernet


@dataclass
class PreparedSearch:
    """A search whose inputs are resolved and checked, ready to run: ``request`` with
    its seed and algorithm filled in (the study's own where it exists, else 0 and the
    default algorithm's name)."""

    request: SearchRequest
    supernet: Supernet | SpaceModel
    task: Task | None
    target: HardwareTarget
    problem: Problem
    study: Study
    storage: str
    min_latency_ms: float
    max_latency_ms: float | None
    """The largest subnet's latency: a budget at or above it constrains nothing; None
    where some genes are unordered, so that the largest is not known."""
    evaluator: BaseEvaluator
    min_memory_mb: float | None = None
    """The least memory a subnet needs, when memory is searched."""
    notes: tuple[str, ...] = ()
    """One-line notes to show before the search (e.g. the resolutions searched)."""


def prepare_search(request: SearchRequest) -> PreparedSearch:
    """Load and check everything before any long work.

    Raises:
        UnknownNameError: unknown supernet, target or algorithm.
        InfeasibleBudgetError: even the smallest subnet exceeds the budget.
        StudyMismatchError: the study belongs to another supernet or target, or was
            created with another seed, algorithm or budget (see :func:`open_study`).
    """
    name = request.study or f"{request.subject}-{request.hardware}"
    storage = request.storage or default_storage()
    request = _with_study_settings(request, stored_meta(name, storage))
    target = get_hardware(request.hardware)
    if request.space is not None or request.accuracy_predictor is not None:
        return _prepare_predicted(request, name, storage, target)
    supernet = get_supernet(request.supernet)
    if supernet.task_name is None:
        raise ValueError(f"supernet {request.supernet!r} records no task to validate it on")
    task = get_task(supernet.task_name)
    evaluator = _evaluator(request, supernet, task, target)
    space = evaluator.space
    min_latency = min(_latency(evaluator, c) for c in _smallest(evaluator))
    max_latency = _largest_latency(evaluator)
    request = _with_budget(request, evaluator, min_latency, max_latency,
                           subject=request.supernet)
    min_memory = _check_memory(request, evaluator)
    problem = _problem(request, evaluator)
    meta = StudyMeta.for_problem(
        problem,
        supernet=request.supernet,
        checkpoint_hash=supernet.checkpoint_hash,
        hardware=target.name,
        hardware_fingerprint=target.fingerprint,
        seed=request.seed,
        algorithm=request.algorithm,
        task=task.name,
        eval_limit=request.eval_limit,
        quantize=str(request.quantize),
        batch=request.batch,
    )
    study = open_study(name, storage, meta=meta, space=space,
                       change_budget=request.change_budget)
    return PreparedSearch(request, supernet, task, target, problem, study, storage, min_latency,
                          max_latency, evaluator, min_memory_mb=min_memory)


def _with_budget(request: SearchRequest, evaluator: BaseEvaluator, min_latency: float,
                 max_latency: float | None, *, subject: str) -> SearchRequest:
    """``request`` with its latency budget checked; without one, with the hypervolume's
    latency reference (the study's, else the space's own range: ``max_latency``, the
    largest subnet's, where it is known, else :func:`slowest_latency`).

    Raises:
        InfeasibleBudgetError: even the smallest subnet exceeds the budget.
    """
    if request.budget_ms is None:
        if request.latency_reference_ms is not None:
            return request
        if max_latency is None:
            max_latency = slowest_latency(evaluator)
        if max_latency <= 0:
            raise ValueError(f"{subject}'s slowest subnet takes {max_latency:g} ms on "
                             f"{request.hardware}: nothing to normalise by; give --budget")
        return dataclasses.replace(request, latency_reference_ms=max_latency)
    if min_latency > request.budget_ms:
        raise InfeasibleBudgetError(
            f"budget {request.budget_ms:g} ms is infeasible on {request.hardware}: the smallest "
            f"subnet of {subject} takes {min_latency:.1f} ms"
        )
    return request


def _check_memory(request: SearchRequest, evaluator: Evaluator) -> float | None:
    """The least memory a subnet needs when memory is searched (over
    :func:`_uniform_configs`), refusing a budget below it.

    Raises:
        InfeasibleBudgetError: no subnet fits in ``--memory-budget``.
    """
    if not request.memory:
        return None
    smallest = min(evaluator.memory_mb(c) for c in _uniform_configs(evaluator.space))
    budget = request.memory_budget_mb
    if budget is not None and smallest > budget:
        raise InfeasibleBudgetError(
            f"memory budget {format_mb(budget)} is infeasible on {request.hardware}: no "
            f"subnet of {request.supernet} needs less than {format_mb(smallest)} (weights "
            f"plus activations at batch 1); raise --memory-budget to at least that"
        )
    return smallest


def _uniform_configs(space: SearchSpace) -> list[Config]:
    """The configs whose every gene takes its k-th choice (its last where it has fewer):
    the smallest subnet, the largest, and where choices are not ordered by size (NB201's
    operations) the cells of one operation each; the least memory of a space is among
    them where memory grows with every gene, or depends only on which operations a cell
    holds."""
    count = max(len(gene.choices) for gene in space.genes)
    configs = [space.config({g.name: g.choices[min(k, len(g.choices) - 1)]
                             for g in space.genes}) for k in range(count)]
    return list({c.key: c for c in configs}.values())


def _prepare_predicted(request: SearchRequest, name: str, storage: str,
                       target: HardwareTarget) -> PreparedSearch:
    """A search of a published space whose accuracy a predictor gives (no weights).

    Raises:
        ValueError: a supernet with a predictor, a space without one, options a
            predicted search cannot honour, or a predictor that does not match the space.
    """
    from nas.predictors._external import load_accuracy_predictor

    if request.space is None:
        raise ValueError(
            f"--accuracy-predictor replaces the accuracy of a space without weights, but "
            f"supernet {request.supernet!r} has its own task to measure accuracy on: drop "
            f"--accuracy-predictor, or search a space (--space ofa-mbv3) instead of a supernet"
        )
    if request.supernet:
        raise ValueError(f"give --supernet or --space, not both (got --supernet "
                         f"{request.supernet} and --space {request.space})")
    if request.accuracy_predictor is None:
        raise ValueError(
            f"space {request.space!r} has no weights to measure accuracy with: add "
            f"--accuracy-predictor ofa:PATH (OFA's acc_predictor.pth) or the folder of a "
            f"predictor `nas predictor fit` wrote"
        )
    if request.quantize != "none" or request.size_objective or request.size_budget_mb \
            or request.memory:
        raise ValueError("--quantize, --objective size/memory, --size-budget and "
                         "--memory-budget need supernet weights; a --space search has "
                         "accuracy and latency only")
    model, notes = restrict_resolutions(get_space(request.space), target,
                                        request.accuracy_predictor)
    check_design = getattr(target, "check_design", None)
    if check_design is not None and model.design is not None:
        check_design(model.design)  # a table missing a layer fails here, not mid-search
    predictor = load_accuracy_predictor(request.accuracy_predictor, model.space)
    evaluator = PredictedEvaluator(model, predictor, target)
    min_latency = _latency(evaluator, model.space.smallest())
    max_latency = _largest_latency(evaluator)
    request = _with_budget(request, evaluator, min_latency, max_latency,
                           subject=model.space.name)
    problem = accuracy_latency_problem(model.space, budget_ms=request.budget_ms,
                                       reference_ms=request.latency_reference_ms)
    meta = StudyMeta.for_problem(
        problem, supernet="", checkpoint_hash=model.checkpoint_hash, hardware=target.name,
        hardware_fingerprint=target.fingerprint, seed=request.seed,
        algorithm=str(request.algorithm), task="", eval_limit=None, quantize="none",
        accuracy_predictor=predictor.spec, accuracy_predictor_sha256=predictor.sha256,
        batch=request.batch,
    )
    study = open_study(name, storage, meta=meta, space=model.space,
                       change_budget=request.change_budget)
    return PreparedSearch(request, model, None, target, problem, study, storage, min_latency,
                          max_latency, evaluator, notes=notes)


def restrict_resolutions(model: SpaceModel, target: HardwareTarget, predictor: str
                         ) -> tuple[SpaceModel, tuple[str, ...]]:
    """``model`` on the resolutions that both the target prices (``target.resolutions``,
    e.g. OFA's tables) and the predictor encodes, named ``<space>@r<r1>-<r2>-...``; the
    notes say so in one line. A space without a ``design.resolutions`` is left as it is.

    Raises:
        ValueError: no resolution of the space is priced and encoded.
    """
    from nas.predictors._external import resolutions_of

    design = model.design
    if design is None or not hasattr(design, "resolutions"):
        return model, ()
    own = tuple(design.resolutions)
    allowed, why = set(own), []
    priced = getattr(target, "resolutions", None)
    if priced:
        allowed &= set(priced)
        why.append(f"{target.name} prices {list(priced)}")
    encoded = resolutions_of(predictor)
    if encoded:
        allowed &= set(encoded)
        why.append(f"the predictor encodes {list(encoded)}")
    if allowed == set(own):
        return model, ()
    if not allowed:
        raise ValueError(f"no resolution of space {model.space.name!r} ({list(own)}) can be "
                         f"searched: {'; '.join(why)}")
    kept = tuple(sorted(allowed))
    narrowed = dataclasses.replace(design, name=f"{design.name}@r{'-'.join(map(str, kept))}",
                                   resolutions=kept)
    note = (f"searching resolutions {list(kept)} of {model.space.name}'s {len(own)} "
            f"({'; '.join(why)})")
    return SpaceModel(narrowed.build(), design=narrowed), (note,)


def _evaluator(request: SearchRequest, supernet: Supernet, task: Task,
               target: HardwareTarget) -> Evaluator:
    """The plain evaluator (weight slicing) for fp32 searches of accuracy and latency; the
    quantized one (dense, calibrated) when subnets are quantized or sized.

    Raises:
        ValueError: quantization asked of a supernet without quantizable units, on a
            target without quantized latencies, or of a task without calibration data.
    """
    mode = check_mode(str(request.quantize))
    sized = request.size_objective or request.size_budget_mb is not None
    if request.memory and (mode != "none" or sized):
        raise ValueError("memory is searched for fp32 subnets only for now: drop --quantize "
                         "and --objective size/--size-budget, or --objective memory/"
                         "--memory-budget")
    if mode == "none" and not sized:
        return Evaluator(supernet, task, target, eval_limit=request.eval_limit,
                         memory=request.memory)
    space = None
    if mode != "none":
        units = supernet.quant_units()
        if not units:
            raise ValueError(
                f"supernet {request.supernet!r} has no weights to quantize (a tabular "
                f"benchmark); use --quantize none"
            )
        if not target.quant_bits:
            raise no_quantized_latency(target.name)
        space = joint_space(supernet.space, units, target.quant_bits) if mode == "mixed" else None
    evaluator = QuantizedEvaluator(supernet, task, target, mode=mode, space=space,
                                   eval_limit=request.eval_limit)
    if mode != "none" and evaluator.static:
        evaluator.batches()  # a task without calibration data fails here, before any work
    return evaluator


def _smallest(evaluator: Evaluator) -> list[Config]:
    """The smallest subnet, at every bit width of a mixed policy (integer kernels can be
    slower than float ones on narrow layers, so the fastest is not known in advance)."""
    smallest = evaluator.supernet.space.smallest()
    if not isinstance(evaluator, QuantizedEvaluator) or evaluator.mode != "mixed":
        return [smallest]
    units = [unit.name for unit in evaluator.supernet.quant_units()]
    return [evaluator.space.config({**smallest, **{f"{BITS_PREFIX}{u}": b for u in units}})
            for b in evaluator.target.quant_bits]


SLOWEST_SAMPLE = 64
"""Random subnets :func:`slowest_latency` prices where the space has unordered genes."""


def slowest_latency(evaluator: BaseEvaluator) -> float:
    """The largest subnet's latency; where some genes are unordered (NAS-Bench-201's
    operations), ``largest()`` need not be the slowest, so the slowest of it and
    :data:`SLOWEST_SAMPLE` seeded random subnets."""
    largest = _largest_latency(evaluator)
    if largest is not None:
        return largest
    rng = np.random.default_rng(0)
    configs = [evaluator.space.largest(), *(evaluator.space.sample(rng)
                                            for _ in range(SLOWEST_SAMPLE))]
    return max(_latency(evaluator, config) for config in configs)


def _largest_latency(evaluator: BaseEvaluator) -> float | None:
    """The largest subnet's latency, where every gene is ordered (else None)."""
    space = evaluator.space
    if not all(gene.is_numeric for gene in space.genes):
        return None
    return _latency(evaluator, space.largest())


def _latency(evaluator: BaseEvaluator, config: Config) -> float:
    if isinstance(evaluator, QuantizedEvaluator):
        return evaluator.latency_of(evaluator.quantized(config))
    return float(evaluator.target.latency_ms(evaluator.supernet, config, evaluator.task))


def _problem(request: SearchRequest, evaluator: Evaluator) -> Problem:
    """Accuracy and latency under the budget; size too when asked (bounded by
    ``--size-budget``, else by the largest fp32 subnet's size, which constrains nothing
    but gives the hypervolume its reference); memory likewise."""
    problem = accuracy_latency_problem(evaluator.space, budget_ms=request.budget_ms,
                                       reference_ms=request.latency_reference_ms)
    if request.memory:
        bound = request.memory_budget_mb
        if bound is None:
            bound = evaluator.memory_mb(evaluator.space.largest())
        return Problem(
            space=problem.space,
            objectives=(*problem.objectives, Objective(MEMORY_METRIC, "minimize")),
            constraints=(*problem.constraints, Constraint(MEMORY_METRIC, float(bound))),
        )
    if not (request.size_objective or request.size_budget_mb is not None):
        return problem
    bound = request.size_budget_mb
    if bound is None:
        largest = evaluator.supernet.extract(evaluator.supernet.space.largest())
        bound = size_bytes(largest, {}) / BYTES_PER_MB
    return Problem(
        space=problem.space,
        objectives=(*problem.objectives, Objective("size_mb", "minimize")),
        constraints=(*problem.constraints, Constraint("size_mb", float(bound))),
    )


def _with_study_settings(request: SearchRequest, stored: StudyMeta | None) -> SearchRequest:
    """Fill the seed and algorithm left out: the study's own when it exists (so a rerun
    resumes it), else 0 and the default. Algorithms are stored by their own name
    (``default`` is stored as what it stands for), so a later change of the default
    never changes what a resumed study runs."""
    algorithm = request.algorithm
    if algorithm is None:
        fresh = PREDICTED_ALGORITHM if request.space is not None else "default"
        algorithm = stored.algorithm if stored is not None and stored.algorithm else fresh
    seed = request.seed
    if seed is None:
        seed = stored.seed if stored is not None and stored.seed is not None else 0
    quantize = request.quantize
    if quantize is None:
        quantize = stored.quantize if stored is not None else "none"
    predictor = request.accuracy_predictor
    if predictor is None and request.space is not None and stored is not None:
        predictor = stored.accuracy_predictor or None
    budget_ms, reference = request.budget_ms, request.latency_reference_ms
    if stored is not None:  # a whole-front study keeps its reference under a new budget
        reference = next((o.get("reference") for o in stored.objectives
                          if o["name"] == "latency_ms"), reference)
        if budget_ms is None:
            budget_ms = stored_budget(stored, "latency_ms")
    if budget_ms is None and request.change_budget:
        raise ValueError("--change-budget needs the new --budget")
    algorithm = canonical_algorithm(algorithm)
    require_algorithm(algorithm)
    batch = (stored.batch if stored is not None
             else request.batch or worker_batch(algorithm, request.workers))
    return dataclasses.replace(request, seed=seed, algorithm=algorithm,
                               quantize=check_mode(quantize), accuracy_predictor=predictor,
                               batch=batch, budget_ms=budget_ms,
                               latency_reference_ms=reference)


def stored_budget(meta: StudyMeta, metric: str) -> float | None:
    """The study's budget on ``metric``, if it has one."""
    return next((float(c["upper"]) for c in meta.constraints if c["metric"] == metric), None)


def worker_batch(algorithm: str, workers: int | None) -> int | None:
    """The batch an algorithm asks for when ``workers`` evaluate: ``workers`` where it
    would ask one config at a time (Optuna's TPE and GP see the pending trials: TPE's
    constant liar, GP's running trials), so that every worker has one; else None
    (algorithms that ask a population or a batch keep theirs)."""
    if workers is None or workers < 2:
        return None
    option = inspect.signature(ALGORITHMS.entry(algorithm).factory).parameters.get(
        "batch_size")
    return workers if option is not None and option.default == 1 else None


def run_prepared(prepared: PreparedSearch, *, progress: bool = True,
                 workers: QueueDriver | None = None) -> SearchResult:
    """Run the prepared search; with ``workers``, new configs are evaluated by the
    workers of the study's queue (:func:`nas.run_search`)."""
    request = prepared.request
    options = {} if request.batch is None else {"batch_size": request.batch}
    algorithm = get_algorithm(request.algorithm, prepared.problem, seed=request.seed,
                              **options)
    return run_search(
        prepared.problem, algorithm, prepared.evaluator, prepared.study,
        n_evals=request.evals, progress=progress, workers=workers,
    )
