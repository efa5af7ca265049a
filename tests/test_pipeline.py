"""The whole pipeline on a tiny random model with the embedded model's real tokenizer."""

import json

from transformers import AutoModelForCausalLM, AutoTokenizer

from coldstart.cli import main
from conftest import make_tiny_model

SETS = [
    "data.arith.num_train=8",
    "data.arith.num_test=4",
    "warmup.max_steps=2",
    "warmup.per_device_train_batch_size=4",
    "warmup.save_steps=1",
    "warmup.rewrite.max_new_tokens=8",
    "warmup.rewrite.num_candidates=2",
    "handoff.report_prompts=2",
    "handoff.min_finished=0",
    "rl.num_prompts=4",
    "rl.max_steps=2",
    "rl.num_generations=2",
    "rl.per_device_train_batch_size=2",
    "rl.max_completion_length=8",
    "rl.save_steps=1",
    "eval.num_problems=4",
    "eval.max_new_tokens=8",
]


def test_run_chains_every_stage(tmp_path, tokenizer):
    model_dir = tmp_path / "tiny"
    model = make_tiny_model(tokenizer)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id]
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    args = ["run", "configs/quickstart.yaml", "--set", f"model.name_or_path={model_dir}",
            "--set", f"output_dir={tmp_path}", "--set", "name=p"]
    for item in SETS:
        args += ["--set", item]
    assert main(args) == 0

    run = tmp_path / "p"
    manifest = json.loads((run / "manifest.json").read_text())
    assert [s for s, e in manifest["stages"].items() if e["status"] == "done"] == ["score", "warmup", "handoff", "rl", "eval"]
    for path in ("score/scores.jsonl", "warmup/final/model.safetensors", "handoff/model/model.safetensors",
                 "handoff/mismatch.md", "handoff/mismatch.png", "rl/final/model.safetensors", "rl/rewards.png",
                 "eval/records.jsonl"):
        assert (run / path).is_file(), path
    report = json.loads((run / "handoff" / "mismatch.json").read_text())
    assert {"pass@1", "pass@2", "all_correct", "all_wrong", "zero_variance", "truncated", "format", "mean_length"} <= set(report["rollouts"])
    assert report["verdicts"] and report["demonstrations"]["base"]["count"] == 8
    assert manifest["stages"]["rl"]["metrics"]["steps"] == 2
    results = json.loads((run / "eval" / "results.json").read_text())
    assert results["stage"] == "rl" and results["problems"] == 4

    exported = run / "handoff" / "model"
    tok = AutoTokenizer.from_pretrained(exported)
    reloaded = AutoModelForCausalLM.from_pretrained(exported)
    assert tok.chat_template and reloaded.config.use_cache
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in reloaded.generation_config.eos_token_id

    assert main(args) == 0  # everything finished: skipped
    assert json.loads((run / "manifest.json").read_text())["stages"]["rl"]["ended"] == manifest["stages"]["rl"]["ended"]
