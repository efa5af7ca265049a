"""Evaluation sets by name (`coldstart.benchmarks`), the eval stage's out-of-distribution records, and the
comparison's analysis of them."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from coldstart.arith import generate_arith
from coldstart.benchmarks import load_set, svamp_rows
from coldstart.config import load_config
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


def test_the_eval_stage_grades_the_out_of_distribution_sets(tiny_cfg, tiny_dir, monkeypatch):
    from coldstart.runs import RunDir, read_jsonl
    from coldstart.stages import evaluation

    cfg = dataclasses.replace(tiny_cfg, eval=dataclasses.replace(
        tiny_cfg.eval, max_new_tokens=4, num_problems=3, base=False, benchmarks=["svamp", "arith-ood"]))
    run = RunDir(cfg.run_dir)
    # the stage's own model discovery is tested with the pipeline; here, one model folder
    monkeypatch.setattr(evaluation, "run_models", lambda cfg, run_dir: {"warmup": ("fingerprint", tiny_dir)})
    evaluation.run(cfg, run)
    records = read_jsonl(run.stage_dir("eval") / "records.jsonl")
    results = json.loads((run.stage_dir("eval") / "results.json").read_text())
    assert [r.get("set") for r in records] == [None] * 3 + ["svamp"] * 3 + ["arith-ood"] * 3
    assert set(results["benchmarks"]) == {"svamp", "arith-ood"} and results["benchmarks"]["svamp"]["warmup"]["problems"] == 3
    report = (run.stage_dir("eval") / "report.md").read_text()
    assert "svamp, 3 problems (greedy)" in report


def test_the_comparison_pools_the_out_of_distribution_sets(tmp_path):
    from coldstart.eval.compare import analyse, study_of
    from coldstart.eval.report import render
    from coldstart.runs import RunDir, write_jsonl

    held = {"sft": [1, 0, 1, 0], "cadft": [1, 1, 1, 0]}
    ood = {"sft": {"a": [0, 0], "b": [1, 0]}, "cadft": {"a": [1, 0], "b": [1, 1]}}
    runs = {}
    for start in ("sft", "cadft"):
        for seed in (1, 2):
            run = RunDir(tmp_path / f"{start}-seed{seed}")
            (run.root / "eval").mkdir(parents=True)
            lines = [{"model": "warmup", "id": f"p{i}", "correct": c} for i, c in enumerate(held[start])]
            lines += [{"model": "warmup", "set": name, "id": f"{name}{i}", "correct": c}
                      for name, scores in ood[start].items() for i, c in enumerate(scores)]
            write_jsonl(run.root / "eval" / "records.jsonl", lines)
            runs[f"{start}-seed{seed}"] = run
    cfg = load_config(None, ["compare.starts=[sft, cadft]", "compare.seeds=[1, 2]", "compare.rl=false"])
    results = analyse(study_of(cfg), runs)
    assert results["ood"]["sets"] == ["a", "b"]
    assert results["ood"]["arms"]["cadft"]["accuracy"] == pytest.approx(3 / 4)  # a: 1, 0; b: 1, 1
    assert results["ood"]["arms"]["sft@b"]["accuracy"] == pytest.approx(1 / 2)
    assert results["ood"]["cadft vs sft"]["difference"] == pytest.approx(2 / 4)
    generalization = next(r for r in results["claims"] if r["claim"] == "generalization")
    assert generalization["figure"] == results["ood"]["cadft vs sft"] and generalization["vs"] == "sft"
    assert "## Out of distribution" in render(results)
    json.dumps(results)
