"""Training on real shards: every model through DeepSpeed on the CPU, one process and two
(gloo, ZeRO 0 and 2), kill-and-resume, and an overfit run whose identity loss falls."""

import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from infra.config import build
from training.config import TrainConfig
from training.registry import SWAPPERS, load_generator
from training.train import train

BIN = Path(sys.executable).parent


def _cfg(params: dict, **over) -> TrainConfig:
    section = {**params["train"], **over}
    return build(TrainConfig, section, "train")


@pytest.mark.parametrize("model", list(SWAPPERS))
def test_two_step_training_smoke(prepared, tmp_path, model):
    paths, card, _, _, params = prepared
    over = {"phases": {"d_reg_every": 2}}  # Dreg runs at step 2
    if model == "ghost":  # with the eye loss on (released off), so its path runs too
        over["ghost"] = {**params["train"]["ghost"], "weights": {"eye": 2.0}}
    cfg = _cfg(params, model=model, **over)
    out_dir = tmp_path / "train"
    summary = train(cfg, paths, out_dir)

    assert summary["steps"] == 2
    adversarial = SWAPPERS[model].discriminator is not None
    identity = model != "ddpm_ilvr"  # the DDPM's fine-tuning has only L_simple
    for k in ("Loss/G/total", *(["Loss/G/id"] if identity else ["Loss/G/eps"])):
        assert math.isfinite(summary[k]), k
    if adversarial:
        assert math.isfinite(summary["Loss/D/total"])
    if identity:
        assert 0.0 <= summary["Loss/G/id"] <= 2.0
    if not adversarial:  # Gmain only: no discriminator statistics, no discriminator checkpoint
        assert not any(k.startswith(("Loss/D", "Scores/D")) for k in summary)
        assert not (out_dir / "checkpoints" / "discriminator").exists()
    if model == "ghost":
        assert math.isfinite(summary["Loss/G/eye"])
    if model in ("simswap", "cvae_gan"):
        assert math.isfinite(summary["Loss/G/wfm"]) and summary["Loss/D/gp"] >= 0
    if model in ("cvae", "cvae_gan"):
        assert summary["Loss/G/kl"] > 0
    if model == "korshunova":
        for k in ("content", "style", "light", "tv"):
            assert summary[f"Loss/G/{k}"] > 0, k
    if model == "rafswap":  # the collapse monitors of seed 000 Fig. 9
        assert summary["Styles/std"] > 0 and 0 < summary["Mask/mean"] < 1
        assert summary["Loss/G/lpips"] > 0 and summary["Loss/G/w_norm"] > 0
    if model == "idatt":
        assert summary["Loss/G/lpips"] > 0 and summary["Loss/G/3d"] == 0  # no Deep3D weights
    assert pd.read_csv(out_dir / "losses.csv")["step"].tolist() == [1, 2]
    assert (out_dir / "checkpoints" / "latest").read_text() == "step00000002"
    assert (out_dir / "samples" / "step_000002.png").is_file()

    gen, meta = load_generator(out_dir / "generator.pt")
    assert meta["model"] == model and meta["id_dim"] == card.embedding.dim and meta["step"] == 2
    if model == "korshunova":  # the training identity with the most faces (the default)
        counts = {k: n for k, n in card.splits["train"].identities.items() if k}  # labelled
        assert meta["source_identity"] == min(counts, key=lambda k: (-counts[k], k))
    size = cfg.arch.image_size
    extra = {
        "source": torch.rand(1, 3, size, size) * 2 - 1,
        "face_mask": torch.ones(1, 1, size, size),
        "regions": (torch.rand(1, 4, size, size) > 0.8).float(),
        "source_regions": (torch.rand(1, 4, size, size) > 0.8).float(),
    }
    with torch.no_grad():
        y, _ = gen(
            torch.zeros(1, 3, size, size),
            torch.nn.functional.normalize(torch.randn(1, 128), dim=1),
            *(extra[n] for n in getattr(gen, "extra_inputs", ())),
        )
    assert y.shape == (1, 3, size, size) and torch.isfinite(y).all()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _params_file(params: dict, tmp_path: Path, out: Path, **train_over) -> Path:
    p = {
        **params,
        "paths": {**params["paths"], "output_dir": str(out)},
        "train": {**params["train"], **train_over},
    }
    f = tmp_path / f"params-{out.name}.yaml"
    f.write_text(yaml.safe_dump(p))
    return f


