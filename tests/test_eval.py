import math
import random
import statistics

import pytest

from coldstart.eval.evaluate import summarize_records
from coldstart.grading import extract_answer, is_correct
from coldstart.statistics import (
    bootstrap_ci, mcnemar_exact, paired_difference, pass_at_k, seed_problem_interval,
)


def test_pass_at_k_by_hand():
    assert pass_at_k(4, 0, 1) == 0.0 and pass_at_k(4, 4, 2) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)  # 1 - C(3,3)/C(5,3)
    assert pass_at_k(10, 3, 10) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_bootstrap_interval_covers_the_true_mean_at_the_nominal_rate():
    """Coverage near 95% (400 trials: binomial sd 1.1 points) and the width of the normal interval: an interval that
    is always too wide (e.g. [0, 1]) covers 100% and fails, one too narrow under-covers and fails."""
    rng = random.Random(0)
    true_p, n, trials, covered, widths = 0.3, 200, 400, 0, []
    for t in range(trials):
        values = [float(rng.random() < true_p) for _ in range(n)]
        low, high = bootstrap_ci(values, num_resamples=1000, seed=t)
        covered += low <= true_p <= high
        widths.append(high - low)
    assert 0.92 <= covered / trials <= 0.975
    normal_width = 2 * 1.96 * (true_p * (1 - true_p) / n) ** 0.5
    assert sum(widths) / trials == pytest.approx(normal_width, rel=0.1)


def test_paired_difference_of_a_model_with_itself():
    a = [1.0, 0.0, 1.0, 1.0, 0.0]
    d = paired_difference(a, a)
    assert d["difference"] == 0.0 and d["ci_low"] == 0.0 and d["ci_high"] == 0.0 and d["mcnemar_p"] == 1.0


def test_mcnemar_and_paired_difference_by_hand():
    # 10 discordant pairs, all won by a: two-sided p = 2 / 2^10
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 1024)
    assert mcnemar_exact(3, 3) == 1.0
    a = [1.0] * 12 + [0.0] * 8
    b = [0.0] * 10 + [1.0] * 2 + [0.0] * 8
    d = paired_difference(a, b)
    assert d["difference"] == pytest.approx(0.5) and d["only_a"] == 10 and d["only_b"] == 0
    assert d["ci_low"] > 0 and d["mcnemar_p"] < 0.01


def test_seed_interval_is_t_when_only_the_seeds_vary():
    # every problem scores the same within a seed: the interval is the t interval over the seeds' means
    s = seed_problem_interval([[0.4] * 10, [0.5] * 10, [0.6] * 10])
    assert s["mean"] == pytest.approx(0.5) and s["df"] == pytest.approx(2)
    assert s["ci_high"] - s["mean"] == pytest.approx(4.303 * 0.1 / 3**0.5, rel=1e-3)
    # 31 seeds: t(30) = 2.042, not the normal 1.96
    values = [0.5 + 0.01 * (i - 15) for i in range(31)]
    half = seed_problem_interval([[v] * 10 for v in values])["ci_high"] - 0.5
    assert half == pytest.approx(2.042 * statistics.stdev(values) / 31**0.5, rel=1e-3)


def test_seed_problem_interval_by_hand():
    from scipy.stats import t

    # 2 seeds x 3 problems: MS_S = 1/6, MS_P = 1/2, MS_I = 1/6 (its 2 degrees of freedom count in Satterthwaite's)
    s = seed_problem_interval([[1, 0, 1], [0, 0, 1]])
    variance = (1 / 6 + 1 / 2 - 1 / 6) / 6
    df = 0.5**2 / ((1 / 6) ** 2 / 1 + 0.5**2 / 2 + (1 / 6) ** 2 / 2)
    assert df == pytest.approx(1.5) and s["df"] == pytest.approx(df)
    assert s["ci_high"] - 0.5 == pytest.approx(t.ppf(0.975, df) * variance**0.5)
    # two seeds that each solve one problem, not the same one: equal means (MS_S = 0) and MS_P = 1/6 below MS_I = 1/3;
    # the interaction's own variance, with its 3 degrees of freedom, keeps the interval from being a point
    even = seed_problem_interval([[1, 0, 0, 0], [0, 1, 0, 0]])
    assert even["df"] == 3 and even["ci_high"] - 0.25 == pytest.approx(t.ppf(0.975, 3) * (1 / 3 / 8) ** 0.5)
    # one problem: the seeds alone, t over S - 1
    one = seed_problem_interval([[1], [0], [1]])
    assert one["df"] == 2 and one["ci_high"] - 2 / 3 == pytest.approx(t.ppf(0.975, 2) * (1 / 3 / 3) ** 0.5)


def test_mcnemar_equals_scipys_binomial_test_on_hand_cases():
    # 7 discordant pairs won by a and 1 by b: P(X <= 1 | n=8, 1/2) = 9/256, two-sided 18/256
    assert mcnemar_exact(7, 1) == pytest.approx(18 / 256)
    assert mcnemar_exact(1, 7) == pytest.approx(18 / 256)
    assert mcnemar_exact(4, 4) == 1.0 and mcnemar_exact(0, 0) == 1.0


@pytest.mark.parametrize("sigma_seed, sigma_problem", [(0.05, 0.01), (0.005, 0.25)])
def test_seed_problem_interval_covers_the_true_mean_at_the_nominal_rate(sigma_seed, sigma_problem):
    """Scores mu + u_s + v_p + e_sp with known seed, problem and noise variances, 3 seeds x 150 shared problems,
    400 seeded trials (binomial sd of the coverage 1.1 points): coverage within [0.92, 0.985], and the mean width
    within 15% of what a correct interval needs there (the normal width when the problems dominate; the t width
    over 3 seeds when the seeds do). An always-wide interval fails the width, a too-narrow one the coverage."""
    import numpy as np

    rng = np.random.default_rng(0)
    mu, sigma_noise, seeds, problems, trials = 0.4, 0.3, 3, 150, 400
    covered, widths = 0, []
    for trial in range(trials):
        scores = (mu + rng.normal(0, sigma_seed, (seeds, 1)) + rng.normal(0, sigma_problem, (1, problems))
                  + rng.normal(0, sigma_noise, (seeds, problems)))
        r = seed_problem_interval(scores.tolist(), num_resamples=1000, seed=trial)
        covered += r["ci_low"] <= mu <= r["ci_high"]
        widths.append(r["ci_high"] - r["ci_low"])
    assert 0.92 <= covered / trials <= 0.985
    if sigma_problem > sigma_seed * 10:  # problems dominate: the normal interval of the whole variance
        needed = 2 * 1.96 * (sigma_seed**2 / seeds + sigma_problem**2 / problems + sigma_noise**2 / (seeds * problems)) ** 0.5
    else:  # seeds dominate: t(2) times the expected sd of 3 seed means (c4(3) = 0.8862)
        needed = 2 * 4.303 * 0.8862 * ((sigma_seed**2 + sigma_noise**2 / problems) / seeds) ** 0.5
    assert sum(widths) / trials == pytest.approx(needed, rel=0.15)


