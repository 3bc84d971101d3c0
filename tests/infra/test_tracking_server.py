"""A team tracking server: PostgreSQL (backend store) and ``mlflow server`` (artifacts on a
shared folder) on 127.0.0.1. The pipeline logs to it and ``fsp compare`` lists the run; a
server stopped in the middle of training does not stop training; a server that does not
answer at start fails ``fsp train`` within seconds with one ``error:`` line."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from infra.tracking import UNSENT_FILE
from tests.conftest import small_params, write_subset_csv

BIN = Path(sys.executable).parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
DB_USER = "mlflow"
OUTAGE_STEPS = 120  # about 25 s of training: the restarted server is usually back before the end


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    """The environment of an ``fsp`` run: the venv first, one thread, no distributed
    variables and no tracking overrides (the params file decides)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(k, None)
    return env


def _fsp(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "fsp"), *args]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    return proc


def _write_params(params: dict, path: Path, **sections) -> Path:
    """``params`` with ``sections`` merged into its sections, written to ``path``."""
    merged = {k: {**v, **sections.get(k, {})} for k, v in params.items()}
    path.write_text(yaml.safe_dump(merged, sort_keys=False))
    return path


class Postgres:
    """A throwaway PostgreSQL 15 cluster on 127.0.0.1 with trust authentication. As root
    it runs as the ``postgres`` user (initdb refuses root) in a folder that user owns."""

    def __init__(self, root: Path):
        self.root, self.port = root, _free_port()
        self.data, self.sockets = root / "data", root / "sockets"
        self.as_owner: list[str] = []
        self.sockets.mkdir(parents=True)
        if os.geteuid() == 0:
            self.as_owner = ["runuser", "-u", "postgres", "--"]
            for folder in (root, self.sockets):
                shutil.chown(folder, "postgres")

    @property
    def uri(self) -> str:
        """SQLAlchemy URI of the ``mlflow`` database; ``+psycopg2`` because SQLAlchemy 2.1
        takes a plain ``postgresql://`` for psycopg 3, and the driver here is psycopg2."""
        return f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{self.port}/mlflow"

    def _run(self, *cmd: str) -> None:
        proc = subprocess.run([*self.as_owner, *cmd], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{cmd[0]} failed:\n{proc.stdout}\n{proc.stderr}"

    def start(self) -> None:
        """initdb, start (waiting until it accepts connections) and create the database."""
        init = [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", DB_USER, "--auth=trust"]
        self._run(*init, "--encoding=UTF8", "--no-sync")
        options = f"-h 127.0.0.1 -p {self.port} -k {self.sockets} -c fsync=off"
        log = str(self.root / "postgres.log")
        self._run(
            str(PG_BIN / "pg_ctl"), "start", "-D", str(self.data), "-l", log, "-w", "-o", options
        )
        self._run(
            *(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port)),
            *("-U", DB_USER, "mlflow"),
        )

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            cmd = [str(PG_BIN / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w"]
            subprocess.run([*self.as_owner, *cmd], capture_output=True, timeout=60)


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 (one worker, no job runner) with the backend store
    ``backend_uri`` and proxied artifacts in ``artifacts``; stop and start again on the same
    port."""

    def __init__(self, backend_uri: str, artifacts: Path, log: Path):
        self.backend_uri, self.artifacts, self.log = backend_uri, artifacts, log
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 90) -> None:
        """Start and wait until ``/health`` answers; fails with the log's tail if it exits."""
        cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", self.backend_uri]
        cmd += ["--artifacts-destination", str(self.artifacts), "--workers", "1"]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        env = {**_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env["MLFLOW_DISABLE_TELEMETRY"] = "true"
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.uri}/health", timeout=2),
            ):
                return
            time.sleep(0.3)
        raise AssertionError(f"mlflow server did not answer in {timeout_s} s")

    def stop(self) -> None:
        """SIGTERM to its process group (the server and its uvicorn worker), SIGKILL after
        15 s."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        with contextlib.suppress(ProcessLookupError):  # a worker left behind
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None


@pytest.fixture(scope="module")
def team_server(tmp_path_factory) -> Iterator[MlflowServer]:
    """PostgreSQL + ``mlflow server`` for this module; both stopped afterwards, always."""
    if not (PG_BIN / "initdb").is_file():
        pytest.skip(f"PostgreSQL 15 is not installed ({PG_BIN})")
    logs = tmp_path_factory.mktemp("team-server")
    root = Path(tempfile.mkdtemp(prefix="fsp-pg-"))  # not under pytest's root-only tmp
    pg = Postgres(root)
    server = MlflowServer(pg.uri, logs / "shared" / "mlflow-artifacts", logs / "mlflow.log")
    try:
        pg.start()
        server.start()
        yield server
    finally:
        server.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def team_prepared(team_server, tmp_path_factory) -> tuple[dict, Path]:
    """``fsp prepare`` of the small subset, logging to the team server; returns (params
    with the server's URI, the params file)."""
    tmp = tmp_path_factory.mktemp("team")
    csv_path, _ = write_subset_csv(tmp / "inputs")
    source = {"name": "subset", "kind": "identity_csv", "path": str(csv_path)}
    params = small_params(tmp / "outputs", [source])
    params["paths"]["tracking_uri"] = team_server.uri
    pfile = _write_params(params, tmp / "params.yaml")
    _fsp("prepare", "-p", str(pfile))
    return params, pfile


def _client(server: MlflowServer):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=server.uri)


def _runs(server: MlflowServer, experiment: str, stage: str) -> list:
    client = _client(server)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], filter_string=f"tags.stage = '{stage}'")


