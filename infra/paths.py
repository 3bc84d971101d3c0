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
    settings : PathsConfig
        The settings as given (environment overrides applied, relative paths kept): what a
        resolved config records, so it holds no absolute path of the machine that ran it.
    """

    data_root: Path
    models_dir: Path
    output_dir: Path
    tracking_uri: str
    experiment: str = "faceswap"
    settings: PathsConfig | None = None

    @classmethod
    def resolve(cls, cfg: PathsConfig | None = None, base: Path | None = None) -> ProjectPaths:
        """Resolve ``cfg`` against ``base`` (default: current directory), env vars first."""
        cfg = cfg or PathsConfig()
        base = (base or Path.cwd()).resolve()

        given = PathsConfig(
            data_root=os.environ.get(ENV_DATA_ROOT) or cfg.data_root,
            models_dir=os.environ.get(ENV_MODELS_DIR) or cfg.models_dir,
            output_dir=os.environ.get(ENV_OUTPUT_DIR) or cfg.output_dir,
            tracking_uri=os.environ.get(ENV_TRACKING_URI) or cfg.tracking_uri,
            experiment=os.environ.get(ENV_EXPERIMENT) or cfg.experiment,
        )

        def absolute(raw: str) -> Path:
            p = Path(raw).expanduser()
            return (p if p.is_absolute() else base / p).resolve()

        output_dir = absolute(given.output_dir)
        tracking = given.tracking_uri or f"sqlite:///{output_dir / 'mlflow' / 'mlflow.db'}"
        return cls(
            data_root=absolute(given.data_root),
            models_dir=absolute(given.models_dir),
            output_dir=output_dir,
            tracking_uri=tracking,
            experiment=given.experiment,
            settings=given,
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