@pytest.mark.parametrize(
    "gold, completion, right",
    [
        ("42", "so the answer is \\boxed{42}.", True),
        ("42", "\\boxed{41}", False),
        ("72", "48 + 24 = 72 clips.\n#### 72", True),
        ("1000", "#### 1,000", True),
        ("0.75", "\\boxed{\\frac{3}{4}}", True),
        ("3/4", "\\boxed{0.75}", True),
        ("5", "\\boxed{five}", False),
        ("5", "I cannot tell", False),
    ],
)
def test_grading(gold, completion, right):
    assert is_correct(gold, completion) is right


def test_extracted_answer_is_recorded():
    assert extract_answer("4 + 3 = 7\n#### 7") == "7"


def test_summary_of_records_with_pass_at_k():
    records = [
        {"correct": True, "boxed": True, "finished": True, "num_tokens": 10, "source": "arith-1step", "samples_correct": 2, "num_samples": 4},
        {"correct": False, "boxed": False, "finished": False, "num_tokens": 30, "source": "arith-2step", "samples_correct": 0, "num_samples": 4},
    ]
    m = summarize_records(records)
    assert m["accuracy"] == 0.5 and m["format"] == 0.5 and m["truncated"] == 0.5 and m["mean_length"] == 20
    assert m["pass@1"] == pytest.approx(0.25) and m["pass@2"] == pytest.approx((1 - 1 / 6) / 2)
    assert m["accuracy_by_source"]["arith-1step"]["accuracy"] == 1.0


def test_avg_at_k_and_pass_at_k_by_hand():
    # three problems, 4 samples each: 0, 4 (all) and 1 correct
    base = {"correct": False, "boxed": True, "finished": True, "num_tokens": 5, "source": "s", "num_samples": 4}
    m = summarize_records([{**base, "samples_correct": c} for c in (0, 4, 1)])
    assert m["avg@4"] == pytest.approx((0 + 1 + 0.25) / 3) == pytest.approx(m["pass@1"])
    # pass@2: 1 - C(4-c, 2) / C(4, 2) -> 0, 1, 1 - 3/6
    assert m["pass@2"] == pytest.approx((0 + 1 + 0.5) / 3)
    assert m["pass@4"] == pytest.approx((0 + 1 + 1) / 3)  # k = samples: any correct sample
    low, high = m["avg@4_ci"]
    assert low <= m["avg@4"] <= high and "pass@8" not in m


def test_vllm_generator_gives_what_generate_gives(tokenizer, tmp_path, monkeypatch):
    """`VllmGenerator` against a stand-in for vLLM's `LLM` (vLLM needs a GPU): the prompts it sends, the sampling it
    asks for, and the `Completion`s it makes of vLLM's outputs."""
    import sys
    import types
    from types import SimpleNamespace

    from coldstart.generation import Completion, VllmGenerator, render_prompt

    tokenizer.save_pretrained(tmp_path)
    sent = {}

    class LLM:
        def __init__(self, **kwargs):
            sent["engine"] = kwargs

        def generate(self, inputs, params):
            sent["inputs"], sent["params"] = inputs, params
            eos = tokenizer.eos_token_id
            ids = tokenizer("x = 4", add_special_tokens=False)["input_ids"]
            return [SimpleNamespace(outputs=[SimpleNamespace(text="x = 4", token_ids=[*ids, eos], finish_reason="stop"),
                                             SimpleNamespace(text="x = 4", token_ids=ids, finish_reason="length")])
                    for _ in inputs]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=lambda **kw: kw))
    generator = VllmGenerator(str(tmp_path), tokenizer, 0.5, seed=3, dtype="bfloat16")
    prompts = [[{"role": "user", "content": "What is 2 + 2?"}], "plain text"]
    out = generator(prompts, num_samples=2, max_new_tokens=7, temperature=0.8, seed=5)
    assert sent["engine"] == {"model": str(tmp_path), "dtype": "bfloat16", "seed": 3, "gpu_memory_utilization": 0.5}
    expected = [tokenizer(render_prompt(tokenizer, p), add_special_tokens=False)["input_ids"] for p in prompts]
    assert [i["prompt_token_ids"] for i in sent["inputs"]] == expected
    params = sent["params"]
    assert (params["n"], params["temperature"], params["max_tokens"], params["seed"]) == (2, 0.8, 7, 5)
    assert params["top_k"] == -1  # every token kept, as the HF path and GRPO keep them
    assert tokenizer.eos_token_id in params["stop_token_ids"]
    n = len(tokenizer("x = 4", add_special_tokens=False)["input_ids"])
    assert out == [[Completion("x = 4", n, True), Completion("x = 4", n, False)]] * 2


def test_sampling_keeps_every_token_unless_top_k_is_set(tokenizer, monkeypatch):
    """transformers applies a top-k of 50 by default; GRPO (TRL's top_k=0) and the rewriting rule do not, so neither
    may the handoff's rollouts that predict what GRPO will see: sampling goes through coldstart's TokenSampler with
    the call's settings, and transformers decodes greedily over its scores (no warper of its own)."""
    from coldstart.generation import TokenSampler, generate
    from conftest import make_tiny_model

    model = make_tiny_model(tokenizer)
    sent = []
    real = model.generate

    def recording(**kwargs):
        samplers = [p for p in kwargs.get("logits_processor") or [] if isinstance(p, TokenSampler)]
        sent.append((kwargs.get("do_sample"), [(s.temperature, s.top_p, s.top_k) for s in samplers]))
        return real(**kwargs)

    monkeypatch.setattr(model, "generate", recording)
    prompts = [[{"role": "user", "content": "What is 2 + 2?"}]]
    generate(model, tokenizer, prompts, num_samples=2, max_new_tokens=2, temperature=1.0, top_p=0.9)
    generate(model, tokenizer, prompts, num_samples=1, max_new_tokens=2, temperature=0.7, top_k=5)
    generate(model, tokenizer, prompts, num_samples=1, max_new_tokens=2)
    assert sent == [(False, [(1.0, 0.9, 0)]), (False, [(0.7, 1.0, 5)]), (False, [])]


