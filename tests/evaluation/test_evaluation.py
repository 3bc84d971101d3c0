"""Evaluation: protocol, metric functions with known answers, sanity checks on real faces,
the stage end to end and the run comparison."""

import json

import numpy as np
import pandas as pd
import pytest

from evaluation.attributes import (
    AttributeModels,
    expression_error,
    eye_landmark_error,
    pose_error,
    ssim,
)
from evaluation.protocol import EvalFace, Scorer, choose, load_eval_faces, resize, summarize
from evaluation.recognizers import build_recognizer
from infra.geometry import transform_points
from infra.models import ModelStore


def _face(key, identity):
    return EvalFace(key, identity, np.zeros((4, 4, 3), np.uint8), np.zeros(4), {}, None)


def test_protocol_pairs_sources_targets_and_self_swaps():
    faces = [_face(f"k{i}", ident) for i, ident in enumerate("aaabbcdd")]
    p = choose(faces, num_sources=3, num_targets=2, per_identity=2)
    assert p.sources == [0, 3, 5]  # first face of a, b, c
    assert p.targets == [1, 2, 4, 3]  # other faces first: a1 a2, b4 b3
    cross = p.pairs[p.pairs.cross]
    assert all(
        faces[t].identity != faces[s].identity
        for t, s in zip(cross.target, cross.source, strict=True)
    )
    assert set(p.pairs[p.pairs.self].target) == set(p.targets)
    assert len(p.pairs) == len(p.targets) * len(p.sources) + len(p.targets) - 1  # (3, 3) twice
    with pytest.raises(ValueError, match="2 held-out identities"):
        choose([_face("x", "a")], 2, 2, 1)


def test_attribute_metrics_known_answers():
    rng = np.random.default_rng(0)
    lm = rng.uniform(50, 200, (468, 3))
    a = np.deg2rad(20)
    M = np.array([[1.3 * np.cos(a), -1.3 * np.sin(a), 7], [1.3 * np.sin(a), 1.3 * np.cos(a), -4]])
    moved = np.concatenate([transform_points(lm[:, :2], M), lm[:, 2:]], 1)
    assert expression_error(lm, lm) == pytest.approx(0, abs=1e-9)
    assert expression_error(moved, lm) == pytest.approx(0, abs=1e-9)  # similarity-invariant
    assert expression_error(lm + rng.normal(0, 3, lm.shape), lm) > 0.01
    shifted = lm.copy()
    shifted[:, 0] += 5.0
    from evaluation.attributes import interocular

    assert eye_landmark_error(shifted, lm) == pytest.approx(5.0 / interocular(lm))
    assert pose_error(np.array([3.0, 4.0, 0.0]), np.zeros(3)) == pytest.approx(5.0)
    img = rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    assert ssim(img, img) == pytest.approx(1.0)
    assert ssim(img, 255 - img) < 0.2


@pytest.fixture(scope="module")
def eval_setup(prepared, models_dir):
    _, card, _, data_dir, _ = prepared
    store = ModelStore(models_dir)
    faces = load_eval_faces(card, data_dir)
    rec = build_recognizer("dlib_resnet", store, card.embedding.name)
    scorer = Scorer(faces, rec, AttributeModels(store), model_size=64)
    return faces, scorer, rec, card


def test_unswapped_pairs_sanity(eval_setup):
    faces, scorer, _, _ = eval_setup
    proto = choose(faces, num_sources=3, num_targets=3, per_identity=2)
    pairs = proto.pairs
    crops64 = resize(np.stack([f.crop for f in faces]), 64)
    # output = target: the target identity is retrieved and no attribute changes
    as_target = scorer.score(crops64[pairs.target.to_numpy()], pairs)
    cross = as_target[as_target.cross]
    assert (cross.retrieved_identity == cross.target_identity).mean() >= 0.95
    assert cross.pose_error_deg.max() < 1e-3 and cross.expression_error.max() < 1e-6
    assert summarize(as_target)["target_retrieval_top1"] >= 0.95
    # output = source: the source identity is retrieved, at cosine ~1
    as_source = scorer.score(crops64[pairs.source.to_numpy()], pairs)
    m = summarize(as_source)
    assert m["id_retrieval_top1"] >= 0.95 and m["id_cosine"] > 0.99
    # chance level: each source identity's share of the held-out gallery
    ids = scorer.gallery_ids
    expected = np.mean([(ids == ids[s]).mean() for s in pairs[pairs.cross].source])
    assert m["id_retrieval_chance"] == pytest.approx(expected)
    assert 0 < m["id_retrieval_chance"] < m["id_retrieval_top1"]


