"""What a budget search tried, kept next to the output: `<out>.budget.json` (every setting: r/C per group,
file bytes, compression, proxy accuracy per task, calibrated accuracy of the finalists) and `<out>.budget.png`
(size against worst-task accuracy drop, with the Pareto front, the bounds and the ceiling)."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

from edgemerge.emm.files import atomic_write_bytes


def record_paths(output: str | os.PathLike) -> tuple[Path, Path]:
    output = Path(output)
    return output.with_name(output.name + ".budget.json"), output.with_name(output.name + ".budget.png")


def write_record(output: str | os.PathLike, search: dict) -> tuple[Path, Path]:
    """Writes both files for the search summary `search` (merge_files' summary["search"]); returns their paths."""
    json_path, png_path = record_paths(output)
    record = {k: v for k, v in search.items() if k != "calibration"}
    atomic_write_bytes(json_path, (json.dumps(record, indent=1, default=float) + "\n").encode("utf-8"))
    atomic_write_bytes(png_path, pareto_png(search))
    return json_path, png_path


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (size, drop) points no other point beats on both (smaller and no larger drop), by size."""
    front, best = [], float("inf")
    for size, drop in sorted(points):
        if drop < best:
            front.append((size, drop))
            best = drop
    return front


def pareto_png(search: dict) -> bytes:
    """The size/accuracy plot as PNG bytes (matplotlib, Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in search["table"] if r.get("file_bytes")]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    inside = [(r["file_bytes"] / 1024, r["drop"]) for r in rows if r.get("feasible")]
    outside = [(r["file_bytes"] / 1024, r["drop"]) for r in rows if not r.get("feasible")]
    if inside:
        ax.scatter(*zip(*inside), s=18, c="tab:blue", alpha=0.6, label="tried (uncalibrated proxy)")
        front = pareto_front(inside)
        ax.step(*zip(*front), where="post", c="tab:blue", lw=1, label="Pareto front (proxy)")
    if outside:
        ax.scatter(*zip(*outside), s=18, c="lightgrey", label="above the ceiling")
    finals = [r for r in rows if r.get("finalist") and r.get("calibrated_drop") is not None]
    if finals:
        ax.scatter([r["file_bytes"] / 1024 for r in finals], [r["calibrated_drop"] for r in finals], s=40,
                   marker="D", c="tab:orange", label="finalists, calibrated")
    ax.scatter([search["file_bytes"] / 1024], [max(search["drop"].values())], s=160, marker="*", c="tab:red",
               zorder=5, label="chosen" if search["within_budget"] else "best found (outside budget)")
    budget = search["budget"]
    if budget.get("max_drop") is not None:
        ax.axhline(budget["max_drop"], c="tab:green", ls="--", lw=1, label=f"max-drop {budget['max_drop']:g}")
    if budget.get("min_compression") and search.get("original_bytes"):
        ax.axvline(search["original_bytes"] / budget["min_compression"] / 1024, c="tab:purple", ls="--", lw=1,
                   label=f"min-compression {budget['min_compression']:g}x")
    if search.get("ceiling_bytes"):
        ax.axvline(search["ceiling_bytes"] / 1024, c="black", ls=":", lw=1, label="ceiling (accu preset)")
    ax.set_xlabel("file size (KiB)")
    ax.set_ylabel("worst-task accuracy drop")
    ax.set_title("budget search: size against accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
