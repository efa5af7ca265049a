"""The CADFT warm-up under the settings real GPU runs use: evaluation sets, loader workers, large data sets, several
epochs, uneven last steps, resumes; and the checks around it (preflight, the comparison). Each test is named after
what used to go silently wrong."""

from __future__ import annotations

import json
import math
import pickle

import pytest
import torch
from transformers import TrainerCallback

from coldstart import CADFTConfig, CADFTTrainer
from coldstart.config import load_config
from coldstart.data import load_samples
from coldstart.errors import ColdstartError
from conftest import cadft_trainer, drawn_and_planned, make_tiny_model, recording
from test_rewriting import fake_generate, fake_score

def arith_rows(n: int):
    return load_samples(load_config(None, [f"data.arith.num_train={n}"]).data, "train", 0)[0]


# 1 ----------------------------------------------------------------------------------------------------------------


def test_an_evaluation_set_is_trained_and_evaluated(tokenizer, tmp_path):
    rows = arith_rows(12)
    held_out = rows.select(range(8, 12))
    # messages rows are split like the training rows: the evaluation loss covers the completion alone
    messages = held_out.map(lambda r: {"messages": r["prompt"] + r["completion"]}, remove_columns=held_out.column_names)
    seen = []

    def metrics(prediction):
        seen.append(prediction.predictions.shape)
        return {"tokens": float((prediction.label_ids != -100).sum())}

    trainer = CADFTTrainer(
        model=make_tiny_model(tokenizer), processing_class=tokenizer, compute_metrics=metrics,
        train_dataset=rows.select(range(8)), eval_dataset={"rows": held_out, "messages": messages},
        args=CADFTConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, report_to="none",
                         save_strategy="no", eval_strategy="steps", eval_steps=1, logging_steps=1),
    )
    trainer.train()
    evals = {k: [m for m in trainer.state.log_history if k in m] for k in ("eval_rows_loss", "eval_messages_loss")}
    assert [m["step"] for m in evals["eval_rows_loss"]] == [1, 2]
    for a, b in zip(evals["eval_rows_loss"], evals["eval_messages_loss"]):
        assert math.isfinite(a["eval_rows_loss"]) and a["eval_rows_loss"] == pytest.approx(b["eval_messages_loss"])
        assert a["eval_rows_tokens"] == b["eval_messages_tokens"]
    assert seen and seen[0][0] == 4 and seen[0][-1] == len(tokenizer)  # logits for compute_metrics
    assert sum(trainer.store.visits.values()) == 8  # evaluation rows are not counted as trained


# 2 ----------------------------------------------------------------------------------------------------------------


def test_an_uneven_last_step_counts_every_trained_row(tokenizer, tmp_path, monkeypatch):
    # 14 rows, micro-batches of 4, 2 per step: step 2 trains on 4 + 2 rows, fetched together before it
    trainer = cadft_trainer(tokenizer, tmp_path, "data.arith.num_train=14", "warmup.per_device_train_batch_size=4",
                            "warmup.gradient_accumulation_steps=2", "warmup.rewrite.enabled=false")
    logged = []
    import coldstart.cadft

    fraction = coldstart.cadft.effective_sample_fraction
    monkeypatch.setattr(coldstart.cadft, "effective_sample_fraction", lambda w: logged.append(w.numel()) or fraction(w))
    trainer.train()
    assert trainer.state.global_step == 2
    assert logged == [4, 4, 4, 2]  # the statistics of each micro-batch cover all of its rows
    assert dict(trainer.store.visits) == {i: 1 for i in range(14)}


# 3 ----------------------------------------------------------------------------------------------------------------


def test_drop_last_is_in_the_visit_plan(tokenizer, tmp_path):
    # 10 rows in micro-batches of 4, the last 2 dropped: an epoch is 2 steps of 4 rows; 4 steps cross 2 epochs
    trainer = cadft_trainer(tokenizer, tmp_path, "data.arith.num_train=10", "warmup.max_steps=4",
                            "warmup.per_device_train_batch_size=4", "warmup.rewrite.enabled=false",
                            "warmup.trainer={dataloader_drop_last: true}")
    drawn, planned = drawn_and_planned(trainer)
    assert trainer.visit_plan().steps_per_epoch == 2
    assert sorted(drawn) == [1, 2, 3, 4] and drawn == planned


