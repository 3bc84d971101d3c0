"""The paper-compatible networks and the ``paper`` metric group.

The expected key names and shapes below are written from the published code, not from the
modules under test: MuggleWang/CosFace_pytorch ``net.py`` (``sphere``, type 20),
natanielruiz/deep-head-pose ``code/hopenet.py`` (``Hopenet(torchvision Bottleneck, [3, 4, 6,
3], 66)``) and sicxu/Deep3DFaceRecon_pytorch ``models/networks.py`` (``ReconNetWrapper``,
``resnet50``, ``use_last_fc=False``) with ``models/base_model.py: save_networks`` (the
``net_recon`` wrapper). Checkpoints in those layouts, filled with random tensors, go through
the loaders with ``strict=True``. The group runs on randomly initialised networks saved under
the registry's file names.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import yaml

from evaluation import metric_groups as mg
from evaluation.config import EvaluateConfig
from evaluation.paper_metrics import PAPER_MODELS
from evaluation.protocol import EvalFace, choose
from infra.models import REGISTRY, ModelStore
from infra.paper_models import (
    Hopenet,
    ReconNet,
    Sphere20,
    load_cosface,
    load_hopenet,
    load_recon,
)

# ---- the published layouts, from the reference code ------------------------------------


def cosface_sphere20_layout() -> dict[str, tuple[int, ...]]:
    """``sphere(type=20)``: per stage ``Conv2d(in, out, 3, 2, 1)`` (bias) + ``PReLU(out)``,
    then ``Block``s (conv1, prelu1, conv2, prelu2; convs without bias); blocks [1, 2, 4, 1],
    widths [3, 64, 128, 256, 512]; ``fc = Linear(512 * 7 * 6, 512)``."""
    out: dict[str, tuple[int, ...]] = {}
    widths, blocks = [3, 64, 128, 256, 512], [1, 2, 4, 1]
    for i, n in enumerate(blocks, 1):
        c_in, c = widths[i - 1], widths[i]
        out[f"layer{i}.0.weight"] = (c, c_in, 3, 3)
        out[f"layer{i}.0.bias"] = (c,)
        out[f"layer{i}.1.weight"] = (c,)
        for b in range(2, 2 + n):
            out[f"layer{i}.{b}.conv1.weight"] = (c, c, 3, 3)
            out[f"layer{i}.{b}.prelu1.weight"] = (c,)
            out[f"layer{i}.{b}.conv2.weight"] = (c, c, 3, 3)
            out[f"layer{i}.{b}.prelu2.weight"] = (c,)
    out["fc.weight"] = (512, 512 * 7 * 6)
    out["fc.bias"] = (512,)
    return out


def resnet50_layout(prefix: str = "", batches_tracked: bool = True) -> dict[str, tuple]:
    """torchvision ResNet-50 without ``fc``: conv1/bn1, then ``Bottleneck`` stages [3, 4, 6,
    3] of widths [64, 128, 256, 512] (expansion 4, downsample in each first block)."""
    out: dict[str, tuple] = {}

    def bn(name: str, c: int) -> None:
        for k in ("weight", "bias", "running_mean", "running_var"):
            out[f"{prefix}{name}.{k}"] = (c,)
        if batches_tracked:
            out[f"{prefix}{name}.num_batches_tracked"] = ()

    out[f"{prefix}conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    inplanes = 64
    for i, (planes, n) in enumerate(zip([64, 128, 256, 512], [3, 4, 6, 3], strict=True), 1):
        for b in range(n):
            p = f"layer{i}.{b}"
            out[f"{prefix}{p}.conv1.weight"] = (planes, inplanes, 1, 1)
            bn(f"{p}.bn1", planes)
            out[f"{prefix}{p}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{p}.bn2", planes)
            out[f"{prefix}{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            bn(f"{p}.bn3", planes * 4)
            if b == 0:
                out[f"{prefix}{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    return out


def hopenet_layout(batches_tracked: bool = True) -> dict[str, tuple]:
    """Hopenet: ResNet-50 body + ``fc_yaw/pitch/roll = Linear(2048, 66)`` and the vestigial
    ``fc_finetune = Linear(2048 + 3, 3)``."""
    out = resnet50_layout(batches_tracked=batches_tracked)
    for head in ("fc_yaw", "fc_pitch", "fc_roll"):
        out[f"{head}.weight"], out[f"{head}.bias"] = (66, 2048), (66,)
    out["fc_finetune.weight"], out["fc_finetune.bias"] = (3, 2051), (3,)
    return out


def recon_layout() -> dict[str, tuple]:
    """``ReconNetWrapper``: ``backbone.`` ResNet-50 (no fc) + ``final_layers`` of seven
    ``conv1x1(2048, d, bias=True)``, d = 80, 64, 80, 3, 27, 2, 1."""
    out = resnet50_layout("backbone.")
    for i, d in enumerate([80, 64, 80, 3, 27, 2, 1]):
        out[f"final_layers.{i}.weight"], out[f"final_layers.{i}.bias"] = (d, 2048, 1, 1), (d,)
    return out


def random_state(layout: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of the layout (variances positive, counters integer)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in layout.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            out[k] = torch.rand(shape, generator=g) + 0.5
        else:
            out[k] = torch.randn(shape, generator=g) * 0.01
    return out


def _shapes(net: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


# ---- key names and shapes ---------------------------------------------------------------


def test_sphere20_has_the_cosface_pytorch_keys_and_shapes():
    expected = cosface_sphere20_layout()
    assert len(expected) == 46
    assert _shapes(Sphere20()) == expected
    assert expected["layer3.5.prelu2.weight"] == (256,)
    assert expected["layer4.0.weight"] == (512, 256, 3, 3)
    out = Sphere20()(torch.zeros(2, 3, 112, 96))
    assert out.shape == (2, 512)


def test_hopenet_has_the_deep_head_pose_keys_and_shapes():
    expected = hopenet_layout()
    assert len(expected) == 326  # 53 convs, 53 BNs × 5, 4 linear layers × 2
    assert _shapes(Hopenet()) == expected
    assert expected["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert expected["layer4.2.conv3.weight"] == (2048, 512, 1, 1)


def test_reconnet_has_the_deep3dfacerecon_keys_and_shapes():
    expected = recon_layout()
    assert len(expected) == 332
    assert _shapes(ReconNet()) == expected
    assert expected["final_layers.1.weight"] == (64, 2048, 1, 1)  # the expression head


# ---- published checkpoints through the loaders ------------------------------------------


def test_cosface_checkpoint_with_and_without_module_prefix_loads_strictly(tmp_path):
    state = random_state(cosface_sphere20_layout())
    torch.save(state, tmp_path / "plain.pth")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "parallel.pth")
    for name in ("plain.pth", "parallel.pth"):
        net = load_cosface(tmp_path / name)
        assert torch.equal(net.state_dict()["fc.weight"], state["fc.weight"])
        assert not net.training and not any(p.requires_grad for p in net.parameters())


def test_hopenet_pickle_without_batch_counters_loads_strictly(tmp_path):
    # the published pickle predates BatchNorm's num_batches_tracked (PyTorch 0.4.1)
    state = random_state(hopenet_layout(batches_tracked=False))
    assert len(state) == 326 - 53
    torch.save(state, tmp_path / "hopenet_robust_alpha1.pkl")
    net = load_hopenet(tmp_path / "hopenet_robust_alpha1.pkl")
    assert torch.equal(net.state_dict()["fc_roll.weight"], state["fc_roll.weight"])
    assert torch.equal(
        net.state_dict()["layer3.5.bn2.running_var"], state["layer3.5.bn2.running_var"]
    )
    angles = net.angles(np.zeros((2, 40, 40, 3), np.uint8))
    assert angles.shape == (2, 3) and np.all((angles >= -99) & (angles <= 96))


def test_deep3dfacerecon_training_checkpoint_loads_net_recon_strictly(tmp_path):
    state = random_state(recon_layout())
    checkpoint = {
        "net_recon": state,
        "opt_00": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
        "sched_00": {"last_epoch": 20},
    }
    torch.save(checkpoint, tmp_path / "epoch_20.pth")
    net = load_recon(tmp_path / "epoch_20.pth")
    w = state["final_layers.1.weight"]
    assert torch.equal(net.state_dict()["final_layers.1.weight"], w)
    exp = net.expression(np.zeros((2, 32, 32, 3), np.uint8))
    assert exp.shape == (2, 64)


def test_a_checkpoint_of_another_network_is_refused(tmp_path):
    torch.save(random_state(hopenet_layout()), tmp_path / "hopenet.pkl")
    with pytest.raises(RuntimeError, match="Missing key"):
        load_cosface(tmp_path / "hopenet.pkl")


# ---- the metric group on randomly initialised networks ----------------------------------

NETS = {"cosface_sphere20": Sphere20, "hopenet_robust_alpha1": Hopenet}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """Randomly initialised networks saved under the registry's file names, in the
    published layouts (Deep3DFaceRecon wrapped in ``net_recon``)."""
    root = tmp_path_factory.mktemp("paper_models")
    torch.manual_seed(0)
    for name, cls in NETS.items():
        (root / REGISTRY[name].file).parent.mkdir(parents=True, exist_ok=True)
        torch.save(cls().state_dict(), root / REGISTRY[name].file)
    recon = root / REGISTRY["deep3dfacerecon_resnet50"].file
    recon.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"net_recon": ReconNet().state_dict(), "opt_00": {}}, recon)
    return root


def _faces(identities: str) -> list[EvalFace]:
    """Synthetic 64-px faces, two per identity (smooth random images)."""
    rng = np.random.default_rng(0)
    faces = []
    for i, ident in enumerate(sorted(identities * 2)):
        small = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
        crop = cv2.resize(small, (64, 64), interpolation=cv2.INTER_CUBIC)
        faces.append(EvalFace(f"k{i}", ident, crop, np.zeros(4, np.float32), {}, None))
    return faces


def _context(store: ModelStore, identities: str = "abc") -> mg.EvalContext:
    """Context over two faces per identity, one source and one target face each. Of the two
    cross pairs of every target, the first swap is the source's crop and the second is the
    target's crop (``ctx.proto.pairs["copies"]`` says which)."""
    faces = _faces(identities)
    n = len(identities)
    proto = choose(faces, num_sources=n, num_targets=n, per_identity=1)
    pairs = proto.pairs
    first = ~pairs.loc[pairs["cross"], "target"].duplicated()
    pairs["copies"] = "target"
    pairs.loc[first.index[first], "copies"] = "source"
    swaps = np.stack([faces[row[row["copies"]]].crop for _, row in pairs.iterrows()])
    return mg.EvalContext(EvaluateConfig(), None, store, faces, proto, None, 64, swaps, 0.0)


