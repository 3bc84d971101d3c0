"""Experiment tracking behind one small interface.

Statistics are reported by name with their unit in the name (``Loss/G/id``,
``Timing/sec_per_step``, ``Resources/peak_mem_gb``) and routed to sinks: MLflow (params,
metrics, artifacts) and a CSV file (DVC plots). Only the main process tracks; other
ranks get a :class:`Tracker` with no sinks.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import socket
import time
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

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


#: MLflow's HTTP client settings for an ``http(s)://`` tracking URI, applied to this process
#: unless already set: 2 retries (the first at once, the second after about 2 s), a 5 s
#: socket timeout. A call to a stopped server gives up in about 3 s instead of about 4 min.
HTTP_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}
#: Metric values in one ``log_batch`` request when a backlog is sent (MLflow's own limit).
MAX_BATCH_METRICS = 1000
#: Where :class:`MlflowSink` writes what it could not send (in the folder it is given).
UNSENT_FILE = "unsent_metrics.jsonl"
#: MLflow error codes of a server that is down, overloaded or failing, not of a bad request.
TRANSIENT_CODES = frozenset(
    {
        "INTERNAL_ERROR",
        "TEMPORARILY_UNAVAILABLE",
        "SERVICE_UNDER_MAINTENANCE",
        "DEADLINE_EXCEEDED",
        "REQUEST_LIMIT_EXCEEDED",
        "IO_ERROR",
    }
)


def ensure_experiment(mlflow, paths: ProjectPaths) -> str:
    """Make ``paths.experiment`` the active experiment of ``mlflow`` (already pointed at
    ``paths.tracking_uri``), creating it when missing, with its artifacts under
    ``paths.mlflow_artifacts`` for the default SQLite store (MLflow would otherwise put them
    in ``./mlruns`` of the working directory). Returns the experiment id."""
    experiment = paths.experiment
    if mlflow.get_experiment_by_name(experiment) is None:
        location = None
        if paths.tracking_uri.startswith("sqlite:"):
            paths.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
            location = paths.mlflow_artifacts.as_uri()
        mlflow.create_experiment(experiment, artifact_location=location)
    return mlflow.set_experiment(experiment).experiment_id


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` (raised by an MLflow client call) means the tracking server is
    unreachable or failing — worth a retry later — rather than a request it rejects.

    Transient: connection errors and timeouts (``requests``, ``urllib3``, the built-in
    ``ConnectionError`` / ``TimeoutError``), HTTP 429 and 5xx, and ``MlflowException`` with
    an error code in :data:`TRANSIENT_CODES` (MLflow wraps a failed request, after its
    retries, as ``INTERNAL_ERROR``). Anything else (a bad parameter, a missing file) is not.
    """
    import requests
    import urllib3
    from mlflow.exceptions import MlflowException

    if isinstance(error, requests.HTTPError):
        status = error.response.status_code if error.response is not None else 500
        return status == 429 or status >= 500
    if isinstance(error, MlflowException):
        return error.error_code in TRANSIENT_CODES
    network = (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError)
    return isinstance(error, (*network, ConnectionError, TimeoutError))


def _answers(uri: str, timeout_s: float = 2.0) -> bool:
    """Whether the host and port of an ``http(s)://`` URI accept a TCP connection within
    ``timeout_s`` seconds (always True for local stores); a cheap test before a retry."""
    try:
        check_reachable(uri, timeout_s)
    except TrackingUnreachableError:
        return False
    return True


