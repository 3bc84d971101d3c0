"""Evaluation throughput on the current outputs (prepare + train must have run).

    python -m evaluation.benchmarks.throughput [--params params.yaml]

Runs the ``evaluate`` stage into a temporary folder (tracking to a temporary MLflow store)
and prints pairs/s with the time spent in each part.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from evaluation.config import EvaluateConfig
from evaluation.evaluate import evaluate
from infra.config import load_stage


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        cfg, paths = load_stage(EvaluateConfig, "evaluate", Path(args.params))
        m = evaluate(cfg, paths, Path(tmp) / "evaluate")
    t, p = m["timing"], m["protocol"]
    print(
        f"{p['pairs']} pairs ({p['cross_pairs']} cross, {p['self_pairs']} self) "
        f"at {p['resolution']} px, "
        f"gallery {p['gallery_faces']} faces, recogniser {p['recognizer']}"
    )
    for k in (
        "setup_s",
        "swap_and_score_s",
        "reconstruction_and_fid_s",
        "blend_and_rescore_s",
        "wall_s",
    ):
        print(f"  {k:<26}{t[k]:8.1f} s")
    print(
        f"throughput: {t['pairs_per_s']:.2f} pairs/s (all scoring after set-up), "
        f"{t['swap_and_score_pairs_per_s']:.2f} pairs/s (swap + score only)"
    )


if __name__ == "__main__":
    main()
