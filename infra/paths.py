"""The one path resolver: data, models, outputs and the tracking store.

Every other module asks :class:`ProjectPaths` for a location; no path literal lives
elsewhere. Settings come from the ``paths`` section of ``params.yaml``; environment
variables override them so CI, a cluster job or a user can repoint a run without editing
the file:

==================  ============================  ====================================
setting             environment variable          default (relative to params.yaml)
==================  ============================  ====================================
``data_root``       ``FSP_DATA_ROOT``             ``../shared/faces``
``models_dir``      ``FSP_MODELS_DIR``            ``../shared/models``
``output_dir``      ``FSP_OUTPUT_DIR``            ``outputs``
``tracking_uri``    ``MLFLOW_TRACKING_URI``       ``sqlite:///<output_dir>/mlflow/mlflow.db``
``experiment``      ``MLFLOW_EXPERIMENT_NAME``    ``faceswap``
==================  ============================  ====================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

ENV_DATA_ROOT = "FSP_DATA_ROOT"
ENV_MODELS_DIR = "FSP_MODELS_DIR"
ENV_OUTPUT_DIR = "FSP_OUTPUT_DIR"
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_EXPERIMENT = "MLFLOW_EXPERIMENT_NAME"


class PathsConfig(BaseModel):
    """The ``paths`` section of ``params.yaml``. Relative paths resolve against the
    directory that holds ``params.yaml``."""

    model_config = ConfigDict(extra="forbid")

    data_root: str = Field(
        "../shared/faces", description="Root that dataset paths are relative to."
    )
    models_dir: str = Field("../shared/models", description="Directory holding pretrained weights.")
    output_dir: str = Field("outputs", description="Root of every stage's outputs.")
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; null = SQLite file under output_dir/mlflow."
    )
    experiment: str = Field(
        "faceswap", description="MLflow experiment every stage logs its run to."
    )


@dataclass(frozen=True)
class ProjectPaths:
    """Absolute locations for one run.

    Attributes
    ----------
    data_root, models_dir, output_dir : Path
        Absolute directories (not required to exist until used).
    tracking_uri : str
        MLflow tracking URI (``sqlite:///abs/path.db`` by default).
    experiment : str
        MLflow experiment every stage logs to (``MLFLOW_EXPERIMENT_NAME`` overrides).
    """

    data_root: Path
    models_dir: Path
    output_dir: Path
    tracking_uri: str
    experiment: str = "faceswap"

    @classmethod
    def resolve(cls, cfg: PathsConfig | None = None, base: Path | None = None) -> ProjectPaths:
        """Resolve ``cfg`` against ``base`` (default: current directory), env vars first."""
        cfg = cfg or PathsConfig()
        base = (base or Path.cwd()).resolve()

        def pick(env: str, value: str) -> Path:
            raw = os.environ.get(env) or value
            p = Path(raw).expanduser()
            return (p if p.is_absolute() else base / p).resolve()

        output_dir = pick(ENV_OUTPUT_DIR, cfg.output_dir)
        tracking = os.environ.get(ENV_TRACKING_URI) or cfg.tracking_uri
        if not tracking:
            tracking = f"sqlite:///{output_dir / 'mlflow' / 'mlflow.db'}"
        return cls(
            data_root=pick(ENV_DATA_ROOT, cfg.data_root),
            models_dir=pick(ENV_MODELS_DIR, cfg.models_dir),
            output_dir=output_dir,
            tracking_uri=tracking,
            experiment=os.environ.get(ENV_EXPERIMENT) or cfg.experiment,
        )

    def stage_dir(self, stage: str) -> Path:
        """Output directory of a pipeline stage (``prepare``, ``train``, ``evaluate``)."""
        return self.output_dir / stage

    @property
    def mlflow_artifacts(self) -> Path:
        """Artifact store used with the default SQLite tracking URI."""
        return self.output_dir / "mlflow" / "artifacts"

    def data_path(self, path: str | Path) -> Path:
        """A dataset path: absolute as given, otherwise relative to ``data_root``."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.data_root / p
