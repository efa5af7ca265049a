"""The GRPO learning curve: greedy held-out accuracy every N steps (`rl.curve_every`), and its area."""

from __future__ import annotations

import json

import pytest

from coldstart.config import load_config
from coldstart.data import rl_prompts
from coldstart.runs import read_jsonl
from coldstart.runtime import Runtime
from tests.conftest import launch_two, make_tiny_model


def test_the_curve_area_by_hand():
    from coldstart.statistics import curve_area

    # trapezoids 5 x 0.3 + 5 x 0.4 + 10 x 0.5 = 8.5 over 20 steps
    assert curve_area([0, 5, 10, 20], [0.2, 0.4, 0.4, 0.6]) == pytest.approx(0.425)
    assert curve_area([0, 10], [0.5, 0.5]) == pytest.approx(0.5)
    assert curve_area([3], [0.5]) is None


def test_the_curve_grades_the_policy_as_it_trains(tokenizer, tmp_path, monkeypatch):
    """Before the first step, every 2 steps and after the last (3): the point at the last step grades the policy
    GRPO saved, problem by problem as the eval stage would; a resume drops the points past its step."""
    import coldstart.stages.rl as rl
    from coldstart.eval.evaluate import grade
    from coldstart.generation import generate

    graded = []

    def recording(*args, **kwargs):
        graded.append(grade(*args, **kwargs))
        return graded[-1]

    monkeypatch.setattr(rl, "grade", recording)
    cfg = load_config(None, ["rl.max_steps=3", "rl.curve_every=2", "rl.curve_problems=6", "rl.num_generations=2",
                             "rl.per_device_train_batch_size=4", "rl.max_completion_length=8", "eval.max_new_tokens=12",
                             "data.arith.num_train=16", "data.arith.num_test=8", "rl.save_steps=2"])
    prompts, _ = rl_prompts(cfg.data, 0, cfg.seed)
    trainer = rl.build_trainer(cfg, tmp_path, prompts, make_tiny_model(tokenizer), tokenizer, Runtime())
    trainer.train()
    curve = read_jsonl(tmp_path / "curve.jsonl")
    assert [p["step"] for p in curve] == [0, 2, 3] and all(p["problems"] == 6 for p in curve)
    assert [p["accuracy"] for p in curve] == [sum(r["correct"] for r in g) / 6 for g in graded]
    model = trainer.model.eval()
    problems = [r["id"] for r in graded[-1]]
    test, _ = rl.held_out(cfg)
    again = grade(lambda prompts, **kw: generate(model, tokenizer, prompts, **kw), test.select(range(6)), 12)
    assert [r["id"] for r in again] == problems
    assert [r["completion"] for r in again] == [r["completion"] for r in graded[-1]]
    # a resume from step 2 keeps the points up to it and measures on from there
    graded.clear()
    trainer = rl.build_trainer(cfg, tmp_path, prompts, make_tiny_model(tokenizer), tokenizer, Runtime())
    trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert [p["step"] for p in read_jsonl(tmp_path / "curve.jsonl")] == [0, 2, 3] and len(graded) == 1


CURVE_WORKER = """
import json, sys
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

import coldstart.stages.rl as rl
from coldstart.config import load_config
from coldstart.data import rl_prompts
from coldstart.runtime import Runtime

runtime = Runtime.start(10.0, "fp32")
model_dir, out = sys.argv[1], Path(sys.argv[2])
shares = []
grade = rl.grade
rl.grade = lambda generate, part, *a, **k: shares.append(len(part)) or grade(generate, part, *a, **k)
cfg = load_config(None, ["rl.max_steps=2", "rl.curve_every=1", "rl.curve_problems=6", "rl.num_generations=2",
                         "rl.per_device_train_batch_size=2", "rl.max_completion_length=8", "eval.max_new_tokens=12",
                         "data.arith.num_train=16", "data.arith.num_test=8", "rl.save_steps=10"])
prompts, _ = rl_prompts(cfg.data, 0, cfg.seed)
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir)
rl.build_trainer(cfg, out, prompts, model, tokenizer, runtime).train()
(out / f"shares{runtime.process_index}.json").write_text(json.dumps(shares))
"""


def test_the_curve_in_two_processes_grades_each_share_and_writes_once(tmp_path, tokenizer):
    """Under `accelerate launch --num_processes 2` each process grades half of the problems at every point, and
    the main process writes each point once, counting all of them."""
    model_dir = tmp_path / "model"
    make_tiny_model(tokenizer).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    (tmp_path / "worker.py").write_text(CURVE_WORKER)
    done = launch_two(tmp_path / "worker.py", model_dir, tmp_path / "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    curve = read_jsonl(tmp_path / "out" / "curve.jsonl")
    log = done.stdout[-2000:] + done.stderr[-3000:]
    assert [(p["step"], p["problems"]) for p in curve] == [(0, 6), (1, 6), (2, 6)], log
    for rank in (0, 1):
        assert json.loads((tmp_path / "out" / f"shares{rank}.json").read_text()) == [3, 3, 3], log
