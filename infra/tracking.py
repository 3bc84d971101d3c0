"""Experiment tracking behind one small interface.

Statistics are reported by name with their unit in the name (``Loss/G/id``,
``Timing/sec_per_step``, ``Resources/peak_mem_gb``) and routed to sinks: MLflow (params,
metrics, artifacts) and a CSV file (DVC plots). Only the main process tracks; other
ranks get a :class:`Tracker` with no sinks.
"""

from __future__ import annotations

import csv
import logging
import os
import socket
from pathlib import Path
from typing import Any

from infra.paths import ProjectPaths

log = logging.getLogger(__name__)


class CsvSink:
    """Appends metric rows to a CSV with a fixed header (``step`` + metric names).

    DVC reads it as a plots file. The header is taken from the first row logged. With
    ``resume_step`` an existing file is continued: rows after that step (logged by a run
    that was killed before its next checkpoint) are dropped so the curve has no repeats.
    """

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fields: list[str] | None = None
        if resume_step is not None and self.path.is_file():
            with self.path.open(newline="") as f:
                rows = list(csv.reader(f))
            if rows:
                self.fields = rows[0]
                kept = [r for r in rows[1:] if r and int(r[0]) <= resume_step]
                with self.path.open("w", newline="") as f:
                    csv.writer(f).writerows([self.fields, *kept])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.fields is None:
            self.fields = ["step", *sorted(metrics)]
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(self.fields)
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([step, *(metrics.get(k, "") for k in self.fields[1:])])


class TrackingUnreachableError(ConnectionError):
    """The MLflow tracking server named by ``paths.tracking_uri`` does not answer."""


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """For an ``http(s)://`` tracking URI, connect to its host and port once; raise
    :class:`TrackingUnreachableError` naming the URI and the fix instead of letting the
    MLflow client retry for minutes. Other URIs (``sqlite:``, ``file:``) are local."""
    from urllib.parse import urlparse

    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout_s).close()
    except OSError as e:
        raise TrackingUnreachableError(
            f"MLflow tracking server {uri} is unreachable ({e.strerror or e}): start it, or "
            "point paths.tracking_uri / MLFLOW_TRACKING_URI at a running one (null = a local "
            "SQLite store)"
        ) from None


class MlflowSink:
    """One MLflow run in ``paths.experiment`` of ``paths.tracking_uri``; resumes ``run_id``
    when given (evaluation adds to the training run)."""

    def __init__(self, paths: ProjectPaths, run_name: str, run_id: str | None = None):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        check_reachable(paths.tracking_uri)
        import mlflow

        self.mlflow = mlflow
        # set_tracking_uri also exports MLFLOW_TRACKING_URI; restore the environment so the
        # next ProjectPaths.resolve in this process does not take it for a user's override.
        before = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(paths.tracking_uri)
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before
        experiment = paths.experiment
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is None:
            location = None
            if paths.tracking_uri.startswith("sqlite:"):
                paths.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
                location = paths.mlflow_artifacts.as_uri()
            mlflow.create_experiment(experiment, artifact_location=location)
        mlflow.set_experiment(experiment)
        self.run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name)
        self.run_id = self.run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        # MLflow caps a value at 6000 characters; long lists become strings.
        self.mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(metrics, step=step)

    def log_summary(self, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(metrics, step=step)

    def log_artifact(self, path: Path, subdir: str | None = None) -> None:
        self.mlflow.log_artifact(str(path), artifact_path=subdir)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.mlflow.set_tags(tags)

    def close(self) -> None:
        self.mlflow.end_run()


class Tracker:
    """Fan-out of statistics to sinks; a Tracker without sinks does nothing (non-main ranks)."""

    def __init__(self, sinks: list[Any] | None = None):
        self.sinks = sinks or []

    def _each(self, method: str, *args, **kwargs) -> None:
        for sink in self.sinks:
            fn = getattr(sink, method, None)
            if fn is not None:
                fn(*args, **kwargs)

    def log_params(self, params: dict[str, Any]) -> None:
        self._each("log_params", params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._each("log_metrics", {k: float(v) for k, v in metrics.items()}, step)

    def log_summary(self, metrics: dict[str, float], step: int) -> None:
        """End-of-run figures: to MLflow, not to per-step files such as the CSV."""
        self._each("log_summary", {k: float(v) for k, v in metrics.items()}, step)

    def log_artifact(self, path: Path, subdir: str | None = None) -> None:
        self._each("log_artifact", path, subdir)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._each("set_tags", tags)

    @property
    def run_id(self) -> str | None:
        for sink in self.sinks:
            if getattr(sink, "run_id", None):
                return sink.run_id
        return None

    def close(self) -> None:
        self._each("close")
