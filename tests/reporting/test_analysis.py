"""load_run: a run directory as tidy DataFrames."""

import json
import math

import pytest

pd = pytest.importorskip("pandas", reason="pandas is in the test extra")

from evores.core.errors import CheckpointError  # noqa: E402
from evores.reporting.analysis import NOT_FINITE, flat_genes, load_run  # noqa: E402

GENOME = {"learning_rate": 0.01, "conv_filters": [8, 16], "conv_kernels": [3, 5],
          "fc_units": [32], "batch_size": 64, "l1": 0.0, "l2": 0.0}  # fmt: skip


def record(key, kind="search", status="ok", failure=None, val=0.5, test=None):
    return {"key": list(key), "kind": kind, "stage": key[0] if kind == "search" else None,
            "generation": key[1], "index": key[2], "hparams": GENOME, "resolution": 8,
            "seed": 1, "status": status, "failure": failure, "reason": None,
            "val_accuracy": val, "test_accuracy": test, "epochs": 1, "best_epoch": 1,
            "wall_seconds": 0.1, "n_parameters": 10, "rank": 0}  # fmt: skip


def write_log(run_dir, records, tail=""):
    run_dir.mkdir()
    lines = [json.dumps(r) for r in records]
    (run_dir / "evaluations.jsonl").write_text("\n".join(lines) + "\n" + tail)


def test_the_tiny_run_as_tables(tiny_run):
    run_dir, _ = tiny_run
    tables = load_run(run_dir)
    summary = tables.summary
    search = tables.evaluations[tables.evaluations["kind"] == "search"]
    assert len(search) == summary["n_evaluations"] == 10
    assert list(tables.stages["resolution"]) == [8, 16]
    assert list(tables.stages["best_val_accuracy"]) == [
        s["best_val_accuracy"] for s in summary["stages"]
    ]
    assert summary["test_accuracy"] in tables.finals["test_accuracy"].tolist()
    layers = [c for c in search if c.startswith("conv_filters_") and c != "conv_filters_total"]
    assert (search["conv_layers"] == search[layers].notna().sum(axis=1)).all()


def test_failed_evaluations_have_no_accuracy_and_a_failure_no_reader_reads_as_nan(tmp_path):
    run_dir = tmp_path / "run"
    records = [record((0, 0, 0), status="interrupted", val=0.0), record((0, 0, 0), val=0.75),
               record((0, 0, 1), status="failed", failure="nan", val=0.0),
               {**record((1, 0, 0), kind="final", val=0.0, test=0.5), "stage": 1}]  # fmt: skip
    write_log(run_dir, records, tail='{"key": [0, 0, 2], "kind": "sea')  # torn by a crash
    tables = load_run(run_dir)
    rows = tables.evaluations.set_index("key")
    assert list(rows.index) == [(0, 0, 0), (0, 0, 1), (1, 0, 0)]  # the last record of a key
    assert rows.loc[[(0, 0, 0)], "val_accuracy"].item() == 0.75
    assert math.isnan(rows.loc[[(0, 0, 1)], "val_accuracy"].item())
    assert rows.loc[[(0, 0, 1)], "failure"].item() == NOT_FINITE
    assert tables.finals["test_accuracy"].tolist() == [0.5]
    assert math.isnan(tables.finals["val_accuracy"].item())
    assert tables.finals["stage"].isna().all()  # the old log's stage 1 does not exist
    assert tables.stages.to_dict("records")[0]["n_failed"] == 1
    assert tables.summary is None  # a stopped run: no summary yet
    csv = tmp_path / "evaluations.csv"
    tables.evaluations.to_csv(csv, index=False)
    assert NOT_FINITE in pd.read_csv(csv)["failure"].tolist()


def test_genes_are_flattened_with_depths_and_totals():
    flat = flat_genes(GENOME)
    assert flat["conv_layers"] == 2 and flat["fc_layers"] == 1
    assert (flat["conv_filters_0"], flat["conv_filters_1"], flat["conv_filters_total"]) == (
        8,
        16,
        24,
    )
    assert flat["conv_kernels_1"] == 5 and flat["learning_rate"] == 0.01


def test_a_directory_without_a_log_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no evaluations.jsonl"):
        load_run(tmp_path)


def test_records_a_resume_would_reject_are_left_out(tmp_path):
    run_dir = tmp_path / "run"
    damaged = record((0, 0, 1), val=0.5)
    damaged["resolution"] = "sixteen"  # the wrong type: a resume sets this record aside
    write_log(run_dir, [record((0, 0, 0), val=0.75), damaged])
    tables = load_run(run_dir)
    assert list(tables.evaluations["key"]) == [(0, 0, 0)]


def test_load_run_without_pandas_says_how_to_get_it(tmp_path, monkeypatch):
    """A raw ModuleNotFoundError before (issue 24)."""
    import builtins

    from evores.core.errors import CheckpointError
    from evores.reporting.analysis import load_run

    real_import = builtins.__import__

    def no_pandas(name, *args, **kwargs):
        if name == "pandas":
            raise ModuleNotFoundError("No module named 'pandas'")
        return real_import(name, *args, **kwargs)

    (tmp_path / "evaluations.jsonl").write_text("")
    monkeypatch.setattr(builtins, "__import__", no_pandas)
    with pytest.raises(CheckpointError, match=r"pip install 'evores\[analysis\]'"):
        load_run(tmp_path)
