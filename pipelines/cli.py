"""``fsp``: one command per pipeline stage.

Each subcommand is a thin entry point: read ``params.yaml`` → build the stage's typed
config (with ``--set key=value`` overrides) → validate → write the resolved config next
to the outputs → run. ``--dry-run`` prints the resolved config and exits. A user error (a
bad setting, a stage run before its inputs exist, a missing model file, an unreachable
tracking server) prints one ``error:`` message naming the cause and the fix and exits 2.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
import yaml

from infra.config import ConfigError, load_stage, resolved_dict, write_resolved

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help=__doc__,
    pretty_exceptions_show_locals=False,
)


@contextlib.contextmanager
def user_errors(*stage_errors: type[BaseException]) -> Iterator[None]:
    """Turn a user error — a bad setting, a missing input or model file, an unreachable
    tracking server, or one of the stage's own ``stage_errors`` — into ``error: <message>``
    on stderr and exit status 2."""
    from infra.models import ModelError
    from infra.tracking import TrackingUnreachableError

    known = (ConfigError, FileNotFoundError, ModelError, TrackingUnreachableError)
    try:
        yield
    except (*known, *stage_errors) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="Path of params.yaml.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a setting, e.g. --set train.steps=10 (repeatable)."),
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.")]


@app.callback()
def _root() -> None:
    """Face-swap data preparation, training and evaluation (see README.md)."""


def _paths(params: Path):
    """Project paths from the ``paths`` section of ``params`` (defaults when it is absent)."""
    from infra.config import build, load_params
    from infra.paths import PathsConfig, ProjectPaths

    raw = load_params(params) if params.exists() else {}
    return ProjectPaths.resolve(
        build(PathsConfig, raw.get("paths"), "paths"), params.resolve().parent
    )


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _load(
    cls, section: str, params: Path, overrides: list[str] | None, dry_run: bool, out_dir_of=None
):
    """Build, validate and (unless ``dry_run``) write the stage config; ``out_dir_of(cfg,
    paths)`` chooses the output folder (default ``paths.stage_dir(section)``)."""
    with user_errors():
        cfg, paths = load_stage(cls, section, params, overrides or [])
    if dry_run:
        typer.echo(yaml.safe_dump(resolved_dict(cfg, paths, section), sort_keys=False))
        raise typer.Exit(0)
    out_dir = out_dir_of(cfg, paths) if out_dir_of else paths.stage_dir(section)
    write_resolved(cfg, paths, section, out_dir)
    _setup_logging()
    return cfg, paths, out_dir


@app.command()
def prepare(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    dry_run: DryRunOpt = False,
) -> None:
    """Detect, filter, align and embed faces with Ray; write WebDataset shards + manifest."""
    from preprocessing.config import PrepareConfig
    from preprocessing.parsing.base import BackendUnavailableError
    from preprocessing.prepare import prepare as run_prepare
    from preprocessing.shard_pass import ShardWriteError

    cfg, paths, out_dir = _load(PrepareConfig, "prepare", params, set_, dry_run)
    with user_errors(BackendUnavailableError, ShardWriteError):
        run_prepare(cfg, paths, out_dir)


@app.command()
def train(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    dry_run: DryRunOpt = False,
    local_rank: Annotated[
        int | None,
        typer.Option("--local_rank", "--local-rank", hidden=True, help="Set by `deepspeed`."),
    ] = None,
) -> None:
    """Train a registered face swapper on the prepared shards with DeepSpeed.

    One process: `fsp train`. Several: `torchrun --nproc_per_node N $(which fsp) train`, or
    `deepspeed --num_gpus N $(which fsp) train` (a hostfile for several nodes), or Ray Train
    with `--set train.ray.workers=N` (under `ray job submit` for a cluster). SIGTERM saves a
    checkpoint at the next step and exits 143; the same command resumes.
    """
    import os

    from training.config import TrainConfig
    from training.preemption import EXIT_PREEMPTED, PreemptedError
    from training.train import BadStepsError
    from training.train import train as run_train

    if local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(local_rank))
    cfg, paths, out_dir = _load(TrainConfig, "train", params, set_, dry_run)
    try:
        with user_errors(BadStepsError):
            if cfg.ray.workers:
                from training.ray_launch import train_on_ray

                train_on_ray(cfg, paths, out_dir)
            else:
                run_train(cfg, paths, out_dir)
    except PreemptedError as e:
        typer.echo(f"stopped: {e}", err=True)
        raise typer.Exit(EXIT_PREEMPTED) from None


@app.command()
def evaluate(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    dry_run: DryRunOpt = False,
) -> None:
    """Swap held-out source/target pairs; write metrics.json and the face matrix.

    `--set evaluate.generator=<released swapper>` scores a published model instead of the
    trained one (outputs in evaluate-<name>/).
    """
    from evaluation.config import EvaluateConfig
    from evaluation.evaluate import evaluate as run_evaluate
    from evaluation.evaluate import output_dir

    cfg, paths, out_dir = _load(EvaluateConfig, "evaluate", params, set_, dry_run, output_dir)
    with user_errors():
        run_evaluate(cfg, paths, out_dir)


@app.command()
def compare(
    params: ParamsOpt = Path("params.yaml"),
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment (default: paths.experiment).")
    ] = None,
    param: Annotated[list[str] | None, typer.Option(help="Param column (repeatable).")] = None,
    metric: Annotated[list[str] | None, typer.Option(help="Metric column (repeatable).")] = None,
    last: Annotated[int, typer.Option(help="Newest runs shown.")] = 20,
    table_layout: Annotated[
        str,
        typer.Option(
            "--table",
            help="`runs`: one row per run; `facke`: Facke's Table 1, one row per method "
            "(SimSwap, CVAE, SimSwap-IG, CVAE-GAN-IG, …) with Recon Loss, ID Loss, ID Retrieval.",
        ),
    ] = "runs",
) -> None:
    """List evaluated runs side by side with their parameters and metrics (MLflow)."""
    import pandas as pd

    from evaluation.compare import compare_runs, facke_table
    from infra.tracking import check_reachable

    with user_errors():
        paths = _paths(params)
        check_reachable(paths.tracking_uri)
        name = experiment or paths.experiment
        try:
            if table_layout not in ("runs", "facke"):
                raise ValueError(f"--table {table_layout!r}: choose runs or facke")
            if table_layout == "facke":
                table = facke_table(paths, name)
            else:
                table = compare_runs(paths, name, param, metric, last)
        except ValueError as e:
            raise ConfigError(str(e)) from e
    if table.empty:
        typer.echo("no evaluated runs yet")
        return
    with pd.option_context(
        "display.max_columns", None, "display.width", 200, "display.float_format", "{:.4f}".format
    ):
        typer.echo(table.to_string(index=False))


@app.command()
def swap(
    source: Annotated[Path, typer.Option(help="Image holding the source face (identity).")],
    target: Annotated[Path, typer.Option(help="Image or video whose faces are replaced.")],
    output: Annotated[Path, typer.Option(help="File to write (image, or video: .mp4, .mkv…).")],
    model: Annotated[
        str | None,
        typer.Option(
            help="Generator: a generator.pt or exported .onnx file, an MLflow run id, or "
            "models:/<name>/<version> (default: the train stage's generator.pt)."
        ),
    ] = None,
    reference: Annotated[
        Path | None, typer.Option(help="Image of the target face to swap (--faces reference).")
    ] = None,
    faces: Annotated[
        str | None, typer.Option(help="largest | all | reference (default: swap.faces).")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    dry_run: DryRunOpt = False,
    progress: Annotated[bool, typer.Option(help="Progress bar over video frames.")] = True,
) -> None:
    """Swap the source face into an image or a video (frame rate, frame count and audio
    kept; frames without a face pass through and are counted)."""
    from infra.models import ModelStore
    from pipelines.face_swap import FaceSwapper, NoSourceFaceError
    from pipelines.swap_config import SwapConfig
    from pipelines.swap_media import swap_media
    from pipelines.video_io import VideoError
    from training.swap_model import load_swap_model

    overrides = [*(set_ or []), *([f"swap.faces={faces}"] if faces else [])]
    with user_errors():
        cfg, paths = load_stage(SwapConfig, "swap", params, overrides)
    if dry_run:
        typer.echo(yaml.safe_dump(resolved_dict(cfg, paths, "swap"), sort_keys=False))
        raise typer.Exit(0)
    _setup_logging()
    with user_errors(NoSourceFaceError, VideoError, ValueError):
        ref = model or str(paths.stage_dir("train") / "generator.pt")
        swapper = FaceSwapper(load_swap_model(ref, paths), cfg, ModelStore(paths.models_dir))
        report = swap_media(swapper, source, target, output, reference, progress)
    typer.echo(
        f"wrote {report.output}: {report.frames} frame(s), {report.faces_swapped} face(s) "
        f"swapped, {report.frames_without_face} frame(s) without a face passed through, "
        f"{report.frames_per_s:.2f} frames/s"
    )
    if report.fps is not None:
        stab = "n/a" if report.stability is None else f"{report.stability:.3f}"
        motion = (
            ""
            if report.motion_in is None
            else f" (landmark motion {report.motion_out:.4f} out / {report.motion_in:.4f} in, "
            "eye distances per frame)"
        )
        typer.echo(f"video: {report.fps:g} fps; temporal stability {stab}{motion}")


@app.command("convert-released")
def convert_released(
    name: Annotated[str, typer.Argument(help="Model to write, e.g. simswap_arcface.")],
    source: Annotated[
        Path | None, typer.Option(help="The published file (default: its models-dir place).")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Convert a released pickled-module checkpoint into a plain state dict, once (the
    file's classes are never imported; see training/released/convert.py)."""
    from infra.models import ModelStore
    from training.released.convert import convert_release

    with user_errors():
        done = convert_release(name, ModelStore(_paths(params).models_dir), source)
    typer.echo(f"wrote {done.path}: {done.tensors} tensors, sha256 {done.sha256}")


