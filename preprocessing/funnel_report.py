"""The filter-funnel report: a table (CSV and Markdown) and a bar chart (PNG), as in
seed 000 Fig. 4. The CSV is a DVC plot; all three are MLflow artifacts of the prepare run."""

from __future__ import annotations

import csv
from pathlib import Path


def write_funnel(
    funnel: list[dict], out_dir: Path, title: str = "prepare: filter funnel"
) -> list[Path]:
    """Write ``funnel.csv``, ``funnel.md`` and ``funnel.png`` into ``out_dir``.

    funnel : ``[{"step", "rejected", "remaining"}, …]`` in application order.
    Returns the written paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "funnel.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["step", "rejected", "remaining"])
        w.writeheader()
        w.writerows(funnel)

    total = max(funnel[0]["remaining"], 1)
    lines = ["| step | rejected | remaining | % of input |", "|---|---:|---:|---:|"]
    lines += [
        f"| {s['step']} | {s['rejected']} | {s['remaining']} | {100 * s['remaining'] / total:.1f} |"
        for s in funnel
    ]
    md_path = out_dir / "funnel.md"
    md_path.write_text("\n".join(lines) + "\n")

    fig, ax = plt.subplots(figsize=(7, 0.45 * len(funnel) + 1.2))
    steps = [s["step"] for s in funnel][::-1]
    remaining = [s["remaining"] for s in funnel][::-1]
    bars = ax.barh(steps, remaining, color="#4c72b0")
    for bar, s in zip(bars, funnel[::-1], strict=True):
        label = f"{s['remaining']}" + (f"  (−{s['rejected']})" if s["rejected"] else "")
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " " + label, va="center")
    ax.set_xlabel("images remaining")
    ax.set_title(title)
    ax.set_xlim(0, total * 1.25)
    fig.tight_layout()
    png_path = out_dir / "funnel.png"
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return [csv_path, md_path, png_path]