@pytest.mark.parametrize("setting, message", [
    ({"packing": True}, "packing=True puts several samples in one row"),
    ({"padding_free": True}, "padding_free=True puts several samples in one row"),
    ({"completion_only_loss": False}, "completion_only_loss=False trains on the prompt too"),
    ({"accelerator_config": {"even_batches": False}}, "accelerator_config split_batches=True or even_batches=False"),
    ({"train_sampling_strategy": "sequential"},
     "train_sampling_strategy='sequential' draws samples in an order the rewriting plan cannot predict"),
])
def test_settings_that_break_per_sample_weights_are_refused(tokenizer, tmp_path, setting, message):
    args = CADFTConfig(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4, report_to="none",
                       rewrite_enabled=True, rewrite_start=2, rewrite_every=1, **setting)
    with pytest.raises(ColdstartError, match=f"^CADFTTrainer: {message}"):
        CADFTTrainer(model=make_tiny_model(tokenizer), args=args, train_dataset=arith_rows(8),
                     processing_class=tokenizer)


REWRITE = "Rewritten: 3 + 4 = 7, \\boxed{7}"


def test_loader_workers_train_on_accepted_rewrites(tokenizer, tmp_path, monkeypatch):
    trainer = cadft_trainer(
        tokenizer, tmp_path, "data.arith.num_train=8", "warmup.max_steps=4", "warmup.per_device_train_batch_size=2",
        "warmup.rewrite.start=2", "warmup.rewrite.every=10", "warmup.rewrite.fraction=1.0",
        "warmup.rewrite.replace_prob=1.0", "warmup.rewrite.num_candidates=1", "warmup.rewrite.verify=false",
        "warmup.trainer={dataloader_num_workers: 2, shuffle_dataset: true}",
    )
    monkeypatch.setattr("coldstart.generation.generate", fake_generate([REWRITE]))
    monkeypatch.setattr("coldstart.compatibility.score", fake_score({REWRITE: 0.9}))
    seen = recording(trainer)
    trainer.train()
    records = [json.loads(line) for line in trainer.rewriter.log_path.read_text().splitlines()]
    assert len(records) == 4 and all(r["accepted"] for r in records)
    target = [t for t in trainer.store.target(records[0]["index"]).row["labels"] if t != -100]
    trained = {i: labels for step, index, rows in seen if step > 2 for i, labels in zip(index, rows)}
    assert all(trained[r["index"]] == trainer.store.target(r["index"]).row["labels"][-len(target):] for r in records)
    assert all(r["trained_on"] == 1 for r in records)


# 4 ----------------------------------------------------------------------------------------------------------------


class AfterRounds(TrainerCallback):
    """Each sample's moving NLL right after each step (the rewriter's round runs before this callback)."""

    def __init__(self, trainer):
        self.trainer, self.moving = trainer, {}

    def on_step_end(self, args, state, control, **kwargs):
        self.moving[state.global_step] = dict(self.trainer.store.moving_nll)


def test_three_epochs_of_rewriting_keep_the_new_targets_scores(tokenizer, tmp_path, monkeypatch):
    # 8 samples, 2 steps an epoch, 3 epochs; rounds after steps 2 and 4 each pick 2 samples among the revisited
    trainer = cadft_trainer(
        tokenizer, tmp_path, "data.arith.num_train=8", "warmup.num_train_epochs=3",
        "warmup.per_device_train_batch_size=4", "warmup.rewrite.start=2", "warmup.rewrite.every=2",
        "warmup.rewrite.fraction=0.25", "warmup.rewrite.replace_prob=1.0", "warmup.rewrite.num_candidates=2",
        "warmup.rewrite.verify=false",
    )
    worse, better = "Worse: \\boxed{7}", "Better: \\boxed{7}"
    # the first candidate is less compatible than any demonstration (0.1), the second more
    monkeypatch.setattr("coldstart.generation.generate", fake_generate([worse, better]))
    monkeypatch.setattr("coldstart.compatibility.score", fake_score({worse: 0.05, better: 0.9}))
    after = AfterRounds(trainer)
    trainer.add_callback(after)
    trainer.train()
    assert trainer.state.global_step == 6
    records = [json.loads(line) for line in trainer.rewriter.log_path.read_text().splitlines()]
    accepted = [r for r in records if r["accepted"]]
    assert {r["step"] for r in records} == {2, 4} and accepted
    assert all(r["new"] == better and r["new_compat"] > r["old_compat"] for r in accepted)
    for r in accepted:
        assert after.moving[r["step"]][r["index"]] == pytest.approx(-math.log(0.9))
    # a sample rewritten in the first round is not picked again for the target it no longer has
    first = {r["index"] for r in accepted if r["step"] == 2}
    assert not first & {r["index"] for r in records if r["step"] == 4}


