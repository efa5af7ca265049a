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
    "rl.steps_per_generation=2",  # one generation round serves both steps, as in the quickstart
    "rl.max_completion_length=8",
    "rl.save_steps=1",
    "eval.num_problems=4",
    "eval.max_new_tokens=8",
]


def tiny_run_args(command, tmp_path, tokenizer, name, *extra):
    """Arguments for `command` on the quickstart config with a saved tiny random model and the SETS budget."""
    model_dir = tmp_path / "tiny"
    model = make_tiny_model(tokenizer)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id]
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    args = [command, "configs/quickstart.yaml", "--set", f"model.name_or_path={model_dir}",
            "--set", f"output_dir={tmp_path}", "--set", f"name={name}"]
    for item in SETS + list(extra):
        args += ["--set", item]
    return args


def test_run_chains_every_stage(tmp_path, tokenizer, capsys):
    args = tiny_run_args("run", tmp_path, tokenizer, "p", "rl.temperature=auto", "handoff.temperatures=[0.5, 1.5]")
    assert main(args) == 0
    printed = capsys.readouterr().out

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
    # rl.temperature: auto: the handoff's calibration curve and choice, and GRPO sampling at it
    calibration = manifest["stages"]["handoff"]["metrics"]["calibration"]
    assert [r["temperature"] for r in calibration["curve"]] == [0.5, 1.5]
    assert manifest["stages"]["rl"]["metrics"]["temperature"] == calibration["chosen"] in (0.5, 1.5)
    assert "## Sampling temperature (rl.temperature: auto, target 50% mixed groups)" in (run / "handoff" / "mismatch.md").read_text()
    # drift: the warm-up's from the base in the handoff report, GRPO's from the warmed policy in the eval
    warmed, base = report["drift"]["warmed"], report["drift"]["base"]
    assert warmed["completions"] == base["completions"] == 4  # eval.drift_prompts, cut to the 4 held-out problems
    assert warmed["kl_per_token"] > 0 and "kl_per_token" not in base and warmed["entropy_per_token"] > 0
    assert "## Drift from the base" in (run / "handoff" / "mismatch.md").read_text()
    results = json.loads((run / "eval" / "results.json").read_text())
    # (GRPO's groups here have no reward variance, so the policy may not move at all: KL >= 0, not > 0)
    assert results["drift"]["rl"]["completions"] == 4 and results["drift"]["rl"]["kl_per_token"] >= 0
    assert results["drift"]["rl"]["entropy_per_token"] > 0 and "GRPO's drift from the warmed policy" in printed
    assert set(results["models"]) == {"base", "warmup", "rl"} and results["models"]["rl"]["problems"] == 4
    accuracy = {arm: m["accuracy"] for arm, m in results["models"].items()}
    assert results["rl_gain"]["difference"] == accuracy["rl"] - accuracy["warmup"]
    assert results["warmup_gain"]["difference"] == accuracy["warmup"] - accuracy["base"]
    records = [json.loads(line) for line in (run / "eval" / "records.jsonl").read_text().splitlines()]
    assert len(records) == 12 and {"model", "id", "completion", "extracted", "correct"} <= set(records[0])
    # the run ends with the table: each model's accuracy and both gains, as eval/report.md holds it
    table = (run / "eval" / "report.md").read_text()
    assert table in printed and "Held-out accuracy, 4 problems" in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and "accuracy |" not in line]
    assert [r.split(" | ")[0] for r in rows] == [
        "| base model", "| after warm-up", "| after warm-up + GRPO", "| warm-up gain (after warm-up - base)",
        "| RL gain (after GRPO - after warm-up)",
    ]
    assert rows[1].split(" | ")[1] == f"{100 * accuracy['warmup']:.1f}%"
    (run / "eval" / "report.md").unlink()
    assert main(["report", str(run)]) == 0 and (run / "eval" / "report.md").read_text() == table

    exported = run / "handoff" / "model"
    tok = AutoTokenizer.from_pretrained(exported)
    reloaded = AutoModelForCausalLM.from_pretrained(exported)
    assert tok.chat_template and reloaded.config.use_cache
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in reloaded.generation_config.eos_token_id

    assert main(args) == 0  # everything finished: skipped
    assert json.loads((run / "manifest.json").read_text())["stages"]["rl"]["ended"] == manifest["stages"]["rl"]["ended"]


