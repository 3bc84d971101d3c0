"""img/s and peak memory per model (one process each, so peak RSS is the model's own).

    python -m training.benchmarks.models [--models aei_net,cvae,...] [--steps N]
        [--variants fp32,channels_last,bf16-autocast,compile,...]
        [--set train.width=paper --set train.generator.precision=bf16 ...] [--stand-ins]

Each model trains ``--steps`` steps through its DeepSpeed engines on pre-loaded batches
after ``--warmup`` warm-up steps. Peak memory: process peak RSS on the CPU, max allocated
on a GPU. Defaults follow the device: on a GPU 20 steps after 3 warm-up steps at the
configured batch; on the CPU 3 steps after 1 warm-up step at batch 2 (unless
``train.batch_size`` is set).

``--variants`` runs each model once per variant and prints one row per model per variant;
a variant is ``+``-joined names of :data:`VARIANT_SETTINGS` (e.g.
``channels_last+bf16-autocast``), applied to both engines on top of ``--set``. Every row
states what it measured: precision, memory format, autocast and compile of the generator
engine, and the device.

A model whose pretrained prior (``Swapper.priors``, e.g. Korshunova's VGG-19) is not in the
models directory fails, unless ``--stand-ins``: then it runs on a randomly initialised
stand-in of the published layout (:mod:`infra.stand_ins`; speed and memory do not depend on
the weights' values) and its row says so.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from infra.config import load_stage
from infra.models import ModelStore
from infra.stand_ins import overlay_models_dir
from training.config import TrainConfig
from training.registry import SWAPPERS

#: Engine settings a variant name stands for (applied to ``train.generator`` and
#: ``train.discriminator``); a variant joins names with ``+``.
VARIANT_SETTINGS: dict[str, dict[str, str]] = {
    "fp32": {},
    "channels_last": {"memory_format": "channels_last"},
    "bf16-autocast": {"autocast": "bf16"},
    "compile": {"compile": "true"},
    "bf16-deepspeed": {"precision": "bf16"},
}


def variant_overrides(variant: str) -> list[str]:
    """``--set`` overrides of ``variant`` (``+``-joined names of :data:`VARIANT_SETTINGS`)
    for both engines; ValueError naming the known names for an unknown one."""
    out = []
    for part in variant.split("+"):
        if part not in VARIANT_SETTINGS:
            raise ValueError(f"unknown variant {part!r}; known: {', '.join(VARIANT_SETTINGS)}")
        for engine in ("generator", "discriminator"):
            out += [f"train.{engine}.{k}={v}" for k, v in VARIANT_SETTINGS[part].items()]
    return out


def _one(params: str, model: str, steps: int, warmup: int, overrides: list[str]) -> dict:
    import torch

    from infra import distributed as dist
    from training.benchmarks.common import build_pair, loader_for, objective_for, setup, time_steps

    dist.init_distributed()
    cfg, card, data_dir, store, _ = setup(Path(params), model, overrides)
    objective = objective_for(cfg, card, store, data_dir)
    loader = loader_for(cfg, card, data_dir, workers=0)
    batches = [next(loader) for _ in range(max(steps, warmup))]
    g, d = build_pair(cfg, card, deepspeed=True)
    if warmup:
        time_steps(objective, g, d, batches[:warmup], cfg.phases.d_reg_every)
    sec = time_steps(objective, g, d, batches[:steps], cfg.phases.d_reg_every)
    cuda = torch.cuda.is_available()
    peak = (
        torch.cuda.max_memory_allocated()
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    n_g = sum(p.numel() for p in g.module.parameters())
    n_d = sum(p.numel() for p in d.module.parameters()) if d is not None else 0
    e = cfg.generator
    return {
        "model": model,
        "width": cfg.width,
        "size": cfg.arch.image_size,
        "batch": cfg.batch_size,
        "steps": steps,
        "img_per_s": cfg.batch_size / sec,
        "peak_gb": peak / 1024**3,
        "params_g_m": n_g / 1e6,
        "params_d_m": n_d / 1e6,
        "precision": e.precision,
        "memory_format": "NHWC" if e.memory_format == "channels_last" else "NCHW",
        "autocast": e.autocast,
        "compile": "yes" if e.compile else "no",
        "device": torch.cuda.get_device_name() if cuda else "cpu",
    }


def _device_defaults(args: argparse.Namespace) -> None:
    """Fill ``--steps``/``--warmup`` and the CPU's batch of 2 where not given."""
    import torch

    cuda = torch.cuda.is_available()
    if args.steps is None:
        args.steps = 20 if cuda else 3
    if args.warmup is None:
        args.warmup = 3 if cuda else 1
    if not cuda and not any(s.startswith("train.batch_size=") for s in args.set):
        args.set.append("train.batch_size=2")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--models", default=",".join(SWAPPERS))
    ap.add_argument("--steps", type=int, help="timed steps (GPU 20, CPU 3)")
    ap.add_argument("--warmup", type=int, help="untimed steps first (GPU 3, CPU 1)")
    ap.add_argument(
        "--variants",
        default="",
        help="comma-separated engine settings to compare, one row per model per variant: "
        f"+-joined names of {', '.join(VARIANT_SETTINGS)} (default: --set as given)",
    )
    ap.add_argument("--set", action="append", default=[], help="train.* override")
    ap.add_argument("--stand-ins", action="store_true", help="random stand-ins for missing priors")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        result = _one(args.params, args.one, args.steps, args.warmup, args.set)
        print("RESULT " + json.dumps(result))
        return
    _device_defaults(args)
    variants = [v for v in args.variants.split(",") if v] or [""]
    for v in filter(None, variants):  # fail fast on a typo, before any model runs
        variant_overrides(v)
    rows = []
    scratch = tempfile.TemporaryDirectory(prefix="fsp-stand-ins-")
    for model in args.models.split(","):
        missing = _missing_priors(args.params, model)
        overrides = list(args.set)
        if missing and args.stand_ins:
            base = load_stage(TrainConfig, "train", Path(args.params))[1].models_dir
            overlay = overlay_models_dir(base, Path(scratch.name), missing)
            overrides.append(f"paths.models_dir={overlay}")
        for variant in variants:
            extra = variant_overrides(variant) if variant else []
            row = _run_one(args, model, overrides + extra)
            if row is not None:
                priors = "stand-in" if missing else "real"
                rows.append(row | {"priors": priors, "variant": variant or "-"})
    scratch.cleanup()
    print_table(rows)