def test_seen_and_unseen_samples_are_ranked_by_the_current_policy(tokenizer, tmp_path, monkeypatch):
    trainer = cadft_trainer(tokenizer, tmp_path, "data.arith.num_train=8", "warmup.max_steps=4",
                            "warmup.per_device_train_batch_size=4", "warmup.rewrite.start=2",
                            "warmup.rewrite.every=2", "warmup.rewrite.fraction=0.125")
    store = trainer.store
    # the rest of training draws every sample; sample 0 had a high moving NLL, but the policy now fits it
    store.moving_nll = {0: 9.0}
    texts = {store.text(0): 0.9, store.text(5): 0.01}
    monkeypatch.setattr("coldstart.compatibility.score", fake_score(texts, default=0.5))
    ranked = trainer.rewriter.candidates(2, 4)
    assert ranked[0][0] == pytest.approx(-math.log(0.9)) and ranked[0][1] == 9.0
    assert ranked[5] == (pytest.approx(-math.log(0.01)), None, ranked[5][2])


# 5 ----------------------------------------------------------------------------------------------------------------


def test_the_collator_keeps_nothing_between_batches(tokenizer, tmp_path):
    trainer = cadft_trainer(tokenizer, tmp_path, "data.arith.num_train=5000", "warmup.max_steps=1",
                            "warmup.per_device_train_batch_size=64", "warmup.rewrite.enabled=false")
    collator = trainer.data_collator
    before = len(pickle.dumps(collator))
    batches = sum(1 for _ in trainer.get_train_dataloader())
    assert batches == math.ceil(5000 / 64)
    assert len(pickle.dumps(collator)) == before < 20_000


# 6 ----------------------------------------------------------------------------------------------------------------


def test_a_rewrite_longer_than_max_length_is_not_accepted(tokenizer, tmp_path, monkeypatch):
    trainer = cadft_trainer(tokenizer, tmp_path, "data.arith.num_train=8", "warmup.max_steps=4",
                            "warmup.per_device_train_batch_size=4", "warmup.max_length=200",
                            "warmup.rewrite.start=2", "warmup.rewrite.every=2", "warmup.rewrite.fraction=0.125",
                            "warmup.rewrite.replace_prob=1.0", "warmup.rewrite.verify=false")
    long = "step " * 300 + "\\boxed{7}"
    monkeypatch.setattr("coldstart.generation.generate", fake_generate([long]))
    monkeypatch.setattr("coldstart.compatibility.score", fake_score({long: 0.9}))
    trainer.store.moving_nll = {i: 1.0 for i in range(8)}
    (record,) = trainer.rewriter.round(2, 4)
    assert not record["accepted"] and record["too_long"] == 1 and record["usable"] == 0
    assert trainer.store.targets == {}


# 7 ----------------------------------------------------------------------------------------------------------------


