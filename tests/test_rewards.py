import importlib.util
import threading
import time

import pytest

from coldstart.config import REWARD_NAMES, load_config
from coldstart.errors import ColdstartError
from coldstart.grading import extract_answer, is_correct
from coldstart.rewards import REWARDS, build_rewards, completion_text

HOSTILE = [
    "\\boxed{" + "{" * 200_000,  # unbalanced
    "\\boxed{" + "\\frac{1}{" * 3000 + "2" + "}" * 3000 + "}",  # deeply nested
    "x" * 3_000_000 + "\\boxed{7}",  # megabytes, right answer at the very end
    "\\boxed{10^{10^{10^{10^{10}}}}}",  # a number sympy cannot finish with
    "\\boxed{" + "9" * 5000 + "!}",
]


def conv(text):
    return [{"role": "assistant", "content": text}]


def test_accuracy_on_correct_wrong_and_unparsable():
    funcs, weights = build_rewards({"accuracy": 1.0, "format": 0.5}, 64, timeout=5.0)
    accuracy, fmt = funcs
    assert [f.__name__ for f in funcs] == ["accuracy", "format"] and weights == [1.0, 0.5]
    completions = [conv("3 + 4 = 7, so \\boxed{7}."), conv("\\boxed{8}"), conv("seven, I think"), conv("\\boxed{}")]
    assert accuracy(completions=completions, answer=["7"] * 4) == [1.0, 0.0, 0.0, 0.0]
    assert fmt(completions=completions) == [1.0, 1.0, 0.0, 0.0]
    assert accuracy(completions=["\\boxed{\\frac{1}{2}}"], answer=["0.5"]) == [1.0]


def test_length_penalty_and_unknown_reward():
    (length,), _ = build_rewards({"length": 1.0}, 10, timeout=5.0)
    assert length(completions=["a", "b"], completion_ids=[[1] * 5, [1] * 20]) == [-0.5, -1.0]
    with pytest.raises(ColdstartError, match=r"rl.rewards.acuracy: unknown reward; did you mean 'accuracy'\?"):
        load_config(None, ["rl.rewards={acuracy: 1.0}"])
    assert tuple(REWARDS) == REWARD_NAMES  # the config checks names against this list without importing rewards


def test_unparsable_gold_is_an_error_not_a_reward():
    with pytest.raises(ColdstartError, match="cannot parse this gold answer"):
        is_correct("\\boxed{", "\\boxed{1}")


@pytest.mark.parametrize(
    "text,boxed",
    # only the last 4096 characters are read: the box of 'nested' and 'factorial' starts before them
    list(zip(HOSTILE, [0.0, 0.0, 1.0, 1.0, 0.0])),
    ids=["unbalanced", "nested", "megabytes", "tower", "factorial"],
)
def test_hostile_completions_score_zero_within_the_limit(text, boxed):
    started = time.time()
    reward = REWARDS["accuracy"](completions=[conv(text)], answer=["5"], timeout=5.0)
    assert time.time() - started < 5.5
    assert reward == [0.0]
    assert REWARDS["format"](completions=[conv(text)]) == [boxed]


def test_hostile_completion_off_the_main_thread_is_killed_in_time():
    results = []

    def worker():
        started = time.time()
        results.append((is_correct("5", HOSTILE[3], timeout=2.0), time.time() - started))
        results.append((is_correct("7", HOSTILE[2], timeout=2.0), 0.0))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(60)
    assert results[0][0] is False and results[0][1] < 8.0  # worker start-up included
    assert results[1][0] is True


def test_completion_text_and_extraction():
    assert completion_text(conv("a")) == "a" and completion_text("b") == "b"
    assert extract_answer("so \\boxed{42}.") == "42"
    assert extract_answer("no answer here") is None


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_use_vllm_without_vllm_fails_with_the_install_hint():
    with pytest.raises(ColdstartError, match=r"rl.use_vllm: vLLM is not installed; pip install 'coldstart\[vllm\]'"):
        load_config(None, ["rl.use_vllm=true"])


def test_zero_variance_share_counts_groups_that_trls_isclose_misses(caplog):
    import torch
    from trl.trainer.utils import nanstd

    from coldstart.stages.rl import ZeroVarianceShare

    def accuracy(completions, **kwargs):
        return [1.0] * 8 + [0.0, 1.0] * 4

    def format(completions, **kwargs):
        return [1.0] * 16

    signal = ZeroVarianceShare([accuracy, format], [1.0, 0.2], num_generations=8, threshold=0.5)
    assert [f.__name__ for f in signal.funcs] == ["accuracy", "format"]
    for f in signal.funcs:  # TRL calls each function on the same generation batch
        f(completions=[None] * 16)
    # the first group's rewards are all 1.2: TRL's test `isclose(std, 0)` does not see it
    weighted = (torch.tensor([[1.0, 1.0]] * 8) * torch.tensor([1.0, 0.2])).nansum(dim=1)  # as TRL sums them
    std = nanstd(weighted.view(-1, 8), dim=1)
    assert not torch.isclose(std, torch.zeros_like(std))
    with caplog.at_level("WARNING"):
        assert signal.pop(3) == {"zero_variance_share": 0.5, "zero_variance_accuracy_share": 0.5}
    assert "step 3: 50% of GRPO groups have zero reward variance" in caplog.text
    assert signal.pop(4) == {}  # nothing scored since the last log


