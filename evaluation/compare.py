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


#: Facke Table 1's method names (seed 002 §3.2) of the registry's swappers, in its row order.
FACKE_METHODS = {"simswap": "SimSwap", "cvae": "CVAE", "cvae_gan": "CVAE-GAN"}
FACKE_ROWS = ["SimSwap", "CVAE", "SimSwap-IG", "CVAE-GAN-IG", "CVAE-GAN", "CVAE-IG"]
FACKE_COLUMNS = {
    "Eval/facke/reconstruction_loss": "Recon Loss",
    "Eval/facke/identity_loss": "ID Loss",
    "Eval/facke/id_retrieval_l2": "ID Retrieval",
}


def facke_method(model: str, draw: str | None, intra: str | None) -> str:
    """Facke Table 1's name of a run: the method, ``-IG`` with Identity Grouping (§2.1.4: b
    identities drawn uniformly, two images of each in an intra-ID batch, i.e.
    ``data.draw: identities`` and ``data.intra: same_identity``)."""
    name = FACKE_METHODS.get(model, model)
    return f"{name}-IG" if draw == "identities" and intra == "same_identity" else name


def facke_table(paths: ProjectPaths, experiment: str, last: int = 200) -> pd.DataFrame:
    """Facke Table 1 (seed 002 §3.2) from the evaluated runs of ``experiment``: one row per
    method (the newest run of each), Table 1's rows first (SimSwap, CVAE, SimSwap-IG,
    CVAE-GAN-IG), then any other evaluated swapper; columns ``method``, ``run_id``,
    ``steps``, ``Recon Loss``, ``ID Loss``, ``ID Retrieval`` (lower is better; see
    :func:`evaluation.metric_groups.facke_metrics`). ValueError when the experiment does not
    exist."""
    models = list(FACKE_METHODS)
    params = ["train.model", "train.steps"]
    params += [f"train.{m}.data.{k}" for m in models for k in ("draw", "intra")]
    runs = compare_runs(paths, experiment, params, list(FACKE_COLUMNS), last)
    if runs.empty:
        return runs
    runs["method"] = [
        facke_method(
            r["train.model"], r.get(f"train.{m}.data.draw"), r.get(f"train.{m}.data.intra")
        )
        if (m := r["train.model"]) in FACKE_METHODS
        else facke_method(m, None, None)
        for _, r in runs.iterrows()
    ]
    newest = runs.drop_duplicates("method")  # compare_runs lists newest first
    order = {name: i for i, name in enumerate(FACKE_ROWS)}
    newest = newest.assign(_order=[order.get(m, len(order)) for m in newest["method"]])
    newest = newest.sort_values(["_order", "method"], kind="stable")
    cols = {"method": "method", "run_id": "run_id", "train.steps": "steps"}
    cols |= {k.removeprefix("Eval/"): v for k, v in FACKE_COLUMNS.items()}
    return newest[list(cols)].rename(columns=cols).reset_index(drop=True)
