"""Quantization policies as genes: one bit-width gene per quantizable unit, added to any
search space by one transform.

A supernet names its units (:meth:`~nas.Supernet.quant_units`); :func:`joint_space`
appends a gene ``bits.<unit>`` per unit, conditioned like the unit's layer, so a unit
the depth removes is inactive and configs stay canonical. Everything that works on a
:class:`~nas.SearchSpace` (hashing, pymoo vectors, Optuna distributions, predictor
features) then works on the joint space unchanged. :func:`split_config` takes a joint
config apart again: the architecture for the supernet, the bits for the quantizer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nas._space import Config, Gene, SearchSpace
from nas._supernet import QuantUnit

BITS_PREFIX = "bits."
"""Genes of the policy are named ``bits.<unit>``."""

QUANTIZE_MODES: tuple[str, ...] = ("none", "int8", "mixed")
"""``none``: fp32 subnets; ``int8``: every unit 8-bit (the architecture is searched);
``mixed``: the bit width of every unit is searched jointly with the architecture."""


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`QUANTIZE_MODES`, else a ``ValueError`` naming them."""
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"--quantize must be one of {', '.join(QUANTIZE_MODES)}, got {mode!r}")
    return mode


def joint_space(space: SearchSpace, units: Sequence[QuantUnit], bits: Sequence[int]) -> SearchSpace:
    """``space`` with one gene ``bits.<unit>`` over ``bits`` per unit, after its own genes.

    The joint space's name records the bit choices, so a study of one policy space never
    resumes with another.

    Raises:
        ValueError: no units (the family has nothing to quantize) or fewer than two
            bit widths (nothing to search).
    """
    if not units:
        raise ValueError(f"search space {space.name!r} has no quantizable units")
    choices = tuple(int(b) for b in bits)
    if len(choices) < 2:
        raise ValueError(f"a mixed policy needs at least two bit widths, got {list(choices)}")
    genes = [Gene(f"{BITS_PREFIX}{unit.name}", choices, unit.active_if) for unit in units]
    name = f"{space.name}+bits{'-'.join(str(b) for b in choices)}"
    return JointSpace(name, [*space.genes, *genes], choices)


class JointSpace(SearchSpace):
    """A search space with a policy's bit genes, sampled policy by policy.

    Drawn gene by gene, a policy of ``n`` units has about ``n / len(bits)`` units at each
    width: almost never (nearly) uniform. Yet uniform and nearly uniform policies are
    where the front's ends lie (all-fp32 is fastest at batch 1 here, all-int8 smallest),
    so random search and every initial design built on :meth:`sample` would miss them.
    :meth:`sample` therefore draws each config's mix of widths first, uniformly over the
    simplex (a flat Dirichlet), then every unit's width from that mix: with two widths
    the share at each is uniform from none to all, and with more, policies dominated by
    one width are common (44% of HAT's 32/8 policies have 80% of their units at one
    width, against 2% drawn gene by gene; 35% of its 8/6/4/2 policies have 60%, against
    1.5%). Architecture genes are drawn as in any
    space.
    """

    def __init__(self, name: str, genes: Sequence[Gene], bits: Sequence[int]) -> None:
        super().__init__(name, genes)
        self.bits = tuple(bits)

    def sample(self, rng: np.random.Generator) -> Config:
        mix = rng.dirichlet(np.ones(len(self.bits)))

        def pick(gene: Gene) -> Any:
            if gene.name.startswith(BITS_PREFIX):
                return self.bits[int(rng.choice(len(self.bits), p=mix))]
            return gene.choices[int(rng.integers(len(gene.choices)))]

        return self._build(pick)


def split_config(
    config: Config | Mapping[str, Any], base: SearchSpace
) -> tuple[Config, dict[str, int]]:
    """The architecture (a config of ``base``) and the policy (unit -> bits, active units
    only) of a joint config."""
    values = dict(config)
    policy = {name[len(BITS_PREFIX):]: int(value) for name, value in values.items()
              if name.startswith(BITS_PREFIX)}
    arch = base.config({name: value for name, value in values.items()
                        if not name.startswith(BITS_PREFIX)})
    return arch, policy


def uniform_policy(units: Sequence[str], bits: int) -> dict[str, int]:
    """Every unit at ``bits`` (``--quantize int8``)."""
    return {unit: int(bits) for unit in units}
