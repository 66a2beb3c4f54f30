"""An accuracy predictor as a search objective: ``--accuracy-predictor SPEC``.

``SPEC`` is ``ofa:PATH`` (OFA's ``acc_predictor.pth``, :mod:`nas.predictors.ofa`) or the
folder of any predictor ``nas predictor fit`` wrote (its ``fit.json`` says how rows were
encoded; the encoding must be computable from a config of the searched space: a
``table`` predictor whose feature columns are all genes of the space, or an ``nb201``
predictor on the NAS-Bench-201 space). :func:`load_accuracy_predictor` returns an
:class:`AccuracyModel`: config -> predicted accuracy, with a description and the sha256
of the files it read, which a study records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas._files import file_sha256
from nas._space import Config, SearchSpace

OFA_PREFIX = "ofa:"
FIT_FILE = "fit.json"


@dataclass(frozen=True)
class AccuracyModel:
    """A loaded accuracy predictor for one space.

    Attributes:
        spec: what the user named (``ofa:PATH`` or ``DIR``).
        description: what it is, in a few words (shown by reports).
        sha256: of the file (OFA) or of the folder's files (name and content, sorted).
        resolutions: the input resolutions it can encode (None: no restriction).
    """

    spec: str
    description: str
    sha256: str
    features: Callable[[Config], np.ndarray]
    predict: Callable[[np.ndarray], np.ndarray]
    resolutions: tuple[int, ...] | None = None

    def accuracy(self, config: Config) -> float:
        """The predicted accuracy of one config."""
        return float(self.predict(self.features(config)[None, :])[0])


def resolutions_of(spec: str) -> tuple[int, ...] | None:
    """The resolutions a predictor named by ``spec`` can encode (OFA's one-hot: 112..224
    in steps of 16), known before the space is: None for a folder's predictor."""
    if spec.startswith(OFA_PREFIX):
        from nas.predictors.ofa import OFA_RESOLUTIONS

        return OFA_RESOLUTIONS
    return None


def load_accuracy_predictor(spec: str, space: SearchSpace) -> AccuracyModel:
    """The predictor ``spec`` names, checked against ``space``.

    Raises:
        FileNotFoundError: no such file or folder.
        ValueError: an empty spec, a file that is not the predictor it claims to be, or
            an encoding that does not match ``space``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("--accuracy-predictor needs ofa:PATH (OFA's acc_predictor.pth) or "
                         "the folder of a predictor `nas predictor fit` wrote")
    if spec.startswith(OFA_PREFIX):
        return _ofa(spec, space)
    return _fitted(spec, space)


def _ofa(spec: str, space: SearchSpace) -> AccuracyModel:
    from nas.predictors.ofa import OFA_RESOLUTIONS, OFAAccuracyPredictor, OFAOneHotFeatures

    path = spec.removeprefix(OFA_PREFIX)
    if not path:
        raise ValueError("--accuracy-predictor ofa:PATH needs the path of OFA's "
                         "acc_predictor.pth, got no path")
    encoder = OFAOneHotFeatures(space)
    model = OFAAccuracyPredictor.from_file(path)
    return AccuracyModel(
        spec=spec, description=f"OFA accuracy predictor (MLP 128-400-400-400-1) {path}",
        sha256=model.sha256, features=encoder.encode, predict=model.predict,
        resolutions=OFA_RESOLUTIONS,
    )


def folder_sha256(folder: Path) -> str:
    """sha256 over a folder's files (relative name and content, in sorted order)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        digest.update(bytes.fromhex(file_sha256(path)))
    return digest.hexdigest()


def _fitted(spec: str, space: SearchSpace) -> AccuracyModel:
    from nas.predictors._base import Predictor

    folder = Path(spec)
    if not folder.exists():
        raise FileNotFoundError(f"no accuracy predictor at {folder}; name the folder "
                                f"`nas predictor fit --out` wrote, or ofa:PATH")
    record_path = folder / FIT_FILE
    if not record_path.is_file():
        raise FileNotFoundError(f"{folder} is not a predictor folder (missing {FIT_FILE}); "
                                f"name the folder `nas predictor fit --out` wrote, or ofa:PATH")
    try:
        record = json.loads(record_path.read_text())
        features_spec = dict(record["features"])
        target = str(record.get("target", ""))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{record_path} is not a readable predictor record: {err!r}") from None
    predictor = Predictor.load(folder)
    features = _config_features(features_spec, space, folder)
    width = len(features(space.smallest()))
    if width != predictor.n_features_in_:
        raise ValueError(f"the predictor in {folder} takes {predictor.n_features_in_} features "
                         f"but its encoding gives {width} for space {space.name!r}")
    return AccuracyModel(
        spec=spec,
        description=f"{record.get('chosen', record.get('model', 'predictor'))} predictor of "
                    f"{target or 'accuracy'} fitted by `nas predictor fit` ({folder})",
        sha256=folder_sha256(folder), features=features, predict=predictor.predict,
    )


def _config_features(spec: Mapping[str, Any], space: SearchSpace, folder: Path
                     ) -> Callable[[Config], np.ndarray]:
    """config -> the feature row the predictor was fitted on.

    Raises:
        ValueError: the predictor's encoding does not match ``space``.
    """
    kind = spec.get("space")
    if kind == "table":
        columns = [str(c) for c in spec.get("columns", ())]
        unknown = [c for c in columns if c not in space.names]
        if unknown or not columns:
            raise ValueError(
                f"the predictor in {folder} does not match space {space.name!r}: its feature "
                f"columns {unknown[:3] or columns} are not genes of the space; fit it on a CSV "
                f"whose feature columns are the space's genes ({', '.join(space.names[:3])}, ...)"
            )
        not_numeric = [c for c in columns if not space.gene(c).is_numeric]
        if not_numeric:
            raise ValueError(f"the predictor in {folder} reads genes {not_numeric[:3]} of space "
                             f"{space.name!r} as numbers, but their choices are not numbers")
        return lambda config: np.array([float(config.get(c, 0.0)) for c in columns])
    if kind == "nb201":
        from nas.predictors._features import NB201Features
        from nas.supernets.nb201 import NB201_SPACE, config_to_arch_str

        if space.name != NB201_SPACE.name:
            raise ValueError(f"the predictor in {folder} encodes NAS-Bench-201 cells; it does "
                             f"not match space {space.name!r} (use --space {NB201_SPACE.name})")
        encoder = NB201Features(proxies=bool(spec.get("proxies", True)),
                                counts=bool(spec.get("counts", False)))

        return lambda config: encoder.encode([config_to_arch_str(config)])[0]
    raise ValueError(f"the predictor in {folder} uses feature space {kind!r}, which a search "
                     f"cannot compute from a config; use a table or nb201 predictor")

