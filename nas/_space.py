"""Search spaces and configs: the typed description of every architectural choice.

A :class:`SearchSpace` is an ordered list of categorical :class:`Gene` s. A gene may be
conditional: a decoder layer's genes are inactive when the decoder depth excludes that
layer. A :class:`Config` holds the values of the *active* genes only, so two configs that
describe the same subnet are equal and hash equal (the canonical form).

One space converts a config to and from a dict (human and JSON), an integer vector
(pymoo), Optuna distributions and trial suggestions, and a float feature vector
(predictors).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nas._registry import Registry

if TYPE_CHECKING:
    import optuna

Value = int | float | str


@dataclass(frozen=True)
class Condition:
    """A gene is active only while the value of ``gene`` is at least ``at_least``."""

    gene: str
    at_least: int | float

    def holds(self, values: Mapping[str, Value]) -> bool:
        return values.get(self.gene) is not None and values[self.gene] >= self.at_least


@dataclass(frozen=True)
class Gene:
    """One categorical choice, e.g. ``decoder.2.ffn_dim`` in ``(128, 256, 512)``."""

    name: str
    choices: tuple[Value, ...]
    active_if: Condition | None = None

    def __post_init__(self) -> None:
        if not self.choices:
            raise ValueError(f"gene {self.name!r} has no choices")
        if len(set(self.choices)) != len(self.choices):
            raise ValueError(f"gene {self.name!r} has repeated choices: {self.choices}")

    @property
    def is_numeric(self) -> bool:
        return all(isinstance(c, int | float) and not isinstance(c, bool) for c in self.choices)


class Config(Mapping[str, Value]):
    """The values of the active genes of one subnet, in the space's gene order.

    Immutable and hashable; build one with :meth:`SearchSpace.config`, which validates
    and canonicalises (drops inactive genes).
    """

    __slots__ = ("_items", "_space_name", "_json", "_key", "_values", "_hash")

    def __init__(self, space_name: str, items: Sequence[tuple[str, Value]]) -> None:
        self._space_name = space_name
        self._items = tuple(items)
        # computed once, when first asked: a search asks for them per config
        self._json: str | None = None
        self._key: str | None = None
        self._values: dict[str, Value] | None = None
        self._hash: int | None = None

    @property
    def space_name(self) -> str:
        return self._space_name

    def __getitem__(self, name: str) -> Value:
        if self._values is None:
            self._values = dict(self._items)
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Config):
            return self._space_name == other._space_name and self._items == other._items
        return NotImplemented

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash((self._space_name, self._items))
        return self._hash

    def __repr__(self) -> str:
        return f"Config({self.to_json()})"

    def to_dict(self) -> dict[str, Value]:
        return dict(self._items)

    def to_json(self) -> str:
        """Canonical JSON: the same subnet always gives the same string."""
        if self._json is None:
            self._json = json.dumps(self.to_dict(), separators=(",", ":"))
        return self._json

    @property
    def key(self) -> str:
        """A stable 16-hex-digit hash of the canonical form (stable across processes)."""
        if self._key is None:
            payload = f"{self._space_name}:{self.to_json()}".encode()
            self._key = hashlib.sha256(payload).hexdigest()[:16]
        return self._key


class SearchSpace:
    """An ordered set of genes; conditions may only refer to genes declared earlier.

    Args:
        name: the space's name, recorded in every config and study.
        genes: the genes, in order.
    """

    def __init__(self, name: str, genes: Sequence[Gene]) -> None:
        self.name = name
        self.genes: tuple[Gene, ...] = tuple(genes)
        self._index = {gene.name: i for i, gene in enumerate(self.genes)}
        self._upper = np.array([len(gene.choices) - 1 for gene in self.genes], dtype=int)
        self._conditions: list[tuple[int, int, np.ndarray]] | None = None
        if len(self._index) != len(self.genes):
            raise ValueError(f"search space {name!r} declares a gene name twice")
        for i, gene in enumerate(self.genes):
            cond = gene.active_if
            if cond is not None and self._index.get(cond.gene, i) >= i:
                raise ValueError(
                    f"gene {gene.name!r} is conditioned on {cond.gene!r}, "
                    "which must be a gene declared before it"
                )

    def __len__(self) -> int:
        return len(self.genes)

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r}, {len(self.genes)} genes)"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(gene.name for gene in self.genes)

    def gene(self, name: str) -> Gene:
        try:
            return self.genes[self._index[name]]
        except KeyError:
            raise KeyError(f"search space {self.name!r} has no gene {name!r}") from None

    # -- configs ---------------------------------------------------------------------

    def config(self, values: Mapping[str, Any]) -> Config:
        """Validate ``values`` and return the canonical config.

        Values of inactive genes are accepted and dropped; every active gene must be
        given a value among its choices.

        Raises:
            ValueError: an unknown gene, a missing active gene or a value not allowed.
        """
        if isinstance(values, Config) and values.space_name == self.name:
            return values
        unknown = sorted(set(values) - set(self._index))
        if unknown:
            raise ValueError(
                f"config has genes {unknown} that search space {self.name!r} does not have"
            )
        active: dict[str, Value] = {}
        for gene in self.genes:
            if gene.active_if is not None and not gene.active_if.holds(active):
                continue
            if gene.name not in values:
                raise ValueError(f"config is missing gene {gene.name!r} (choices {gene.choices})")
            value = values[gene.name]
            if value not in gene.choices:
                raise ValueError(
                    f"gene {gene.name!r} must be one of {list(gene.choices)}, got {value!r}"
                )
            active[gene.name] = value
        return Config(self.name, list(active.items()))

    def canonical(self, values: Mapping[str, Value]) -> Config:
        """The config of ``values`` with inactive genes dropped, without :meth:`config`'s
        checks: for values an algorithm drew from each gene's choices itself."""
        return self._build(lambda gene: values[gene.name])

    def _build(self, pick: Any) -> Config:
        """Build a config gene by gene; ``pick(gene)`` returns the chosen value."""
        active: dict[str, Value] = {}
        for gene in self.genes:
            if gene.active_if is None or gene.active_if.holds(active):
                active[gene.name] = pick(gene)
        return Config(self.name, list(active.items()))

    def sample(self, rng: np.random.Generator) -> Config:
        """A uniformly random choice for every active gene."""
        return self._build(lambda gene: gene.choices[int(rng.integers(len(gene.choices)))])

    def largest(self) -> Config:
        """Every numeric gene at its largest choice (the sandwich rule's upper bread)."""
        return self._build(lambda gene: max(gene.choices) if gene.is_numeric else gene.choices[0])

    def smallest(self) -> Config:
        """Every numeric gene at its smallest choice."""
        return self._build(lambda gene: min(gene.choices) if gene.is_numeric else gene.choices[0])

    def from_dict(self, values: Mapping[str, Any]) -> Config:
        return self.config(values)

    def from_json(self, text: str) -> Config:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"config is not valid JSON: {err}") from None
        if not isinstance(values, dict):
            raise ValueError(f"config JSON must be an object, got {type(values).__name__}")
        return self.config(values)

    # -- integer vectors (pymoo) -----------------------------------------------------

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Inclusive integer bounds of :meth:`to_vector`, one entry per gene."""
        return np.zeros(len(self.genes), dtype=int), self._upper.copy()

    def to_vector(self, config: Config) -> np.ndarray:
        """Choice indices, one per gene; an inactive gene reads 0."""
        values = config.to_dict()
        return np.array(
            [gene.choices.index(values[gene.name]) if gene.name in values else 0
             for gene in self.genes],
            dtype=int,
        )

    def from_vector(self, vector: Sequence[int] | np.ndarray) -> Config:
        """Inverse of :meth:`to_vector`; entries of inactive genes are ignored."""
        vector = np.asarray(vector).round().astype(int)
        if vector.shape != (len(self.genes),):
            raise ValueError(
                f"vector must have shape ({len(self.genes)},), got {tuple(vector.shape)}"
            )
        upper = self._upper
        if (vector < 0).any() or (vector > upper).any():
            raise ValueError(f"vector {vector.tolist()} is outside the bounds {upper.tolist()}")
        # plain ints, looked up by name: indexing numpy per gene costs more than the rest
        chosen = {gene.name: gene.choices[i] for gene, i in zip(self.genes, vector.tolist())}
        return self._build(lambda gene: chosen[gene.name])

    def from_vectors(self, vectors: np.ndarray) -> list[Config]:
        """:meth:`from_vector` for many rows at once (a genetic algorithm's offspring);
        entries of inactive genes are ignored.

        Raises:
            ValueError: not of shape ``(n, len(self))``, or an entry outside the bounds.
        """
        vectors, active = self._activity(vectors)
        genes, name = self.genes, self.name
        return [
            Config(name, [(gene.name, gene.choices[i])
                          for gene, i, on in zip(genes, row, mask, strict=True) if on])
            for row, mask in zip(vectors.tolist(), active.tolist(), strict=True)
        ]

    def canonical_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Each row as :meth:`to_vector` would give it back: inactive genes read 0.

        Raises:
            ValueError: as :meth:`from_vectors`.
        """
        vectors, active = self._activity(vectors)
        return np.where(active, vectors, 0)

    def _activity(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rounded integer rows and which genes are active in each, gene by gene in order
        (a condition refers to an earlier gene, so its activity is known by then)."""
        vectors = np.asarray(vectors).round().astype(int)
        if vectors.ndim != 2 or vectors.shape[1] != len(self.genes):
            raise ValueError(f"vectors must have shape (n, {len(self.genes)}), got "
                             f"{tuple(vectors.shape)}")
        if (vectors < 0).any() or (vectors > self._upper).any():
            bad = vectors[((vectors < 0) | (vectors > self._upper)).any(axis=1)][0]
            raise ValueError(f"vector {bad.tolist()} is outside the bounds "
                             f"{self._upper.tolist()}")
        if self._conditions is None:  # (gene, its parent, which parent choices activate it)
            self._conditions = [
                (i, self._index[g.active_if.gene], np.array(
                    [c >= g.active_if.at_least for c in self.gene(g.active_if.gene).choices]))
                for i, g in enumerate(self.genes) if g.active_if is not None]
        active = np.ones(vectors.shape, dtype=bool)
        for i, parent, holds in self._conditions:
            active[:, i] = active[:, parent] & holds[vectors[:, parent]]
        return vectors, active

    # -- Optuna ----------------------------------------------------------------------

    def optuna_distributions(self) -> dict[str, optuna.distributions.CategoricalDistribution]:
        """One categorical distribution per gene (conditional genes included)."""
        from optuna.distributions import CategoricalDistribution

        return {gene.name: CategoricalDistribution(list(gene.choices)) for gene in self.genes}

    def suggest(self, trial: optuna.trial.BaseTrial) -> Config:
        """Ask an Optuna trial for the active genes only (a define-by-run space)."""
        return self._build(lambda gene: trial.suggest_categorical(gene.name, list(gene.choices)))

    # -- predictor features ----------------------------------------------------------

    @property
    def feature_names(self) -> tuple[str, ...]:
        names: list[str] = []
        for gene in self.genes:
            if gene.is_numeric:
                names.append(gene.name)
            else:
                names.extend(f"{gene.name}={choice}" for choice in gene.choices)
        return tuple(names)

    def to_features(self, config: Config) -> np.ndarray:
        """Floats for predictors: the value of a numeric gene, one-hot for other genes;
        an inactive gene reads 0 everywhere."""
        values = config.to_dict()
        features: list[float] = []
        for gene in self.genes:
            value = values.get(gene.name)
            if gene.is_numeric:
                features.append(float(value) if value is not None else 0.0)
            else:
                features.extend(1.0 if value == choice else 0.0 for choice in gene.choices)
        return np.array(features, dtype=float)

    # -- (de)serialisation of the space itself -----------------------------------------

    def to_spec(self) -> dict[str, Any]:
        """A JSON-able description of the space (recorded with exported subnets)."""
        return {
            "name": self.name,
            "genes": [
                {
                    "name": gene.name,
                    "choices": list(gene.choices),
                    **(
                        {"active_if": {"gene": gene.active_if.gene,
                                       "at_least": gene.active_if.at_least}}
                        if gene.active_if else {}
                    ),
                }
                for gene in self.genes
            ],
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> SearchSpace:
        genes = [
            Gene(
                name=g["name"],
                choices=tuple(g["choices"]),
                active_if=Condition(**g["active_if"]) if g.get("active_if") else None,
            )
            for g in spec["genes"]
        ]
        return cls(spec["name"], genes)

    def cardinality(self) -> int:
        """The number of distinct canonical configs (counts conditional genes once)."""
        counts: dict[tuple[tuple[str, Value], ...], int] = {(): 1}
        for gene in self.genes:
            new: dict[tuple[tuple[str, Value], ...], int] = {}
            for state, n in counts.items():
                values = dict(state)
                if gene.active_if is not None and not gene.active_if.holds(values):
                    new[state] = new.get(state, 0) + n
                    continue
                for choice in gene.choices:
                    keep = state + ((gene.name, choice),) if self._controls(gene.name) else state
                    new[keep] = new.get(keep, 0) + n
            counts = new
        return sum(counts.values())

    def _controls(self, name: str) -> bool:
        return any(g.active_if is not None and g.active_if.gene == name for g in self.genes)


SPACE_FEATURES: Registry[Any] = Registry("space features", plugins=("nas.predictors",))
"""Richer predictor features for a space, by space name: ``configs -> (n, d) floats``.

A space's own :meth:`SearchSpace.to_features` is one-hot per gene; a space that knows
more about its configs (NAS-Bench-201's live edges and operation counts) registers a
function here, and the predictor-guided searches use it.
"""


def space_features(space: SearchSpace, configs: Sequence[Config]) -> np.ndarray:
    """The (n, d) predictor features of ``configs``: those registered for the space's
    name in :data:`SPACE_FEATURES`, else :meth:`SearchSpace.to_features` of each."""
    if space.name in SPACE_FEATURES:
        return np.asarray(SPACE_FEATURES.entry(space.name).factory(configs), dtype=float)
    if not configs:
        return np.zeros((0, len(space.feature_names)))
    return np.stack([space.to_features(c) for c in configs])
