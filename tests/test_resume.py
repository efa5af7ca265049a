"""Kill-and-resume: a process SIGKILLed in each phase, re-run with the same command, loses and repeats nothing."""

import json
import os
import signal
import subprocess
import sys

import pytest

from test_pipeline import tiny_run_args

EXTRA = ["warmup.max_steps=4", "warmup.rewrite.start=2", "warmup.rewrite.every=1", "warmup.rewrite.fraction=0.25",
         "warmup.rewrite.replace_prob=1.0", "warmup.rewrite.verify=false", "rl.max_steps=3",
         "rl.steps_per_generation=1"]  # a generation round, and so rewards, in every GRPO step


def run(args, kill_at=None):
    env = {**os.environ, "COLDSTART_KILL_AT": kill_at} if kill_at else {k: v for k, v in os.environ.items() if k != "COLDSTART_KILL_AT"}
    return subprocess.run([sys.executable, "-m", "coldstart.cli", *args], env=env, capture_output=True, text=True, timeout=900)


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.mark.parametrize("kill_at", ["loss@3", "save@2", "rewrite@1", "write:manifest.json@3", "reward@2"])
def test_killed_run_resumes_without_losing_or_repeating_work(tmp_path, tokenizer, kill_at):
    args = tiny_run_args("run", tmp_path, tokenizer, "k", *EXTRA)
    killed = run(args, kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run_dir = tmp_path / "k"
    before = json.loads((run_dir / "manifest.json").read_text())["stages"]  # a whole, parseable manifest
    finished_before = {s: e["ended"] for s, e in before.items() if e["status"] == "done"}

    resumed = run(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert all(e["status"] == "done" for e in stages.values()) and len(stages) == 5
    for stage, ended in finished_before.items():
        assert stages[stage]["ended"] == ended, f"{stage} was redone"
    assert stages["warmup"]["metrics"]["steps"] == 4 and stages["rl"]["metrics"]["steps"] == 3
    for stage, steps in (("warmup", [1, 2, 3, 4]), ("rl", [1, 2, 3])):
        logged = [m["step"] for m in lines(run_dir / stage / "metrics.jsonl") if "loss" in m]
        assert logged == steps, f"{stage} logged steps {logged}"
    rewrites = lines(run_dir / "warmup" / "rewrites.jsonl")
    keys = [(r["step"], r["index"]) for r in rewrites]
    assert sorted({r["step"] for r in rewrites}) == [2, 3] and len(keys) == len(set(keys))
    assert not list(run_dir.glob(".*.partial")) and not list(run_dir.glob(".manifest.json.*.tmp"))