def test_comparison_intervals_count_seeds_and_problems(tmp_path):
    """analyse() on hand-made records of 2 starts x 2 seeds x 4 problems: every figure is the seed-and-problem
    interval of the per-problem scores (or differences) it should be built from."""
    from coldstart.config import load_config
    from coldstart.eval.compare import analyse, study_of
    from coldstart.runs import RunDir, write_jsonl

    correct = {  # (start, seed) -> model -> per-problem scores
        ("sft", 1): {"warmup": [1, 0, 0, 0], "rl": [1, 1, 0, 0]},
        ("sft", 2): {"warmup": [1, 1, 0, 0], "rl": [1, 1, 1, 0]},
        ("cadft", 1): {"warmup": [0, 0, 0, 1], "rl": [0, 0, 0, 1]},
        ("cadft", 2): {"warmup": [1, 0, 0, 1], "rl": [1, 0, 1, 1]},
    }
    runs = {}
    for (start, seed), models in correct.items():
        run = RunDir(tmp_path / f"{start}-seed{seed}")
        (run.root / "eval").mkdir(parents=True)
        write_jsonl(run.root / "eval" / "records.jsonl", [
            {"model": model, "id": f"p{i}", "correct": c} for model, scores in models.items() for i, c in enumerate(scores)])
        runs[f"{start}-seed{seed}"] = run
    cfg = load_config(None, ["compare.starts=[sft, cadft]", "compare.seeds=[1, 2]"])
    results = analyse(study_of(cfg), runs)
    sft_rl = seed_problem_interval([correct[("sft", s)]["rl"] for s in (1, 2)])
    assert results["arms"]["sft+grpo"]["accuracy"] == pytest.approx(5 / 8)
    assert sft_rl["ci_low"] < 0 and results["arms"]["sft+grpo"]["ci_low"] == 0.0  # cut to what an accuracy can be
    assert results["arms"]["sft+grpo"]["clipped"] == ["low", "high"]  # 2 seeds x 4 problems: t(2.3) is wide
    from coldstart.eval.report import render

    assert "| sft+grpo | 62.5 | [0.0†, 100.0†] |" in render(results)
    assert results["arms"]["sft+grpo"]["ci_high"] == pytest.approx(min(sft_rl["ci_high"], 1.0))
    sft_warm = seed_problem_interval([correct[("sft", s)]["warmup"] for s in (1, 2)])
    assert results["arms"]["sft"]["ci_low"] == pytest.approx(max(sft_warm["ci_low"], 0.0))
    gain = seed_problem_interval([[r - w for r, w in zip(correct[("sft", s)]["rl"], correct[("sft", s)]["warmup"])]
                                  for s in (1, 2)])
    assert results["rl_gain"]["sft"]["difference"] == pytest.approx(2 / 8)
    assert results["rl_gain"]["sft"]["ci_high"] == pytest.approx(gain["ci_high"])
    assert "mcnemar_p" not in results["rl_gain"]["sft"]  # McNemar pairs the outcomes of one seed only
    assert results["comparisons"]["RL gain of cadft vs sft"]["difference"] == pytest.approx(1 / 8 - 2 / 8)


def test_pass_at_k_curves_per_arm_and_what_grpo_changed_at_the_largest_k(tmp_path):
    """Sampled records (4 samples per problem) of one start and seed: pass@1, @2, @4 per arm from the unbiased
    estimator by hand, and GRPO's change at k = 4 paired by problem; in the report and its figure."""
    from coldstart.config import load_config
    from coldstart.eval.compare import analyse, study_of
    from coldstart.eval.report import render
    from coldstart.plots import pass_at_k_figure
    from coldstart.runs import RunDir, write_jsonl

    samples_correct = {"warmup": [1, 0, 4, 2], "rl": [3, 0, 4, 0]}  # GRPO sharpened p0, lost p3
    run = RunDir(tmp_path / "cadft-seed1")
    (run.root / "eval").mkdir(parents=True)
    write_jsonl(run.root / "eval" / "records.jsonl", [
        {"model": m, "id": f"p{i}", "correct": c > 2, "samples_correct": c, "num_samples": 4}
        for m, counts in samples_correct.items() for i, c in enumerate(counts)])
    cfg = load_config(None, ["compare.starts=[cadft]", "compare.seeds=[1]", "eval.num_samples=4"])
    coverage = analyse(study_of(cfg), {"cadft-seed1": run})["pass_at_k"]
    assert coverage["k"] == [1, 2, 4]
    # pass@2 of c correct in 4: 1 - C(4-c, 2)/6 -> c=1: 1/2, c=2: 5/6, c=3: 1, c=4: 1
    warm, after = coverage["arms"]["cadft"], coverage["arms"]["cadft+grpo"]
    assert [p["accuracy"] for p in warm] == pytest.approx([7 / 16, (0.5 + 1 + 5 / 6) / 4, 3 / 4])
    assert [p["accuracy"] for p in after] == pytest.approx([7 / 16, 2 / 4, 2 / 4])
    assert coverage["rl_change"]["cadft"]["difference"] == pytest.approx(-1 / 4)
    results = analyse(study_of(cfg), {"cadft-seed1": run})
    text = render(results)
    assert "## Coverage: pass@k before and after GRPO" in text and "| cadft | -25.0 |" in text
    pass_at_k_figure(coverage, tmp_path / "pass_at_k.png")
    assert (tmp_path / "pass_at_k.png").stat().st_size > 0


