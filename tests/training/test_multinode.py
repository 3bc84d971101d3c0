"""Training across nodes, each node a process group of its own on 127.0.0.1: torchrun with
two node ranks, and Ray Train on a Ray cluster of separate raylets, one of which is killed
mid-run."""

from __future__ import annotations

import re
import subprocess
import time

import pandas as pd
import pytest

from training.registry import load_generator

from .test_train import BIN, _env, _free_port, _link_prepared, _params_file

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_torchrun_two_node_ranks_train(prepared, tmp_path):
    _, _, _, prep_dir, params = prepared
    out = tmp_path / "out"
    _link_prepared(prep_dir, out)
    pfile = _params_file(params, tmp_path, out, steps=2, log_every=1, data={"num_workers": 0})
    port = _free_port()
    nodes = [
        subprocess.Popen(
            [
                *(str(BIN / "torchrun"), "--nnodes=2", f"--node_rank={rank}", "--nproc_per_node=1"),
                *("--master_addr=127.0.0.1", f"--master_port={port}"),
                *(str(BIN / "fsp"), "train", "-p", str(pfile)),
            ],
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    errs = [n.communicate(timeout=600)[1] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], errs[0][-3000:] + errs[1][-3000:]
    assert "2 process(es)" in errs[0]
    assert pd.read_csv(out / "train" / "losses.csv")["step"].tolist() == [1, 2]


@pytest.fixture
def ray_cluster():
    """A Ray head without CPUs (it schedules no training) and three 1-CPU worker nodes,
    each its own raylet on 127.0.0.1."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False},
    )
    for _ in range(3):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def _wait_for(predicate, proc: subprocess.Popen, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, "training ended early"
        assert time.monotonic() < end, "timed out"
        time.sleep(0.2)


def test_ray_train_on_two_nodes_recovers_from_a_node_kill(prepared, tmp_path, ray_cluster):
    _, _, _, prep_dir, params = prepared
    out = tmp_path / "out"
    _link_prepared(prep_dir, out)
    over = {
        "steps": 24,
        "log_every": 1,
        "sample_every": 1000,
        "checkpoint": {"every": 4, "keep": 10},
        "data": {"num_workers": 0},
        "ray": {"workers": 2, "cpus_per_worker": 0.6, "max_failures": 2},
    }
    pfile = _params_file(params, tmp_path, out, **over)
    log = tmp_path / "train.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [str(BIN / "fsp"), "train", "-p", str(pfile)],
            env={**_env(), "RAY_ADDRESS": ray_cluster.address, "RAY_DEDUP_LOGS": "0"},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        latest = out / "train" / "checkpoints" / "latest"
        _wait_for(lambda: latest.is_file() and latest.read_text() >= "step00000008", proc, 600)
        nodes = dict(re.findall(r"worker rank (\d) on node (\w+)", log.read_text()))
        assert len(set(nodes.values())) == 2  # one worker per node
        victim = next(n for n in ray_cluster.worker_nodes if n.node_id == nodes["1"])
        ray_cluster.remove_node(victim)  # kills the raylet and the worker on it
        killed_after = latest.read_text()
        assert proc.wait(timeout=900) == 0, log.read_text()[-4000:]
    text = log.read_text()
    resumed = [int(s) for s in re.findall(r"from step (\d+) to 24", text)]
    assert resumed[0] == 0 and resumed[-1] >= int(killed_after[4:])  # recovered from a checkpoint
    assert pd.read_csv(out / "train" / "losses.csv")["step"].tolist() == list(range(1, 25))
    _, meta = load_generator(out / "train" / "generator.pt")
    assert meta["step"] == 24
    (tmp_path / "recovery.txt").write_text(f"killed after {killed_after}, resumed {resumed}\n")
    print(f"node killed after {killed_after}; runs started from steps {resumed}")