def test_paper_group_is_registered_after_fid_and_can_be_turned_off():
    groups = mg.enabled_metric_groups(EvaluateConfig())
    assert groups.index("paper") == groups.index("fid") + 1
    assert "paper" not in mg.enabled_metric_groups(EvaluateConfig(paper_metrics="off"))
    # an unquoted `off` in params.yaml or --set is YAML 1.1's False
    assert EvaluateConfig(**yaml.safe_load("paper_metrics: off")).paper_metrics == "off"
    assert EvaluateConfig().paper_metrics == "auto"


def test_paper_group_on_random_networks(models_dir):
    ctx = _context(ModelStore(models_dir))
    paper = mg.calc_metric("paper", ctx)
    assert paper["cross_pairs"] == 6  # 3 targets × 2 sources of other identities
    assert [paper[m.metric]["model"] for m in PAPER_MODELS] == [m.name for m in PAPER_MODELS]
    assert all(paper[m.metric]["computed"] and not paper[m.metric]["reason"] for m in PAPER_MODELS)
    ident = paper["identity"]
    # half the swaps are their source's crop (retrieved), half their target's (never)
    assert ident["id_retrieval_top1"] == 0.5 and ident["id_retrieval_top1_sources"] >= 0.5
    assert ident["id_retrieval_chance"] == pytest.approx(2 / 6)  # 2 of the 6 faces
    assert ident["id_retrieval_chance_sources"] == pytest.approx(1 / 3)
    assert (ident["gallery_faces"], ident["source_faces"]) == (6, 3)

    table = ctx.per_pair["paper"].join(ctx.proto.pairs)
    assert list(table.index) == list(ctx.cross_rows)
    ids = np.array([f.identity for f in ctx.faces])
    copy_source = table[table["copies"] == "source"]
    copy_target = table[table["copies"] == "target"]
    assert len(copy_source) == len(copy_target) == 3
    # a swap equal to its source retrieves that source, in both galleries
    assert list(copy_source["paper_retrieved_identity"]) == list(ids[copy_source["source"]])
    assert list(copy_source["paper_retrieved_identity_sources"]) == list(ids[copy_source["source"]])
    assert np.allclose(copy_source["paper_id_cosine"], 1.0, atol=1e-5)
    assert list(copy_target["paper_retrieved_identity"]) == list(ids[copy_target["target"]])
    # a swap equal to its target keeps its pose and expression exactly; another face does not
    assert np.allclose(copy_target["paper_pose_error_deg"], 0.0, atol=1e-6)
    assert np.allclose(copy_target["paper_expression_error"], 0.0, atol=1e-6)
    assert (copy_source["paper_pose_error_deg"] > 0).all()
    assert (copy_source["paper_expression_error"] > 0).all()
    assert paper["pose"]["pose_error_deg"] == pytest.approx(table["paper_pose_error_deg"].mean())


def test_absent_weights_are_reported_as_not_computed_with_the_reason(tmp_path, models_dir):
    hopenet = REGISTRY["hopenet_robust_alpha1"].file
    (tmp_path / hopenet).parent.mkdir(parents=True)
    (tmp_path / hopenet).symlink_to(models_dir / hopenet)  # only Hopenet present
    ctx = _context(ModelStore(tmp_path), identities="ab")
    paper = mg.calc_metric("paper", ctx)
    assert paper["pose"]["computed"] and paper["pose"]["pose_error_deg"] >= 0
    assert list(ctx.per_pair["paper"].columns) == ["paper_pose_error_deg"]
    for model in PAPER_MODELS:
        if model.metric == "pose":
            continue
        entry, spec = paper[model.metric], REGISTRY[model.name]
        assert entry["computed"] is False
        assert entry["reason"] == (
            f"missing {spec.file} in the models directory (download {spec.url})"
        )
        assert all(entry[v] is None for v in model.values)