def test_a_model_graded_before_on_the_same_problems_is_read_back(tiny_cfg, tiny_dir, tmp_path, runtime, monkeypatch):
    """Two runs side by side (as `compare` puts the base start's seeds) grade the same model folder once; another
    problem set, other settings, another way of loading the model (its dtype) or another folder content grade
    again."""
    import dataclasses
    import shutil

    from coldstart.stages import evaluation

    graded = []
    real = evaluation.generator
    monkeypatch.setattr(evaluation, "generator", lambda *a: graded.append(a[1]) or real(*a))
    cfg = dataclasses.replace(tiny_cfg, eval=dataclasses.replace(tiny_cfg.eval, max_new_tokens=4))
    problems, _ = evaluation.held_out(cfg)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_dir, copy)
    first = evaluation.evaluate_cached(cfg, tiny_dir, problems, runtime)
    again = evaluation.evaluate_cached(dataclasses.replace(cfg, name="other-run"), copy, problems, runtime)
    assert again == first and graded == [tiny_dir]
    evaluation.evaluate_cached(cfg, tiny_dir, problems.select(range(2)), runtime)
    evaluation.evaluate_cached(dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, max_new_tokens=5)), tiny_dir,
                               problems, runtime)
    evaluation.evaluate_cached(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dtype="bfloat16")), tiny_dir,
                               problems, runtime)
    (copy / "extra.json").write_text("{}")  # another file: another model folder (its card, README.md, is no part)
    evaluation.evaluate_cached(cfg, copy, problems, runtime)
    assert graded == [tiny_dir, tiny_dir, tiny_dir, tiny_dir, copy]
    assert evaluation.evaluate_cached(cfg, tiny_dir, problems, runtime, reuse=False) == first  # --force eval grades again
    assert graded == [tiny_dir, tiny_dir, tiny_dir, tiny_dir, copy, tiny_dir]


def test_rank_associations_by_hand():
    from coldstart.statistics import rank_associations

    gain = [0.10, 0.02, 0.05, -0.01, 0.08]
    out = rank_associations({
        "rises": [0.9, 0.3, 0.5, 0.1, 0.7],  # same order as the gain: rho = 1
        "falls": [0.2, 0.5, None, 0.8, 0.4],  # the missing run is left out: rho = -1 over 4 runs
        "flat": [0.5] * 5,  # no spread: not tested
        "mixed": [0.1, 0.2, 0.3, 0.4, 0.5],
    }, gain)
    assert set(out) == {"rises", "falls", "mixed"}
    assert out["rises"]["rho"] == pytest.approx(1.0) and out["rises"]["units"] == 5
    assert out["falls"]["rho"] == pytest.approx(-1.0) and out["falls"]["units"] == 4
    # mixed ranks 1..5 against gain ranks 5,2,3,1,4: d^2 = 16+0+0+9+1 = 26, rho = 1 - 6*26/(5*24)
    assert out["mixed"]["rho"] == pytest.approx(1 - 6 * 26 / 120)
    # p-values count the orderings: 2 of the 120 of 5 runs are as extreme as a perfect one (either sign), 2 of 24 of 4
    assert out["rises"]["p"] == pytest.approx(2 / 120) and out["falls"]["p"] == pytest.approx(2 / 24)
    # Benjamini-Hochberg by hand over the three p-values
    ps = sorted((t["p"], name) for name, t in out.items())
    m = len(ps)
    adjusted, running = {}, 1.0
    for rank in range(m, 0, -1):
        p, name = ps[rank - 1]
        running = min(running, p * m / rank)
        adjusted[name] = running
    for name, t in out.items():
        assert t["p_adjusted"] == pytest.approx(adjusted[name])


def test_findings_state_only_what_the_intervals_support():
    from coldstart.eval.report import findings

    def interval(key, value, low, high):
        return {key: value, "ci_low": low, "ci_high": high, "significant": low > 0 or high < 0}

    signal = {f"{start}-seed{seed}": {"start": start, "seed": seed, "k": 4} for start in ("sft", "cadft") for seed in (1, 2)}
    results = {
        "study": {"starts": ["sft", "cadft"]}, "seeds": [1, 2], "signal": signal,
        "arms": {"sft": interval("accuracy", 0.12, 0.07, 0.17), "sft+grpo": interval("accuracy", 0.24, 0.18, 0.30),
                 "cadft": interval("accuracy", 0.11, 0.06, 0.16), "cadft+grpo": interval("accuracy", 0.12, 0.07, 0.17)},
        "rl_gain": {"sft": interval("difference", 0.12, 0.053, 0.193), "cadft": interval("difference", 0.007, -0.013, 0.027)},
        "comparisons": {"cadft+grpo vs sft+grpo": interval("difference", -0.12, -0.18, -0.06),
                        "cadft vs sft": interval("difference", -0.01, -0.06, 0.04)},
        "diagnostics": {"sft": {"pass@1": 0.3, "pass@k": 0.6, "pre_rl_zero_variance": 0.4, "entropy": 0.91,
                                "mean_length": 25.0, "clipped": 0.05, "rl_zero_variance": 0.25}},
        "associations": {"pass@k": {"rho": 0.8, "p": 0.004, "p_adjusted": 0.02, "units": 12},
                         "entropy": {"rho": 0.3, "p": 0.3, "p_adjusted": 0.4, "units": 12}},
    }
    lines = findings(results)
    assert lines[0] == (
        "- **sft**: 12.0% after warm-up [7.0, 17.0], 24.0% after GRPO [18.0, 30.0]; GRPO added +12.0 points [+5.3, "
        "+19.3]. Before GRPO, its rollouts on RL prompts were right 30% of the time (pass@4 60%), 40% of groups had "
        "zero variance, mean token entropy 0.91 nats, 25 tokens long, 5% clipped; during GRPO 25% of groups had zero "
        "variance (means over 2 seeds).")
    assert lines[1].endswith("RL gain +0.7 points [-1.3, +2.7]: no difference shown.")
    assert lines[2] == "- cadft+grpo vs sft+grpo: lower, -12.0 points [-18.0, -6.0]."
    assert lines[3] == "- cadft vs sft: no difference shown (-1.0 points [-6.0, +4.0])."
    assert lines[4].startswith("- Across the 12 runs, the RL gain rises with the pass@4 before GRPO (Spearman rho = +0.80")
    assert lines[5] == "- RL gain and mean token entropy before GRPO: no association shown."


