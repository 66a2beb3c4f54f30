"""Your own predictor class: a k-nearest-neighbour regressor of accuracy.

It subclasses `nas.predictors.Predictor` (scikit-learn style: `__init__` stores
arguments, `fit` returns self, fitted state ends in `_`), registers under the name
"knn", is scored against the built-in ridge on held-out rows, saved, loaded back by
name, and used as the accuracy objective of a search, all in this one Python process.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np

from nas.cli import app
from nas.predictors import PREDICTORS, Predictor, create_predictor, score_all


@PREDICTORS.register("knn", description="mean of the k nearest rows, no uncertainty")
class KNNPredictor(Predictor):
    """Predicts the mean target of the ``k`` nearest training rows (Euclidean distance on
    standardised features).

    Args:
        k: neighbours averaged.
        log_target: see :class:`~nas.predictors.Predictor`.
        seed: unused (the fit is deterministic); kept for the uniform interface.
    """

    name = "knn"

    def __init__(self, *, k: int = 5, log_target: bool = False, seed: int = 0) -> None:
        self.k = k
        self.log_target = log_target
        self.seed = seed

    # The base class validates and standardises; these hooks see scaled arrays.
    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        self.X_, self.y_ = X.copy(), y.copy()  # (n, d), (n,)

    def _predict(self, X: np.ndarray, return_std: bool) -> tuple[np.ndarray, None]:
        distances = ((X[:, None, :] - self.X_[None, :, :]) ** 2).sum(-1)  # (m, n)
        nearest = np.argsort(distances, axis=1)[:, : self.k]  # (m, k)
        return self.y_[nearest].mean(axis=1), None

    # Saving: a JSON-able dict and named numpy arrays (no pickle).
    def _state(self, directory: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {}, {"X": self.X_, "y": self.y_}

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                   directory: Path) -> None:
        self.X_, self.y_ = arrays["X"], arrays["y"]


# 1. Your measurements: one column per gene, and the target.
with open("accuracy.csv") as f:
    columns = f.readline().strip().split(",")
table = np.loadtxt("accuracy.csv", delimiter=",", skiprows=1)
genes = columns[:-1]
X, y = table[:, :-1], table[:, -1]
rng = np.random.default_rng(0)
order = rng.permutation(len(y))
train, test = order[:80], order[80:]

# 2. Fit and compare with a built-in model on the rows neither saw.
for name in ("knn", "ridge"):
    model = create_predictor(name).fit(X[train], y[train])
    scores = score_all(y[test], model.predict(X[test]))
    print(f"{name:>5}: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(scores.items())))

# 3. Save it where `--accuracy-predictor` looks: the predictor's files plus fit.json,
#    which says how a config becomes a feature row (here: the genes, by column name).
knn = create_predictor("knn", k=5).fit(X, y)
folder = knn.save("knn-predictor")
record = {"features": {"space": "table", "target": "accuracy", "drop": [], "columns": genes},
          "target": "accuracy", "model": "knn"}
(folder / "fit.json").write_text(json.dumps(record, indent=2) + "\n")
print("loaded back:", Predictor.load(folder))

# 4. Search with it. The `nas` command in a new process would not know "knn" (it imports
#    only the built-in predictors), so run the same command in this process.
app(["search", "--space", "ofa-mbv3", "--accuracy-predictor", "knn-predictor",
     "--hw", "ofa-lut:lut", "--budget", "2.5ms", "--evals", "300", "--study", "knn"
    ], standalone_mode=False)
