"""Shared fixtures: real files from ../shared, one small prepared dataset per session."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from infra.paths import PathsConfig, ProjectPaths
from training.swappers.ddpm_ilvr import DEBUG_DDPM_ILVR
from training.swappers.idatt import DEBUG_IDATT
from training.swappers.rafswap import DEBUG_RAFSWAP

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FSP_SHARED", ROOT.parent / "shared")).resolve()
FACES = SHARED / "faces"
MODELS = SHARED / "models"

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

#: Identities of the small subset: 6 for training, several images each, plus 3 held out.
SUBSET_IDENTITIES = [
    "lfw:Ariel_Sharon",
    "lfw:Colin_Powell",
    "lfw:Hugo_Chavez",
    "deepface:deepface_id00",
    "deepface:deepface_id01",
    "bbt:amy",
    "lfw:Jacques_Chirac",
    "lfw:George_W_Bush",
    "bbt:penny",
]
MULTI_FACE = ["ageitgey_two_people.jpg", "faceapi_bbt3.jpg", "mtcnn_office4.jpg"]
NO_FACE = ["faceapi_white.png", "inspireface_no_face.png", "inspireface_view.jpg"]


def pytest_sessionstart(session):
    if not (FACES / "identity_index.csv").is_file() or not MODELS.is_dir():
        raise pytest.UsageError(f"tests need ../shared (faces and models) at {SHARED}")


def identity_rows(per_identity: int = 5) -> list[dict]:
    rows, seen = [], {}
    with (FACES / "identity_index.csv").open() as f:
        for r in csv.DictReader(f):
            if r["identity"] in SUBSET_IDENTITIES and seen.get(r["identity"], 0) < per_identity:
                seen[r["identity"]] = seen.get(r["identity"], 0) + 1
                rows.append({"path": str(FACES / r["path"]), "identity": r["identity"]})
    return rows


def write_subset_csv(folder: Path) -> tuple[Path, dict]:
    """A CSV of real inputs: identity faces, group photos, no-face images, a corrupt file
    and one file listed twice. Returns (csv path, expected counts)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = identity_rows()
    rows += [{"path": str(FACES / "multi_face" / n), "identity": ""} for n in MULTI_FACE]
    rows += [{"path": str(FACES / "no_face" / n), "identity": ""} for n in NO_FACE]
    corrupt = folder / "corrupt.jpg"
    corrupt.write_bytes(
        (FACES / "misc_single" / "inspireface_Rob_Lowe_0001.jpg").read_bytes()[:600]
    )
    rows.append({"path": str(corrupt), "identity": "misc:corrupt"})
    rows.append(dict(rows[0]))  # listed twice
    path = folder / "subset.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "identity"])
        w.writeheader()
        w.writerows(rows)
    return path, {"rows": len(rows), "multi": len(MULTI_FACE), "none": len(NO_FACE)}


LFW = FACES / "lfw_subset_krasserm"
#: VGGFace2-style tree: file → (source photo, expected reason or None for kept).
VGG_TREE = {
    "idA/001_01.jpg": (LFW / "George_W_Bush/George_W_Bush_0001.jpg", "duplicate_entry"),
    "idA/001_02.jpg": (LFW / "George_W_Bush/George_W_Bush_0002.jpg", "duplicate_entry"),
    "idA/002_01.jpg": (LFW / "George_W_Bush/George_W_Bush_0004.jpg", None),
    "idA/003.jpg": (LFW / "George_W_Bush/George_W_Bush_0005.jpg", None),
    "idA/003_copy.jpg": (LFW / "George_W_Bush/George_W_Bush_0005.jpg", "near_duplicate"),
    "idB/b1.jpg": (LFW / "Hugo_Chavez/Hugo_Chavez_0002.jpg", None),
    "idB/b2.jpg": (LFW / "Hugo_Chavez/Hugo_Chavez_0003.jpg", None),
}


def write_vgg_tree(root: Path) -> dict[str, str | None]:
    """Write :data:`VGG_TREE`; ``003_copy`` is a smaller re-encoded copy (near duplicate)."""
    import cv2

    for rel, (src, _) in VGG_TREE.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("_copy.jpg"):
            img = cv2.imread(str(src))
            img = cv2.resize(img, None, fx=0.9, fy=0.9, interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(root / rel), img, [cv2.IMWRITE_JPEG_QUALITY, 80])
        else:
            (root / rel).write_bytes(src.read_bytes())
    return {rel: reason for rel, (_, reason) in VGG_TREE.items()}


def write_inputs(folder: Path) -> tuple[list[dict], dict]:
    """Three real sources: an identity CSV, a folder of bad/awkward files, a VGGFace2 tree.

    Returns (source configs, expected) where expected holds the CSV counts and, per folder
    source, {listed path: expected reason or None}.
    """
    from tests.preprocessing.badfiles import make_bad_inputs

    csv_path, expected = write_subset_csv(folder / "inputs")
    bad = make_bad_inputs(folder / "bad")
    bad.pop("a_directory.jpg", None)  # a directory is not a file: not listed
    (folder / "bad" / "notes.txt").write_text("not an image\n")
    bad["notes.txt"] = "unsupported_extension"
    expected["bad"] = bad
    expected["vgg"] = write_vgg_tree(folder / "vgg")
    expected["rows"] += len(bad) + len(expected["vgg"])
    sources = [
        {"name": "subset", "kind": "identity_csv", "path": str(csv_path)},
        {"name": "bad", "kind": "folder", "path": str(folder / "bad")},
        {"name": "vgg", "kind": "vggface2", "path": str(folder / "vgg")},
    ]
    return sources, expected


