"""A tracking server that goes away in the middle of a run: the MLflow sink does not raise,
keeps what it could not send, sends it in step order when the server is back, and writes
what is left to a JSON-lines file at close. The server is a fake on the sink instance."""

from __future__ import annotations

import json
import logging
import os

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
)

from infra import tracking
from infra.paths import PathsConfig, ProjectPaths
from infra.tracking import HTTP_CLIENT_DEFAULTS, UNSENT_FILE, MlflowSink, is_transient

URI = "http://127.0.0.1:5999"


class FlakyMlflow:
    """The ``mlflow`` functions the sink calls; every call fails like a stopped server
    (after the client's retries) while ``down`` is set."""

    def __init__(self) -> None:
        self.down = False
        self.reject = False  # the server answers 400 (a request it refuses)
        self.attempts = 0  # requests, failed ones included
        self.batches = 0  # log_batch requests that went through
        self.calls: list[tuple] = []

    def _call(self, *call) -> None:
        self._request()
        self.calls.append(call)

    def _request(self) -> None:
        self.attempts += 1
        if self.down:
            raise MlflowException(
                f"API request to {URI}/api/2.0/mlflow/runs/log-batch failed with exception "
                "HTTPConnectionPool: Max retries exceeded (Connection refused)"
            )
        if self.reject:
            raise MlflowException("Changing param values is not allowed", INVALID_PARAMETER_VALUE)

    def log_metrics(self, metrics, step=None, timestamp=None):
        self._call("metrics", step, timestamp, dict(metrics))

    def log_params(self, params):
        self._call("params", dict(params))

    def set_tags(self, tags):
        self._call("tags", dict(tags))

    def log_artifact(self, path, artifact_path=None):
        self._call("artifact", path, artifact_path)

    def end_run(self):
        self._call("end_run")

    def MlflowClient(self):  # noqa: N802 - the mlflow name
        return self

    def log_batch(self, run_id, metrics):
        """One request: the metric values regrouped into one call per (step, timestamp)."""
        logs: dict[tuple, dict] = {}
        for m in metrics:
            logs.setdefault((m.step, m.timestamp), {})[m.key] = m.value
        self._request()
        self.batches += 1
        self.calls.extend(
            ("metrics", step, stamp, values) for (step, stamp), values in logs.items()
        )


@pytest.fixture
def flaky(monkeypatch, tmp_path):
    """(sink, fake): a sink on ``URI`` whose run opens without a server, with the fake
    ``mlflow`` on the instance and the TCP test answering while the fake is up."""
    monkeypatch.setattr(tracking, "check_reachable", lambda uri, timeout_s=5.0: None)
    monkeypatch.setattr(MlflowSink, "_open_run", lambda self, paths, name, run_id: "run-1")
    fake = FlakyMlflow()
    monkeypatch.setattr(tracking, "_answers", lambda uri, timeout_s=2.0: not fake.down)

    def make(**kwargs) -> MlflowSink:
        paths = ProjectPaths.resolve(PathsConfig(output_dir=str(tmp_path), tracking_uri=URI))
        sink = MlflowSink(paths, "train-x", unsent_dir=tmp_path / "train", **kwargs)
        sink.mlflow = fake
        return sink

    return make, fake


def _records(caplog, level: int) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "infra.tracking" and r.levelno == level
    ]


def test_outage_is_buffered_and_resent_in_step_order(flaky, caplog, tmp_path):
    make, fake = flaky
    sink = make(retry_s=0.0)  # retry on every call
    caplog.set_level(logging.INFO, logger="infra.tracking")
    sink.log_params({"lr": 1e-3})
    sink.log_metrics({"loss": 1.0}, 1)
    fake.down = True
    for step in range(2, 6):
        sink.log_metrics({"loss": float(step)}, step)  # no exception
    sink.set_tags({"stage": "train"})
    sink.log_artifact(tmp_path / "step_000005.png", "samples")
    kept = list(sink.metrics_backlog)
    fake.down = False
    sink.log_metrics({"loss": 6.0}, 6)
    sink.close()

    metrics = [c for c in fake.calls if c[0] == "metrics"]
    assert [(c[1], c[3]["loss"]) for c in metrics] == [(s, float(s)) for s in range(1, 7)]
    # the buffered logs went with the timestamps of when they were logged
    assert [c[2] for c in metrics[1:5]] == [r["timestamp"] for r in kept]
    assert ("tags", {"stage": "train"}) in fake.calls
    assert ("artifact", str(tmp_path / "step_000005.png"), "samples") in fake.calls
    assert fake.calls[-1] == ("end_run",)
    warnings, infos = _records(caplog, logging.WARNING), _records(caplog, logging.INFO)
    assert len(warnings) == 1 and URI in warnings[0] and "not answering" in warnings[0]
    assert len(infos) == 1 and "is back" in infos[0] and "sent 7 buffered records" in infos[0]
    assert not (tmp_path / "train" / UNSENT_FILE).exists()


def test_while_down_calls_wait_for_the_retry_interval(flaky):
    make, fake = flaky
    sink = make(retry_s=3600.0)
    fake.down = True
    for step in range(1, 51):
        sink.log_metrics({"loss": 0.5}, step)
    assert fake.attempts == 1  # the failing call; later ones are only kept
    assert sink.pending == 50 and sink.down_since is not None


