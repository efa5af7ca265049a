"""Experiment tracking (`report_to`): a run is one group in the tracker, each stage a run in it, read back from
the trackers' own local stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from coldstart.cli import main
from coldstart.config import load_config
from coldstart.preflight import run_checks
from tests.test_pipeline import tiny_run_args


def test_tensorboard_holds_each_stage_of_the_run(tmp_path, tokenizer):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(tiny_run_args("run", tmp_path, tokenizer, "tb", "report_to=tensorboard")) == 0
    logs = tmp_path / "tb" / "tensorboard"
    assert sorted(p.name for p in logs.iterdir()) == ["eval", "handoff", "rl", "warmup"]

    def scalars(stage):
        events = EventAccumulator(str(logs / stage))
        events.Reload()
        return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}

    def logged(stage, key):  # what the stage's metrics.jsonl (and the console) got, step by step
        rows = [json.loads(line) for line in (tmp_path / "tb" / stage / "metrics.jsonl").read_text().splitlines()]
        return [pytest.approx(r[key]) for r in rows if key in r]

    warmup, rl = scalars("warmup"), scalars("rl")
    assert len(warmup["train/loss"]) == 2 and warmup["train/loss"] == logged("warmup", "loss")  # a value per step
    assert warmup["train/weight_mean"] == logged("warmup", "weight_mean") and len(warmup["train/weight_mean"]) == 2
    assert all(0 < w <= 1 for w in warmup["train/weight_mean"]) and "train/style/verbose/weight" in warmup
    # GRPO logs its reward at each step that generated (one round serves both steps here)
    assert rl["train/reward"] == logged("rl", "reward") and len(rl["train/reward"]) == 1
    assert rl["train/zero_variance_share"] == logged("rl", "zero_variance_share")
    results = json.loads((tmp_path / "tb" / "eval" / "results.json").read_text())
    assert scalars("eval")["models/rl/accuracy"] == [pytest.approx(results["models"]["rl"]["accuracy"])]
    assert "rollouts/pass@1" in scalars("handoff")


def test_trackio_holds_the_stages_under_the_runs_project_offline(tmp_path, tokenizer):
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "HF_HUB_OFFLINE": "1"}
    args = tiny_run_args("run", tmp_path, tokenizer, "tk", "report_to=trackio")
    done = subprocess.run([sys.executable, "-m", "coldstart.cli", *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    read = ("import json; from trackio.sqlite_storage import SQLiteStorage as S; "
            "print(json.dumps({r: S.get_logs('tk', r) for r in S.get_runs('tk')}, default=str))")
    logged = json.loads(subprocess.run([sys.executable, "-c", read], env=env, capture_output=True, text=True,
                                       check=True).stdout)
    assert set(logged) == {"warmup", "rl", "handoff", "eval"}
    assert sum("train/loss" in row for row in logged["warmup"]) == 2
    assert sum("train/weight_mean" in row for row in logged["warmup"]) == 2
    assert sum("train/reward" in row for row in logged["rl"]) == 1 and any("train/zero_variance_share" in row
                                                                          for row in logged["rl"])
    assert any("models/rl/accuracy" in row for row in logged["eval"])


def test_a_tracker_that_is_not_installed_is_refused_with_its_extra(tiny_dir, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trackio" else real(name, *a))
    cfg = load_config(None, [f"model.name_or_path={tiny_dir}", "report_to=[trackio, tensorboard]"])
    found = [f for f in run_checks(cfg) if f.check == "tracking"]
    assert [(f.level, f.message) for f in found] == [
        ("error", "report_to: trackio, tensorboard asked for, not installed: pip install 'coldstart[trackio]'")]
    cfg = load_config(None, [f"model.name_or_path={tiny_dir}", "report_to=trakio"])
    assert [f.message for f in run_checks(cfg) if f.check == "tracking"] == [
        "report_to: 'trakio' is not a tracker coldstart groups runs for (trackio, tensorboard, wandb or none); "
        "did you mean 'trackio'?"]


def test_a_wandb_run_ends_with_its_stage_and_says_whether_it_failed(monkeypatch):
    """transformers' callback leaves wandb's run open: the stage closes it, with exit code 1 when the stage raised
    (wandb would show a crashed stage as finished otherwise)."""
    import types

    from coldstart.tracking import stage_env

    finished = []
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(finish=lambda exit_code=None: finished.append(exit_code)))
    cfg = load_config(None, ["report_to=wandb"])
    with stage_env(cfg, "warmup"):
        assert os.environ["WANDB_RUN_GROUP"] == cfg.name
    with pytest.raises(RuntimeError, match="out of memory"):
        with stage_env(cfg, "rl"):
            raise RuntimeError("out of memory")
    assert finished == [0, 1]
