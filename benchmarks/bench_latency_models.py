"""Latency predictors on HAT's measurements: our default model against three baselines.

What: on each of HAT's three latency files (``hardware/data/wmt14ende_*_all.csv``: a
Raspberry Pi 4, a Xeon, a TITAN Xp; 2000 SubTransformers each) four models predict the
total latency ``latency_mean_encoder + latency_mean_decoder`` (ms) of held-out rows:

- ``structured+correction``: our default latency predictor (what ``rpi4``, ``xeon`` and
  ``titanxp`` predict for HAT's workload): the NNLS model of
  :mod:`nas.hardware._latency_model` (encoder and decoder parts fitted separately, on
  layer and step counts and MAC counts of the shapes the features describe) times the
  in-range correction of :mod:`nas.hardware._shape_correction` (a quadratic ridge of
  shape features fitted to ``log(measured / structured)``);
- ``structured``: the NNLS model alone;
- ``linear``: ridge on the 10 architecture features;
- ``quadratic-ridge``: degree-2 polynomial of the standardised features, standardised
  again, ridge with alpha chosen by leave-one-out CV on the training rows;
- ``xgboost``: gradient-boosted trees (``nas.predictors``' ``xgb``).

Why: the issue asks that the default predictor beat the best of the three baselines on
every file (and aim at a MAPE of 4 % or less), and that with only 200 measured rows it
stay within 1.2x of its full-data error. The noise floor (the measurements' own spread)
says how far below that any model could go.

How: for seeds 0..9, a seeded 80/20 split (``heldout_split``); every model fits on the
same training rows, either the whole 80 % (``full``) or 200 rows drawn from it, and is
scored on every held-out row (noisy ones included). Figures are medians over seeds.
Baselines fit the raw target in ms on every training row; the structured model drops
from its own training rows, on the device marked noisy (the Raspberry Pi), those whose
encoder latency exceeds ``NOISY_ENCODER_FACTOR`` x the training rows' median (the rule of
``load_hat_measurements``, applied to training rows only). Writes
``benchmarks/results/latency_models_hat.json`` and prints a table.

Run: ``python benchmarks/bench_latency_models.py [--quick]`` (``--quick``: 2 seeds).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nas.hardware._hat_data import (
    _FEATURES,
    HAT_DEVICES,
    HAT_WORKLOAD,
    NOISY_ENCODER_FACTOR,
    shape_from_hat_features,
)
from nas.hardware._latency_model import fit_split_coefficients, heldout_split
from nas.hardware._macs import Seq2SeqShape
from nas.hardware._shape_correction import ShapeCorrection
from nas.predictors import create_predictor, read_csv, score_all

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "hardware" / "data"
OUT = ROOT / "benchmarks" / "results" / "latency_models_hat.json"
TARGET = "latency_mean_encoder+latency_mean_decoder"
DEFAULT = "structured+correction"
MODELS = (DEFAULT, "structured", "linear", "quadratic-ridge", "xgboost")
BASELINES = ("linear", "quadratic-ridge", "xgboost")
ALSO_REPORTED = ("structured",)  # the default without its correction
SMALL = 200
TRAIN_SIZES: tuple[str | int, ...] = ("full", SMALL)
GOAL_MAPE = 0.04
GOAL_SMALL_RATIO = 1.2


@dataclass(frozen=True)
class HATFile:
    """Every row of one HAT latency CSV (nothing dropped)."""

    X: np.ndarray  # (n, 10): the architecture features, in ``_FEATURES`` order
    shapes: list[Seq2SeqShape]
    encoder_ms: np.ndarray
    decoder_ms: np.ndarray
    encoder_std: np.ndarray
    decoder_std: np.ndarray
    noisy: bool

    @property
    def total_ms(self) -> np.ndarray:
        return self.encoder_ms + self.decoder_ms


def load_file(device: str) -> HATFile:
    """All rows of ``device``'s CSV, read as the CLI reads it (``nas.predictors.read_csv``)."""
    spec = HAT_DEVICES[device]
    table = read_csv(DATA / spec.filename)
    X = np.stack([table.column(c) for c in _FEATURES], axis=1)
    return HATFile(
        X=X,
        shapes=[shape_from_hat_features(dict(zip(_FEATURES, row))) for row in X],
        encoder_ms=table.column("latency_mean_encoder"),
        decoder_ms=table.column("latency_mean_decoder"),
        encoder_std=table.column("latency_std_encoder"),
        decoder_std=table.column("latency_std_decoder"),
        noisy=spec.noisy,
    )


