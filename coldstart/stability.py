"""Training stability from a run's per-step log: how much a series (the gradient norm, the loss) moves from step to
step, in scale-free terms, so that losses of different sizes (DFT's is 10-20x below SFT's) compare."""

from __future__ import annotations

import math
import statistics


def curve_stability(values: list[float | None], spike_factor: float = 3.0, window: int = 5) -> dict[str, float | None]:
    """The coefficient of variation of the series (population sd over mean), its spikes (steps above `spike_factor`
    times the median of the `window` steps before), and its roughness (the mean absolute second difference over
    the mean absolute level: 0 for a straight line). Missing and non-finite steps are left out."""
    x = [float(v) for v in values if v is not None and math.isfinite(v)]
    if len(x) < 3:
        return {"steps": len(x), "cv": None, "spikes": None, "roughness": None}
    mean = statistics.fmean(x)
    level = statistics.fmean(abs(v) for v in x)
    spikes = sum(x[i] > spike_factor * statistics.median(x[max(0, i - window):i]) for i in range(1, len(x)))
    second = statistics.fmean(abs(x[i + 1] - 2 * x[i] + x[i - 1]) for i in range(1, len(x) - 1))
    return {"steps": len(x), "cv": statistics.pstdev(x) / mean if mean else None, "spikes": spikes,
            "roughness": second / level if level else None}