def test_seeded_generation_leaves_the_callers_random_state(tokenizer):
    from coldstart.generation import generate

    model = make_tiny_model(tokenizer)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = generate(model, tokenizer, ["2+2="], num_samples=2, max_new_tokens=4, temperature=1.0, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    again = generate(model, tokenizer, ["2+2="], num_samples=2, max_new_tokens=4, temperature=1.0, seed=7)
    assert [c.text for c in first[0]] == [c.text for c in again[0]]


# 8 ----------------------------------------------------------------------------------------------------------------


def test_a_resume_takes_the_main_process_state_on_every_rank(tokenizer, tmp_path, monkeypatch):
    import coldstart.runtime

    trainer = cadft_trainer(tokenizer, tmp_path, "data.arith.num_train=8", "warmup.max_steps=4",
                            "warmup.per_device_train_batch_size=4", "warmup.rewrite.start=2")
    checkpoint = tmp_path / "checkpoint-2"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    # what this rank sees on disk while the main process writes the log: half a line, and no state file
    log = trainer.rewriter.log_path
    log.write_text('{"step": 2, "index": 1, "accep')
    main_state = {"ema": None, "samples": {"moving_nll": {"1": 2.5}, "attempts": [
        {"step": 2, "index": 1, "accepted": True, "new": "A \\boxed{1}", "new_nll": 0.5}]}}
    monkeypatch.setattr(coldstart.runtime, "is_main", lambda: False)
    monkeypatch.setattr(coldstart.runtime, "from_main", lambda value: main_state)
    trainer.restore_state(checkpoint)
    trainer.rewriter.on_train_begin(None, None, None)
    assert trainer.store.text(1) == "A \\boxed{1}" and trainer.store.moving_nll == {1: 2.5}
    assert log.read_text() == '{"step": 2, "index": 1, "accep'  # written by the main process alone


# 9 ----------------------------------------------------------------------------------------------------------------


def test_the_prepass_statistics_are_those_of_the_weights(tokenizer, tmp_path):
    model = make_tiny_model(tokenizer)
    model.config.attention_dropout = 0.5
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.5
    trainer = cadft_trainer(tokenizer, tmp_path, "data.arith.num_train=8", "warmup.max_steps=1",
                            "warmup.per_device_train_batch_size=4", "warmup.gradient_accumulation_steps=2",
                            "warmup.rewrite.enabled=false", model=model)
    rows = sorted(trainer.train_dataset, key=lambda r: r["sample_index"])
    batches = [trainer._current_targets(trainer.data_collator(
        [{k: r[k] for k in ("input_ids", "labels", "sample_index")} for r in rows[i:i + 4]])) for i in (0, 4)]
    trainer.model.train()
    first = trainer._prepass(batches)
    assert trainer._prepass(batches) == pytest.approx(first)  # dropout does not reach the statistics
    assert trainer.model.training
    trainer.model.eval()
    with torch.no_grad():
        from coldstart.compatibility import sequence_nll

        nll = torch.cat([sequence_nll(*trainer.token_logprobs(trainer.model, b))[0] for b in batches])
    assert first == pytest.approx((nll.mean().item(), nll.std(unbiased=False).item()), rel=1e-5)


# 10 ---------------------------------------------------------------------------------------------------------------


def test_checkpoint_selection_rolls_out_other_prompts_than_the_report():
    from coldstart.stages.handoff import rollout_prompts, selection_seed

    cfg = load_config(None, ["data.arith.num_train=40", "warmup.keep_checkpoints=true",
                             "handoff.select_checkpoint.enabled=true", "handoff.select_checkpoint.prompts=8",
                             "handoff.report_prompts=16"])
    train, _ = load_samples(cfg.data, "train", cfg.seed)
    report, selection = rollout_prompts(cfg, train)
    assert len(report) == 16 and len(selection) == 8 and not set(report["id"]) & set(selection["id"])
    assert selection_seed(cfg) != cfg.seed


# 11 ---------------------------------------------------------------------------------------------------------------


def test_compare_checks_every_start_before_the_first_stage(tmp_path, tokenizer, capsys):
    from coldstart.cli import main
    from test_preflight import as_qwen_math, save

    tok = as_qwen_math(tokenizer)
    model_dir = save(tmp_path / "qwen-like", tok, make_tiny_model(tok))
    code = main(["compare", "configs/quickstart.yaml", "--set", f"model.name_or_path={model_dir}",
                 "--set", f"output_dir={tmp_path / 'runs'}", "--set", "compare.starts=[cadft, none]",
                 "--set", "data.arith.num_train=8", "--set", "data.arith.num_test=4"])
    err = capsys.readouterr().err.splitlines()[-1]
    assert code == 2
    assert err.startswith("coldstart: error: compare.starts: none: end of turn: the chat template ends an assistant "
                          "turn with '<|im_end|>' but the run's eos is '<|endoftext|>'")
    assert not (tmp_path / "runs").exists()


# 12 ---------------------------------------------------------------------------------------------------------------


def _folder(tmp_path, train, test):
    from test_preflight import write_rows

    folder = tmp_path / "data"
    folder.mkdir()
    write_rows(folder / "train.jsonl", train)
    if test is not None:
        write_rows(folder / "test.jsonl", test)
    return folder


def _problem(i: int, text: str) -> dict:
    return {"id": f"q{i}", "prompt": [{"role": "user", "content": text}],
            "completion": [{"role": "assistant", "content": f"\\boxed{{{i}}}"}], "answer": str(i)}


def test_held_out_problems_shared_with_training_are_refused(tmp_path, tiny_dir):
    from coldstart.preflight import run_checks

    train = [_problem(i, f"What is {i} plus {i}?") for i in range(6)]
    test = [_problem(10, "What is 10 plus 10?"), _problem(11, "what is  3 PLUS 3?")]
    cfg = load_config(None, [f"model.name_or_path={tiny_dir}", f"data.source={_folder(tmp_path, train, test)}",
                             "rl.num_prompts=4"])
    (f,) = [f for f in run_checks(cfg) if f.check == "held-out"]
    assert f.level == "error" and f.message.startswith(
        "1 of 2 held-out problems also appear in the training split (e.g. held-out 'q11' is training 'q3')")


# 13 ---------------------------------------------------------------------------------------------------------------


def test_a_comparison_of_runs_graded_on_other_problems_is_refused(tmp_path):
    from coldstart.eval.compare import analyse, study_of
    from coldstart.runs import RunDir, write_jsonl

    runs = {}
    for start, ids in (("sft", ["p0", "p1", "p2"]), ("cadft", ["p0", "p1", "p3"])):
        run = RunDir(tmp_path / f"{start}-seed1")
        (run.root / "eval").mkdir(parents=True)
        write_jsonl(run.root / "eval" / "records.jsonl", [
            {"model": m, "id": i, "correct": 1} for m in ("warmup", "rl") for i in ids])
        runs[f"{start}-seed1"] = run
    cfg = load_config(None, ["compare.starts=[sft, cadft]", "compare.seeds=[1]"])
    with pytest.raises(ColdstartError, match=r"^compare: cadft-seed1 \(warmup\) was graded on other problems than "
                                             r"sft-seed1 \(3 vs 3; missing \['p2'\], extra \['p3'\]\)"):
        analyse(study_of(cfg), runs)


# 14 ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("setting, message", [
    ("rl.num_generations=1", "rl.num_generations: GRPO needs at least 2 completions per prompt for an advantage, got 1"),
    ("warmup.rewrite.replace_prob=1.5", "warmup.rewrite.replace_prob: a probability, within [0, 1]"),
    ("warmup.rewrite.nll_decay=1.0", "warmup.rewrite.nll_decay: must be within [0, 1)"),
])
def test_values_are_checked_once_when_the_config_loads(setting, message):
    with pytest.raises(ColdstartError) as err:
        load_config(None, [setting])
    assert str(err.value) == f"--set {setting}: {message}"