def test_the_claims_table_from_hand_made_results():
    from coldstart.eval.compare import claims
    from coldstart.eval.report import claims_section

    def gain(d, low, high):
        return {"difference": d, "ci_low": low, "ci_high": high, "significant": low > 0 or high < 0}

    results = {
        "study": {"starts": ["base", "sft", "dft", "cadft"]}, "seeds": [1, 2, 3],
        # cadft's gradient norm varies less than dft's on every seed, and about as much as sft's
        "stability": {f"{start}-seed{seed}": {"grad_norm": {"cv": cv + 0.01 * seed}}
                      for start, cv in (("sft", 0.30), ("dft", 0.50), ("cadft", 0.30)) for seed in (1, 2, 3)}
        | {"cadft-seed2": {"grad_norm": {"cv": 0.33}}},
        "comparisons": {"RL gain of cadft vs sft": gain(-0.10, -0.15, -0.05),
                        "RL gain of cadft vs dft": gain(0.02, -0.03, 0.07)},
        "ood": {"cadft vs sft": gain(0.04, 0.01, 0.07)},  # none against dft
    }
    rows = {(r["claim"], r["vs"]): r for r in claims(results)}
    assert rows[("stability", "dft")]["verdict"] == "supported"  # lower CV, interval below 0
    assert rows[("stability", "dft")]["figure"]["difference"] == pytest.approx(-0.59 / 3)
    assert rows[("stability", "sft")]["verdict"] == "no difference shown"
    assert rows[("cold-start RL", "sft")]["verdict"] == "contradicted"
    assert rows[("cold-start RL", "dft")]["verdict"] == "no difference shown"
    assert rows[("generalization", "sft")]["verdict"] == "supported"
    assert rows[("generalization", "dft")]["verdict"] == "not measured"
    table = "\n".join(claims_section({"claims": list(rows.values())}))
    assert "| cold-start RL | sft | secondary | RL gain (after GRPO minus after warm-up), cadft minus sft | " \
           "-10.0 points | [-15.0, -5.0] | - | contradicted |" in table


def test_equivalent_and_inconclusive_from_hand_made_seeds():
    """Per-seed RL-gain differences (one value per seed, as problems averaged) through `_interval` and the claims:
    five seeds at +1, -1, +2, 0, -2 points (sd 1.58, se 0.71) lie within a 5-point margin (the 90% t interval,
    0 +- 2.132 x 0.71, is inside it: equivalent); five at +9, -9, +12, -6, -6 points (sd 9.7, se 4.35) do not (the 90%
    interval, 0 +- 9.3, reaches past +-5: inconclusive). The MDE is (t(0.975, 4) + t(0.8, 4)) x se."""
    from scipy.stats import t

    from coldstart.eval.compare import _interval, claims
    from coldstart.eval.report import claims_section

    narrow = _interval([[d / 100] for d in (1, -1, 2, 0, -2)], "difference", 2.0)
    wide = _interval([[d / 100] for d in (9, -9, 12, -6, -6)], "difference", 2.0)
    se = statistics.stdev([1, -1, 2, 0, -2]) / 100 / 5**0.5
    assert narrow["se"] == pytest.approx(se) and narrow["mde"] == pytest.approx((t.ppf(0.975, 4) + t.ppf(0.8, 4)) * se)
    results = {"study": {"starts": ["sft", "dft", "cadft"], "margin": 5.0}, "seeds": [1, 2, 3, 4, 5], "stability": {},
               "comparisons": {"RL gain of cadft vs sft": narrow, "RL gain of cadft vs dft": wide}}
    rows = {(r["claim"], r["vs"]): r for r in claims(results)}
    assert rows[("cold-start RL", "sft")]["verdict"] == "equivalent within the margin"
    assert rows[("cold-start RL", "dft")]["verdict"] == "inconclusive"
    assert rows[("generalization", "sft")]["verdict"] == "not measured"
    table = "\n".join(claims_section({**results, "claims": list(rows.values())}))
    assert "equivalent within the margin (+-5 points)" in table
    assert f"| {100 * wide['mde']:.1f} points | inconclusive |" in table
    # the same figures without a declared margin: no difference shown, as before
    results["study"].pop("margin")
    assert {r["verdict"] for r in claims(results) if r["claim"] == "cold-start RL"} == {"no difference shown"}


def test_cv_difference_pairs_seeds_and_gives_an_interval_from_two():
    from coldstart.eval.compare import cv_difference

    def cv(value):
        return {"grad_norm": {"cv": value}}

    stability = {"cadft-seed1": cv(0.40), "dft-seed1": cv(0.50), "cadft-seed2": cv(0.45), "dft-seed2": cv(0.50),
                 "cadft-seed3": cv(0.30), "dft-seed3": cv(None), "dft-seed4": cv(0.2)}  # seeds 3, 4: one side only
    both = cv_difference(stability, "cadft", "dft", [1, 2, 3, 4])
    assert both["difference"] == pytest.approx(-0.075) and both["seeds"] == 2
    assert both["ci_low"] < -0.075 < both["ci_high"]  # a t interval over 2 seeds: -0.075 +- 12.7 x 0.025
    assert both["ci_high"] - both["ci_low"] == pytest.approx(2 * 12.706 * 0.025, rel=1e-3)
    one = cv_difference(stability, "cadft", "dft", [1])
    assert one["difference"] == pytest.approx(-0.10) and one["ci_low"] is None and not one["significant"]
    assert cv_difference(stability, "cadft", "dft", [3, 4]) is None


def test_runs_are_grouped_by_start_then_seed():
    from coldstart.plots import _by_start

    grouped = _by_start({"cadft-weights-seed7": 1, "cadft-seed42": 2, "cadft-seed7": 3, "quickstart": 4})
    assert grouped == {"cadft-weights": {"seed7": 1}, "cadft": {"seed42": 2, "seed7": 3},
                       "quickstart": {"quickstart": 4}}


LOW, HIGH, NONE = "compatibility lowers the noise", "compatibility raises the noise", "no compatibility effect"


