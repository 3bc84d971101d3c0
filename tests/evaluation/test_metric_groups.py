"""The metric-group registry: registration, unknown names, the order of ``metrics.json``, and
the bookkeeping groups on a hand-made context."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from evaluation import metric_groups as mg
from evaluation.config import EvaluateConfig
from evaluation.protocol import EvalFace, choose

#: ``metrics.json`` groups in the order the stage has always written them.
GROUPS = ["swap", "reconstruction", "fid", "paper", "blended", "protocol", "timing"]


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
    assert mg.enabled_metric_groups(cfg) == ["swap", "reconstruction", "protocol", "timing"]


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
        "setup_s",
        "swap_and_score_s",
        "reconstruction_and_fid_s",
        "blend_and_rescore_s",
        "wall_s",
    ]
    assert timing["pairs_per_s"] == pytest.approx(8 / 4.0)
    assert timing["swap_and_score_pairs_per_s"] == pytest.approx(8 / 2.0)
    assert timing["blend_and_rescore_s"] == 0.0
