"""The training loader's throughput against what a training step consumes.

    python -m training.benchmarks.loader [--model aei_net] [--workers 1] [--batches 200]

Measures pairs/s delivered by the loader alone (after its first batch), for each shard
access (``indexed`` random access and ``stream`` sequential reads, side by side), and pairs/s
one training step consumes (DeepSpeed engines, the configured model), and prints the ratios
(target ≥ 10x).
"""

from __future__ import annotations

import time
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


def _loader_rate(cfg, card, data_dir: Path, workers: int, batches: int) -> float:
    """Pairs/s of a fresh loader after its first batch (worker start-up, index, buffer)."""
    loader = loader_for(cfg, card, data_dir, workers=workers)
    next(loader)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return batches * cfg.batch_size / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    ap = single_model_parser(__doc__)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)

    dist.init_distributed()
    cfg, card, data_dir, store, _ = setup(Path(args.params), args.model, args.set)
    rates = {}
    for access in ("indexed", "stream"):
        data = cfg.data.model_copy(update={"access": access})
        rates[access] = _loader_rate(
            cfg.model_copy(update={"data": data}), card, data_dir, args.workers, args.batches
        )
    loader = loader_for(cfg, card, data_dir, workers=args.workers)
    objective = objective_for(cfg, card, store, data_dir)
    g, d = build_pair(cfg, card, deepspeed=True)
    batches = [next(loader) for _ in range(args.steps)]
    time_steps(objective, g, d, batches[:3], cfg.phases.d_reg_every)
    step_rate = cfg.batch_size / time_steps(objective, g, d, batches, cfg.phases.d_reg_every)
    print(
        f"model {args.model} ({cfg.width}), batch {cfg.batch_size}, {cfg.arch.image_size} px, "
        f"{args.workers} loader worker(s)"
    )
    for access, rate in rates.items():
        print(f"loader ({access:7s}): {rate:9.1f} pairs/s  = {rate / step_rate:6.1f}x a step")
    print(f"training step:     {step_rate:9.1f} pairs/s")


if __name__ == "__main__":
    main()
