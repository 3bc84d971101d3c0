from pathlib import Path

import pytest
import yaml

from evaluation.config import EvaluateConfig
from infra.config import ConfigError, apply_overrides, load_stage
from preprocessing.config import PrepareConfig
from training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("cls", "section"),
    [(PrepareConfig, "prepare"), (TrainConfig, "train"), (EvaluateConfig, "evaluate")],
)
def test_params_yaml_sections_mirror_config_classes(cls, section):
    cfg, paths = load_stage(cls, section, ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())[section]
    dumped = cfg.model_dump(mode="json")
    # every key of params.yaml is a field and every field is written out in params.yaml
    assert set(raw) == set(dumped), set(raw) ^ set(dumped)
    assert paths.models_dir == (ROOT / "../shared/models").resolve()


def test_overrides_parse_yaml_values():
    out = apply_overrides(
        {"train": {"steps": 3}}, ["train.steps=10", "train.optim.betas=[0.5, 0.9]"]
    )
    assert out["train"]["steps"] == 10
    assert out["train"]["optim"]["betas"] == [0.5, 0.9]
    with pytest.raises(ConfigError):
        apply_overrides({}, ["no_equals_sign"])


def test_unknown_key_and_bad_value_are_errors(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": {"stpes": 3}}))
    with pytest.raises(ConfigError, match="stpes"):
        load_stage(TrainConfig, "train", params)
    params.write_text(yaml.safe_dump({"train": {"aei_net": {"debug": {"image_size": 48}}}}))
    with pytest.raises(ConfigError, match="power of two"):
        load_stage(TrainConfig, "train", params)


def test_env_overrides_paths(tmp_path, monkeypatch):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"paths": {"models_dir": "models"}, "evaluate": {}}))
    _, paths = load_stage(EvaluateConfig, "evaluate", params)
    assert paths.models_dir == tmp_path / "models"
    assert paths.tracking_uri == f"sqlite:///{tmp_path / 'outputs' / 'mlflow' / 'mlflow.db'}"
    monkeypatch.setenv("FSP_MODELS_DIR", "/elsewhere/models")
    _, paths = load_stage(EvaluateConfig, "evaluate", params)
    assert paths.models_dir == Path("/elsewhere/models")


def test_tracking_does_not_leak_the_store_into_the_environment(tmp_path, monkeypatch):
    from infra.paths import PathsConfig, ProjectPaths
    from infra.tracking import MlflowSink

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    paths = ProjectPaths.resolve(PathsConfig(output_dir=str(tmp_path / "a")))
    MlflowSink(paths, "leak-check").close()
    other = ProjectPaths.resolve(PathsConfig(output_dir=str(tmp_path / "b")))
    assert other.tracking_uri.endswith(str(tmp_path / "b" / "mlflow" / "mlflow.db"))