def test_buffer_keeps_the_newest_logs_and_counts_the_dropped(flaky, caplog):
    make, fake = flaky
    sink = make(buffer_size=3, retry_s=3600.0)
    caplog.set_level(logging.INFO, logger="infra.tracking")
    fake.down = True
    for step in range(1, 11):
        sink.log_metrics({"loss": float(step)}, step)
    fake.down = False
    sink.close()  # close tries once more whatever the interval
    assert [c[1] for c in fake.calls if c[0] == "metrics"] == [8, 9, 10]
    (info,) = _records(caplog, logging.INFO)
    assert "sent 3 buffered records" in info and "7 older metric logs dropped" in info


def test_a_long_backlog_goes_in_batches_of_at_most_1000_values(flaky):
    make, fake = flaky
    sink = make(retry_s=3600.0)
    fake.down = True
    for step in range(1, 301):
        sink.log_metrics({f"m{i}": float(step) for i in range(10)}, step)  # 3000 values
    fake.down = False
    sink.close()
    assert fake.batches == 3
    assert [c[1] for c in fake.calls if c[0] == "metrics"] == list(range(1, 301))


def test_a_failed_retry_keeps_the_rest_in_order(flaky, monkeypatch):
    make, fake = flaky
    sink = make(retry_s=0.0)
    fake.down = True
    for step in (1, 2, 3):
        sink.log_metrics({"loss": float(step)}, step)
    monkeypatch.setattr(tracking, "_answers", lambda uri, timeout_s=2.0: True)  # TCP up, 503s
    sink.log_metrics({"loss": 4.0}, 4)
    assert [r["step"] for r in sink.metrics_backlog] == [1, 2, 3, 4]
    fake.down = False
    sink.log_metrics({"loss": 5.0}, 5)
    assert [c[1] for c in fake.calls] == [1, 2, 3, 4, 5] and sink.pending == 0


def test_unsent_records_are_written_at_close(flaky, caplog, tmp_path):
    make, fake = flaky
    sink = make(retry_s=0.0)
    caplog.set_level(logging.INFO, logger="infra.tracking")
    sink.log_metrics({"loss": 1.0}, 1)
    fake.down = True
    sink.log_metrics({"loss": 2.0, "id": 0.5}, 2)
    sink.log_metrics({"loss": 3.0}, 3)
    sink.log_artifact(tmp_path / "generator.png", "samples")
    sink.close()  # no exception although nothing answers

    path = tmp_path / "train" / UNSENT_FILE
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(r["run_id"] == "run-1" for r in lines)
    metrics = [r for r in lines if r["kind"] == "metrics"]
    assert [(r["step"], r["metrics"]) for r in metrics] == [
        (2, {"loss": 2.0, "id": 0.5}),
        (3, {"loss": 3.0}),
    ]
    assert {"kind": "artifact", "path": str(tmp_path / "generator.png"), "subdir": "samples"} in [
        {k: v for k, v in r.items() if k != "run_id"} for r in lines
    ]
    assert lines[-1]["kind"] == "status"  # end_run did not reach the server either
    warnings = _records(caplog, logging.WARNING)
    assert len(warnings) == 2 and str(path) in warnings[1]  # outage start, then the file
    assert "2 metric logs" in warnings[1] and sink.pending == 0


def test_a_rejected_request_still_raises(flaky, caplog):
    make, fake = flaky
    sink = make(retry_s=0.0)
    fake.reject = True
    with pytest.raises(MlflowException, match="Changing param"):
        sink.log_params({"lr": 1})
    # a buffered record the server rejects once it is back is dropped, not raised
    fake.reject, fake.down = False, True
    sink.log_params({"lr": 2})
    fake.down, fake.reject = False, True
    caplog.set_level(logging.WARNING, logger="infra.tracking")
    sink.log_metrics({"loss": 1.0}, 1)  # the retry: both records rejected
    assert sink.pending == 0 and sink.down_since is None
    assert any("rejected 1 buffered params record" in m for m in _records(caplog, logging.WARNING))


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (MlflowException("API request failed with exception Max retries exceeded"), True),
        (MlflowException("x", TEMPORARILY_UNAVAILABLE), True),
        (MlflowException("run not found", RESOURCE_DOES_NOT_EXIST), False),
        (MlflowException("bad value", INVALID_PARAMETER_VALUE), False),
        (requests.ConnectionError("refused"), True),
        (requests.ReadTimeout("slow"), True),
        (ConnectionRefusedError(111, "refused"), True),
        (FileNotFoundError("samples/x.png"), False),
        (ValueError("bug"), False),
    ],
)
def test_transient_errors_are_those_of_an_outage(error, transient):
    assert is_transient(error) is transient


def _http_response(status: int) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    return response


def test_http_status_errors_are_transient_only_for_5xx_and_429():
    assert is_transient(requests.HTTPError(response=_http_response(503)))
    assert is_transient(requests.HTTPError(response=_http_response(429)))
    assert not is_transient(requests.HTTPError(response=_http_response(404)))


def test_http_client_gives_up_quickly_unless_the_user_chose(flaky, monkeypatch):
    for name in HTTP_CLIENT_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "42")
    make, _ = flaky
    make()
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "42"  # the user's value stays
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
    assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "1"


def test_local_store_leaves_the_http_client_alone(monkeypatch, tmp_path):
    for name in HTTP_CLIENT_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(MlflowSink, "_open_run", lambda self, paths, name, run_id: "run-1")
    MlflowSink(ProjectPaths.resolve(PathsConfig(output_dir=str(tmp_path))), "train-x")
    assert not any(name in os.environ for name in HTTP_CLIENT_DEFAULTS)
