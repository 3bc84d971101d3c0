"""The metric-group registry: registration, unknown names, the order of ``metrics.json``, and
the bookkeeping groups on a hand-made context."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from evaluation import metric_groups as mg
from evaluation.config import EvaluateConfig
from evaluation.protocol import EvalFace, choose

#: ``metrics.json`` groups in the order the stage has always written them.
GROUPS = ["swap", "reconstruction", "facke", "fid", "paper", "blended", "protocol", "timing"]


def _context(cfg: EvaluateConfig | None = None) -> mg.EvalContext:
    faces = [
        EvalFace(f"k{i}", ident, np.zeros((4, 4, 3), np.uint8), np.zeros(4), {}, None)
        for i, ident in enumerate("aabbc")
    ]
    proto = choose(faces, num_sources=3, num_targets=2, per_identity=1)
    return mg.EvalContext(
        cfg=cfg or EvaluateConfig(),
        paths=None,
        store=None,
        faces=faces,
        proto=proto,
        scorer=SimpleNamespace(rec=SimpleNamespace(name="dlib_resnet")),
        size=64,
        swaps=np.zeros((len(proto.pairs), 64, 64, 3), np.uint8),
        started=0.0,
    )


@pytest.fixture
def empty_registry(monkeypatch):
    """A fresh registry for the test; the real one is restored afterwards."""
    monkeypatch.setattr(mg, "_metric_dict", {})
    monkeypatch.setattr(mg, "_metric_enabled", {})


def test_registered_groups_are_the_metrics_json_keys_in_order():
    assert mg.list_metric_groups() == GROUPS
    assert mg.enabled_metric_groups(EvaluateConfig()) == GROUPS
    cfg = EvaluateConfig(fid={"enabled": False}, blend={"enabled": False}, paper_metrics="off")
    assert mg.enabled_metric_groups(cfg) == [
        "swap",
        "reconstruction",
        "facke",
        "protocol",
        "timing",
    ]


def test_registering_a_group_runs_it_in_registration_order(empty_registry):
    @mg.register_metric("second_letter")
    def _b(ctx):
        return {"value": 2}

    @mg.register_metric("first_letter", enabled=lambda cfg: cfg.fid.enabled)
    def _a(ctx):
        return {"value": 1, "pairs": len(ctx.proto.pairs)}

    ctx = _context()
    metrics = mg.calc_metrics(ctx)
    assert list(metrics) == ["second_letter", "first_letter"]  # registration, not name order
    assert list(json.loads(json.dumps(metrics))) == ["second_letter", "first_letter"]
    assert metrics["first_letter"] == {"value": 1, "pairs": len(ctx.proto.pairs)}
    assert set(ctx.durations) == {"second_letter", "first_letter"}
    off = _context(EvaluateConfig(fid={"enabled": False}))
    assert list(mg.calc_metrics(off)) == ["second_letter"]
    assert list(mg.calc_metrics(ctx, ["first_letter", "second_letter"])) == [
        "first_letter",
        "second_letter",
    ]
    with pytest.raises(ValueError, match="registered already"):
        mg.register_metric("second_letter")(_a)


def test_unknown_group_name_is_an_error_naming_the_registered_ones(empty_registry):
    mg.register_metric("known")(lambda ctx: {})
    ctx = _context()
    with pytest.raises(ValueError, match=r"unknown metric group 'nope'.*\['known'\]"):
        mg.calc_metric("nope", ctx)
    with pytest.raises(ValueError, match="unknown metric group"):
        mg.calc_metrics(ctx, ["known", "nope"])


def test_protocol_and_timing_groups_on_a_hand_made_context():
    ctx = _context()
    protocol = mg.calc_metric("protocol", ctx)
    # sources k0 (a), k2 (b), k4 (c); targets k1 (a), k3 (b): 3 × 2 pairs, 2 of one identity,
    # plus 2 self-swaps
    assert protocol == {
        "sources": 3,
        "targets": 2,
        "pairs": 8,
        "cross_pairs": 4,
        "self_pairs": 2,
        "gallery_faces": 5,
        "recognizer": "dlib_resnet",
        "resolution": 64,
    }
    ctx.durations |= {"setup": 1.0, "generate": 1.0, "swap": 1.0, "reconstruction": 2.0}
    timing = mg.calc_metric("timing", ctx)
    assert list(timing) == [
        "pairs_per_s",
        "swap_and_score_pairs_per_s",
        "seconds_per_swap",
        "setup_s",
        "swap_and_score_s",
        "reconstruction_and_fid_s",
        "blend_and_rescore_s",
        "wall_s",
    ]
    assert timing["pairs_per_s"] == pytest.approx(8 / 4.0)
    assert timing["swap_and_score_pairs_per_s"] == pytest.approx(8 / 2.0)
    assert timing["seconds_per_swap"] == pytest.approx(1.0 / 8)  # generate / pairs
    assert timing["blend_and_rescore_s"] == 0.0


def test_facke_table_1_columns_on_a_hand_made_context():
    """Facke §3.2: reconstruction MSE of the self-swaps, 1 − cos of the generator's own
    identity encoder against the codes it took, and the recogniser's L2 distance."""
    ctx = _context()
    pairs = ctx.proto.pairs
    rng = np.random.default_rng(0)
    ctx.swaps = rng.integers(0, 256, ctx.swaps.shape, dtype=np.uint8)
    for t in pairs.loc[ctx.self_rows, "target"]:  # self-swap targets: each face's crop
        ctx.faces[t].crop = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    cos = np.linspace(-0.5, 1.0, len(pairs))
    ctx.per_pair["swap"] = pairs.assign(id_cosine=cos)
    ctx.codes = torch.nn.functional.normalize(torch.randn(5, 3), dim=1)

    def encode(x):  # the "identity" of a swap: its mean colour, as a 3-vector
        return x.mean(dim=(2, 3))

    ctx.encode_identity = encode
    got = mg.calc_metric("facke", ctx)

    cross = pairs["cross"].to_numpy()
    assert got["id_retrieval_l2"] == pytest.approx(np.sqrt(2 - 2 * cos[cross]).mean())
    self_swaps = ctx.swaps[ctx.self_rows] / 255.0
    real = np.stack([ctx.faces[t].crop for t in pairs.loc[ctx.self_rows, "target"]]) / 255.0
    assert got["reconstruction_loss"] == pytest.approx(((self_swaps - real) ** 2).mean())
    colours = torch.from_numpy(ctx.swaps[ctx.cross_rows] / 127.5 - 1).float().mean(dim=(1, 2))
    src = ctx.codes[torch.as_tensor(pairs.loc[ctx.cross_rows, "source"].to_numpy(copy=True))]
    expected = (1 - torch.nn.functional.cosine_similarity(colours, src, dim=1)).mean()
    assert got["identity_loss"] == pytest.approx(float(expected), rel=1e-5)
    assert got["recognizer"] == "dlib_resnet"
    # without an encoder (or codes) the identity loss is not computed
    ctx.encode_identity = None
    assert mg.calc_metric("facke", ctx)["identity_loss"] is None


