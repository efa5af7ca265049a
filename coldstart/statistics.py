"""Evaluation statistics on scipy: pass@k, bootstrap intervals, McNemar's exact test, intervals across seeds, rank
associations."""

from __future__ import annotations

from math import comb
from typing import Any


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n - c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def bootstrap_ci(values: list[float], num_resamples: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (resampling problems), by `scipy.stats.bootstrap`."""
    import numpy as np
    from scipy.stats import bootstrap

    x = np.asarray(values, dtype=float)
    if np.all(x == x[0]):  # every resample has the same mean; scipy warns and returns nan
        return float(x[0]), float(x[0])
    result = bootstrap((x,), np.mean, n_resamples=num_resamples, confidence_level=level, method="percentile",
                       random_state=seed, vectorized=True)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def macro_mean_ci(groups: list[list[float]], num_resamples: int = 2000, level: float = 0.95,
                  seed: int = 0) -> tuple[float, float, float]:
    """The mean of the groups' means (a benchmark suite's macro average: every benchmark weighs the same, whatever
    its size) and its percentile bootstrap interval, each group's problems resampled on their own
    (`scipy.stats.bootstrap` with one sample per group)."""
    import numpy as np
    from scipy.stats import bootstrap

    samples = [np.asarray(g, dtype=float) for g in groups]
    mean = float(np.mean([s.mean() for s in samples]))
    if all(np.all(s == s[0]) for s in samples):  # no resample moves it
        return mean, mean, mean

    def statistic(*resampled, axis=-1):
        return np.mean([r.mean(axis=axis) for r in resampled], axis=0)

    result = bootstrap(tuple(samples), statistic, n_resamples=num_resamples, confidence_level=level,
                       method="percentile", random_state=seed, vectorized=True)
    return mean, float(result.confidence_interval.low), float(result.confidence_interval.high)


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
    """Two-sided exact McNemar test on the discordant pairs: `scipy.stats.binomtest` with p = 1/2; 1.0 when there
    are none."""
    from scipy.stats import binomtest

    n = only_a + only_b
    return 1.0 if n == 0 else float(binomtest(only_a, n, 0.5).pvalue)


def seed_problem_interval(scores: list[list[float]], level: float = 0.95, num_resamples: int = 2000,
                          seed: int = 0) -> dict[str, float]:
    """Mean of `scores[s][p]` (training seed s, held-out problem p: the same problems for every seed) with an
    interval that counts both sources of variation.

    The scores are read as a crossed design, score = mean + seed effect + problem effect + their interaction, with
    mean squares MS_S (seeds, S - 1 degrees of freedom), MS_P (problems, P - 1) and MS_I (the interaction,
    (S - 1)(P - 1)). The variance of the mean is (MS_S + MS_P - MS_I) / (S P): the seeds' part (training randomness
    with the interaction it carries) and the problems' part less the interaction the seeds' part already counts; the
    interval is mean +- t * sqrt of it, with Satterthwaite's degrees of freedom for that combination of the three
    mean squares (each with its own degrees of freedom), never below S - 1: the t quantile over S - 1 when the seeds
    dominate, about the normal one when the problems do. When the problems' part is not above the interaction
    (MS_P <= MS_I), or there is one problem, the seeds' part alone, with S - 1. The interval is never narrower
    than the interaction's own variance makes it, MS_I / (S P) with its (S - 1)(P - 1) degrees of freedom: seeds
    whose means agree more closely than the interaction would let them (two seeds with equal means) do not make it
    a point. A bootstrap over three seeds would be too narrow (it sees three values), which this avoids. One seed:
    the bootstrap over problems. `se` is the standard error the interval is drawn from (its half-width over the
    t quantile; for the bootstrap, over the normal one).
    """
    import numpy as np
    from scipy.stats import t

    x = np.asarray(scores, dtype=float)
    num_seeds, num_problems = x.shape
    mean = float(x.mean())
    if num_seeds == 1:
        low, high = bootstrap_ci(list(x[0]), num_resamples, level, seed)
        return {"mean": mean, "ci_low": low, "ci_high": high, "seeds": 1, "df": float("inf"),
                "se": (high - low) / 2 / float(t.ppf((1 + level) / 2, float("inf")))}
    by_seed, by_problem = x.mean(axis=1), x.mean(axis=0)
    ms_seeds = num_problems * by_seed.var(ddof=1)
    total, df = ms_seeds / (num_seeds * num_problems), num_seeds - 1.0
    if num_problems > 1:
        ms_problems = num_seeds * by_problem.var(ddof=1)
        ms_interaction = ((x - by_seed[:, None] - by_problem[None, :] + mean) ** 2).sum() / (
            (num_seeds - 1) * (num_problems - 1))
        if ms_problems > ms_interaction:
            combined = ms_seeds + ms_problems - ms_interaction
            total = combined / (num_seeds * num_problems)
            df = combined**2 / (ms_seeds**2 / (num_seeds - 1) + ms_problems**2 / (num_problems - 1)
                                + ms_interaction**2 / ((num_seeds - 1) * (num_problems - 1)))
            # Satterthwaite's approximation breaks down where MS_P - MS_I is small against either: its degrees of
            # freedom then fall towards 0 though the variance is mostly the seeds' (S - 1 degrees of freedom)
            df = max(df, num_seeds - 1.0)
    half = float(t.ppf((1 + level) / 2, df) * total**0.5) if total > 0 else 0.0
    if num_problems > 1:
        floor_df = (num_seeds - 1.0) * (num_problems - 1.0)
        floor = float(t.ppf((1 + level) / 2, floor_df) * (ms_interaction / (num_seeds * num_problems)) ** 0.5)
        if floor > half:
            half, df = floor, floor_df
    if half == 0:
        return {"mean": mean, "ci_low": mean, "ci_high": mean, "seeds": num_seeds, "df": float("inf"), "se": 0.0}
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "seeds": num_seeds, "df": float(df),
            "se": half / float(t.ppf((1 + level) / 2, df))}


def spearman(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Spearman's rank correlation with a permutation p-value (Pearson's on the ranks through `scipy.stats.pearsonr`
    with a `PermutationMethod`: exact up to 7 pairs, 9,999 seeded pairings beyond). Not `spearmanr`'s own p-value:
    its t approximation calls a perfect ordering of 4 runs certain (p = 0), where 2 of the 24 orderings are as
    extreme. Where either has no spread there is no correlation to test: rho None, p 1."""
    from scipy.stats import PermutationMethod, pearsonr, rankdata

    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return {"rho": None, "p": 1.0}
    r = pearsonr(rankdata(xs), rankdata(ys), method=PermutationMethod(n_resamples=9999, rng=0))
    return {"rho": float(r.statistic), "p": float(r.pvalue)}


