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


@pytest.mark.slow
@pytest.mark.integration
def test_dvc_repro_runs_prepare_train_evaluate(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in CODE:
        shutil.copytree(ROOT / name, proj / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ["dvc.yaml", ".dvcignore"]:
        shutil.copy(ROOT / name, proj / name)
    csv_path, expected = write_subset_csv(tmp_path / "inputs")
    params = small_params(
        Path("outputs"), [{"name": "subset", "kind": "identity_csv", "path": str(csv_path)}]
    )
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
