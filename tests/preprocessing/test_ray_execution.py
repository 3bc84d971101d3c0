"""Ray execution: kill-and-resume gives the same shards; `ray job submit` to a real
two-node cluster gives a local run's shards."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

BIN = Path(sys.executable).parent


def _env(**extra):
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    env.pop("RAY_ADDRESS", None)
    return env


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))}


@pytest.mark.slow
@pytest.mark.integration
def test_killed_run_resumes_to_identical_shards(prepared, tmp_path):
    _, _, _, reference_dir, params = prepared
    params = {**params, "paths": {**params["paths"], "output_dir": str(tmp_path / "out")}}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    cmd = [str(BIN / "fsp"), "prepare", "-p", str(params_file)]
    shards = tmp_path / "out" / "prepare" / "shards"

    # first run: killed (whole process group, Ray included) once one shard is finished
    proc = subprocess.Popen(
        cmd,
        env=_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not list(shards.glob("*.json")):
        assert proc.poll() is None, "run ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = len(list(shards.glob("*.json")))
    assert finished_before >= 1
    assert not (tmp_path / "out" / "prepare" / "manifest.parquet").exists()

    # second run: completes, reusing the finished chunks and shards
    rerun = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    chunks, chunks_done, chunks_run = map(
        int,
        re.search(
            r"detection pass: (\d+) chunks, (\d+) already done, (\d+) to run", rerun.stderr
        ).groups(),
    )
    assert chunks_done == chunks and chunks_run == 0  # pass 1 had finished before the kill
    plans, plans_done, _ = map(
        int,
        re.search(
            r"shard pass: (\d+) shard plans, (\d+) already done, (\d+) to run", rerun.stderr
        ).groups(),
    )
    assert finished_before <= plans_done < plans or plans_done == plans == finished_before

    # same bytes as the uninterrupted session run
    assert _files(shards) == _files(reference_dir / "shards")
    got = pd.read_parquet(tmp_path / "out" / "prepare" / "manifest.parquet")
    want = pd.read_parquet(reference_dir / "manifest.parquet")
    pd.testing.assert_frame_equal(got.drop(columns=["path"]), want.drop(columns=["path"]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_start(env: dict, *args: str) -> None:
    cmd = [str(BIN / "ray"), "start", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    start = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, start.stderr[-3000:]


@pytest.fixture(scope="module")
def ray_head():
    """A real two-node Ray cluster on 127.0.0.1: a head and a worker node, each its own
    raylet with 1 CPU (no auth, no usage stats); stopped afterwards.
    Yields (dashboard address, env for `ray job submit`)."""
    port, dash = _free_port(), _free_port()
    env = _env(RAY_AUTH_MODE="disabled")
    head = ("--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=true")
    _ray_start(env, *head, "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}")
    try:
        worker_ports = [
            f"--node-manager-port={_free_port()}",
            f"--object-manager-port={_free_port()}",
        ]
        low = _free_port()
        worker_ports += [f"--min-worker-port={low}", f"--max-worker-port={low + 200}"]
        _ray_start(env, f"--address=127.0.0.1:{port}", "--num-cpus=1", *worker_ports)
        yield f"http://127.0.0.1:{dash}", env
    finally:
        subprocess.run(
            [str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120
        )


def _submit(address: str, env: dict, *entrypoint: str) -> str:
    job = subprocess.run(
        [str(BIN / "ray"), "job", "submit", f"--address={address}", "--", *entrypoint],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = job.stdout + job.stderr
    assert job.returncode == 0, out[-4000:]
    assert "succeeded" in out
    return out


@pytest.mark.slow
@pytest.mark.integration
def test_ray_job_submit_prepare_on_two_nodes_matches_a_local_run(ray_head, prepared, tmp_path):
    _, _, _, reference_dir, params = prepared
    params = {**params, "paths": {**params["paths"], "output_dir": str(tmp_path / "out")}}
    params["prepare"]["ray"] = {
        k: v for k, v in params["prepare"]["ray"].items() if k != "num_cpus"
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = _submit(*ray_head, "fsp", "prepare", "-p", str(tmp_path / "params.yaml"))
    assert "connecting to Ray cluster" in out
    listed = subprocess.run(
        [str(BIN / "ray"), "list", "actors", f"--address={ray_head[0]}", "--format=json"],
        env=ray_head[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    nodes = {a["node_id"] for a in json.loads(listed.stdout) if "MapWorker" in a["class_name"]}
    assert len(nodes) == 2, listed.stdout[-2000:]  # the actor pool spread over both nodes
    # the same bytes as the session's local run of the same params
    prepared_dir = tmp_path / "out" / "prepare"
    assert _files(prepared_dir / "shards") == _files(reference_dir / "shards")
    got = pd.read_parquet(prepared_dir / "manifest.parquet")
    want = pd.read_parquet(reference_dir / "manifest.parquet")
    pd.testing.assert_frame_equal(got, want)


@pytest.mark.slow
@pytest.mark.integration
def test_ray_job_submit_torchrun_training(ray_head, prepared, tmp_path):
    _, _, _, prep_dir, params = prepared
    out = tmp_path / "out"
    out.mkdir()
    (out / "prepare").symlink_to(prep_dir)
    p = {
        **params,
        "paths": {**params["paths"], "output_dir": str(out)},
        "train": {**params["train"], "steps": 2, "data": {"num_workers": 0}},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    log = _submit(
        *ray_head,
        "torchrun",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        str(BIN / "fsp"),
        "train",
        "-p",
        str(tmp_path / "params.yaml"),
    )
    assert "2 process(es)" in log
    assert (out / "train" / "generator.pt").is_file()