def rank_correlation(xs: list[float], ys: list[float], controls: list[float] | None = None,
                     num_resamples: int = 2000, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Spearman's rank correlation of `xs` with `ys` and its percentile bootstrap interval (the pairs resampled,
    `scipy.stats.bootstrap` with `paired=True`); with `controls`, the partial rank correlation holding them fixed
    (Pearson's on the ranks, each less its linear fit on the controls' ranks): whether the association remains
    at a given length, say. Controls without spread control for nothing and are left out. rho and the interval
    are None where either side has no spread."""
    import numpy as np
    from scipy.stats import bootstrap, rankdata

    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    z = np.asarray(controls, dtype=float) if controls is not None else None
    if z is not None and np.all(z == z[0]):
        z = None
    if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return {"rho": None, "interval": [None, None], "controlled": z is not None}

    def statistic(*columns):
        ranked = [rankdata(col) for col in columns]
        a, b = ranked[0], ranked[1]
        if len(ranked) == 3:
            design = np.column_stack([np.ones(len(a)), ranked[2]])
            a = a - design @ np.linalg.lstsq(design, a, rcond=None)[0]
            b = b - design @ np.linalg.lstsq(design, b, rcond=None)[0]
        spread = np.sqrt((a - a.mean()) @ (a - a.mean()) * ((b - b.mean()) @ (b - b.mean())))
        return float((a - a.mean()) @ (b - b.mean()) / spread) if spread > 0 else 0.0

    data = (x, y) if z is None else (x, y, z)
    rho = statistic(*data)
    result = bootstrap(data, statistic, paired=True, vectorized=False, n_resamples=num_resamples,
                       confidence_level=level, method="percentile", random_state=seed)
    interval = [float(result.confidence_interval.low), float(result.confidence_interval.high)]
    return {"rho": rho, "interval": interval, "controlled": z is not None}


def rank_associations(diagnostics: dict[str, list[float | None]], outcome: list[float]) -> dict[str, dict[str, float]]:
    """Spearman's rank correlation of each diagnostic with `outcome` over the same units (e.g. runs), with its
    permutation p-value (`spearman`) adjusted for testing several diagnostics at once (Benjamini-Hochberg,
    `scipy.stats.false_discovery_control`). A unit where a diagnostic is missing is left out of that one; a
    diagnostic measured on fewer than 4 units, or with no spread there, is not tested."""
    import numpy as np
    from scipy.stats import false_discovery_control

    tested = {}
    for name, values in diagnostics.items():
        pairs = [(x, y) for x, y in zip(values, outcome) if x is not None]
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        if len(pairs) < 4 or len(set(xs)) < 2 or len(set(ys)) < 2:
            continue
        tested[name] = {**spearman(xs, ys), "units": len(pairs)}
    if tested:
        adjusted = false_discovery_control(np.array([t["p"] for t in tested.values()]), method="bh")
        for t, p in zip(tested.values(), adjusted):
            t["p_adjusted"] = float(p)
    return tested


def mean_present(values: list[float | None]) -> float | None:
    """The mean of the values that are there (None when none is)."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def curve_area(steps: list[float], values: list[float]) -> float | None:
    """The area under a curve measured at `steps` (trapezoids) over the steps it spans: the curve's mean height,
    in its own units, so that runs of different lengths compare (a learning curve's sample efficiency: a run that
    gets there sooner has the larger area). None with fewer than two points."""
    from scipy.integrate import trapezoid

    if len(steps) < 2 or steps[-1] == steps[0]:
        return None
    return float(trapezoid(values, steps)) / (steps[-1] - steps[0])


