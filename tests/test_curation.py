"""The handoff acting on its rollouts: RL prompts kept by pass rate, and the warm-up checkpoint picked by pass@k."""

import json

import pytest
import torch
from safetensors.torch import load_file

from coldstart import rewards
from coldstart.cli import main
from coldstart.curation import curate, curation_summary, pick_checkpoint
from test_pipeline import tiny_run_args


def test_curation_band_on_hand_made_counts():
    correct = [0, 1, 4, 8, 7, 8, 0]
    assert curate(correct, 8, 0.0, 1.0, 0.0, seed=0) == [
        "all wrong", "informative", "informative", "all right", "informative", "all right", "all wrong"]
    # a narrower band: 1/8 = 0.125 and 7/8 = 0.875 fall outside (0.2, 0.8)
    assert curate(correct, 8, 0.2, 0.8, 0.0, seed=0) == [
        "all wrong", "outside the band", "informative", "all right", "outside the band", "all right", "all wrong"]
    assert curate(correct, 8, 0.0, 1.0, 1.0, seed=0).count("kept at random") == 4
    some = curate([0] * 200, 8, 0.0, 1.0, 0.25, seed=3)
    assert some == curate([0] * 200, 8, 0.0, 1.0, 0.25, seed=3)  # seeded
    assert 30 <= some.count("kept at random") <= 70  # a quarter of 200, within sampling noise
    summary = curation_summary(correct, 8, curate(correct, 8, 0.0, 1.0, 0.0, seed=0))
    assert summary["pool"] == 7 and summary["kept"] == 3 and summary["zero_variance_kept"] == 0.0
    assert summary["zero_variance_pool"] == pytest.approx(4 / 7)
    assert summary["by_reason"] == {"all right": 2, "all wrong": 2, "informative": 3}


def test_checkpoint_rule_on_hand_made_figures():
    table = [
        {"name": "checkpoint-4", "step": 4, "pass@k": 0.50, "zero_variance": 0.6},
        {"name": "checkpoint-8", "step": 8, "pass@k": 0.75, "zero_variance": 0.5},
        {"name": "checkpoint-12", "step": 12, "pass@k": 0.75, "zero_variance": 0.4},
        {"name": "final", "step": 16, "pass@k": 0.70, "zero_variance": 0.1},
    ]
    assert pick_checkpoint(table) == 2  # pass@k first, then the lower zero-variance share
    table[1]["zero_variance"] = 0.4
    assert pick_checkpoint(table) == 2  # a full tie: the later step
    table[0]["pass@k"] = 0.9
    assert pick_checkpoint(table) == 0


def test_rl_trains_only_on_the_prompts_the_handoff_kept(tmp_path, tokenizer, monkeypatch):
    fed = []
    real = rewards.REWARDS["format"]

    def recording(completions, **kwargs):
        fed.extend(kwargs["id"])
        return real(completions, **kwargs)

    monkeypatch.setitem(rewards.REWARDS, "format", recording)
    # a random model gets every prompt wrong: keep_rest keeps a random share, the rest is dropped
    args = tiny_run_args("run", tmp_path, tokenizer, "c", "handoff.curate.enabled=true", "handoff.curate.keep_rest=0.5",
                         "rl.num_prompts=8", "rl.steps_per_generation=1")
    assert main(args) == 0
    run = tmp_path / "c"
    chosen = [json.loads(line) for line in (run / "handoff" / "prompts.jsonl").read_text().splitlines()]
    kept = {r["id"] for r in chosen if r["kept"]}
    assert len(chosen) == 8 and 0 < len(kept) < 8
    assert {r["reason"] for r in chosen} == {"kept at random", "all wrong"} and all(r["correct"] == 0 for r in chosen)
    assert fed and set(fed) <= kept
    handoff = json.loads((run / "handoff" / "handoff.json").read_text())
    assert handoff["curation"]["kept"] == len(kept) and (run / "handoff" / "pass_rates.png").is_file()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["rl"]["metrics"]["prompts"]["used"] == len(kept)
    assert "## RL prompts kept for GRPO" in (run / "handoff" / "mismatch.md").read_text()


def test_the_picked_warmup_checkpoint_is_the_one_handed_over(tmp_path, tokenizer, monkeypatch):
    from coldstart.stages import handoff

    monkeypatch.setattr(handoff, "pick_checkpoint", lambda table: 0)  # the rule is tested above; here, the plumbing
    args = tiny_run_args("warmup", tmp_path, tokenizer, "s", "warmup.keep_checkpoints=true", "warmup.save_steps=1",
                         "warmup.max_steps=2", "handoff.select_checkpoint.enabled=true",
                         "handoff.select_checkpoint.prompts=2")
    assert main(args) == 0
    args[0] = "handoff"
    assert main(args) == 0
    run = tmp_path / "s"
    summary = json.loads((run / "handoff" / "handoff.json").read_text())
    assert [c["name"] for c in summary["checkpoints"]] == ["checkpoint-1", "final"]
    assert summary["checkpoint"] == "checkpoint-1" and summary["checkpoints"][0]["picked"]
    exported = load_file(run / "handoff" / "model" / "model.safetensors")
    picked = load_file(run / "warmup" / "checkpoint-1" / "model.safetensors")
    final = load_file(run / "warmup" / "final" / "model.safetensors")
    name = next(k for k in picked if "layers.0" in k)
    assert torch.equal(exported[name], picked[name]) and not torch.equal(exported[name], final[name])


def test_selection_needs_the_kept_checkpoints(tmp_path, capsys):
    assert main(["warmup", "configs/quickstart.yaml", "--set", "handoff.select_checkpoint.enabled=true",
                 "--set", f"output_dir={tmp_path}"]) == 2
    assert "set warmup.keep_checkpoints: true" in capsys.readouterr().err