def _env() -> dict:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _link_prepared(src: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "prepare").symlink_to(src)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize(
    ("model", "zero"),
    [(m, z) for m in SWAPPERS for z in (0, 2)],
)
def test_two_process_gloo_training(prepared, tmp_path, model, zero):
    _, _, _, prep_dir, params = prepared
    out = tmp_path / "out"
    _link_prepared(prep_dir, out)
    engines = {"zero_stage": zero}
    pfile = _params_file(
        params,
        tmp_path,
        out,
        model=model,
        steps=3,
        log_every=1,
        generator=engines,
        discriminator=engines,
        data={"num_workers": 0},
    )
    cmd = [
        str(BIN / "torchrun"),
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        str(BIN / "fsp"),
        "train",
        "-p",
        str(pfile),
    ]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "2 process(es)" in proc.stderr
    rows = pd.read_csv(out / "train" / "losses.csv")
    assert rows["step"].tolist() == [1, 2, 3] and rows["Loss/G/total"].notna().all()
    assert (rows["Timing/img_per_s"] > 0).all()
    ckpt = out / "train" / "checkpoints"
    assert {p.name for p in ckpt.glob("step00000003.rank*.pt")} == {
        "step00000003.rank0.pt",
        "step00000003.rank1.pt",
    }


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize(
    "model", ["simswap", "cvae", "cvae_gan", "korshunova", "rafswap", "idatt", "ddpm_ilvr"]
)
def test_killed_training_resumes_to_the_same_state(prepared, tmp_path, model):
    _, _, _, prep_dir, params = prepared
    over = {
        "model": model,
        "steps": 40,
        "log_every": 1,
        "sample_every": 1000,
        "checkpoint": {"every": 10, "keep": 5},
        "data": {"num_workers": 0},
    }

    def run(out: Path, kill_after: str | None = None) -> None:
        _link_prepared(prep_dir, out) if not (out / "prepare").exists() else None
        cmd = [str(BIN / "fsp"), "train", "-p", str(_params_file(params, tmp_path, out, **over))]
        proc = subprocess.Popen(
            cmd,
            env=_env(),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if kill_after:
            latest = out / "train" / "checkpoints" / "latest"
            while not (latest.is_file() and latest.read_text() >= kill_after):
                assert proc.poll() is None, "finished before it could be killed"
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]

    full, resumed = tmp_path / "full", tmp_path / "resumed"
    run(full)
    run(resumed, kill_after="step00000010")
    killed_at = (resumed / "train" / "checkpoints" / "latest").read_text()
    assert killed_at < "step00000040"
    run(resumed)  # resume: continues from the latest checkpoint

    a, _ = load_generator(full / "train" / "generator.pt")
    b, meta = load_generator(resumed / "train" / "generator.pt")
    assert meta["step"] == 40
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.allclose(va, vb, atol=1e-6), ka
    ta = torch.load(full / "train" / "checkpoints" / "step00000040.rank0.pt", weights_only=False)
    tb = torch.load(resumed / "train" / "checkpoints" / "step00000040.rank0.pt", weights_only=False)
    assert ta["loader"] == tb["loader"] and ta["bad_total"] == tb["bad_total"] == 0
    curve_a = pd.read_csv(full / "train" / "losses.csv")
    curve_b = pd.read_csv(resumed / "train" / "losses.csv")
    assert curve_b["step"].tolist() == list(range(1, 41))  # no gap, no repeat
    for col in ("Loss/G/total", "Loss/G/id"):
        if col in curve_a:  # the DDPM's fine-tuning has no identity loss
            pd.testing.assert_series_equal(curve_a[col], curve_b[col], atol=1e-5)


@pytest.mark.slow
@pytest.mark.integration
def test_overfit_identity_loss_decreases(prepared, tmp_path):
    paths, _, _, _, params = prepared
    # an overfitting setting (not the paper's): strong identity weight, higher learning rate
    cfg = _cfg(
        params,
        steps=100,
        log_every=10,
        sample_every=1000,
        ema={"enabled": False},
        aei_net={
            "optimizer": {"generator": {"lr": 1e-3, "weight_decay": 1e-4}},
            "weights": {"adv": 1.0, "id": 20.0, "att": 10.0, "rec": 10.0},
            "debug": params["train"]["aei_net"]["debug"],
        },
    )
    train(cfg, paths, tmp_path / "train")
    curve = pd.read_csv(tmp_path / "train" / "losses.csv")
    first, last = curve["Loss/G/id"].iloc[0], curve["Loss/G/id"].iloc[-2:].mean()
    assert last < first - 0.15, (first, last)


@pytest.mark.slow
@pytest.mark.integration
def test_sigterm_saves_a_checkpoint_and_the_rerun_resumes(prepared, tmp_path):
    _, _, _, prep_dir, params = prepared
    out = tmp_path / "out"
    _link_prepared(prep_dir, out)

    def start(steps: int) -> subprocess.Popen:
        over = {"steps": steps, "log_every": 1, "sample_every": 1000, "data": {"num_workers": 0}}
        cmd = [str(BIN / "fsp"), "train", "-p", str(_params_file(params, tmp_path, out, **over))]
        return subprocess.Popen(
            cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )

    proc = start(500)
    curve = out / "train" / "losses.csv"
    while not (curve.is_file() and len(curve.read_text().splitlines()) > 3):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    stopped = int(err.strip().splitlines()[-1].split("at step ")[1].split(":")[0])
    assert "Traceback" not in err and 3 <= stopped < 500
    ckpt = (out / "train" / "checkpoints" / "latest").read_text()
    assert ckpt == f"step{stopped:08d}"

    rerun = start(stopped + 2)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-3000:]
    assert f"from step {stopped} " in err
    assert pd.read_csv(curve)["step"].tolist()[-2:] == [stopped + 1, stopped + 2]
