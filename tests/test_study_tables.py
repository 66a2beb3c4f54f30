"""Studies as tables: `study_dataframe`, `write_study_table` and `nas studies export`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from cli_helpers import nas, one_line_error

from nas import Condition, Gene, SearchSpace
from nas._problem import accuracy_latency_problem
from nas.studies import (
    StudyMeta,
    StudyNotFoundError,
    load_study,
    open_study,
    study_dataframe,
    write_study_table,
)


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One database with a NAS-Bench-201 study (choice genes, 15 trials) and a HAT study
    (integer genes, inactive layers); both searches are table look-ups, a few seconds."""
    url = f"sqlite:///{tmp_path_factory.mktemp('tables') / 's.db'}"
    for args in (
        ["--supernet", "nb201", "--hw", "pixel3", "--budget", "5ms", "--evals", "15"],
        ["--supernet", "hat", "--hw", "rpi4", "--budget", "50ms", "--evals", "4",
         "--eval-limit", "20"],
    ):
        result = nas("search", *args, "--algorithm", "random", "--storage", url, "--json")
        assert result.exit_code == 0, result.output
    return url


def test_nb201_table_has_a_row_per_trial_and_a_column_per_gene_and_metric(storage):
    study = load_study("nb201-pixel3", storage)
    trials = study.trials()
    df = study_dataframe("nb201-pixel3", storage)
    genes = list(study.space.names)
    assert list(df.columns) == ["trial", "state", *genes, "accuracy", "latency_ms",
                                "pareto", "feasible"]
    assert len(df) == len(trials) == 15
    assert df["trial"].tolist() == [t.number for t in trials]
    assert df[genes].to_dict("records") == [t.config for t in trials]
    for name in ("accuracy", "latency_ms"):
        assert df[name].tolist() == [t.metrics[name] for t in trials]
    assert df["feasible"].tolist() == [t.feasible for t in trials]
    assert (df["state"] == "complete").all()
    assert all(isinstance(df[g].dtype, pd.CategoricalDtype) for g in genes)
    assert list(df[genes[0]].cat.categories) == list(study.space.gene(genes[0]).choices)
    assert df.dtypes[["accuracy", "latency_ms"]].tolist() == ["float64", "float64"]
    assert df.dtypes[["pareto", "feasible"]].tolist() == ["bool", "bool"]
    assert df.attrs["study"] == "nb201-pixel3" and df.attrs["storage"] == storage
    assert (df.attrs["supernet"], df.attrs["hardware"]) == ("nb201", "pixel3")
    assert df.attrs["constraints"] == [{"metric": "latency_ms", "upper": 5.0}]
    assert (df.attrs["algorithm"], df.attrs["seed"]) == ("random", 0)


def test_pareto_column_is_the_front_of_studies_show(storage):
    shown = nas("studies", "show", "nb201-pixel3", "--storage", storage, "--json")
    assert shown.exit_code == 0, shown.output
    front = {point["trial"] for point in json.loads(shown.stdout)["pareto"]}
    df = study_dataframe(load_study("nb201-pixel3", storage))
    assert front and set(df.loc[df["pareto"], "trial"]) == front
    assert df.loc[df["pareto"], "feasible"].all()


def test_hat_inactive_genes_are_missing_not_made_up(storage):
    study = load_study("hat-rpi4", storage)
    df = study_dataframe(study)
    assert len(df) == 4 and "n" in df.columns  # every stored metric, not only objectives
    inactive = 0
    for i, trial in enumerate(study.trials()):
        for gene in study.space.names:
            if gene in trial.config:
                assert df.at[i, gene] == trial.config[gene]
            else:
                assert df.at[i, gene] is pd.NA
                inactive += 1
    assert inactive > 0  # the random subnets switch some layers off
    assert set(df.dtypes[list(study.space.names)]) == {pd.Int64Dtype()}


