"""`rl.temperature: auto`: the temperature whose share of mixed groups reaches the target, on a toy policy whose
share as a function of temperature is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coldstart.temperature import calibrate, choose_temperature, group_signal


def test_group_signal_by_hand():
    # groups of 4 with 0, 1, 2, 4 right: two mixed; p(1-p) = 0, 3/16, 1/4, 0
    assert group_signal([0, 1, 2, 4], 4) == pytest.approx({"mixed_share": 0.5, "bernoulli_variance": (3 / 16 + 1 / 4) / 4})


def test_calibration_on_a_toy_policy_whose_mixed_share_is_known():
    """Prompt i is right with p_i(T) = sigmoid(s_i / T): a sharp policy at low temperature (all right or all wrong),
    flatter above. A group of k is mixed with probability 1 - p^k - (1 - p)^k, so the expected share at T is the
    mean of that over the prompts. With 4,000 prompts the measured curve follows it within 0.03, and the choice is
    the lowest grid temperature whose expected share clears the target."""
    rng = np.random.default_rng(0)
    skills = rng.uniform(-6, 6, size=4000)
    k, grid = 8, [0.25, 0.5, 1.0, 2.0, 4.0]

    def p(t):
        return 1 / (1 + np.exp(-skills / t))

    def expected(t):
        return float(np.mean(1 - p(t) ** k - (1 - p(t)) ** k))

    def correct_at(t):
        return [int(c) for c in rng.binomial(k, p(t))]

    shares = [expected(t) for t in grid]
    assert shares == sorted(shares)  # hotter: more mixed groups
    target = (shares[1] + shares[2]) / 2  # between T = 0.5 and T = 1
    result = calibrate(correct_at, grid, k, target)
    assert [r["temperature"] for r in result["curve"]] == grid
    for row, share in zip(result["curve"], shares):
        assert math.isclose(row["mixed_share"], share, abs_tol=0.03)
    assert result["chosen"] == 1.0 and result["reason"].startswith("the lowest temperature")
    # a target no temperature reaches: the most mixed one
    out_of_reach = calibrate(correct_at, grid, k, 0.999)
    assert out_of_reach["chosen"] == 4.0 and out_of_reach["reason"].startswith("no temperature reaches")


def test_ties_go_to_the_lowest_temperature():
    curve = [{"temperature": 1.2, "mixed_share": 0.3}, {"temperature": 0.8, "mixed_share": 0.3}]
    assert choose_temperature(curve, 0.5)[0] == 0.8
    assert choose_temperature(curve, 0.3)[0] == 0.8
