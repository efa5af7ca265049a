"""Evaluation statistics: pass@k, bootstrap intervals."""

from __future__ import annotations

from math import comb


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n - c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def bootstrap_ci(values: list[float], num_resamples: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (resampling problems)."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(num_resamples, len(x)))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def paired_difference(a: list[float], b: list[float], num_resamples: int = 2000, level: float = 0.95,
                      seed: int = 0) -> dict[str, float]:
    """Mean of `a - b` over the same problems, its paired-bootstrap interval, and McNemar's exact p-value."""
    if len(a) != len(b):
        raise ValueError(f"paired difference needs the same problems: {len(a)} vs {len(b)} scores")
    diff = [x - y for x, y in zip(a, b)]
    low, high = bootstrap_ci(diff, num_resamples, level, seed)
    only_a = sum(1 for x, y in zip(a, b) if x > y)
    only_b = sum(1 for x, y in zip(a, b) if y > x)
    return {"difference": sum(diff) / len(diff), "ci_low": low, "ci_high": high,
            "only_a": only_a, "only_b": only_b, "mcnemar_p": mcnemar_exact(only_a, only_b)}


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar test on the discordant pairs (binomial with p = 1/2); 1.0 when there are none."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


# Student t quantiles at 0.975 for 1..10 degrees of freedom; the normal 1.96 beyond 30, interpolated between
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228]


def _t975(df: int) -> float:
    if df <= len(_T975):
        return _T975[df - 1]
    return 1.96 + (2.228 - 1.96) * max(0.0, (30 - df) / 20)


def mean_ci_across_seeds(values: list[float]) -> dict[str, float]:
    """Mean over seeds with a 95% t interval (seeds are few: a bootstrap over them would be too narrow)."""
    from statistics import mean, stdev

    m = mean(values)
    if len(values) < 2:
        return {"mean": m, "ci_low": m, "ci_high": m, "seeds": len(values)}
    half = _t975(len(values) - 1) * stdev(values) / len(values) ** 0.5
    return {"mean": m, "ci_low": m - half, "ci_high": m + half, "seeds": len(values)}
