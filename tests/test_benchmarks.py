"""Evaluation sets by name (`coldstart.benchmarks`), the eval stage's out-of-distribution records, and the
comparison's analysis of them."""

from __future__ import annotations

import dataclasses
import json
import re

from pathlib import Path

import pytest

from coldstart.arith import generate_arith
from coldstart.benchmarks import MATH_BENCHMARKS, load_set, math_samples, svamp_rows
from coldstart.config import load_config
from coldstart.errors import ColdstartError
from coldstart.grading import is_correct, parse_gold


def test_svamp_is_shipped_and_read():
    rows = svamp_rows()
    assert len(rows) == 1000 and len({r["id"] for r in rows}) == 1000
    first = rows[0]  # {"Answer": 145.0, "Body": "There are 87 oranges and 290 bananas ...", "Question": "How big ..."}
    assert first["answer"] == "145" and parse_gold(first["answer"])
    assert first["prompt"][0]["content"].startswith("There are 87 oranges and 290 bananas in Philip's collection.")
    assert first["prompt"][0]["content"].endswith("How big is each group of bananas? Give the final answer as \\boxed{N}.")
    assert all(is_correct(r["answer"], f"so \\boxed{{{r['answer']}}}") for r in rows[:50])


def test_arith_ood_lies_outside_the_training_distribution():
    cfg = load_config(None, ["data.arith.max_steps=2", "data.arith.max_operand=20", "data.arith.num_test=50"])
    ood = load_set(cfg, "arith-ood", 50)
    train = generate_arith(cfg.data.arith, "train", 500, cfg.seed)
    assert len(ood) == 50 and len(set(ood["id"])) == 50
    trained_openings = {t["prompt"][0]["content"].split(".")[0].split(" has ")[-1] for t in train}
    for row in ood:
        text = row["prompt"][0]["content"]
        numbers = [int(n) for n in re.findall(r"\d+", text.replace("\\boxed{N}", ""))]
        assert numbers[0] > 20  # the starting amount is beyond every trained operand
        assert text.startswith("At first there are") and " has " not in text
        assert not any(text.startswith(o) for o in trained_openings)
    assert all(str(int(a)) == a for a in ood["answer"])


def test_the_eval_stage_grades_the_out_of_distribution_sets(tiny_cfg, tiny_dir, runtime, monkeypatch):
    from coldstart.runs import RunDir, read_jsonl
    from coldstart.stages import evaluation

    cfg = dataclasses.replace(tiny_cfg, eval=dataclasses.replace(
        tiny_cfg.eval, max_new_tokens=4, num_problems=3, base=False, benchmarks=["svamp", "arith-ood"]))
    run = RunDir(cfg.run_dir)
    # the stage's own model discovery is tested with the pipeline; here, one model folder
    monkeypatch.setattr(evaluation, "run_models", lambda cfg, run_dir: {"warmup": ("fingerprint", tiny_dir)})
    evaluation.run(cfg, run, runtime)
    records = read_jsonl(run.stage_dir("eval") / "records.jsonl")
    results = json.loads((run.stage_dir("eval") / "results.json").read_text())
    assert [r.get("set") for r in records] == [None] * 3 + ["svamp"] * 3 + ["arith-ood"] * 3
    assert set(results["benchmarks"]) == {"svamp", "arith-ood"} and results["benchmarks"]["svamp"]["warmup"]["problems"] == 3
    report = (run.stage_dir("eval") / "report.md").read_text()
    assert "svamp, 3 problems (greedy)" in report


def ood_runs(tmp_path, held, ood, seeds=(1, 2)):
    """Finished comparison runs whose eval records hold `held` (start: scores on the held-out split) and `ood`
    (start: set: scores, the same for every seed; or a function of the seed giving that)."""
    from coldstart.runs import RunDir, write_jsonl

    runs = {}
    for start in held:
        for seed in seeds:
            run = RunDir(tmp_path / f"{start}-seed{seed}")
            (run.root / "eval").mkdir(parents=True)
            lines = [{"model": "warmup", "id": f"p{i}", "correct": c} for i, c in enumerate(held[start])]
            sets = (ood(seed) if callable(ood) else ood)[start]
            lines += [{"model": "warmup", "set": name, "id": f"{name}{i}", "correct": c}
                      for name, scores in sets.items() for i, c in enumerate(scores)]
            write_jsonl(run.root / "eval" / "records.jsonl", lines)
            runs[f"{start}-seed{seed}"] = run
    return runs