def noise_floor(mean_enc: np.ndarray, mean_dec: np.ndarray, std_enc: np.ndarray,
                std_dec: np.ndarray) -> float:
    """Median relative spread of the measured total: sqrt(std_enc^2 + std_dec^2) /
    (mean_enc + mean_dec). Encoder and decoder were timed separately, so their noises
    add as independent variances."""
    return float(np.median(np.hypot(std_enc, std_dec) / (mean_enc + mean_dec)))


def split(n: int, seed: int, size: str | int) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out rows: the seeded 80/20 split, the training part cut to
    ``size`` rows drawn from it unless ``size`` is ``"full"``. The held-out rows depend
    on the seed only, so both sizes are scored on the same rows."""
    train, test = heldout_split(n, test_fraction=0.2, seed=seed)
    if size != "full":
        train = np.sort(np.random.default_rng([seed, int(size)]).choice(train, int(size),
                                                                        replace=False))
    return train, test


def clean_rows(data: HATFile, train: np.ndarray) -> np.ndarray:
    """The training rows the structured model fits: on a noisy device, those whose encoder
    latency is at most ``NOISY_ENCODER_FACTOR`` x the training rows' median."""
    if not data.noisy:
        return train
    encoder = data.encoder_ms[train]
    return train[encoder <= NOISY_ENCODER_FACTOR * np.median(encoder)]


