"""DeepSpeed engines against a bare PyTorch loop of the same model, side by side.

    python -m training.benchmarks.deepspeed_overhead [--model aei_net] [--steps 30] [--reps 3]

Both loops run the same phases (``training.train.run_phases``) on the same pre-loaded
batches from identical initial weights; repetitions alternate bare/DeepSpeed so machine
drift hits both. Prints seconds per step and the overhead (target ≤ 10 %).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from infra import distributed as dist
from training.benchmarks.common import (
    build_pair,
    loader_for,
    objective_for,
    setup,
    single_model_parser,
    time_steps,
)


def main(argv: list[str] | None = None) -> None:
    ap = single_model_parser(__doc__)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)

    dist.init_distributed()
    cfg, card, data_dir, store, _ = setup(Path(args.params), args.model, args.set)
    objective = objective_for(cfg, card, store, data_dir)
    loader = loader_for(cfg, card, data_dir, workers=0)
    batches = [next(loader) for _ in range(args.steps)]
    engines = {"bare": build_pair(cfg, card, False), "deepspeed": build_pair(cfg, card, True)}
    for g, d in engines.values():  # warm-up
        time_steps(objective, g, d, batches[:3], cfg.phases.d_reg_every)
    times = {"bare": [], "deepspeed": []}
    for _ in range(args.reps):
        for name, (g, d) in engines.items():
            times[name].append(time_steps(objective, g, d, batches, cfg.phases.d_reg_every))
    bare, ds = statistics.median(times["bare"]), statistics.median(times["deepspeed"])
    print(
        f"model {args.model} ({cfg.width}), batch {cfg.batch_size}, {cfg.arch.image_size} px, "
        f"ZeRO {cfg.generator.zero_stage}/{cfg.discriminator.zero_stage}, "
        f"{args.steps} steps x {args.reps}"
    )
    print(f"{'loop':<12}{'s/step (median)':>17}   runs")
    for name in ("bare", "deepspeed"):
        runs = ", ".join(f"{t:.4f}" for t in times[name])
        print(f"{name:<12}{statistics.median(times[name]):>17.4f}   {runs}")
    print(f"DeepSpeed overhead: {100 * (ds / bare - 1):+.1f} %")


if __name__ == "__main__":
    main()