def test_the_comparison_averages_the_out_of_distribution_sets(tmp_path):
    """Each set weighs the same in the average (sets of 2 and 4 problems), and each set gets its own comparison."""
    from coldstart.eval.compare import analyse, study_of
    from coldstart.eval.report import render

    held = {"sft": [1, 0, 1, 0], "cadft": [1, 1, 1, 0]}
    ood = {"sft": {"a": [0, 0], "b": [1, 0, 1, 1]}, "cadft": {"a": [1, 0], "b": [1, 1, 1, 1]}}
    runs = ood_runs(tmp_path, held, ood)
    cfg = load_config(None, ["compare.starts=[sft, cadft]", "compare.seeds=[1, 2]", "compare.rl=false"])
    results = analyse(study_of(cfg), runs)
    assert results["ood"]["sets"] == ["a", "b"]
    assert results["ood"]["arms"]["cadft"]["accuracy"] == pytest.approx((1 / 2 + 1) / 2)  # not 5 / 6 pooled
    assert results["ood"]["arms"]["sft@b"]["accuracy"] == pytest.approx(3 / 4)
    assert results["ood"]["cadft vs sft"]["difference"] == pytest.approx(3 / 4 - 3 / 8)
    per_set = results["ood"]["cadft vs sft"]["sets"]
    assert per_set["a"]["difference"] == pytest.approx(1 / 2) and per_set["b"]["difference"] == pytest.approx(1 / 4)
    generalization = next(r for r in results["claims"] if r["claim"] == "generalization")
    assert generalization["figure"] == results["ood"]["cadft vs sft"] and generalization["vs"] == "sft"
    report = render(results)
    assert "## Out of distribution" in report and "| arm | held-out | a | b | average |" in report
    assert "- cadft vs sft, out of distribution (average of 2 sets): " in report
    json.dumps(results)


def test_the_out_of_distribution_average_counts_the_spread_within_each_set(tmp_path):
    """The sets are fixed: a difference between their means is no uncertainty. Every problem of set a right and
    every one of b wrong, on every seed, is an average of exactly 1/2 (pooling the sets' problems would give it an
    interval as wide as a coin's); a run not graded on a set the others were graded on is named."""
    import statistics

    from scipy.stats import t

    from coldstart.eval.compare import analyse, study_of
    from coldstart.runs import read_jsonl, write_jsonl

    held = {"sft": [1, 0, 1, 0], "cadft": [1, 1, 1, 0]}
    ood = {"sft": {"a": [1, 1, 1], "b": [0, 0, 0]}, "cadft": {"a": [1, 1, 1], "b": [1, 1, 0]}}
    cfg = load_config(None, ["compare.starts=[sft, cadft]", "compare.seeds=[1, 2, 3]", "compare.rl=false"])
    results = analyse(study_of(cfg), ood_runs(tmp_path / "full", held, ood, seeds=(1, 2, 3)))
    sft = results["ood"]["arms"]["sft"]
    assert (sft["accuracy"], sft["ci_low"], sft["ci_high"]) == pytest.approx((0.5, 0.5, 0.5))
    diff = results["ood"]["cadft vs sft"]
    assert diff["difference"] == pytest.approx(1 / 3) and diff["ci_high"] - diff["ci_low"] > 0  # b's problems differ

    # seeds that differ, sets of 2 and 4 problems, every problem of a set alike within a seed: the problems add no
    # variance, so the interval is the t interval of the seeds' macro averages (0.5, 0.5, 0.5, 1), not of their
    # pooled means (1/3, 1/3, 2/3, 1)
    by_seed = {1: (1, 0), 2: (1, 0), 3: (0, 1), 4: (1, 1)}
    seed_cfg = load_config(None, ["compare.starts=[sft, cadft]", "compare.seeds=[1, 2, 3, 4]", "compare.rl=false"])
    sft = analyse(study_of(seed_cfg), ood_runs(tmp_path / "seeds", held, lambda seed: {
        start: {"a": [by_seed[seed][0]] * 2, "b": [by_seed[seed][1]] * 4} for start in held},
        seeds=(1, 2, 3, 4)))["ood"]["arms"]["sft"]
    macro = [0.5, 0.5, 0.5, 1.0]
    half = t.ppf(0.975, 3) * statistics.stdev(macro) / 2
    assert sft["accuracy"] == pytest.approx(0.625) and sft["ci_low"] == pytest.approx(0.625 - half)
    assert sft["clipped"] == ["high"]  # 0.625 + half is above 1

    runs = ood_runs(tmp_path / "gap", held, ood, seeds=(1, 2, 3))
    lines = [r for r in read_jsonl(runs["sft-seed2"].root / "eval" / "records.jsonl") if r.get("set") != "b"]
    write_jsonl(runs["sft-seed2"].root / "eval" / "records.jsonl", lines)
    with pytest.raises(ColdstartError, match="the sft start's run with seed 2 was not graded on warmup@b"):
        analyse(study_of(cfg), runs)


