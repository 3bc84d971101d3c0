"""User errors read as one message naming the cause and the fix, with exit status 2 and no
traceback; ``--dry-run`` prints the resolved config."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from tests.conftest import MODELS

runner = CliRunner()


def _params(tmp_path: Path, **sections) -> Path:
    params = {"paths": {"models_dir": str(MODELS), "output_dir": str(tmp_path / "out")}}
    params.update(sections)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_train_before_prepare_names_the_missing_stage(tmp_path):
    line = _error(runner.invoke(app, ["train", "--params", str(_params(tmp_path))]))
    assert "dataset.json not found" in line and "fsp prepare" in line


def test_evaluate_before_prepare_names_the_missing_stage(tmp_path):
    line = _error(runner.invoke(app, ["evaluate", "--params", str(_params(tmp_path))]))
    assert "not found" in line and "fsp " in line


def test_bad_setting_names_the_key_and_the_fix(tmp_path):
    args = ["train", "--params", str(_params(tmp_path)), "--dry-run"]
    result = runner.invoke(app, [*args, "--set", "train.aei_net.data.intra=same_identity"])
    _error(result)
    assert "train.aei_net" in result.output and "weights.rec=0" in result.output
    result = runner.invoke(app, [*args, "--set", "train.model=nope"])
    _error(result)
    assert "train.model" in result.output and "aei_net, ghost, simswap" in result.output


def test_unreachable_tracking_server_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    line = _error(runner.invoke(app, ["compare", "--params", str(_params(tmp_path))]))
    assert "http://127.0.0.1:9 is unreachable" in line and "tracking_uri" in line


def test_dry_run_prints_the_resolved_config(tmp_path):
    result = runner.invoke(
        app, ["train", "--params", str(_params(tmp_path)), "--dry-run", "--set", "train.steps=7"]
    )
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load(result.output)
    assert cfg["train"]["steps"] == 7 and cfg["paths"]["output_dir"] == str(tmp_path / "out")
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