def test_independent_recognizer_tells_held_out_identities_apart(eval_setup):
    _, scorer, _, card = eval_setup
    ids = scorer.gallery_ids
    sims = scorer.gallery @ scorer.gallery.T
    np.fill_diagonal(sims, -2)  # leave-one-out retrieval among the held-out faces
    has_pair = np.array([(ids == i).sum() > 1 for i in ids])
    assert (ids[sims.argmax(1)] == ids)[has_pair].mean() >= 0.9
    with pytest.raises(ValueError, match="independent"):
        build_recognizer(card.embedding.name, ModelStore("/nonexistent"), card.embedding.name)


@pytest.mark.slow
@pytest.mark.integration
def test_evaluate_stage_and_compare(prepared, tmp_path):
    from evaluation.compare import compare_runs
    from evaluation.config import EvaluateConfig
    from evaluation.evaluate import evaluate
    from infra.config import build
    from infra.paths import PathsConfig, ProjectPaths
    from training.config import TrainConfig
    from training.train import train

    _, _, _, prep_dir, params = prepared
    out = tmp_path / "out"
    out.mkdir()
    (out / "prepare").symlink_to(prep_dir)
    paths = ProjectPaths.resolve(PathsConfig(**{**params["paths"], "output_dir": str(out)}))
    train(build(TrainConfig, params["train"], "train"), paths, out / "train")
    cfg = build(
        EvaluateConfig, {**params["evaluate"], "num_sources": 3, "num_targets": 3}, "evaluate"
    )
    metrics = evaluate(cfg, paths, out / "evaluate")

    saved = json.loads((out / "evaluate" / "metrics.json").read_text())
    assert (
        saved["protocol"]["recognizer"] == "dlib_resnet" and saved["protocol"]["cross_pairs"] == 6
    )
    for part in ("swap", "blended"):
        assert set(saved[part]) >= {
            "id_retrieval_top1",
            "id_cosine",
            "pose_error_deg",
            "expression_error",
            "eye_landmark_error",
        }
        assert 0 <= saved[part]["id_retrieval_top1"] <= 1
    assert saved["fid"]["fid"] is None and "not computed" in saved["fid"]["status"]
    assert "pt_inception-2015-12-05-6726825d.pth" in saved["fid"]["status"]
    assert 0 <= saved["reconstruction"]["ssim"] <= 1
    assert metrics["timing"]["pairs_per_s"] > 0
    pairs = pd.read_parquet(out / "evaluate" / "pairs.parquet")
    assert (
        len(pairs) == saved["protocol"]["pairs"] and pairs["blended_id_cosine"].notna().sum() == 6
    )
    for name in ("face_matrix.png", "blended.png", "blend_comparison.csv"):
        assert (out / "evaluate" / name).stat().st_size > 0
    table = compare_runs(paths, "faceswap")
    assert len(table) == 1 and table.loc[0, "train.model"] == "aei_net"
    assert table.loc[0, "swap/id_retrieval_top1"] == pytest.approx(
        saved["swap"]["id_retrieval_top1"]
    )


def test_expression_opening_error_ignores_face_shape():
    """A swap that takes the source's face outline keeps the target's expression: the
    opening error stays 0 while the shape-inclusive Procrustes error does not; opening the
    mouth is seen by both."""
    from evaluation.attributes import expression_error, expression_opening_error
    from preprocessing.parsing.facemesh_regions import FACE_OVAL

    rng = np.random.default_rng(0)
    target = rng.uniform(40, 200, (468, 3))
    # a plausible frame for the measured points: eyes, brows and lips where faces have them
    target[[33, 133, 159, 145, 105]] = [
        [80, 100, 0],
        [110, 100, 0],
        [95, 95, 0],
        [95, 105, 0],
        [95, 80, 0],
    ]
    target[[263, 362, 386, 374, 334]] = [
        [170, 100, 0],
        [140, 100, 0],
        [155, 95, 0],
        [155, 105, 0],
        [155, 80, 0],
    ]
    target[[13, 14, 78, 308]] = [[125, 170, 0], [125, 176, 0], [105, 173, 0], [145, 173, 0]]
    wider = target.copy()
    centre = target[FACE_OVAL, :2].mean(0)
    wider[FACE_OVAL, :2] = centre + (target[FACE_OVAL, :2] - centre) * [1.15, 1.0]
    assert expression_opening_error(wider, target) == pytest.approx(0.0, abs=1e-12)
    assert expression_error(wider, target) > 0.01
    open_mouth = target.copy()
    open_mouth[14, 1] += 12
    assert expression_opening_error(open_mouth, target) > 0.05