def toy_study(tmp_path: Path):
    """A study with a float gene, a conditional string gene and a failed trial."""
    space = SearchSpace("toy", [
        Gene("depth", (1, 2)),
        Gene("scale", (0.5, 1.0)),
        Gene("act", ("relu", "gelu"), Condition("depth", 2)),
    ])
    meta = StudyMeta.for_problem(
        accuracy_latency_problem(space, budget_ms=10.0), supernet="toy", checkpoint_hash="c",
        hardware="cpu", hardware_fingerprint="f", seed=None, algorithm="random",
    )
    study = open_study("toy", f"sqlite:///{tmp_path / 't.db'}", meta=meta, space=space)
    study.add({"depth": 2, "scale": 0.5, "act": "gelu"}, {"accuracy": 0.9, "latency_ms": 4.0},
              feasible=True, cache_key="a")
    study.add({"depth": 1, "scale": 1.0}, {"accuracy": math.nan, "latency_ms": 2.0},
              feasible=True, cache_key="b")
    return study


def test_failed_trials_and_other_gene_types(tmp_path):
    df = study_dataframe(toy_study(tmp_path))
    assert df["state"].tolist() == ["complete", "failed"]
    assert df["pareto"].tolist() == [True, False] and df["feasible"].tolist() == [True, False]
    assert str(df["scale"].dtype) == "Float64" and df["scale"].tolist() == [0.5, 1.0]
    assert df["act"].tolist()[0] == "gelu" and pd.isna(df["act"].tolist()[1])
    assert math.isnan(df["accuracy"][1])


def test_study_without_a_stored_space_takes_genes_from_its_configs(tmp_path):
    study = toy_study(tmp_path)
    study.optuna_study.set_user_attr("nas.space", None)  # as a study from before spaces
    reloaded = load_study("toy", study.storage)
    assert reloaded.space is None
    df = study_dataframe(reloaded)
    assert list(df.columns)[2:5] == ["depth", "scale", "act"]
    assert df["depth"].dtype == "Int64" and pd.isna(df["act"][1])


def test_csv_export_round_trips_through_read_csv(storage, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = nas("studies", "export", "hat-rpi4", "--storage", storage, "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "wrote 4 trials to hat-rpi4.csv"
    df = study_dataframe("hat-rpi4", storage)
    back = pd.read_csv(tmp_path / "hat-rpi4.csv")
    assert list(back.columns) == list(df.columns)
    pd.testing.assert_frame_equal(back.astype(df.dtypes.to_dict()), df)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hat-rpi4.csv"]  # no temp files


def test_parquet_round_trip_keeps_dtypes_and_attrs(storage, tmp_path):
    df = study_dataframe("hat-rpi4", storage)
    path = write_study_table(df, tmp_path / "t.parquet", "parquet")
    back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(back, df)
    assert back.attrs == df.attrs and back.attrs["supernet"] == "hat"
    # the attrs are plain JSON in the file's key-value metadata, for non-pandas readers
    assert json.loads(pq.read_schema(path).metadata[b"PANDAS_ATTRS"]) == df.attrs


def test_existing_file_is_refused_unless_force(storage, tmp_path):
    out = tmp_path / "t.parquet"
    out.write_text("keep me")
    args = ["studies", "export", "nb201-pixel3", "--storage", storage, "--format", "parquet",
            "--out", str(out)]
    one_line_error(nas(*args), "already exists", "--force")
    assert out.read_text() == "keep me"
    with pytest.raises(FileExistsError, match="already exists"):
        write_study_table(study_dataframe("nb201-pixel3", storage), out, "parquet")
    assert out.read_text() == "keep me"
    result = nas(*args, "--force")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"wrote 15 trials to {out}"
    assert len(pd.read_parquet(out)) == 15
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_bad_input_gives_one_line_errors(storage, tmp_path):
    one_line_error(
        nas("studies", "export", "nope", "--storage", storage, "--format", "csv",
            "--out", str(tmp_path / "x.csv")),
        "no study 'nope'", "hat-rpi4, nb201-pixel3",
    )
    one_line_error(
        nas("studies", "export", "hat-rpi4", "--storage", storage, "--format", "xlsx",
            "--out", str(tmp_path / "x.xlsx")),
        "format must be one of csv, parquet", "'xlsx'",
    )
    one_line_error(
        nas("studies", "export", "hat-rpi4", "--storage", storage, "--format", "csv",
            "--out", str(tmp_path / "missing" / "x.csv")),
        "does not exist",
    )
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(StudyNotFoundError, match="studies there"):
        study_dataframe("nope", storage)