def minimum_detectable_effect(standard_error: float, df: float, level: float = 0.95, power: float = 0.8) -> float:
    """The smallest true difference a two-sided test at `level` detects with probability `power`, for an estimate
    with this standard error and degrees of freedom: (t quantile at (1 + level) / 2 + t quantile at `power`) x se;
    2.80 se at 95% and 80% power with many degrees of freedom, 3.72 se with 4 (five seeds)."""
    from scipy.stats import t

    return float((t.ppf((1 + level) / 2, df) + t.ppf(power, df)) * standard_error)


def equivalence_test(mean: float, standard_error: float, df: float, margin: float, alpha: float = 0.05) -> dict[str, Any]:
    """Schuirmann's two one-sided tests that the true difference lies within (-margin, margin): the p-values of
    "at or below -margin" and "at or above margin" rejected, and `equivalent` when both are below `alpha` (the
    same as the 1 - 2 alpha interval lying inside the margins)."""
    from scipy.stats import t

    if standard_error <= 0:
        inside = abs(mean) < margin
        return {"p": 0.0 if inside else 1.0, "equivalent": inside}
    p_low = float(t.sf((mean + margin) / standard_error, df))
    p_high = float(t.cdf((mean - margin) / standard_error, df))
    p = max(p_low, p_high)
    return {"p": p, "equivalent": p < alpha}


def adjusted_difference(after_a: list[float], before_a: list[float], after_b: list[float], before_b: list[float],
                        level: float = 0.95) -> dict[str, Any] | None:
    """Analysis of covariance: group a's `after` minus group b's at equal `before` (after = group mean + slope x
    before + error, one slope for both groups, least squares), with its standard error, t interval on n - 3
    degrees of freedom and minimum detectable effect. A group that started high is not credited with what the
    slope predicts from its start, so a unit that starts low and regains ground (regression to the mean) does not
    count as a gain. The units are taken as independent: in a comparison the starts share their training seeds,
    but the data are fixed apart from them (a seed sets the order and the sampling), and pairing them would halve
    the degrees of freedom for a weak link. None where it cannot be estimated: fewer than four units, or
    `before` constant within each group (the slope is then not told apart from the groups' difference)."""
    import numpy as np
    from scipy.stats import t

    y = np.asarray([*after_a, *after_b], dtype=float)
    x = np.asarray([*before_a, *before_b], dtype=float)
    group = np.asarray([1.0] * len(after_a) + [0.0] * len(after_b))
    df = len(y) - 3
    within = np.var(before_a) * len(before_a) + np.var(before_b) * len(before_b) if before_a and before_b else 0.0
    if df < 1 or len(after_a) != len(before_a) or len(after_b) != len(before_b) or within <= 0:
        return None
    design = np.column_stack([np.ones_like(y), group, x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coef
    variance = float(residual @ residual) / df * np.linalg.inv(design.T @ design)
    se = float(variance[1, 1] ** 0.5)
    half = float(t.ppf((1 + level) / 2, df)) * se
    difference = float(coef[1])
    return {"difference": difference, "ci_low": difference - half, "ci_high": difference + half, "se": se,
            "df": float(df), "mde": minimum_detectable_effect(se, df, level), "slope": float(coef[2]),
            "seeds": min(len(after_a), len(after_b)), "significant": difference - half > 0 or difference + half < 0}