def _quadratic_ridge():
    """Degree-2 polynomial ridge; LOO-CV picks alpha on the training rows only."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    return make_pipeline(StandardScaler(), PolynomialFeatures(2, include_bias=False),
                         StandardScaler(), RidgeCV(alphas=np.logspace(-4, 3, 15)))


def predict(model: str, data: HATFile, train: np.ndarray, test: np.ndarray,
            seed: int) -> np.ndarray:
    """``model`` fitted on rows ``train``, predicting the total latency of rows ``test``."""
    y = data.total_ms
    if model.startswith("structured"):
        rows = clean_rows(data, train)
        coef = fit_split_coefficients([data.shapes[i] for i in rows], HAT_WORKLOAD,
                                      data.encoder_ms[rows], data.decoder_ms[rows])

        def physics(index: np.ndarray) -> np.ndarray:
            return np.array([coef.breakdown(data.shapes[i], HAT_WORKLOAD).total_ms
                             for i in index])

        if model == "structured":
            return physics(test)
        correction = ShapeCorrection.fit([data.shapes[i] for i in rows], y[rows],
                                         physics(rows))
        return physics(test) * np.array([correction.factor(data.shapes[i]) for i in test])
    if model == "quadratic-ridge":
        return _quadratic_ridge().fit(data.X[train], y[train]).predict(data.X[test])
    name = {"linear": "ridge", "xgboost": "xgb"}[model]
    return create_predictor(name, seed=seed).fit(data.X[train], y[train]).predict(data.X[test])


def verdict(full: Mapping[str, list[float]], small: Mapping[str, list[float]],
            cleaned: Mapping[str, list[float]], model: str = DEFAULT) -> dict:
    """The issue's checks from per-seed MAPEs by model, with all training rows (``full``)
    and with 200 (``small``): does ``model`` beat the best baseline (medians over seeds;
    and on how many seeds), also when the baselines fit its cleaned rows (``cleaned``,
    empty on devices that drop nothing), and by what ratio does its error grow with 200
    rows."""
    median = {m: float(np.median(v)) for m, v in full.items()}
    best = min(BASELINES, key=median.__getitem__)
    ratio = float(np.median(small[model])) / median[model]
    wins = sum(a < b for a, b in zip(full[model], full[best], strict=True))
    document = {
        "best_baseline": best,
        "best_baseline_mape": median[best],
        "default_mape": median[model],
        "default_beats_best_baseline": bool(median[model] < median[best]),
        "default_beats_best_baseline_seeds": f"{wins} of {len(full[best])}",
        "default_at_most_4pct": bool(median[model] <= GOAL_MAPE),
        "default_200_over_full": ratio,
        "default_200_within_1.2x": bool(ratio <= GOAL_SMALL_RATIO),
        "baselines_on_cleaned_training_rows": None,
    }
    if cleaned and all(cleaned.values()):  # the fairness check where ``model`` drops noisy rows
        on_clean = {m: float(np.median(v)) for m, v in cleaned.items()}
        best_clean = min(on_clean, key=on_clean.__getitem__)
        document["baselines_on_cleaned_training_rows"] = {
            "median_mape": on_clean, "best": best_clean,
            "default_beats_best": bool(median[model] < on_clean[best_clean])}
    return document


def _median(runs: list[dict], key: str) -> float:
    return float(np.median([r[key] for r in runs]))


def compare(device: str, seeds: Iterable[int]) -> dict:
    """Every model on every split of one file: medians over seeds, the noise floor of
    the held-out rows and the verdict."""
    data = load_file(device)
    n = len(data.total_ms)
    runs: dict[str | int, dict[str, list[dict]]] = {s: {m: [] for m in MODELS}
                                                    for s in TRAIN_SIZES}
    cleaned: dict[str, list[float]] = {m: [] for m in BASELINES}
    floors, dropped = [], []
    for seed in seeds:
        for size in TRAIN_SIZES:
            train, test = split(n, seed, size)
            for model in MODELS:
                pred = predict(model, data, train, test, seed)
                runs[size][model].append(score_all(data.total_ms[test], pred))
        train, test = split(n, seed, "full")
        rows = clean_rows(data, train)
        dropped.append(len(train) - len(rows))
        for model in BASELINES if data.noisy else ():
            pred = predict(model, data, rows, test, seed)
            cleaned[model].append(score_all(data.total_ms[test], pred)["mape"])
        floors.append(noise_floor(data.encoder_ms[test], data.decoder_ms[test],
                                  data.encoder_std[test], data.decoder_std[test]))
    results = {
        str(size): {model: {"median_mape": _median(r, "mape"),
                            "median_kendall_tau": _median(r, "kendall_tau"),
                            "median_spearman": _median(r, "spearman"),
                            "median_rmse_ms": _median(r, "rmse"),
                            "mape_per_seed": [x["mape"] for x in r]}
                    for model, r in by_model.items()}
        for size, by_model in runs.items()
    }
    mape = {size: {m: r["mape_per_seed"] for m, r in by_model.items()}
            for size, by_model in results.items()}
    return {
        "device": device,
        "hardware": HAT_DEVICES[device].hardware,
        "file": HAT_DEVICES[device].filename,
        "rows": n,
        "heldout_rows": len(split(n, 0, "full")[1]),
        "noise_floor": float(np.median(floors)),
        "structured_training_rows_dropped": int(np.median(dropped)),
        **verdict(mape["full"], mape[str(SMALL)], cleaned, DEFAULT),
        "also_reported": {m: verdict(mape["full"], mape[str(SMALL)], cleaned, m)
                          for m in ALSO_REPORTED},
        "results": results,
    }


def run(devices: Iterable[str], seeds: Iterable[int]) -> dict:
    """The JSON document: how the figures were made, then one entry per file."""
    seeds = list(seeds)
    return {
        "target": f"{TARGET} (ms)",
        "split": "seeded 80/20 (nas.hardware._latency_model.heldout_split, test_fraction "
                 "0.2); 200-row training sets drawn from the 80 % with "
                 "default_rng([seed, 200])",
        "seeds": seeds,
        "train_sizes": [str(s) for s in TRAIN_SIZES],
        "scoring": "every held-out row (noisy ones included); medians over seeds; "
                   "mape is a fraction",
        "models": {
            DEFAULT: "default latency predictor: structured times "
                     "nas.hardware._shape_correction.ShapeCorrection (quadratic ridge of "
                     "shape features on log(measured / structured); 1 outside the "
                     "training shapes)",
            "structured": "NNLS of nas.hardware._latency_model (fit_split_coefficients "
                          "on encoder and decoder ms)",
            "linear": "ridge (alpha 1) on the 10 standardised architecture features",
            "quadratic-ridge": "degree-2 polynomial of the standardised features, "
                               "standardised, RidgeCV (leave-one-out, alpha 1e-4..1e3)",
            "xgboost": "nas.predictors xgb (300 trees, depth 4, learning rate 0.05)",
        },
        "baseline_training_rows": "every training row; raw target (no log). "
                                  "baselines_on_cleaned_training_rows: the same baselines "
                                  "on the structured model's cleaned rows (noisy devices)",
        "structured_training_rows": f"on devices marked noisy (rpi4), training rows with "
                                    f"encoder latency > {NOISY_ENCODER_FACTOR:g}x the "
                                    f"training rows' median are dropped (rule of "
                                    f"nas.hardware._hat_data); held-out rows never are",
        "noise_floor": "median over held-out rows of sqrt(latency_std_encoder^2 + "
                       "latency_std_decoder^2) / (latency_mean_encoder + "
                       "latency_mean_decoder), median over seeds",
        "goals": {"beat_best_baseline": True, "mape_at_most": GOAL_MAPE,
                  "200_over_full_at_most": GOAL_SMALL_RATIO},
        "files": [compare(d, seeds) for d in devices],
    }


def print_table(document: dict) -> None:
    """Median MAPE per file, train size and model, then each file's verdict."""
    print(f"{'file':8} {'train':5} " + " ".join(f"{m:>15}" for m in MODELS) + f" {'noise':>7}")
    for f in document["files"]:
        for size, by_model in f["results"].items():
            print(f"{f['device']:8} {size:5} "
                  + " ".join(f"{by_model[m]['median_mape']:>15.2%}" for m in MODELS)
                  + f" {f['noise_floor']:>7.2%}")
    for f in document["files"]:
        _print_verdict(f["device"], DEFAULT, f)
        for name, other in f["also_reported"].items():
            _print_verdict(f["device"], name, other)


def _print_verdict(device: str, model: str, v: dict) -> None:
    print(f"{device}: {model} {v['default_mape']:.2%} vs best baseline {v['best_baseline']} "
          f"{v['best_baseline_mape']:.2%} -> beats: {v['default_beats_best_baseline']} "
          f"(seeds: {v['default_beats_best_baseline_seeds']}); <= 4 %: "
          f"{v['default_at_most_4pct']}; 200/full {v['default_200_over_full']:.2f}")
    if check := v["baselines_on_cleaned_training_rows"]:
        print(f"  baselines on the same cleaned training rows: best {check['best']} "
              f"{check['median_mape'][check['best']]:.2%} -> {model} beats it: "
              f"{check['default_beats_best']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds instead of 10")
    parser.add_argument("--out", type=Path, default=OUT, help=f"JSON to write ({OUT.name})")
    args = parser.parse_args()
    document = run(HAT_DEVICES, range(2 if args.quick else 10))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print_table(document)


if __name__ == "__main__":
    main()
