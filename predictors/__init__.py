"""Learned predictors of accuracy, latency and memory, their features and their metrics.

Every model is a :class:`Predictor` (scikit-learn style ``fit`` / ``predict``, pickle-free
``save`` / ``load``) registered in :data:`PREDICTORS`:

- ``ridge``, ``quadratic``, ``svr``, ``xgb``, ``mlp``: point predictions;
- ``gp``, ``ensemble``: also ``predict(X, return_std=True)``;
- ``auto``: picks one of them by k-fold cross-validation.

OFA's published accuracy predictor (``acc_predictor.pth``) is a fixed, loaded model
(:class:`OFAAccuracyPredictor`, over :class:`OFAOneHotFeatures`); any of these becomes a
search objective through :func:`load_accuracy_predictor` (``--accuracy-predictor``).
"""

from nas.predictors._base import (
    PREDICTORS,
    NoUncertaintyError,
    Predictor,
    create_predictor,
    list_predictors,
)
from nas.predictors._external import AccuracyModel, load_accuracy_predictor
from nas.predictors._features import (
    ENCODERS,
    CSVTable,
    NB201Features,
    SpaceFeatures,
    TableFeatures,
    create_encoder,
    encoder_from_spec,
    read_csv,
)
from nas.predictors._metrics import kendall_tau, mape, rmse, score_all, spearman
from nas.predictors.auto import AutoPredictor
from nas.predictors.ensemble import EnsemblePredictor
from nas.predictors.gp import GPPredictor
from nas.predictors.linear import RidgePredictor
from nas.predictors.mlp import MLPPredictor
from nas.predictors.ofa import OFAAccuracyPredictor, OFAOneHotFeatures
from nas.predictors.quadratic import QuadraticRidgePredictor
from nas.predictors.svr import SVRPredictor
from nas.predictors.xgb import XGBPredictor

__all__ = [
    "ENCODERS",
    "AccuracyModel",
    "PREDICTORS",
    "AutoPredictor",
    "CSVTable",
    "EnsemblePredictor",
    "GPPredictor",
    "MLPPredictor",
    "NB201Features",
    "NoUncertaintyError",
    "OFAAccuracyPredictor",
    "OFAOneHotFeatures",
    "Predictor",
    "QuadraticRidgePredictor",
    "RidgePredictor",
    "SVRPredictor",
    "SpaceFeatures",
    "TableFeatures",
    "XGBPredictor",
    "create_encoder",
    "create_predictor",
    "encoder_from_spec",
    "kendall_tau",
    "list_predictors",
    "load_accuracy_predictor",
    "mape",
    "read_csv",
    "rmse",
    "score_all",
    "spearman",
]