SHARED = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"  # the evaluation repositories' files
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/benchmarks is not on this machine")


def test_math500_is_shipped_and_every_reference_solution_grades_correct():
    problems = MATH_BENCHMARKS["math500"].read()
    assert len(problems) == 500 and len({p.id for p in problems}) == 500
    assert problems[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"  # a tuple with a LaTeX fraction
    assert [p for p in problems if not is_correct(p.answer, p.solution)] == []


@needs_shared
def test_named_loaders_read_the_evaluation_repositories_files(tokenizer):
    problems = {name: {p.id: p for p in b.read(str(SHARED))} for name, b in MATH_BENCHMARKS.items()}
    assert {name: len(p) for name, p in problems.items()} == {
        "math500": 500, "minerva_math": 272, "olympiadbench": 675, "aime24": 30, "amc23": 40}
    olympiad, minerva = problems["olympiadbench"], problems["minerva_math"]
    assert olympiad["1664"].answer == "69, 84" and parse_gold("69, 84")[0] == {69, 84}  # '$69$,$84$': one set
    assert olympiad["1618"].answer == "(1,8,19), (2,7,13), (4,5,7)"  # a list of tuples inside one element
    assert olympiad["1610"].answer == "\\frac{1}{2 n+2}"  # the `$` delimiters dropped
    assert is_correct(olympiad["1664"].answer, "so \\boxed{84, 69}")
    assert problems["amc23"]["0"].answer == "27"  # the float 27.0
    assert problems["aime24"]["60"].answer == "204" and is_correct(problems["aime24"]["67"].answer, "\\boxed{25}")  # "025"
    assert minerva["0"].answer == "1.6"  # the last box of the solution: '=\\boxed{1.6} \\mathrm{~cm}'
    for p in (p for by_id in problems.values() for p in by_id.values()):
        parse_gold(p.answer)  # every gold answer parses
    cfg = load_config(None, [f"eval.benchmark_dir={SHARED}"])
    sample = math_samples("aime24", cfg)[0]
    text = tokenizer.apply_chat_template(sample["prompt"], add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\nPlease reason step by step, and put your final answer within "
                           "\\boxed{}.<|im_end|>\n<|im_start|>user\nEvery morning Aya goes for a $9$-kilometer-long walk")
    assert text.endswith("<|im_start|>assistant\n") and sample["id"] == "aime24-60" and sample["source"] == "aime24"


@needs_shared
def test_the_grader_on_the_reference_solutions():
    """How many reference solutions the grader scores correct against their gold answers. Minerva's gold is its
    solution's last box; one AIME solution boxes `\\textbf{(073)}`, which math-verify does not read; most
    OlympiadBench solutions end in prose with no final expression to extract."""
    counts = {}
    for name, benchmark in MATH_BENCHMARKS.items():
        solved = [p for p in benchmark.read(str(SHARED)) if p.solution]
        counts[name] = (sum(is_correct(p.answer, p.solution) for p in solved), len(solved))
    assert counts == {"math500": (500, 500), "minerva_math": (272, 272), "olympiadbench": (309, 675),
                      "aime24": (29, 30), "amc23": (0, 0)}


def test_hub_rows_map_like_the_files_and_an_offline_load_says_what_to_do(monkeypatch):
    import datasets

    minerva = MATH_BENCHMARKS["minerva_math"].row({"question": "How far?", "answer": "1.6"}, 3)
    assert (minerva.problem, minerva.answer, minerva.solution) == ("How far?", "1.6", None)
    amc = MATH_BENCHMARKS["amc23"].row({"id": 0, "question": "How many miles?", "answer": "27", "url": "u"}, 0)
    assert (amc.id, amc.problem, amc.answer) == ("0", "How many miles?", "27")

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ColdstartError, match=r"benchmark 'aime24': not shipped with the project \(no licence stated "
                                             r"\(MAA problems\)\) and loading HuggingFaceH4/aime_2024 .*set "
                                             r"eval.benchmark_dir to a folder holding aime24/test.jsonl"):
        MATH_BENCHMARKS["aime24"].read()