def test_the_python_config_is_checked_like_the_yaml(tmp_path):
    with pytest.raises(ColdstartError, match=r"^CADFTConfig: rewrite_nll_decay: must be within \[0, 1\)$"):
        CADFTConfig(output_dir=str(tmp_path), rewrite_nll_decay=1.0)
    with pytest.raises(ColdstartError, match=r"^CADFTConfig: beta: must be >= 0$"):
        CADFTConfig(output_dir=str(tmp_path), beta=-1.0)


def test_a_rewrite_schedule_by_epochs_is_checked_before_training(tiny_dir):
    from coldstart.preflight import run_checks

    cfg = load_config(None, [f"model.name_or_path={tiny_dir}", "data.arith.num_train=8", "rl.num_prompts=4",
                             "warmup.per_device_train_batch_size=4", "warmup.rewrite.start=0.9"])
    (f,) = [f for f in run_checks(cfg, stages=["warmup"]) if f.check == "cadft"]
    assert f.level == "error" and f.message.startswith(
        "warmup.rewrite.start=0.9: the first rewriting round would come after step 2, but the warm-up has 2 steps")


# 15 ---------------------------------------------------------------------------------------------------------------


def test_one_file_of_demonstrations_passes_the_checks_of_stages_that_do_not_evaluate(tmp_path, tiny_dir):
    from coldstart.preflight import run_checks

    path = tmp_path / "demos.jsonl"
    path.write_text("".join(json.dumps(_problem(i, f"What is {i} plus {i}?")) + "\n" for i in range(8)))
    cfg = load_config(None, [f"model.name_or_path={tiny_dir}", f"data.source={path}", "rl.num_prompts=4",
                             "warmup.per_device_train_batch_size=4", "warmup.max_steps=2"])
    for stages in (["warmup"], ["score"]):
        errors = [f for f in run_checks(cfg, stages=stages) if f.level == "error"]
        assert errors == []
    checked = run_checks(cfg)  # coldstart check: the held-out split is a warning
    assert not [f for f in checked if f.level == "error"]
    (f,) = [f for f in checked if f.check == "held-out"]
    assert f.level == "warning" and "is one file, used as the train split" in f.message
    with pytest.raises(ColdstartError, match="is one file, used as the train split"):
        from coldstart.preflight import Context, Launch

        Context(cfg, Launch(), ["warmup", "eval"])
