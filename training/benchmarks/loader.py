"""The training loader's throughput against what a training step consumes.

    python -m training.benchmarks.loader [--model aei_net] [--workers 1] [--batches 200]

Measures pairs/s delivered by the loader alone (after its first batch) and pairs/s one
training step consumes (DeepSpeed engines, the configured model), and prints the ratio
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


def main(argv: list[str] | None = None) -> None:
    ap = single_model_parser(__doc__)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)

    dist.init_distributed()
    cfg, card, data_dir, store, _ = setup(Path(args.params), args.model, args.set)
    loader = loader_for(cfg, card, data_dir, workers=args.workers)
    next(loader)  # worker start-up and buffer fill
    t0 = time.perf_counter()
    for _ in range(args.batches):
        next(loader)
    load_rate = args.batches * cfg.batch_size / (time.perf_counter() - t0)

    objective = objective_for(cfg, card, store)
    g, d = build_pair(cfg, card, deepspeed=True)
    batches = [next(loader) for _ in range(args.steps)]
    time_steps(objective, g, d, batches[:3], cfg.phases.d_reg_every)
    step_rate = cfg.batch_size / time_steps(objective, g, d, batches, cfg.phases.d_reg_every)
    print(
        f"model {args.model} ({cfg.width}), batch {cfg.batch_size}, {cfg.arch.image_size} px, "
        f"{args.workers} loader worker(s)"
    )
    print(f"loader:        {load_rate:9.1f} pairs/s")
    print(f"training step: {step_rate:9.1f} pairs/s")
    print(f"loader / step: {load_rate / step_rate:9.1f}x")


if __name__ == "__main__":
    main()
