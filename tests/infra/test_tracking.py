"""The CSV sink DVC plots: header from the first row, and resume drops the rows a killed
run logged after its last checkpoint."""

from __future__ import annotations

import pandas as pd

from infra.tracking import CsvSink, Tracker


def test_header_from_first_row_and_missing_values_blank(tmp_path):
    sink = CsvSink(tmp_path / "losses.csv")
    sink.log_metrics({"b": 2.0, "a": 1.0}, step=1)
    sink.log_metrics({"a": 3.0}, step=2)
    df = pd.read_csv(tmp_path / "losses.csv")
    assert list(df.columns) == ["step", "a", "b"]
    assert df["a"].tolist() == [1.0, 3.0] and pd.isna(df["b"].iloc[1])


def test_resume_drops_rows_after_the_checkpoint(tmp_path):
    path = tmp_path / "losses.csv"
    first = CsvSink(path)
    for step in range(1, 8):
        first.log_metrics({"loss": float(step)}, step)
    resumed = CsvSink(path, resume_step=5)  # killed at 7, last checkpoint at 5
    for step in range(6, 9):
        resumed.log_metrics({"loss": 10.0 + step}, step)
    df = pd.read_csv(path)
    assert df["step"].tolist() == list(range(1, 9))
    assert df["loss"].tolist() == [1, 2, 3, 4, 5, 16, 17, 18]


def test_tracker_without_sinks_does_nothing():
    t = Tracker()
    t.log_metrics({"x": 1.0}, 1)
    t.close()
    assert t.run_id is None