@pytest.mark.parametrize("verdicts, effects, expected", [
    (["holds", "holds"], [LOW, LOW], "supported"),
    (["holds", "not shown"], [LOW, LOW], "no difference shown"),  # not shown everywhere
    (["holds", "holds"], [LOW, NONE], "no difference shown"),  # unequal weights alone at one policy
    (["fails", "not shown"], [LOW, LOW], "contradicted"),  # reversed somewhere, shown nowhere
    (["fails", "holds"], [LOW, LOW], "no difference shown"),  # mixed
    (["not shown", "not shown"], [HIGH, HIGH], "contradicted"),  # the weights raise the noise everywhere
    (["holds", "holds"], [LOW, None], "no difference shown"),  # one policy measured before the nulls
    (["not shown", "not shown"], [HIGH, None], "no difference shown"),  # raised where measured, not everywhere
])
def test_the_mechanism_claim_from_hand_made_policies(verdicts, effects, expected):
    from coldstart.eval.compare import _mechanism_claim

    policies = {f"p{i}": {"seeds": 2, "assumption": {"verdict": v}, "noise": {"verdict": e, "mean": 0.8 + 0.1 * i}}
                for i, (v, e) in enumerate(zip(verdicts, effects))}
    row = _mechanism_claim(policies)
    assert row["verdict"] == expected
    assert row["text"].startswith(f"assumption holds at {verdicts.count('holds')} of 2 policies (fails at "
                                  f"{verdicts.count('fails')})")
    present = [e for e in effects if e]
    effect = "0.80-0.90" if len(present) == 2 else "0.80-0.80"
    assert row["text"].endswith(f"noise over the permuted control {effect} (lowered at {present.count(LOW)}, raised "
                                f"at {present.count(HIGH)} of {len(present)})")


def _measurement(rho: float, effect: float, verdict: str = "not shown", noise: str = NONE) -> dict:
    losses = {loss: {"mean_sq_update": 2.0 if loss == "dft" else 1.0, "noise_scale": 3.0} for loss in ("sft", "dft", "cadft")}
    deciles = {loss: [{"decile": 1, "value": effect}, {"decile": 2, "value": 1.0}] for loss in ("sft", "dft", "cadft")}
    return {"samples": 8, "losses": losses, "deciles": deciles,
            "assumption": {"dft": {"partial_rho": rho, "partial_interval": [rho - 0.1, rho + 0.1], "verdict": verdict},
                           "sft": {"rho": 0.5}},
            "nulls": {"effect": effect, "effect_interval": [effect - 0.05, effect + 0.05], "verdict": noise},
            "errors": {"cadft": {"full_sample": {"cosine": 0.9}}}}


def test_the_mechanism_over_seeds_by_hand():
    """A policy measured on three seeds is judged by the t interval over its seeds' figures (mean +- t(0.975, 2)
    * sd / sqrt(3)); a policy on one seed by that seed's own intervals (over its samples and minibatches)."""
    from scipy.stats import t

    from coldstart.eval.compare import _mechanism_claim, mechanism_policies

    mechanism = {"cadft@step4-seed1": _measurement(0.30, 0.80), "cadft@step4-seed2": _measurement(0.20, 0.90),
                 "cadft@step4-seed3": _measurement(0.25, 0.85),
                 "dft@step4-seed1": _measurement(0.05, 1.20, "holds", LOW)}
    policies = mechanism_policies(mechanism)
    assert list(policies) == ["cadft@step4", "dft@step4"]
    p = policies["cadft@step4"]
    half = t.ppf(0.975, 2) * 0.05 / 3**0.5  # the three rhos' sd is 0.05, the effects' 0.05 too
    assert p["assumption"]["mean"] == pytest.approx(0.25)
    assert p["assumption"]["interval"] == pytest.approx([0.25 - half, 0.25 + half])
    assert p["assumption"]["verdict"] == "holds"  # 0.25 - 0.124 > 0
    assert p["noise"]["interval"] == pytest.approx([0.85 - half, 0.85 + half])
    assert p["noise"]["verdict"] == LOW  # 0.85 + 0.124 < 1
    assert p["seeds"] == 3 and p["samples"] == 24 and p["cadft_over_dft"] == pytest.approx(0.5)
    assert p["deciles"]["dft"][0]["value"] == pytest.approx(0.85)
    one = policies["dft@step4"]  # one seed: its own intervals, read by the same rule
    assert one["assumption"]["interval"] == pytest.approx([-0.05, 0.15]) and one["assumption"]["verdict"] == "not shown"
    assert one["noise"]["interval"] == pytest.approx([1.15, 1.25]) and one["noise"]["verdict"] == HIGH
    row = _mechanism_claim(policies)
    assert row["verdict"] == "one seed: no difference at its policies; no verdict about the method"
    assert "intervals over 1 seeds" not in row["measured"]
    assert "one seed" in row["measured"]  # the fewest seeds any policy has is what the row can claim
    del policies["dft@step4"]
    assert _mechanism_claim(policies)["verdict"] == "supported" and "intervals over 3 seeds" in _mechanism_claim(policies)["measured"]


def test_the_minimum_detectable_effect_and_the_equivalence_test_by_hand():
    """MDE at 95% and 80% power: (1.960 + 0.842) se with many degrees of freedom, (2.776 + 0.941) se with 4 (five
    seeds). The two one-sided tests: a difference of 0.5 +- 1 is within a margin of 5 (p = P(T > 4.5)), one of
    0 +- 4 is not (p = P(T > 1.25) = 0.106: the 90% interval, +-6.6, reaches past the margin)."""
    from scipy.stats import norm

    from coldstart.statistics import equivalence_test, minimum_detectable_effect

    assert minimum_detectable_effect(1.0, math.inf) == pytest.approx(1.95996 + 0.84162, abs=1e-4)
    assert minimum_detectable_effect(2.0, 4) == pytest.approx(2 * (2.77645 + 0.94096), abs=1e-4)
    equivalent = equivalence_test(0.5, 1.0, math.inf, 5.0)
    assert equivalent["equivalent"] and equivalent["p"] == pytest.approx(norm.sf(4.5))
    inconclusive = equivalence_test(0.0, 4.0, math.inf, 5.0)
    assert not inconclusive["equivalent"] and inconclusive["p"] == pytest.approx(0.10565, abs=1e-4)