def _run_one(args: argparse.Namespace, model: str, overrides: list[str]) -> dict | None:
    """One model in its own process; its result row, or None (failure printed)."""
    cmd = [sys.executable, "-m", "training.benchmarks.models", "--params", args.params]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--one", model]
    for s in overrides:
        cmd += ["--set", s]
    out = subprocess.run(cmd, capture_output=True, text=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode or not line:
        print(f"{model}: failed\n{out.stderr[-2000:]}", flush=True)
        return None
    row = json.loads(line[0][7:])
    print(f"{model} {' '.join(overrides)}: {row['img_per_s']:.3g} img/s", flush=True)
    return row


def print_table(rows: list[dict]) -> None:
    """One line per row: what was measured (model, size, batch, engine settings, device)
    and img/s and peak memory."""
    print(
        f"{'model':<11}{'variant':<29}{'width':<7}{'px':>5}{'batch':>6}{'steps':>6}"
        f"{'prec':>6}{'mem':>6}{'autocast':>9}{'compile':>8}"
        f"{'G Mparams':>10}{'D Mparams':>10}{'img/s':>9}{'peak GB':>9}  device  priors"
    )
    for r in rows:
        print(
            f"{r['model']:<11}{r['variant']:<29}{r['width']:<7}{r['size']:>5}{r['batch']:>6}"
            f"{r['steps']:>6}{r['precision']:>6}{r['memory_format']:>6}{r['autocast']:>9}"
            f"{r['compile']:>8}{r['params_g_m']:>10.2f}{r['params_d_m']:>10.2f}"
            f"{r['img_per_s']:>9.3g}{r['peak_gb']:>9.2f}  {r['device']}  {r['priors']}"
        )


def _missing_priors(params: str, model: str) -> list[str]:
    """Registry names of ``model``'s priors that the models directory of ``params`` lacks."""
    paths = load_stage(TrainConfig, "train", Path(params))[1]
    store = ModelStore(paths.models_dir)
    return [p for p in SWAPPERS[model].priors if not store.available(p)]


if __name__ == "__main__":
    main()