@pytest.mark.slow
@pytest.mark.integration
def test_a_per_identity_network_is_scored_against_its_one_source(prepared, tmp_path):
    """Korshunova's CNN (seed 000 §II.A) swaps every target to the identity it was trained
    for: that identity's face is the only source, its training faces join the gallery,
    there is no self-swap; the swap is pasted back by Poisson blending."""
    from evaluation.compare import facke_table
    from evaluation.config import EvaluateConfig
    from evaluation.evaluate import evaluate
    from infra.config import build
    from infra.paths import PathsConfig, ProjectPaths
    from training.config import TrainConfig
    from training.train import train

    _, card, _, prep_dir, params = prepared
    out = tmp_path / "out"
    out.mkdir()
    (out / "prepare").symlink_to(prep_dir)
    paths = ProjectPaths.resolve(PathsConfig(**{**params["paths"], "output_dir": str(out)}))
    train_cfg = build(TrainConfig, {**params["train"], "model": "korshunova"}, "train")
    train(train_cfg, paths, out / "train")
    over = {"num_sources": 3, "num_targets": 3, "blend": {"examples": 2, "method": "poisson"}}
    cfg = build(EvaluateConfig, {**params["evaluate"], **over}, "evaluate")
    saved = evaluate(cfg, paths, out / "evaluate")

    labelled = {k: n for k, n in card.splits["train"].identities.items() if k}
    own = min(labelled.items(), key=lambda kv: (-kv[1], kv[0]))
    held_out = card.splits["eval"].identities
    proto = saved["protocol"]
    assert proto["sources"] == 1 and proto["self_pairs"] == 0
    assert proto["cross_pairs"] == proto["targets"] == min(3, len(held_out))
    assert proto["gallery_faces"] == sum(held_out.values()) + min(own[1], max(held_out.values()))
    assert saved["reconstruction"] == {"mse": None, "psnr_db": None, "ssim": None}
    assert saved["facke"]["reconstruction_loss"] is None
    assert 0 <= saved["facke"]["id_retrieval_l2"] <= 2 and 0 <= saved["facke"]["identity_loss"] <= 2
    pairs = pd.read_parquet(out / "evaluate" / "pairs.parquet")
    assert set(pairs["source_identity"]) == {own[0]}
    assert not pairs["target_identity"].isin([own[0]]).any()
    assert 0 <= saved["swap"]["id_retrieval_chance"] <= 1 and "id_cosine" in saved["blended"]
    for name in ("face_matrix.png", "blended.png"):
        assert (out / "evaluate" / name).stat().st_size > 0
    table = facke_table(paths, "faceswap")
    assert table["method"].tolist() == ["korshunova"] and table.loc[0, "Recon Loss"] != 0


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("model", ["rafswap", "idatt", "ddpm_ilvr"])
def test_prior_based_swappers_through_the_protocol(prepared, tmp_path, model):
    """RAFSwap and IDATT take the source image (and RAFSwap both faces' region masks) instead
    of the dataset's embedding, DDPM-ILVR samples a whole chain per swap: each trains on its
    test-size priors and goes through the common protocol with self-swaps."""
    from evaluation.config import EvaluateConfig
    from evaluation.evaluate import evaluate
    from infra.config import build
    from infra.paths import PathsConfig, ProjectPaths
    from training.config import TrainConfig
    from training.train import train

    _, _, _, prep_dir, params = prepared
    out = tmp_path / "out"
    out.mkdir()
    (out / "prepare").symlink_to(prep_dir)
    paths = ProjectPaths.resolve(PathsConfig(**{**params["paths"], "output_dir": str(out)}))
    train(build(TrainConfig, {**params["train"], "model": model}, "train"), paths, out / "train")
    over = {"blend": {"enabled": False}, "fid": {"enabled": False}}  # covered elsewhere
    cfg = build(EvaluateConfig, {**params["evaluate"], **over}, "evaluate")
    saved = evaluate(cfg, paths, out / "evaluate")

    proto = saved["protocol"]
    assert proto["sources"] == 3 and proto["cross_pairs"] > 0 and proto["self_pairs"] > 0
    assert 0 <= saved["swap"]["id_retrieval_top1"] <= 1 and saved["swap"]["pose_error_deg"] >= 0
    assert saved["reconstruction"]["mse"] > 0 and 0 <= saved["facke"]["identity_loss"] <= 2
    assert saved["timing"]["seconds_per_swap"] > 0
    pairs = pd.read_parquet(out / "evaluate" / "pairs.parquet")
    assert pairs["cross"].sum() == proto["cross_pairs"] and pairs["self_swap"].sum() > 0
    assert (out / "evaluate" / "face_matrix.png").stat().st_size > 0