def test_the_adjusted_endpoint_by_hand():
    """Analysis of covariance with one slope, from its textbook formulas: the pooled within-group slope
    b = (Sxy_a + Sxy_b) / (Sxx_a + Sxx_b), the difference (mean y_a - mean y_b) - b (mean x_a - mean x_b), the
    residual variance (Syy - Sxy^2 / Sxx pooled) / (n - 3), and se^2 = s^2 (1/n_a + 1/n_b + (mean x_a - mean x_b)^2
    / Sxx). Group b's seed that warmed to 0.2 and gained +0.4 (regression to the mean) makes b's raw gain larger
    than a's, while at equal warm-up accuracy a is ahead."""
    from scipy.stats import t

    from coldstart.statistics import adjusted_difference

    xa, ya = [0.50, 0.55, 0.60, 0.45], [0.62, 0.66, 0.73, 0.58]
    xb, yb = [0.20, 0.45, 0.50, 0.40], [0.60, 0.58, 0.60, 0.55]

    def centred(v):
        m = sum(v) / len(v)
        return [x - m for x in v]

    def cross(u, v):
        return sum(a * b for a, b in zip(centred(u), centred(v)))

    sxx, sxy, syy = cross(xa, xa) + cross(xb, xb), cross(xa, ya) + cross(xb, yb), cross(ya, ya) + cross(yb, yb)
    slope = sxy / sxx
    mean = statistics.fmean
    difference = mean(ya) - mean(yb) - slope * (mean(xa) - mean(xb))
    s2 = (syy - sxy**2 / sxx) / (8 - 3)
    se = (s2 * (1 / 4 + 1 / 4 + (mean(xa) - mean(xb)) ** 2 / sxx)) ** 0.5
    r = adjusted_difference(ya, xa, yb, xb)
    assert r["slope"] == pytest.approx(slope) and r["difference"] == pytest.approx(difference)
    assert r["se"] == pytest.approx(se) and r["df"] == 5
    assert r["ci_high"] - r["difference"] == pytest.approx(t.ppf(0.975, 5) * se)
    raw = mean([y - x for y, x in zip(ya, xa)]) - mean([y - x for y, x in zip(yb, xb)])
    assert raw < 0 < difference  # the raw gains favour b; at equal warm-up accuracy, a
    assert adjusted_difference(ya[:1], xa[:1], yb[:2], xb[:2]) is None  # three units: no degree of freedom left
    assert adjusted_difference(ya, [0.5] * 4, yb, [0.3] * 4) is None  # the slope and the groups confounded


def test_the_primary_endpoint_and_one_seed_in_the_claims():
    """The row compare.primary names is the primary one, the rest secondary; the adjusted endpoint is a row of its
    own; with one seed, no row gives a verdict about the method, and says what the seed shows."""
    from coldstart.eval.compare import claims
    from coldstart.eval.report import claims_section

    def figure(d, low, high, seeds):
        return {"difference": d, "ci_low": low, "ci_high": high, "significant": low > 0 or high < 0, "seeds": seeds,
                "se": (high - low) / 4, "df": 4.0, "mde": (high - low) / 4 * 3.72, "slope": 0.5}

    def results(seeds):
        return {"study": {"starts": ["sft", "dft", "cadft"], "margin": 5.0, "primary": "cold-start RL (adjusted) vs dft"},
                "seeds": list(range(seeds)), "stability": {}, "rl_gain": {"cadft": figure(0.1, 0.05, 0.15, seeds)},
                "comparisons": {"RL gain of cadft vs sft": figure(-0.10, -0.15, -0.05, seeds),
                                "RL gain of cadft vs dft": figure(0.0, -0.02, 0.02, seeds)},
                "adjusted": {"cadft vs dft": figure(0.08, 0.02, 0.14, seeds)} if seeds > 1 else {}}

    rows = {(r["claim"], r["vs"]): r for r in claims(results(5))}
    assert [k for k, r in rows.items() if r["role"] == "primary"] == [("cold-start RL (adjusted)", "dft")]
    assert rows[("cold-start RL (adjusted)", "dft")]["verdict"] == "supported"
    assert rows[("cold-start RL (adjusted)", "sft")]["verdict"] == "not measured"
    assert rows[("cold-start RL", "sft")]["verdict"] == "contradicted"
    assert rows[("cold-start RL", "dft")]["verdict"] == "equivalent within the margin"
    table = "\n".join(claims_section({**results(5), "claims": list(rows.values())}))
    assert "| cold-start RL (adjusted) | dft | **primary** | accuracy after GRPO at equal accuracy after warm-up" in table
    assert "The primary endpoint, declared before the study (compare.primary), is cold-start RL (adjusted) vs dft" in table

    one = {(r["claim"], r["vs"]): r for r in claims(results(1))}
    assert one[("cold-start RL", "sft")]["verdict"] == "one seed: worse on these problems; no verdict about the method"
    assert one[("cold-start RL", "dft")]["verdict"] == "one seed: no difference on these problems; no verdict about the method"
    assert one[("cold-start RL (adjusted)", "dft")]["verdict"] == "not measured (needs two seeds or more)"
    assert not any(r["verdict"] in ("supported", "contradicted", "inconclusive", "equivalent within the margin")
                   for r in one.values())


def test_the_primary_endpoint_is_checked_when_the_config_loads(tmp_path):
    from coldstart.config import load_config
    from coldstart.errors import ColdstartError

    assert load_config(None, ["compare.primary=generalization vs sft"]).compare.primary == "generalization vs sft"
    for bad in ("cold-start RL vs none", "speed vs dft", "cold-start RL vs cadft"):
        with pytest.raises(ColdstartError, match="compare.primary"):
            load_config(None, [f"compare.primary={bad}"])
    with pytest.raises(ColdstartError, match="compare.primary"):  # dft is not compared here
        load_config(None, ["compare.starts=[sft, cadft]", "compare.primary=cold-start RL vs dft"])
    assert load_config(None).compare.primary is None  # none declared: every row exploratory
    starts = "compare.starts=[none, sft, dft, cadft, cadft-rewrite, dft-matched, cadft-matched]"
    assert load_config(None, [starts, "compare.primary=cold-start RL (adjusted) vs dft-matched"])
    for bad, why in (("generalization vs dft-matched", "warm-up is its loss's"),
                     ("cold-start RL vs cadft-rewrite", "another warm-up loss than cadft's"),
                     ("cold-start RL vs none", "another warm-up loss")):
        with pytest.raises(ColdstartError, match=why):
            load_config(None, [starts, f"compare.primary={bad}"])
    with pytest.raises(ColdstartError, match="compare.rl: true"):
        load_config(None, ["compare.rl=false", "compare.primary=cold-start RL vs dft"])