def test_a_bad_row_names_the_file_line_and_field(tmp_path):
    (tmp_path / "amc23").mkdir()
    (tmp_path / "amc23" / "test.jsonl").write_text('{"id": 0, "problem": "p", "answer": 1.0}\n{"id": 1, "problem": "q"}\n')
    with pytest.raises(ColdstartError, match=r"amc23/test.jsonl:2: benchmark 'amc23': field 'answer' missing"):
        MATH_BENCHMARKS["amc23"].read(str(tmp_path))


def test_eval_names_several_benchmarks_and_prints_their_table(tmp_path, tiny_dir, capsys):
    from coldstart.cli import main

    (tmp_path / "aime24").mkdir()  # an offline folder for a benchmark the project does not ship
    rows = [{"id": i, "problem": f"What is {i} + 1?", "answer": str(i + 1), "solution": "s"} for i in range(3)]
    (tmp_path / "aime24" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert main(["eval", "--model", str(tiny_dir), "--benchmark", "math500,aime24", "--out", str(out),
                 "--set", "eval.num_problems=2", "--set", "eval.num_samples=2", "--set", "eval.max_new_tokens=4",
                 "--set", f"eval.benchmark_dir={tmp_path}", "--set", "eval.benchmark_prompt=''"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["benchmarks"]) == ["math500", "aime24"]
    assert results["benchmarks"]["aime24"]["problems"] == 2 and results["average"]["problems"] == 4
    assert "avg@2" in results["average"] and results["average"]["sets"] == 2
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert [r["set"] for r in records] == ["math500"] * 2 + ["aime24"] * 2
    assert records[2]["id"] == "aime24-0" and records[2]["answer"] == "1"
    printed = capsys.readouterr().out
    assert "| set | problems | greedy accuracy | avg@2 | pass@2 |" in printed
    assert "| aime24 | 2 |" in printed and "| average of 2 | 4 |" in printed


def test_the_comparison_scores_sampled_records_by_avg_at_k(tmp_path):
    """With eval.num_samples, a problem's score is its avg@k (as the paper's table), McNemar (0/1 outcomes) is not
    computed, and --regrade, which has no sampled completions to grade, is refused."""
    from coldstart.errors import ColdstartError as Refused
    from coldstart.eval.compare import analyse, study_of
    from coldstart.eval.report import render
    from coldstart.runs import RunDir, write_jsonl

    correct = {"sft": [0, 1, 2, 4], "cadft": [4, 3, 2, 4]}  # of 4 samples per problem
    runs = {}
    for start, counts in correct.items():
        run = RunDir(tmp_path / f"{start}-seed1")
        (run.root / "eval").mkdir(parents=True)
        write_jsonl(run.root / "eval" / "records.jsonl", [
            {"model": "warmup", "id": f"p{i}", "correct": False, "samples_correct": c, "num_samples": 4,
             "answer": "1", "completion": "\\boxed{1}"} for i, c in enumerate(counts)])
        runs[f"{start}-seed1"] = run
    study = study_of(load_config(None, ["compare.starts=[sft, cadft]", "compare.seeds=[1]", "compare.rl=false"]))
    results = analyse(study, runs)
    assert results["arms"]["sft"]["accuracy"] == pytest.approx(7 / 16)  # greedy would be 0
    assert results["comparisons"]["cadft vs sft"]["difference"] == pytest.approx(6 / 16)
    assert "mcnemar_p" not in results["comparisons"]["cadft vs sft"] and results["samples"] == 4
    assert "4 held-out problems, each scored by its avg@4 (the share of 4 samples graded correct)" in render(results)
    with pytest.raises(Refused, match="--regrade can only grade greedy records again"):
        analyse(study, runs, regrade=True)
    records = runs["sft-seed1"].stage_dir("eval") / "records.jsonl"  # one run graded greedily: no common score
    records.write_text("".join(json.dumps({"model": "warmup", "id": f"p{i}", "correct": True}) + "\n" for i in range(4)))
    with pytest.raises(Refused, match=r"graded with different eval.num_samples \(\[0, 4\]\)"):
        analyse(study, runs)
