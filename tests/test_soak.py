"""A soak of hostile completions through the reward functions: bounded time each, no memory growth."""

import random

import pytest

from coldstart.rewards import REWARDS


def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def hostile(rng: random.Random) -> tuple[str, int | None]:
    """A hostile completion and the only integer answer it can be graded right for (None: none, or unknown)."""
    kind = rng.randrange(5)
    n = rng.randint(1000, 20000)
    if kind == 0:
        return "\\boxed{" + "{" * n, None
    if kind == 1:
        answer = rng.randint(0, 24)
        return "x" * (n * 50) + "\\boxed{" + str(answer) + "}", answer
    if kind == 2:
        return "\\boxed{" + "\\sqrt{" * (n // 100) + "2" + "}" * (n // 100) + "}", None
    if kind == 3:  # random LaTeX-ish noise: may end in a digit that matches, so it is not checked
        return "".join(rng.choice("\\{}^_$()[]0123456789abc ") for _ in range(n // 4)), -1
    return "\\boxed{" + "".join(rng.choice("123456789") for _ in range(n // 10)) + "}", None


@pytest.mark.slow
def test_soak_of_5000_hostile_completions_has_no_memory_growth():
    rng = random.Random(0)
    drawn = [hostile(rng) for _ in range(200)]
    completions = [[{"role": "assistant", "content": text}] for text, _ in drawn]
    assert sum(answer is not None and answer >= 0 for _, answer in drawn) > 20  # right answers do occur
    for reward in ("accuracy", "format"):  # warm up caches before the baseline
        REWARDS[reward](completions=completions[:50], answer=["7"] * 50, timeout=5.0)
    before = rss_mb()
    for round_ in range(25):  # 25 x 200 = 5,000
        scores = REWARDS["accuracy"](completions=completions, answer=[str(round_)] * 200, timeout=5.0)
        REWARDS["format"](completions=completions)
        for score, (_, answer) in zip(scores, drawn):
            if answer != -1:
                assert score == float(answer == round_)
    growth = rss_mb() - before
    assert growth < 50, f"resident memory grew by {growth:.0f} MB over 5,000 hostile completions"
