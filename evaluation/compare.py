"""Runs side by side: MLflow runs of an experiment with their parameters and metrics."""

from __future__ import annotations

import pandas as pd

from infra.paths import ProjectPaths

DEFAULT_PARAMS = ["train.model", "train.width", "train.steps", "train.batch_size"]
DEFAULT_METRICS = [
    "Eval/swap/id_retrieval_top1",
    "Eval/swap/id_cosine",
    "Eval/swap/pose_error_deg",
    "Eval/swap/expression_error",
    "Eval/blended/id_retrieval_top1",
    "Eval/reconstruction/psnr_db",
    "Eval/fid/fid",
]


def compare_runs(
    paths: ProjectPaths,
    experiment: str,
    params: list[str] | None = None,
    metrics: list[str] | None = None,
    last: int = 20,
) -> pd.DataFrame:
    """The ``last`` finished runs of ``experiment`` that have evaluation metrics, newest
    first: run id, name, start time, the chosen params and metrics (missing ones empty).
    Raises ValueError when the experiment does not exist."""
    import mlflow

    mlflow.set_tracking_uri(paths.tracking_uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        raise ValueError(f"no MLflow experiment {experiment!r} in {paths.tracking_uri}")
    runs = mlflow.search_runs(
        experiment_names=[experiment], order_by=["attributes.start_time DESC"], max_results=1000
    )
    if runs.empty:
        return runs
    cols = {"run_id": "run_id", "tags.mlflow.runName": "run", "start_time": "started"}
    cols |= {f"params.{p}": p for p in (params or DEFAULT_PARAMS)}
    cols |= {f"metrics.{m}": m.removeprefix("Eval/") for m in (metrics or DEFAULT_METRICS)}
    has_eval = runs.filter(like="metrics.Eval/").notna().any(axis=1)
    table = runs[has_eval].reindex(columns=list(cols)).rename(columns=cols).head(last)
    table["run_id"] = table["run_id"].str[:8]
    return table.reset_index(drop=True)
