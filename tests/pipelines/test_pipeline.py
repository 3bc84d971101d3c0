"""Integration: `dvc repro` of the project's dvc.yaml on a small real subset."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, small_params, write_subset_csv

CODE = ["pipelines", "infra", "preprocessing", "training", "evaluation"]


def _run(cmd, cwd, env):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def _project(tmp_path: Path) -> tuple[Path, dict, dict]:
    """A copy of the project's code and DVC files in ``tmp_path/proj`` with small params on
    the real subset; returns (project folder, params to write, expected counts)."""
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in CODE:
        shutil.copytree(ROOT / name, proj / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ["dvc.yaml", ".dvcignore", ".gitignore"]:
        shutil.copy(ROOT / name, proj / name)
    csv_path, expected = write_subset_csv(tmp_path / "inputs")
    params = small_params(
        Path("outputs"), [{"name": "subset", "kind": "identity_csv", "path": str(csv_path)}]
    )
    return proj, params, expected


@pytest.mark.slow
@pytest.mark.integration
def test_dvc_repro_runs_prepare_train_evaluate(tmp_path):
    proj, params, expected = _project(tmp_path)
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
    }
    _run(["dvc", "init", "--no-scm", "-q"], proj, env)
    _run(["dvc", "repro"], proj, env)

    out = proj / "outputs"
    metrics = json.loads((out / "evaluate" / "metrics.json").read_text())
    for key in (
        "id_retrieval_top1",
        "target_retrieval_top1",
        "id_cosine",
        "pose_error_deg",
        "expression_error",
        "eye_landmark_error",
    ):
        assert key in metrics["swap"] and key in metrics["blended"]
    assert (
        -1 <= metrics["swap"]["id_cosine"] <= 1 and 0 <= metrics["swap"]["id_retrieval_top1"] <= 1
    )
    assert metrics["protocol"]["sources"] == 3 and metrics["protocol"]["cross_pairs"] == 6
    assert metrics["reconstruction"]["psnr_db"] > 0
    assert (out / "evaluate" / "face_matrix.png").stat().st_size > 0
    card = json.loads((out / "prepare" / "dataset.json").read_text())
    assert card["num_inputs"] == expected["rows"]
    for stage in ("prepare", "train", "evaluate"):
        assert (out / stage / "config.yaml").is_file()
    assert (out / "mlflow" / "mlflow.db").is_file()

    # nothing changed → nothing runs
    second = _run(["dvc", "repro"], proj, env)
    assert "Running stage" not in second
    status = _run(["dvc", "status"], proj, env)
    assert "up to date" in status.lower()


@pytest.mark.slow
@pytest.mark.integration
def test_dvc_experiment_grid_over_the_facke_models(tmp_path):
    """Facke's models as a DVC experiment grid (README "Comparing swappers"): queued
    experiments that change train.model, run by `dvc exp run --run-all`, listed by
    `dvc exp show`, and laid out as Facke's Table 1 by `fsp compare --table facke`."""
    proj, params, _ = _project(tmp_path)
    # one tracking store for the workspace and every experiment's temporary copy
    params["paths"]["tracking_uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # the workspace's own run: SimSwap as published (intra-ID pairs of one image, no IG)
    params["train"]["model"] = "simswap"
    params["train"]["simswap"]["data"] = {"draw": "images", "intra": "same_image"}
    params["evaluate"]["fid"] = {"enabled": False}
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    _run(["git", "init", "-q"], proj, env)
    _run(["dvc", "init", "-q"], proj, env)
    _run(["dvc", "repro"], proj, env)
    _run(["git", "add", "-A"], proj, env)
    _run(["git", "commit", "-qm", "baseline"], proj, env)
    for model in ("cvae", "cvae_gan"):
        _run(["dvc", "exp", "run", "--queue", "-n", model, "-S", f"train.model={model}"], proj, env)
    _run(["dvc", "exp", "run", "--run-all", "--jobs", "1"], proj, env)

    shown = json.loads(_run(["dvc", "exp", "show", "--json"], proj, env))
    exps = {
        e["name"]: e["revs"][0]["data"]
        for base in shown
        for e in (base.get("experiments") or [])
        if e.get("name") and e.get("revs")
    }
    assert set(exps) == {"cvae", "cvae_gan"}, exps
    for name, data in exps.items():
        assert data["params"]["params.yaml"]["data"]["train"]["model"] == name
        metrics = data["metrics"]["outputs/evaluate/metrics.json"]["data"]
        assert 0 <= metrics["facke"]["id_retrieval_l2"] <= 2

    table = _run(["fsp", "compare", "--table", "facke"], proj, env).splitlines()
    assert table[0].split()[:2] == ["method", "run_id"]
    assert [row.split()[0] for row in table[1:]] == ["SimSwap", "CVAE", "CVAE-GAN-IG"]