def test_fixed_source_protocol_has_one_source_and_no_self_swaps():
    """A network trained for one identity (Korshunova): that identity is the only source,
    the other identities are targets, nothing is reconstructed."""
    faces = [
        EvalFace(f"k{i}", ident, np.zeros((4, 4, 3), np.uint8), np.zeros(4), {}, None)
        for i, ident in enumerate(["a", "a", "b", "own", "own", "c", "c"])
    ]
    proto = choose(faces, num_sources=3, num_targets=5, per_identity=1, fixed_source="own")
    assert proto.sources == [3]
    assert [faces[t].identity for t in proto.targets] == ["a", "b", "c"]
    assert proto.pairs["cross"].all() and not proto.pairs["self"].any()
    assert list(proto.pairs.source.unique()) == [3] and len(proto.pairs) == 3
    with pytest.raises(ValueError, match="source identity 'nobody'"):
        choose(faces, 3, 3, 1, fixed_source="nobody")
    ctx = _context()
    ctx.proto = proto
    ctx.faces = faces
    ctx.swaps = np.zeros((len(proto.pairs), 64, 64, 3), np.uint8)
    assert mg.calc_metric("reconstruction", ctx) == {"mse": None, "psnr_db": None, "ssim": None}
    ctx.per_pair["swap"] = pd.DataFrame({"cross": [True] * 3, "id_cosine": [1.0, 0.5, 0.0]})
    facke = mg.calc_metric("facke", ctx)
    assert facke["reconstruction_loss"] is None
    assert facke["id_retrieval_l2"] == pytest.approx((0 + 1 + np.sqrt(2)) / 3)


@pytest.mark.parametrize(
    ("model", "draw", "intra", "name"),
    [
        ("simswap", "images", "same_image", "SimSwap"),  # SimSwap as published
        ("simswap", "identities", "same_identity", "SimSwap-IG"),  # Facke §2.1.4
        ("simswap", "identities", "same_image", "SimSwap"),  # intra pairs of one image: no IG
        ("cvae", "images", "same_image", "CVAE"),
        ("cvae_gan", "identities", "same_identity", "CVAE-GAN-IG"),
        ("korshunova", None, None, "korshunova"),
    ],
)
def test_facke_table_names_methods_as_table_1(model, draw, intra, name):
    from evaluation.compare import facke_method

    assert facke_method(model, draw, intra) == name