def test_compare_matrix_and_report(tmp_path, tokenizer):
    args = tiny_run_args("compare", tmp_path, tokenizer, "c", "handoff.report_demos=4", "compare.starts=[none, sft, cadft]",
                         "eval.benchmarks=[arith-ood]", "warmup.keep_checkpoints=weights", "compare.mechanism=[0.5, 1.0]",
                         "compare.mechanism_minibatches=2", "rl.curve_every=1", "rl.curve_problems=4")
    assert main(args) == 0
    out = tmp_path / "c" / "compare"
    results = json.loads((out / "results.json").read_text())
    assert list(results["mechanism"]) == ["base@step0-seed42", "sft@step1-seed42", "sft@step2-seed42",
                                          "cadft@step1-seed42", "cadft@step2-seed42"]
    assert list(results["mechanism_policies"]) == ["base@step0", "sft@step1", "sft@step2", "cadft@step1", "cadft@step2"]
    assert (tmp_path / "c" / "mechanism" / "cadft-step1-seed42" / "gradients.png").is_file()
    checkpoint = json.loads((tmp_path / "c" / "mechanism" / "cadft-step1-seed42" / "results.json").read_text())
    assert checkpoint["model"] == "cadft-seed42/warmup/checkpoint-1"
    warmup = tmp_path / "c" / "cadft-seed42" / "warmup"  # kept for its weights alone, which the mechanism read
    assert not list(warmup.glob("checkpoint-*/optimizer.pt")) and (warmup / "checkpoint-1" / "model.safetensors").is_file()
    deciles = results["mechanism"]["cadft@step2-seed42"]["deciles"]
    assert set(deciles) == {"sft", "dft", "cadft"} and sum(d["samples"] for d in deciles["dft"]) == 8  # 2 minibatches of 4
    assert [r["claim"] for r in results["claims"]][:5] == ["stability (mechanism)", "stability", "generalization",
                                                           "cold-start RL (adjusted)", "cold-start RL"]
    # one seed: no row judges the method, and the adjusted endpoint needs two
    assert all(r["verdict"].startswith(("one seed", "not measured")) for r in results["claims"])
    assert results["ood"]["sets"] == ["arith-ood"] and "cadft vs sft" in results["ood"]
    assert set(results["stability"]) == {"sft-seed42", "cadft-seed42"}
    assert list(results["arms"]) == ["base", "base+grpo", "sft", "sft+grpo", "cadft", "cadft+grpo"]
    assert set(results["rl_gain"]) == {"base", "sft", "cadft"}
    assert {"cadft vs sft", "cadft+grpo vs sft+grpo", "RL gain of cadft vs sft"} <= set(results["comparisons"])
    for name in ("report.md", "accuracy.png", "rl_gain.png", "rewards.png", "compatibility.png", "diagnostics.png",
                 "gain_vs_diagnostics.png", "ood.png", "noise_scale.png", "gradients.png", "learning_curves.png"):
        assert (out / name).is_file(), name
    for arm in results["arms"].values():
        assert arm["ci_low"] <= arm["accuracy"] <= arm["ci_high"]
    report = (out / "report.md").read_text()
    assert "## RL gain" in report and "## Findings" in report and "- **cadft**: " in report
    assert results["curves"]["starts"]["cadft"]["steps"] == [0, 1, 2]  # before the first step, after each
    drift = results["diagnostics"]
    assert drift["base"]["kl_from_base"] is None and drift["sft"]["kl_from_base"] > 0  # the base start has no warm-up
    assert all(drift[start]["kl_from_warmed"] >= 0 and drift[start]["rl_entropy"] > 0 for start in ("base", "sft", "cadft"))
    for section in ("## The paper's claims", "## Out of distribution", "## Stability during the warm-up", "## Learning curves",
                    "## The mechanism at fixed policies", "## Drift and entropy"):
        assert section in report, section
    # the base start skips the warm-up and hands the base model over as it is
    base_run = tmp_path / "c" / "base-seed42"
    assert json.loads((base_run / "manifest.json").read_text())["stages"]["warmup"]["metrics"] == {"loss": "none"}
    # each start grades its own models only: the base model is the 'none' start
    for start in ("base", "sft", "cadft"):
        graded = json.loads((tmp_path / "c" / f"{start}-seed42" / "eval" / "results.json").read_text())["models"]
        assert set(graded) == {"warmup", "rl"}

    ended = {start: json.loads((tmp_path / "c" / f"{start}-seed42" / "manifest.json").read_text())["stages"]["rl"]["ended"]
             for start in ("base", "sft", "cadft")}
    assert main(args) == 0  # every arm finished: skipped, the comparison written again
    for start, when in ended.items():
        assert json.loads((tmp_path / "c" / f"{start}-seed42" / "manifest.json").read_text())["stages"]["rl"]["ended"] == when
    assert (out / "report.md").read_text() == report

    # a mechanism check measured before a change to the assumption's test is tested again from its records
    folder = tmp_path / "c" / "mechanism" / "cadft-step1-seed42"
    measured = json.loads((folder / "results.json").read_text())
    stale = {loss: {**a, "p": 2.0, "verdict": "stale"} for loss, a in measured["assumption"].items()}
    (folder / "results.json").write_text(json.dumps({**measured, "assumption": stale}))
    (out / "report.md").unlink()
    assert main(["report", str(tmp_path / "c")]) == 0
    assert (out / "report.md").read_text() == report
    assert json.loads((folder / "results.json").read_text())["assumption"] == measured["assumption"]
    assert "stale" not in (folder / "report.md").read_text()
    # `report` analyses the study again from the runs' saved records: regraded records change the figures
    records = tmp_path / "c" / "sft-seed42" / "eval" / "records.jsonl"
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    graded_before = [row["correct"] for row in rows]
    for row in rows:
        row["correct"] = row["model"] == "rl"
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["report", str(tmp_path / "c")]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["arms"]["sft+grpo"]["accuracy"] == 1.0 and again["rl_gain"]["sft"]["difference"] == 1.0
    # --regrade grades the saved completions again: the hand-set grades are undone, and counted
    flipped = sum(row["correct"] != original for row, original in zip(rows, graded_before))
    assert main(["report", str(tmp_path / "c"), "--regrade"]) == 0
    regraded = json.loads((out / "results.json").read_text())
    assert regraded["arms"] == results["arms"] and regraded["regraded"]["changed"] == flipped > 0
    assert f"{flipped} of {regraded['regraded']['records']} grades changed" in (out / "report.md").read_text()
    # a comparison written before results.json kept its study: the study is read off the results
    older = {k: v for k, v in regraded.items() if k not in ("study", "regraded")}
    (out / "results.json").write_text(json.dumps(older))
    assert main(["report", str(tmp_path / "c"), "--regrade"]) == 0
    # (all but the equivalence margin and the primary endpoint, which such a comparison never declared)
    assert json.loads((out / "results.json").read_text())["study"] == {k: v for k, v in regraded["study"].items()
                                                                       if k not in ("margin", "primary")}


def test_eval_any_model_on_a_single_benchmark_file(tmp_path, tokenizer, caplog):
    """`coldstart eval --model P --benchmark FILE`: the file is the held-out set; a cut says how much it kept."""
    model_dir = tmp_path / "tiny"
    make_tiny_model(tokenizer).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    bench = tmp_path / "mine.jsonl"
    rows = [{"question": f"What is {i} + 1?", "answer": f"It is {i + 1}.\n#### {i + 1}"} for i in range(3)]
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    with caplog.at_level("INFO"):
        assert main(["eval", "--model", str(model_dir), "--benchmark", str(bench), "--out", str(out),
                     "--set", "eval.num_problems=2", "--set", "eval.max_new_tokens=4"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["benchmarks"][str(bench)]["problems"] == 2 and "average" not in results
    assert f"eval: the first 2 of 3 problems of {bench} (eval.num_problems; 0 takes all)" in caplog.text