def _one_line(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _batches(records: list[dict]) -> list[list[dict]]:
    """``records`` in order, consecutive metric logs grouped into requests of at most
    :data:`MAX_BATCH_METRICS` values; every other record alone."""
    batches: list[list[dict]] = []
    size = 0  # metric values in batches[-1] when it holds metric logs
    for record in records:
        n = len(record["metrics"]) if record["kind"] == "metrics" else None
        last = batches[-1] if batches else None
        if (
            n is not None
            and last
            and last[0]["kind"] == "metrics"
            and size + n <= MAX_BATCH_METRICS
        ):
            last.append(record)
            size += n
        else:
            batches.append([record])
            size = n or 0
    return batches


class _QuietRetries(logging.Filter):
    """Drops urllib3's "Retrying (Retry(...))" warnings while a sink call runs: the sink
    reports an outage itself, once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Retrying")


class MlflowSink:
    """One MLflow run in ``paths.experiment`` of ``paths.tracking_uri``; resumes ``run_id``
    when given (evaluation adds to the training run).

    A tracking server that does not answer at start raises
    :class:`TrackingUnreachableError` (within seconds, naming the URI). An outage later does
    not stop the caller: a call that fails with a transient error (:func:`is_transient`) is
    kept — metrics in a buffer of the last ``buffer_size`` logs (older ones dropped and
    counted), params, tags and artifact paths in full — with one WARNING; while the server
    is down a retry (a TCP test first) happens at most every ``retry_s`` seconds, doubling
    up to 60 s. When a retry gets through, the backlog is sent (params and tags, metrics in
    step order with their original steps and timestamps, then artifacts) and one INFO line
    says how many records went. ``close()`` tries once more; what is still unsent is
    appended to ``<unsent_dir>/unsent_metrics.jsonl`` (one JSON record a line, with the run
    id) and named in one WARNING. A request the server rejects (not transient) raises as
    before; a rejected buffered record is dropped with a WARNING.
    """

    def __init__(
        self,
        paths: ProjectPaths,
        run_name: str,
        run_id: str | None = None,
        unsent_dir: Path | None = None,
        buffer_size: int = 10_000,
        retry_s: float = 5.0,
    ):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        self.uri = paths.tracking_uri
        check_reachable(self.uri)
        if urlparse(self.uri).scheme in ("http", "https"):
            for name, value in HTTP_CLIENT_DEFAULTS.items():
                os.environ.setdefault(name, value)
        import mlflow

        self.mlflow = mlflow
        self.unsent_path = Path(unsent_dir or paths.output_dir) / UNSENT_FILE
        self.metrics_backlog: deque[dict] = deque(maxlen=buffer_size)
        self.other_backlog: list[dict] = []  # params, tags, artifacts (never dropped)
        self.dropped = 0
        self.down_since: float | None = None  # time.monotonic() of the outage's start
        self.retry_s, self.wait_s, self.next_try = retry_s, retry_s, 0.0
        try:
            self.run_id = self._open_run(paths, run_name, run_id)
        except Exception as e:
            if not is_transient(e):
                raise
            raise TrackingUnreachableError(
                f"MLflow tracking server {self.uri} failed at start ({_one_line(e)}): check "
                "the server and its database, or point paths.tracking_uri / "
                "MLFLOW_TRACKING_URI at a running one"
            ) from None

    def _open_run(self, paths: ProjectPaths, run_name: str, run_id: str | None) -> str:
        """Select the tracking store and experiment (created when missing) and start or
        resume the run; returns its id. Raises what the MLflow client raises."""
        mlflow = self.mlflow
        # set_tracking_uri also exports MLFLOW_TRACKING_URI; restore the environment so the
        # next ProjectPaths.resolve in this process does not take it for a user's override.
        before = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(paths.tracking_uri)
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before
        ensure_experiment(mlflow, paths)
        self.run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name)
        return self.run.info.run_id

    # ---- the Tracker interface ----------------------------------------------------------

    def log_params(self, params: dict[str, Any]) -> None:
        # MLflow caps a value at 6000 characters; long lists become strings.
        self._deliver({"kind": "params", "params": {k: str(v)[:6000] for k, v in params.items()}})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        stamp = int(time.time() * 1000)
        self._deliver(
            {"kind": "metrics", "step": step, "timestamp": stamp, "metrics": dict(metrics)}
        )

    def log_summary(self, metrics: dict[str, float], step: int) -> None:
        self.log_metrics(metrics, step)

    def log_artifact(self, path: Path, subdir: str | None = None) -> None:
        self._deliver({"kind": "artifact", "path": str(path), "subdir": subdir})

    def set_tags(self, tags: dict[str, str]) -> None:
        self._deliver({"kind": "tags", "tags": {k: str(v) for k, v in tags.items()}})

    def close(self) -> None:
        """Send what is buffered (one try), end the run, and write what is left to
        :data:`UNSENT_FILE` with one WARNING. Raises only for a request the server rejects."""
        if self.pending:
            self._flush()
        ended = True
        try:
            self._quietly(self.mlflow.end_run)
        except Exception as e:
            if not is_transient(e):
                raise
            ended = False
        if self.pending or not ended:
            self._write_unsent(ended)

    # ---- delivery and the outage backlog ------------------------------------------------

    @property
    def pending(self) -> int:
        """Records kept for a later try (metrics logs, params, tags and artifacts)."""
        return len(self.metrics_backlog) + len(self.other_backlog)

    def _quietly(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` with urllib3's per-retry warnings muted."""
        pool_log = logging.getLogger("urllib3.connectionpool")
        quiet = _QuietRetries()
        pool_log.addFilter(quiet)
        try:
            return fn(*args, **kwargs)
        finally:
            pool_log.removeFilter(quiet)

    def _send(self, record: dict) -> None:
        """One MLflow call for ``record``; raises what the client raises."""
        mlflow, kind = self.mlflow, record["kind"]
        if kind == "metrics":
            self._quietly(
                mlflow.log_metrics,
                record["metrics"],
                step=record["step"],
                timestamp=record["timestamp"],
            )
        elif kind == "params":
            self._quietly(mlflow.log_params, record["params"])
        elif kind == "tags":
            self._quietly(mlflow.set_tags, record["tags"])
        else:
            self._quietly(mlflow.log_artifact, record["path"], artifact_path=record["subdir"])

    def _send_batch(self, batch: list[dict]) -> None:
        """One request for a batch of :func:`_batches`: metric logs with their original
        steps and timestamps through ``log_batch``; raises what the client raises."""
        if batch[0]["kind"] != "metrics":
            self._send(batch[0])
            return
        from mlflow.entities import Metric

        metrics = [
            Metric(key, value, r["timestamp"], r["step"])
            for r in batch
            for key, value in r["metrics"].items()
        ]
        self._quietly(self.mlflow.MlflowClient().log_batch, self.run_id, metrics=metrics)

    def _deliver(self, record: dict) -> None:
        """Send ``record`` now, or keep it while the server is down (see the class doc).
        Raises only when the server rejects it (a non-transient error)."""
        if self.down_since is None:
            try:
                self._send(record)
                return
            except Exception as e:
                if not is_transient(e):
                    raise
                self._outage_starts(e)
        self._keep(record)
        if self.down_since is not None and time.monotonic() >= self.next_try:
            self._flush()

    def _keep(self, record: dict) -> None:
        if record["kind"] != "metrics":
            self.other_backlog.append(record)
            return
        if len(self.metrics_backlog) == self.metrics_backlog.maxlen:
            self.dropped += 1
        self.metrics_backlog.append(record)

    def _outage_starts(self, error: BaseException) -> None:
        self.down_since = time.monotonic()
        self.wait_s = self.retry_s
        self.next_try = self.down_since + self.wait_s
        log.warning(
            "MLflow tracking server %s is not answering (%s); going on, keeping the last %d "
            "metric logs to send when it is back",
            self.uri,
            _one_line(error),
            self.metrics_backlog.maxlen,
        )

    def _ordered_backlog(self) -> list[dict]:
        """Params and tags, then metrics in step order (stable), then artifacts."""
        settings = [r for r in self.other_backlog if r["kind"] != "artifact"]
        artifacts = [r for r in self.other_backlog if r["kind"] == "artifact"]
        return [*settings, *sorted(self.metrics_backlog, key=lambda r: r["step"]), *artifacts]

    def _flush(self) -> bool:
        """Send the backlog in order (metric logs in batches); True when it is empty
        afterwards. On a transient failure the rest stays kept and the next try waits twice
        as long (at most 60 s)."""
        records = self._ordered_backlog()
        sent = 0  # records done: sent, or rejected and dropped
        for batch in _batches(records) if _answers(self.uri) else []:
            try:
                self._send_batch(batch)
            except Exception as e:
                if is_transient(e):
                    break
                kind = batch[0]["kind"]
                log.warning("MLflow rejected %d buffered %s record(s): %s", len(batch), kind, e)
            sent += len(batch)
        self.metrics_backlog = deque(
            (r for r in records[sent:] if r["kind"] == "metrics"), self.metrics_backlog.maxlen
        )
        self.other_backlog = [r for r in records[sent:] if r["kind"] != "metrics"]
        if self.pending:
            self.wait_s = min(2 * self.wait_s, 60.0)
            self.next_try = time.monotonic() + self.wait_s
            return False
        self._outage_ends(sent)
        return True

    def _outage_ends(self, sent: int) -> None:
        down_s = time.monotonic() - (self.down_since or time.monotonic())
        dropped = f" ({self.dropped} older metric logs dropped: buffer full)" * bool(self.dropped)
        log.info(
            "MLflow tracking server %s is back after %.0f s: sent %d buffered records%s",
            self.uri,
            down_s,
            sent,
            dropped,
        )
        self.down_since, self.dropped = None, 0

    def _write_unsent(self, ended: bool) -> None:
        """Append the backlog to :data:`UNSENT_FILE` (JSON lines, each with ``run_id``) and
        say so in one WARNING; clears the backlog."""
        records = self._ordered_backlog()
        if not ended:
            records.append({"kind": "status", "status": "FINISHED"})
        self.unsent_path.parent.mkdir(parents=True, exist_ok=True)
        with self.unsent_path.open("a") as f:
            for record in records:
                f.write(json.dumps({"run_id": self.run_id, **record}) + "\n")
        n_metrics = len(self.metrics_backlog)
        log.warning(
            "MLflow tracking server %s did not answer: %d metric logs and %d other records "
            "(params, tags, artifacts%s) not sent%s; written to %s",
            self.uri,
            n_metrics,
            len(records) - n_metrics,
            ", end of run" if not ended else "",
            f", {self.dropped} older metric logs dropped (buffer full)" if self.dropped else "",
            self.unsent_path,
        )
        self.metrics_backlog.clear()
        self.other_backlog.clear()


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
