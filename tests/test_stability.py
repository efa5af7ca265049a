import math

import pytest

from coldstart.stability import curve_stability


def test_curve_stability_by_hand():
    s = curve_stability([1.0, 1.0, 1.0, 10.0, 1.0, 1.0])
    assert s["steps"] == 6 and s["spikes"] == 1  # 10 > 3 x the median (1) of the steps before
    mean = 15 / 6
    sd = math.sqrt((5 * (1 - mean) ** 2 + (10 - mean) ** 2) / 6)
    assert s["cv"] == pytest.approx(sd / mean)
    # second differences: 0, 9, -18, 9  -> mean absolute 9, over the mean level 2.5
    assert s["roughness"] == pytest.approx(9 / 2.5)
    line = curve_stability([1.0, 2.0, 3.0, 4.0, None, float("nan")])
    assert line["steps"] == 4 and line["roughness"] == 0 and line["spikes"] == 0
    assert curve_stability([1.0, 2.0])["cv"] is None
