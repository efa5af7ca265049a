"""End-to-end runs of the `coldstart` command on the real embedded model with a tiny budget."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

TINY = [
    "data.arith.num_train=8",
    "warmup.max_steps=2",
    "warmup.per_device_train_batch_size=4",
    "warmup.max_length=192",
    "warmup.save_steps=1",
]


def coldstart(*args):
    return subprocess.run(
        [sys.executable, "-m", "coldstart.cli", *args], capture_output=True, text=True, timeout=900
    )


def with_sets(config, tmp_path, *extra):
    out = [config, "--set", f"output_dir={tmp_path}", "--set", "name=e2e"]
    for item in TINY + list(extra):
        out += ["--set", item]
    return out


@pytest.mark.slow
def test_warmup_end_to_end_skip_refuse_force(tmp_path):
    args = with_sets("configs/quickstart.yaml", tmp_path)
    done = coldstart("warmup", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "e2e"
    manifest = json.loads((run / "manifest.json").read_text())
    entry = manifest["stages"]["warmup"]
    assert entry["status"] == "done" and entry["metrics"]["steps"] == 2 and entry["metrics"]["loss"] == "cadft"
    assert "warmup:\n  loss: cadft" in (run / "config.yaml").read_text()
    assert (run / "warmup" / "weights.png").is_file()
    rewrites = [json.loads(line) for line in (run / "warmup" / "rewrites.jsonl").read_text().splitlines()]
    assert {r["step"] for r in rewrites} == {1} and entry["metrics"]["rewrites"]["attempts"] == len(rewrites)
    assert set(entry["metrics"]["by_style"]) <= {"concise", "verbose", "notation", "answer_only", "wrong"}
    assert not list((run / "warmup").glob("checkpoint-*"))  # dropped once finished
    final = run / "warmup" / "final"
    assert (final / "model.safetensors").is_file() and (final / "chat_template.jinja").is_file()
    lines = (run / "warmup" / "metrics.jsonl").read_text().splitlines()
    logged = [json.loads(line) for line in lines]
    assert [m["step"] for m in logged if "loss" in m] == [1, 2]
    assert all(0 < m["compat_mean"] <= 1 and "nll" in m for m in logged if "loss" in m)

    # plain transformers loads the result and answers through its chat template
    tok = AutoTokenizer.from_pretrained(final)
    model = AutoModelForCausalLM.from_pretrained(final)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3? Give the final answer as \\boxed{N}."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=24, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert answer.strip()

    started = time.time()
    again = coldstart("warmup", *args)
    assert again.returncode == 0 and "skipped" in again.stderr
    assert time.time() - started < 60
    assert json.loads((run / "manifest.json").read_text())["stages"]["warmup"]["ended"] == entry["ended"]

    refused = coldstart("warmup", *args, "--set", "warmup.loss=dft")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].endswith(
        "finished with another config (warmup.loss: its default -> 'dft'); pass --force warmup to redo it "
        "or --set name=<new run> to keep both"
    )

    forced = coldstart("warmup", *args, "--set", "warmup.loss=dft", "--force", "warmup")
    assert forced.returncode == 0, forced.stderr[-3000:]
    entry = json.loads((run / "manifest.json").read_text())["stages"]["warmup"]
    assert entry["metrics"]["loss"] == "dft" and entry["fingerprint_data"]["warmup"]["loss"] == "dft"


def test_bad_config_is_one_line_without_traceback(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("warmup:\n  los: dft\n")
    result = coldstart("warmup", str(config))
    assert result.returncode == 2
    assert result.stderr == f"coldstart: error: {config}:2: warmup.los: unknown key; did you mean 'loss'?\n"


@pytest.mark.slow
def test_score_agrees_with_an_independent_forward(tmp_path, embedded_dir):
    args = with_sets("configs/quickstart.yaml", tmp_path, "data.arith.num_train=20")
    done = coldstart("score", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "e2e" / "score"
    scores = [json.loads(line) for line in (folder / "scores.jsonl").read_text().splitlines()]
    summary = json.loads((folder / "summary.json").read_text())
    assert len(scores) == 20 and (folder / "compatibility.png").is_file() and summary["count"] == 20

    # independently: plain transformers, the chat template, one sample at a time, no coldstart code
    from coldstart.arith import generate_arith  # only to get the same 20 samples
    from coldstart.config import load_config

    cfg = load_config("configs/quickstart.yaml", ["data.arith.num_train=20"])
    samples = generate_arith(cfg.data.arith, "train", 20, cfg.seed)
    tok = AutoTokenizer.from_pretrained(embedded_dir)
    model = AutoModelForCausalLM.from_pretrained(embedded_dir, dtype=torch.float32)
    for sample, scored in zip(samples, scores):
        prompt = tok.apply_chat_template(sample["prompt"], add_generation_prompt=True, tokenize=False)
        full = tok.apply_chat_template(sample["prompt"] + sample["completion"], tokenize=False)
        ids = tok(full, return_tensors="pt", add_special_tokens=False)["input_ids"]
        start = len(tok(prompt, add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
        targets = ids[0, start:]
        mean_logprob = logp[start - 1 :].gather(-1, targets.unsqueeze(-1)).mean().item()
        assert scored["id"] == sample["id"] and scored["num_tokens"] == len(targets)
        assert scored["compatibility"] == pytest.approx(float(np.exp(mean_logprob)), rel=1e-4)


@pytest.mark.slow
def test_greedy_eval_of_the_same_checkpoint_is_identical(tmp_path, embedded_dir):
    outs = []
    for i in range(2):
        out = tmp_path / f"e{i}"
        done = coldstart("eval", "--model", str(embedded_dir), "--benchmark", "arith", "--out", str(out),
                         "--set", "eval.num_problems=6", "--set", "eval.max_new_tokens=48")
        assert done.returncode == 0, done.stderr[-3000:]
        assert "accuracy" in done.stdout
        outs.append((out / "records.jsonl").read_text())
    assert outs[0] == outs[1]
    records = [json.loads(line) for line in outs[0].splitlines()]
    assert len(records) == 6 and {"id", "completion", "extracted", "correct"} <= set(records[0])
