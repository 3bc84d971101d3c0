"""Ray execution: kill-and-resume gives the same shards; `ray job submit` to a real head."""

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

from tests.conftest import small_params, write_vgg_tree

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


@pytest.fixture(scope="module")
def ray_head():
    """A real Ray head on 127.0.0.1 (no auth, no usage stats); stopped afterwards.
    Yields (dashboard address, env for `ray job submit`)."""
    port, dash = _free_port(), _free_port()
    env = _env(RAY_AUTH_MODE="disabled")
    start = subprocess.run(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=2",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            "--disable-usage-stats",
            "--include-dashboard=true",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert start.returncode == 0, start.stderr[-3000:]
    try:
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
def test_ray_job_submit_prepare(ray_head, tmp_path):
    inputs = tmp_path / "vgg"
    expected = write_vgg_tree(inputs)
    params = small_params(
        tmp_path / "out", [{"name": "vgg", "kind": "vggface2", "path": str(inputs)}]
    )
    params["prepare"]["split"]["eval_identities"] = 1
    params["prepare"]["ray"].pop("num_cpus")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = _submit(*ray_head, "fsp", "prepare", "-p", str(tmp_path / "params.yaml"))
    assert "connecting to Ray cluster" in out
    m = pd.read_parquet(tmp_path / "out" / "prepare" / "manifest.parquet")
    assert len(m) == len(expected)
    reasons = {
        k: r if isinstance(r, str) else None for k, r in zip(m.listed, m.reason, strict=True)
    }
    assert reasons == expected
    assert list((tmp_path / "out" / "prepare" / "shards").glob("*.tar"))


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
