"""img/s and peak memory per model (one process each, so peak RSS is the model's own).

    python -m training.benchmarks.models [--models aei_net,cvae,...] [--steps 20]
        [--set train.width=paper --set train.generator.precision=bf16 ...] [--stand-ins]

Each model trains ``--steps`` steps through its DeepSpeed engines on pre-loaded batches
after 3 warm-up steps. Peak memory: process peak RSS on the CPU, max allocated on a GPU.
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


def _one(params: str, model: str, steps: int, overrides: list[str]) -> dict:
    import torch

    from infra import distributed as dist
    from training.benchmarks.common import build_pair, loader_for, objective_for, setup, time_steps

    dist.init_distributed()
    cfg, card, data_dir, store, _ = setup(Path(params), model, overrides)
    objective = objective_for(cfg, card, store, data_dir)
    loader = loader_for(cfg, card, data_dir, workers=0)
    batches = [next(loader) for _ in range(steps)]
    g, d = build_pair(cfg, card, deepspeed=True)
    time_steps(objective, g, d, batches[:3], cfg.phases.d_reg_every)
    sec = time_steps(objective, g, d, batches, cfg.phases.d_reg_every)
    peak = (
        torch.cuda.max_memory_allocated()
        if torch.cuda.is_available()
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    n_g = sum(p.numel() for p in g.module.parameters())
    n_d = sum(p.numel() for p in d.module.parameters()) if d is not None else 0
    return {
        "model": model,
        "width": cfg.width,
        "size": cfg.arch.image_size,
        "batch": cfg.batch_size,
        "img_per_s": cfg.batch_size / sec,
        "peak_gb": peak / 1024**3,
        "params_g_m": n_g / 1e6,
        "params_d_m": n_d / 1e6,
        "precision": cfg.generator.precision,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--models", default=",".join(SWAPPERS))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--set", action="append", default=[], help="train.* override")
    ap.add_argument("--stand-ins", action="store_true", help="random stand-ins for missing priors")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(_one(args.params, args.one, args.steps, args.set)))
        return
    rows = []
    scratch = tempfile.TemporaryDirectory(prefix="fsp-stand-ins-")
    for model in args.models.split(","):
        missing = _missing_priors(args.params, model)
        overrides = list(args.set)
        if missing and args.stand_ins:
            base = load_stage(TrainConfig, "train", Path(args.params))[1].models_dir
            overlay = overlay_models_dir(base, Path(scratch.name), missing)
            overrides.append(f"paths.models_dir={overlay}")
        cmd = [
            sys.executable,
            "-m",
            "training.benchmarks.models",
            "--params",
            args.params,
            "--steps",
            str(args.steps),
            "--one",
            model,
        ]
        for s in overrides:
            cmd += ["--set", s]
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode or not line:
            print(f"{model}: failed\n{out.stderr[-2000:]}")
            continue
        rows.append(json.loads(line[0][7:]) | {"priors": "stand-in" if missing else "real"})
    scratch.cleanup()
    print(
        f"{'model':<11}{'width':<7}{'px':>5}{'batch':>6}{'prec':>6}"
        f"{'G Mparams':>10}{'D Mparams':>10}"
        f"{'img/s':>9}{'peak GB':>9}  priors"
    )
    for r in rows:
        print(
            f"{r['model']:<11}{r['width']:<7}{r['size']:>5}{r['batch']:>6}{r['precision']:>6}"
            f"{r['params_g_m']:>10.2f}{r['params_d_m']:>10.2f}{r['img_per_s']:>9.3g}"
            f"{r['peak_gb']:>9.2f}  {r['priors']}"
        )


def _missing_priors(params: str, model: str) -> list[str]:
    """Registry names of ``model``'s priors that the models directory of ``params`` lacks."""
    paths = load_stage(TrainConfig, "train", Path(params))[1]
    store = ModelStore(paths.models_dir)
    return [p for p in SWAPPERS[model].priors if not store.available(p)]


if __name__ == "__main__":
    main()