@app.command()
def models(params: ParamsOpt = Path("params.yaml")) -> None:
    """List registered models and whether each is present and verified in the models dir."""
    from infra.models import REGISTRY, ModelError, ModelFileMissingError, ModelStore

    with user_errors():
        paths = _paths(params)
    store = ModelStore(paths.models_dir)
    typer.echo(f"models dir: {paths.models_dir}")
    for name, spec in REGISTRY.items():
        try:
            store.path(name)
            state = "ok"
        except ModelError as e:
            state = "MISSING" if isinstance(e, ModelFileMissingError) else "BAD CHECKSUM"
        typer.echo(f"  {state:<12} {name:<26} {spec.task:<11} {spec.file}")
        if state != "ok":
            src = spec.url + (f" (member {spec.archive_member})" if spec.archive_member else "")
            typer.echo(f"  {'':<12} get it from {src}")


def _export_faces(paths, count: int):
    """Up to ``count`` real faces of the prepared eval split (crops, embeddings, landmarks,
    regions) for the parity check, or None when no prepared dataset exists."""
    import numpy as np

    from evaluation.protocol import load_eval_faces
    from infra.dataset_format import DatasetCard
    from training.onnx_export import ParityFaces

    data_dir = paths.stage_dir("prepare")
    if count < 2 or not (data_dir / "dataset.json").is_file():
        return None
    faces = load_eval_faces(DatasetCard.load(data_dir), data_dir)[:count]
    if len(faces) < 2:
        return None
    lmk = [f.landmarks468 for f in faces]
    regions = [f.regions for f in faces]
    return ParityFaces(
        crops=np.stack([f.crop for f in faces]),
        embeddings=np.stack([f.embedding for f in faces]).astype(np.float32),
        landmarks468=None if any(x is None for x in lmk) else np.stack(lmk),
        regions=None if any(x is None for x in regions) else np.stack(regions),
    )