TINY_D = {"base_channels": 4, "max_channels": 16, "num_layers": 2, "num_scales": 2}
TINY_AEI = {
    "image_size": 32,
    "base_channels": 4,
    "max_channels": 16,
    "aad_units": 2,
    "discriminator": TINY_D,
}
TINY_SIMSWAP = {
    "image_size": 32,
    "base_channels": 8,
    "max_channels": 16,
    "num_down": 2,
    "id_blocks": 1,
    "discriminator": TINY_D,
}


TINY_KORSHUNOVA = {"image_size": 32, "min_scale": 8, "channels": 4, "combiner_channels": 8}
#: Registered priors that are not in ../shared/models: tests run on random stand-ins.
STAND_INS = [
    "vgg19_imagenet",
    "vgg16_imagenet",
    "stylegan2_ffhq_1024",
    "psp_ffhq_encode",
    "ddpm_ema_celebahq_256",
]
#: The prior-based swappers at 32 px on the test-size priors of their ``debug`` widths.
TINY_RAFSWAP = {**DEBUG_RAFSWAP, "image_size": 32, "encoder_size": 32}
TINY_IDATT = {**DEBUG_IDATT, "image_size": 32, "encoder_size": 32, "discriminator": TINY_D}
TINY_DDPM_ILVR = {**DEBUG_DDPM_ILVR, "image_size": 32, "ilvr": {"n": 4, "steps": 5}}


def models_with_stand_ins(folder: Path) -> Path:
    """``folder`` as a models directory: ../shared/models linked, plus random stand-ins for
    :data:`STAND_INS` (:func:`infra.stand_ins.overlay_models_dir`)."""
    from infra.stand_ins import overlay_models_dir

    return overlay_models_dir(MODELS, folder, STAND_INS)


def small_params(out_dir: Path, sources: list[dict], models_dir: Path = MODELS) -> dict:
    """params.yaml content for fast runs on the subset."""
    return {
        "paths": {  # every key, as in params.yaml (DVC stages list some of them)
            "data_root": str(FACES),
            "models_dir": str(models_dir),
            "output_dir": str(out_dir),
            "tracking_uri": None,
            "experiment": "faceswap",
        },
        "prepare": {
            "sources": sources,
            "filters": {"size": {"drop_fraction": 0.0, "min_face": 0}, "aspect": {"keep": "all"}},
            "annotate": {"crops": [{"template": "arcface", "size": 128}], "mask_backend": "unet"},
            "split": {"eval_identities": 3, "min_images": 2},
            "shards": {"max_samples": 16},
            "ray": {"num_cpus": 2, "num_actors": 2, "cpus_per_actor": 0.5, "chunk_size": 16},
        },
        "train": {
            "steps": 2,
            "batch_size": 4,
            "log_every": 1,
            "sample_every": 2,
            "data": {"num_workers": 0, "buffer": 16, "interleave": 2, "steps_per_epoch": 50},
            "aei_net": {"debug": TINY_AEI},
            "ghost": {"debug": TINY_AEI},
            "simswap": {"debug": TINY_SIMSWAP},
            "cvae": {"debug": {k: v for k, v in TINY_SIMSWAP.items() if k != "discriminator"}},
            "cvae_gan": {"debug": TINY_SIMSWAP},
            "korshunova": {
                "debug": TINY_KORSHUNOVA,
                "style": {"n_best": 4, "max_style_images": 8},
            },
            "rafswap": {"debug": TINY_RAFSWAP, "prior_faces": 8},
            "idatt": {"debug": TINY_IDATT},
            "ddpm_ilvr": {"debug": TINY_DDPM_ILVR},
        },
        "evaluate": {
            "num_sources": 3,
            "num_targets": 3,
            "batch_size": 4,
            "matrix_cell": 32,
            "blend": {"examples": 2},
            "fid": {"kid_subset_size": 3},
        },
    }


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return MODELS


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """Run the prepare job once on the subset; returns (paths, card, expected, out_dir)."""
    from infra.config import build
    from preprocessing.config import PrepareConfig
    from preprocessing.prepare import prepare

    tmp = tmp_path_factory.mktemp("prepared")
    sources, expected = write_inputs(tmp)
    params = small_params(tmp / "outputs", sources, models_with_stand_ins(tmp / "models"))
    paths = ProjectPaths.resolve(PathsConfig(**params["paths"]))
    cfg = build(PrepareConfig, params["prepare"], "prepare")
    out_dir = paths.stage_dir("prepare")
    card = prepare(cfg, paths, out_dir, track=False)
    return paths, card, expected, out_dir, params