def test_the_accuracy_only_share_counts_all_wrong_groups_whose_format_varies():
    """A group all wrong whose format rewards differ has reward variance (the weighted share misses it) but says
    nothing about correctness: the accuracy-only share, the handoff's figure before GRPO, counts it."""
    from coldstart.stages.rl import ZeroVarianceShare

    def accuracy(completions, **kwargs):
        return [0.0] * 4 + [1.0, 0.0, 0.0, 0.0]

    def format(completions, **kwargs):
        return [1.0, 0.0, 1.0, 1.0] + [1.0] * 4

    signal = ZeroVarianceShare([accuracy, format], [1.0, 0.2], num_generations=4, threshold=2.0)
    for f in signal.funcs:
        f(completions=[None] * 8)
    assert signal.pop(1) == {"zero_variance_share": 0.0, "zero_variance_accuracy_share": 0.5}


NESTED = [  # (completion's boxed content, gold answer): LaTeX whose answer holds braces
    ("\\frac{1}{2}", "1/2"),
    ("\\dfrac{3}{4}", "0.75"),
    ("-\\frac{5}{3}", "-5/3"),
    ("\\sqrt{2}", "\\sqrt{2}"),
    ("2\\sqrt{3}", "2\\sqrt{3}"),
    ("10^{3}", "1000"),
    ("\\frac{\\pi}{2}", "\\frac{\\pi}{2}"),
    ("x^{2}+1", "x^2+1"),
    ("\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2"),
    ("2^{10}", "1024"),
    ("{12}", "12"),
]


@pytest.mark.parametrize("content,gold", NESTED)
def test_format_accuracy_and_extraction_agree_on_nested_braces(content, gold):
    """The format check used to be a regex without nested braces: `\\boxed{\\frac{1}{2}}` scored accuracy 1 and
    format 0. Format reward, accuracy reward and the extracted answer must now agree."""
    from coldstart.grading import boxed_answer

    text = f"So the answer is \\boxed{{{content}}}."
    (acc, fmt), _ = build_rewards({"accuracy": 1.0, "format": 0.2}, 64, timeout=5.0)
    assert boxed_answer(text) == content.strip()
    assert fmt(completions=[text]) == [1.0]
    assert acc(completions=[text], answer=[gold]) == [1.0]
    extracted = extract_answer(text)
    assert extracted is not None and is_correct(gold, f"\\boxed{{{extracted}}}")


@pytest.mark.parametrize("text", ["\\boxed{}", "\\boxed{ }", "the answer is \\boxed{3", "no box at all 3"])
def test_an_empty_or_unclosed_box_is_no_format(text):
    (fmt,), _ = build_rewards({"format": 1.0}, 64, timeout=5.0)
    assert fmt(completions=[text]) == [0.0]


def test_zero_variance_share_counts_groups_across_the_processes_slices(monkeypatch):
    """With 2 processes each scores half of every group of 4 (TRL deals a generation batch out in contiguous
    slices): a process alone holds no whole group. Its slice is gathered with the other's, in process order, and
    the groups counted whole: here both are all-right groups, a share of 1."""
    import coldstart.stages.rl as rl

    other = [[1.0], [1.0]]  # the other process's half of each group (its rows of rewards, one per function)
    monkeypatch.setattr(rl, "num_processes", lambda: 2)
    monkeypatch.setattr(rl, "gather_object", lambda mine: mine + other)

    def accuracy(completions, **kwargs):
        return [1.0, 1.0]

    signal = rl.ZeroVarianceShare([accuracy], [1.0], num_generations=4, threshold=2.0)
    signal.funcs[0](completions=[None] * 2)
    assert signal.pop(1)["zero_variance_accuracy_share"] == 1.0
    other[:] = [[0.0], [1.0]]
    signal.funcs[0](completions=[None] * 2)
    assert signal.pop(2) == {"zero_variance_share": 0.0, "zero_variance_accuracy_share": 0.0}


def test_the_mean_zero_variance_share_leaves_out_windows_without_one():
    """A log window whose steps drew no generation batch (num_iterations > 1) has no share: not a share of 0."""
    from coldstart.statistics import mean_present

    logged = [{"reward": 1.0, "zero_variance_share": 1.0}, {"reward": 1.0}, {"reward": 1.0, "zero_variance_share": 1.0}]
    assert mean_present([m.get("zero_variance_share") for m in logged]) == 1.0
    assert mean_present([None, None]) is None
