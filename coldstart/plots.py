"""Figures written next to the stage outputs (matplotlib, no display needed)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def compatibility_histogram(records: list[dict[str, Any]], path: Path, title: str, group: str = "style") -> None:
    """Histogram of compatibility, one series per `group` value (all samples when there is none)."""
    groups: dict[str, list[float]] = defaultdict(list)
    for r in records:
        groups[str(r.get(group) or "all")].append(r["compatibility"])
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = [i / 40 for i in range(41)]
    for name, values in sorted(groups.items()):
        ax.hist(values, bins=bins, alpha=0.55, label=f"{name} (n={len(values)})")
    ax.set_xlabel("compatibility exp(-NLL per token)")
    ax.set_ylabel("samples")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def weights_over_training(metrics: list[dict[str, Any]], path: Path) -> None:
    """Per-style mean compatibility and CADFT weight against the optimizer step."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, what, label in ((axes[0], "compat", "compatibility"), (axes[1], "weight", "CADFT weight")):
        series: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for m in metrics:
            for key, value in m.items():
                if key.startswith("style/") and key.endswith(f"/{what}"):
                    series[key.split("/")[1]].append((m["step"], value))
        for style, points in sorted(series.items()):
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=style)
        ax.set_xlabel("step")
        ax.set_ylabel(f"mean {label}")
        ax.set_title(f"{label} by style")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