@pytest.mark.slow
@pytest.mark.integration
def test_pipeline_logs_to_a_team_server_and_compare_lists_the_run(team_server, team_prepared):
    params, pfile = team_prepared
    _fsp("train", "-p", str(pfile))
    _fsp("evaluate", "-p", str(pfile))
    table = _fsp("compare", "-p", str(pfile)).stdout

    (prep,) = _runs(team_server, "faceswap", "prepare")
    assert prep.data.metrics["Data/kept"] > 0
    (train,) = _runs(team_server, "faceswap", "train")
    assert train.info.status == "FINISHED" and train.data.params["train.steps"] == "2"
    history = _client(team_server).get_metric_history(train.info.run_id, "Loss/G/total")
    assert [m.step for m in history] == [1, 2]
    assert any(k.startswith("Eval/") for k in train.data.metrics)
    assert train.info.run_id[:8] in table and "id_cosine" in table
    shared = {
        p.relative_to(team_server.artifacts).parts[-2:] for p in team_server.artifacts.rglob("*.*")
    }
    assert ("samples", "step_000002.png") in shared and ("prepare", "dataset.json") in shared
    assert ("evaluation", "face_matrix.png") in shared
    out = Path(params["paths"]["output_dir"])
    assert not list(out.rglob(UNSENT_FILE))


def _rows(csv: Path) -> int:
    with contextlib.suppress(FileNotFoundError, pd.errors.EmptyDataError):
        return len(pd.read_csv(csv))
    return 0


def _wait_rows(csv: Path, n: int, proc: subprocess.Popen, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while _rows(csv) < n and proc.poll() is None:
        assert time.monotonic() < deadline, f"fewer than {n} steps logged in {timeout_s} s"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.integration
def test_training_goes_on_through_a_server_outage(team_server, team_prepared, tmp_path):
    params, _ = team_prepared
    out = tmp_path / "out"
    out.mkdir()
    (out / "prepare").symlink_to(Path(params["paths"]["output_dir"]) / "prepare")
    pfile = _write_params(
        params,
        tmp_path / "params.yaml",
        paths={"output_dir": str(out), "experiment": "outage"},
        train={"steps": OUTAGE_STEPS, "log_every": 1, "sample_every": 1000},
    )
    log = tmp_path / "train.log"
    with log.open("w") as f:
        proc = subprocess.Popen(
            [str(BIN / "fsp"), "train", "-p", str(pfile)],
            env=_env(),
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        losses = out / "train" / "losses.csv"
        _wait_rows(losses, 3, proc)
        team_server.stop()
        _wait_rows(losses, _rows(losses) + 5, proc)
        team_server.start()
        assert proc.wait(timeout=300) == 0, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if team_server.proc is None:  # left stopped by a failure: back for the next test
            team_server.start()

    (run,) = _runs(team_server, "outage", "train")
    history = _client(team_server).get_metric_history(run.info.run_id, "Loss/G/total")
    on_server = [m.step for m in history]
    unsent = out / "train" / UNSENT_FILE
    records = [json.loads(x) for x in unsent.read_text().splitlines()] if unsent.exists() else []
    in_file = [r["step"] for r in records if "Loss/G/total" in r.get("metrics", {})]
    assert sorted(on_server + in_file) == list(range(1, OUTAGE_STEPS + 1))
    text = log.read_text()
    assert text.count("is not answering") == 1
    assert ("is back after" in text) != bool(records), text[-3000:]


@pytest.mark.slow
def test_train_with_an_unreachable_server_fails_fast(prepared, tmp_path):
    _, _, _, prep_dir, params = prepared
    out = tmp_path / "out"
    out.mkdir()
    (out / "prepare").symlink_to(prep_dir)
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    pfile = _write_params(
        params, tmp_path / "params.yaml", paths={"output_dir": str(out), "tracking_uri": uri}
    )
    start = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "fsp"), "train", "-p", str(pfile)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    wall = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and uri in errors[0] and "unreachable" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    # about 8 s idle here (most of it importing torch), 30 s with both cores busy; the fault it
    # guards against is the MLflow client retrying for about 4 minutes
    assert wall < 90, f"took {wall:.0f} s"