@app.command()
def export(
    params: ParamsOpt = Path("params.yaml"),
    generator: Annotated[
        Path | None, typer.Option(help="generator.pt (default: the train stage's).")
    ] = None,
    format_: Annotated[str, typer.Option("--format", help="Export format: onnx.")] = "onnx",
    output: Annotated[
        Path | None, typer.Option(help="Output folder (default: <output_dir>/export).")
    ] = None,
    faces: Annotated[
        int, typer.Option(help="Real eval-split faces for the parity check (>= 2).")
    ] = 3,
    register: Annotated[
        str | None, typer.Option(help="Register the model under this MLflow name.")
    ] = None,
    no_mlflow: Annotated[bool, typer.Option("--no-mlflow", help="Do not log to MLflow.")] = False,
) -> None:
    """Export the trained generator as ONNX with its input contract, verify it against
    PyTorch on real faces (batch 1 and N), and log it to the training run as an MLflow
    model (`fsp swap --model` loads the file, the run id or models:/name/version)."""
    from infra.models import ModelStore
    from training.onnx_export import export_onnx, log_onnx_model

    with user_errors(ValueError):
        if format_ != "onnx":
            raise ValueError(f"--format {format_!r} is not supported: use --format onnx")
        paths = _paths(params)
        source = generator or paths.stage_dir("train") / "generator.pt"
        out_dir = output or paths.stage_dir("export")
        _setup_logging()
        report = export_onnx(
            source, out_dir, _export_faces(paths, faces), ModelStore(paths.models_dir)
        )
        for line in report.lines():
            typer.echo(line)
        if not no_mlflow:
            uri = log_onnx_model(
                report.onnx_path, report.contract, report.contract.mlflow_run_id, paths, register
            )
            named = f" (registered as {register})" if register else ""
            typer.echo(f"mlflow model: {uri}{named}")


def main() -> None:  # pragma: no cover - console entry
    app()