def test_the_learning_curves_over_seeds_by_hand():
    """Per start the mean curve over seeds at each step, the areas' mean with a t interval over seeds, and cadft's
    area minus sft's paired by seed: areas 0.30, 0.40, 0.35 against 0.25, 0.30, 0.35 differ by 0.05, 0.10, 0.00
    (mean 0.05, sd 0.05)."""
    from scipy.stats import t

    from coldstart.eval.compare import learning_curves

    class Run:
        def __init__(self, curve, area):
            self.metrics = {"curve": [{"step": s, "accuracy": a} for s, a in curve], "curve_area": area}

        def manifest(self):
            return {"stages": {"rl": {"metrics": self.metrics}}}

    areas = {"cadft": (0.30, 0.40, 0.35), "sft": (0.25, 0.30, 0.35)}
    runs = {f"{start}-seed{seed}": Run([(0, 0.1 * i), (5, 0.2 * i)], area)
            for start, values in areas.items() for i, (seed, area) in enumerate(zip((1, 2, 3), values), start=1)}
    curves = learning_curves(runs, ["sft", "cadft"], [1, 2, 3], [("cadft", "sft")])
    assert curves["starts"]["sft"]["steps"] == [0, 5]
    assert curves["starts"]["sft"]["mean"] == pytest.approx([0.2, 0.4])
    assert curves["starts"]["cadft"]["area"]["mean"] == pytest.approx(0.35)
    half = t.ppf(0.975, 2) * 0.05 / 3**0.5
    assert curves["starts"]["cadft"]["area"]["interval"] == pytest.approx([0.35 - half, 0.35 + half])
    d = curves["comparisons"]["area of cadft vs sft"]
    assert d["difference"] == pytest.approx(0.05) and d["ci_low"] == pytest.approx(0.05 - half) and not d["significant"]
    assert learning_curves({name: Run([], None) for name in runs}, ["sft", "cadft"], [1, 2, 3], [("cadft", "sft")]) == {}


def test_start_variants_and_the_pairs_compared():
    """'-rewrite' turns cadft's rewriting on (a plain cadft start reweights only); '-matched' samples GRPO at the
    handoff's calibrated temperature; a matched start is compared with cadft-matched, so that both explore alike."""
    from coldstart.config import load_config, start_parts
    from coldstart.errors import ColdstartError
    from coldstart.eval.compare import compared, start_config

    assert start_parts("cadft-rewrite-matched") == ("cadft", {"rewrite", "matched"})
    for bad in ("dft-rewrite", "none-matched", "cadft-matched-matched", "cadft-matched-rewrite", "ppo", "cadft-fast"):
        assert start_parts(bad) is None
        with pytest.raises(ColdstartError, match="compare.starts"):
            load_config(None, [f"compare.starts=[sft, {bad}]"])
    cfg = load_config(None, ["compare.starts=[none, dft, cadft, cadft-rewrite, dft-matched, cadft-matched]"])
    plain, rewrite, matched = (start_config(cfg, s, 7) for s in ("cadft", "cadft-rewrite", "dft-matched"))
    assert (plain.warmup.loss, plain.warmup.rewrite.enabled, plain.rl.temperature) == ("cadft", False, 1.0)
    assert (rewrite.warmup.loss, rewrite.warmup.rewrite.enabled) == ("cadft", True)
    assert (matched.warmup.loss, matched.rl.temperature, matched.name) == ("dft", "auto", "quickstart/dft-matched-seed7")
    assert compared(["base", "dft", "cadft", "cadft-rewrite", "dft-matched", "cadft-matched"]) == [
        ("cadft", "base"), ("cadft", "dft"), ("cadft", "cadft-rewrite"), ("cadft-matched", "dft-matched"),
        ("cadft", "cadft-matched")]
    assert compared(["sft", "dft-matched"]) == [("dft-matched", "sft")]  # no cadft: the last start is the method's
    assert (start_config(cfg, "dft", 7).warmup.rewrite.enabled, start_config(cfg, "sft", 7).warmup.rewrite) == (
        True, cfg.warmup.rewrite)  # other losses keep the section as set: their warm-ups' fingerprints do not move


def test_a_matched_start_adopts_its_siblings_warm_up_without_copying_it(tmp_path, runtime):
    """A '-matched' start trains the same warm-up as its loss's start (only GRPO's temperature differs), so the
    comparison hard-links that warm-up instead of training it again; --force warmup trains it anyway."""
    from coldstart.config import load_config
    from coldstart.eval.compare import run_matrix

    cfg = load_config(None, [f"output_dir={tmp_path}", "name=study", "compare.starts=[dft, cadft, dft-matched]",
                             "compare.seeds=[3]"])
    trained = []

    def warmup(sub, run_dir, runtime, force):
        def body(work):
            trained.append(sub.name)
            (work / "final").mkdir()
            (work / "final" / "model.safetensors").write_text(sub.warmup.loss + " " * (1 << 20))
            return {"steps": 16}
        fingerprint = {"seed": sub.seed, "warmup": sub.warmup.loss, "rewrite": sub.warmup.rewrite.enabled}
        run_dir.run_stage("warmup", fingerprint, body, force=force)

    stages = {"warmup": warmup, **{s: (lambda *a, **k: None) for s in ("handoff", "rl", "eval")}}
    runs = run_matrix(cfg, stages, runtime, force=[])
    assert trained == ["study/dft-seed3", "study/cadft-seed3"]
    mine, sibling = (runs[f"{s}-seed3"].stage_dir("warmup") / "final" / "model.safetensors" for s in ("dft-matched", "dft"))
    assert mine.read_text().strip() == "dft" and mine.stat().st_ino == sibling.stat().st_ino
    entry = runs["dft-matched-seed3"].finished("warmup")
    assert entry["adopted_from"] == str(runs["dft-seed3"].root) and entry["seconds"] == 0.0
    assert entry["metrics"] == {"steps": 16}
    assert "temperature: auto" in (runs["dft-matched-seed3"].root / "config.yaml").read_text()  # its own config

    run_matrix(cfg, stages, runtime, force=[])  # finished: nothing trains, nothing is adopted again
    assert len(trained) == 2
    run_matrix(cfg, stages, runtime, force=["warmup"])
    assert trained[2:] == ["study/dft-seed3", "study/cadft-seed3", "study/dft-matched-seed3"]
    assert sibling.read_text().strip() == "dft"  # forcing the matched start's warm-up left its sibling's files alone
