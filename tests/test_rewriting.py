import json
import math

import pytest
import torch

from coldstart.compatibility import tokenize_sample
from coldstart.config import load_config
from coldstart.data import load_samples
from coldstart.errors import ColdstartError
from coldstart.generation import Completion
from coldstart.rewriting import choose, num_picks, pick
from coldstart.sampling import resolve_steps, round_steps
from coldstart.stages.warmup import build_trainer, rewrite_summary
from conftest import cadft_trainer, drawn_and_planned, make_tiny_model, recording


def test_pick_is_the_highest_nll():
    nll = {i: float(v) for i, v in enumerate([3, 9, 1, 7, 5, 8, 2, 6, 4, 0])}
    assert pick(nll, num_picks(0.3, 10)) == [1, 5, 3]
    assert pick(nll, num_picks(0.001, 10)) == [1]  # at least one
    assert pick({4: 1.0, 2: 1.0}, 2) == [2, 4]  # ties by index


def test_schedule_starts_late_repeats_and_never_at_the_last_step():
    assert resolve_steps(0.5, 40) == 20 and resolve_steps(3000, 40) == 3000 and resolve_steps(0.001, 10) == 1
    assert round_steps(20, 8, 41) == [20, 28, 36]
    assert round_steps(0.5, 0.25, 16) == [8, 12]
    assert round_steps(0.5, 0.5, 16) == [8]  # step 16 is the last: nothing would train on a rewrite there
    assert round_steps(3000, 1000, 16) == []


def test_choose_never_takes_a_wrong_answer_when_verifying():
    texts = ["\\boxed{4}", "\\boxed{5}", "\\boxed{5} again"]
    compat = [0.9, 0.2, 0.3]
    assert choose(texts, compat, [False, True, True], verify=True, current=0.1) == (2, "most compatible verified candidate")
    assert choose(texts, compat, [False, False, False], verify=True, current=0.1)[0] is None
    assert choose(texts, compat, [False, False, False], verify=False, current=0.1)[0] == 0


def test_choose_never_takes_a_less_compatible_candidate():
    texts = ["a \\boxed{5}", "b \\boxed{5}", "c \\boxed{5}"]
    compat = [0.2, 0.6, 0.3]
    assert choose(texts, compat, [True, True, True], verify=True, current=0.5) == (1, "most compatible verified candidate")
    assert choose(texts, compat, [True, False, True], verify=True, current=0.5)[0] is None
    assert choose(texts, compat, [True, True, True], verify=True, current=0.7) == (
        None, "no candidate more compatible than the current target")
    assert choose(texts, compat, [False] * 3, verify=False, current=0.25) == (1, "accepted unverified (verify: false)")


@pytest.fixture
def rewriting_trainer(tokenizer, tmp_path):
    sets = [
        "data.arith.num_train=8",
        "warmup.loss=cadft",
        "warmup.max_steps=4",
        "warmup.per_device_train_batch_size=4",
        "warmup.rewrite.start=2",
        "warmup.rewrite.every=2",
        "warmup.rewrite.fraction=0.25",
        "warmup.rewrite.replace_prob=1.0",
        "warmup.rewrite.num_candidates=3",
    ]
    cfg = load_config(None, sets)
    train, _ = load_samples(cfg.data, "train", cfg.seed)
    trainer = build_trainer(cfg, tmp_path, train, make_tiny_model(tokenizer), tokenizer)
    return trainer, trainer.rewriter, train


def fake_score(compat: dict[str, float], default: float = 0.1):
    """A stand-in for the policy's scores: the compatibility of each completion text, `default` for the others."""
    def score(model, tokenizer, samples, *args, **kwargs):
        out = []
        for s in samples:
            text = s["completion"][-1]["content"] if isinstance(s["completion"], list) else s["completion"]
            c = compat.get(text, default)
            out.append({"nll": -math.log(c), "compatibility": c, "num_tokens": 5, "mean_logprob": math.log(c)})
        return out

    return score


def fake_generate(candidates):
    def generate(model, tokenizer, prompts, num_samples, **kwargs):
        return [[Completion(text, 5, True) for text in candidates] for _ in prompts]

    return generate


def test_round_accepts_only_the_reference_answer(rewriting_trainer, monkeypatch, tokenizer):
    trainer, rewriter, train = rewriting_trainer
    trainer.store.moving_nll = {0: 9.0, 1: 1.0, 2: 8.0, 3: 2.0, 4: 0.5, 5: 0.5, 6: 0.5, 7: 0.5}  # all seen
    gold0, gold2 = train[0]["answer"], train[2]["answer"]
    assert gold0 != gold2
    # sample 0 gets a right candidate among wrong ones; sample 2 only wrong ones
    wrong = str(int(gold0) + 1000)
    candidates = [f"\\boxed{{{wrong}}}", f"so \\boxed{{{gold0}}}"]
    monkeypatch.setattr("coldstart.generation.generate", fake_generate(candidates))
    monkeypatch.setattr("coldstart.compatibility.score", fake_score({c: 0.9 for c in candidates}))
    records = rewriter.round(step=2, total_steps=4)
    by_index = {r["index"]: r for r in records}
    assert sorted(by_index) == [0, 2]
    assert by_index[0]["accepted"] and by_index[0]["new"] == f"so \\boxed{{{gold0}}}"
    assert not by_index[2]["accepted"] and by_index[2]["reason"] == "no more compatible candidate has the reference answer"
    assert trainer.store.rewrite_step(2) == 0 and trainer.store.rewrite_step(0) == 2
    logged = [json.loads(line) for line in rewriter.log_path.read_text().splitlines()]
    assert [r["index"] for r in logged] == [r["index"] for r in records]
    assert {"id", "step", "old", "new", "old_compat", "new_compat", "accepted", "reason"} <= set(logged[0])

    # the next batch holding sample 0 trains on the accepted text
    row = next(r for r in trainer.train_dataset if r["sample_index"] == 0)
    batch = trainer._current_targets(trainer.data_collator([{k: row[k] for k in ("input_ids", "labels", "sample_index")}]))
    trained = batch["labels"][0][batch["labels"][0] != -100]
    assert tokenizer.decode(trained).startswith(f"so \\boxed{{{gold0}}}<|im_end|>")


def test_nothing_is_rewritten_before_start(rewriting_trainer, monkeypatch):
    trainer, rewriter, _ = rewriting_trainer
    calls = []
    monkeypatch.setattr(rewriter, "round", lambda step, total: calls.append(step))
    state = type("S", (), {"max_steps": 4})()
    for step in range(1, 5):
        state.global_step = step
        rewriter.on_step_end(None, state, None)
    assert calls == [2]  # step 4 is the last step: nothing would train on a rewrite there


def _checkpoint(tmp_path, state):
    checkpoint = tmp_path / "checkpoint-2"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    (checkpoint / "cadft_state.json").write_text(json.dumps(state))
    return checkpoint


ATTEMPTS = [
    {"step": 2, "index": 1, "accepted": True, "new": "A \\boxed{1}", "new_nll": 0.5},
    {"step": 2, "index": 3, "accepted": False, "new": None},
    {"step": 4, "index": 5, "accepted": True, "new": "B \\boxed{2}", "new_nll": 0.5},
]


def test_resume_cuts_the_log_back_to_the_checkpoint(rewriting_trainer, tmp_path):
    trainer, rewriter, _ = rewriting_trainer
    rewriter.log_path.write_text("".join(json.dumps(r) + "\n" for r in ATTEMPTS))
    checkpoint = _checkpoint(tmp_path, {"ema": None, "samples": {
        "moving_nll": {"1": 3.5}, "attempts": ATTEMPTS[:2], "visits": {"1": 2}, "trained_on": [[2, 1, 1]]}})
    trainer.restore_state(checkpoint)
    store = trainer.store
    assert store.rewrite_step(1) == 2 and store.text(1) == "A \\boxed{1}" and store.rewrite_step(5) == 0
    assert store.moving_nll == {1: 3.5} and store.visits[1] == 2
    rewriter.on_train_begin(None, None, None)
    logged = [json.loads(x) for x in rewriter.log_path.read_text().splitlines()]
    assert [(r["step"], r["index"]) for r in logged] == [(2, 1), (2, 3)] and logged[0]["trained_on"] == 1


@pytest.mark.parametrize("release", ["first", "second"])
def test_an_earlier_release_checkpoint_resumes_with_its_rewrites(rewriting_trainer, tmp_path, release):
    # both kept the attempts in rewrites.jsonl alone; the first kept the moving NLL under `rewriter`
    trainer, rewriter, _ = rewriting_trainer
    rewriter.log_path.write_text("".join(json.dumps(r) + "\n" for r in ATTEMPTS))
    saved = {"moving_nll": {"1": 3.5}, "trained_on": [[2, 1, 1]]}
    if release == "second":
        saved = {**saved, "targets": {"1": [2, "A \\boxed{1}"]}, "visits": {"1": 2}}
    checkpoint = _checkpoint(tmp_path, {"ema": None, ("rewriter" if release == "first" else "samples"): saved})
    trainer.restore_state(checkpoint)
    assert trainer.store.text(1) == "A \\boxed{1}" and trainer.store.rewrite_step(5) == 0
    assert trainer.store.moving_nll == {1: 3.5} and trainer.store.trained_on[(2, 1)] == 1
    assert [a["index"] for a in trainer.store.attempts] == [1, 3]


def test_a_second_release_checkpoint_without_its_log_keeps_its_targets(rewriting_trainer, tmp_path):
    trainer, rewriter, _ = rewriting_trainer
    rewriter.log_path.write_text(json.dumps(ATTEMPTS[1]) + "\n" + '{"step": 2, "index": 7, "acc')  # cut by a crash
    checkpoint = _checkpoint(tmp_path, {"ema": None, "samples": {"moving_nll": {"1": 3.5},
                                                                 "targets": {"1": [2, "A \\boxed{1}"]}}})
    trainer.restore_state(checkpoint)
    assert trainer.store.text(1) == "A \\boxed{1}" and trainer.store.rewrite_step(1) == 2
    assert [a["index"] for a in trainer.store.attempts] == [3, 1]


class FakePolicy:
    """The policy as the rewriter sees it: fixed candidates, each text's compatibility from a table."""

    def __init__(self, candidates, compat, default=0.1):
        self.candidates, self.scorer = candidates, fake_score(compat, default)

    def score(self, samples):
        return self.scorer(None, None, samples)

    def generate(self, prompts, num_samples, **sampling):
        return fake_generate(self.candidates)(None, None, prompts, num_samples)


def test_a_rewriter_needs_no_trainer(tokenizer, tmp_path):
    # the store, a policy and the visits are all a round reads: samples 0-3 are drawn again, 2 and 3 once each
    from collections import Counter

    from coldstart.config import RewriteSection
    from coldstart.rewriting import Rewriter
    from coldstart.sample_store import SampleStore

    cfg = load_config(None, ["data.arith.num_train=8"])
    train, _ = load_samples(cfg.data, "train", cfg.seed)
    store = SampleStore(0.9, train, tokenizer)
    store.moving_nll = {0: 1.0, 1: 1.0}
    gold = train[2]["answer"]
    policy = FakePolicy([f"\\boxed{{{gold}}}"], {f"\\boxed{{{gold}}}": 0.9, store.text(2): 0.01})
    section = RewriteSection(start=1, every=1, fraction=0.125, replace_prob=1.0, num_candidates=1)
    rewriter = Rewriter(section, store, policy, lambda step, total: Counter({0: 1, 1: 1, 2: 1, 3: 1}), None,
                        tmp_path / "rewrites.jsonl", seed=0)
    (record,) = rewriter.round(1, 2)
    assert record["index"] == 2 and record["accepted"] and store.text(2) == f"\\boxed{{{gold}}}"
    assert store.attempts == [record] and store.moving_nll[2] == pytest.approx(-math.log(0.9))
    assert [json.loads(x) for x in (tmp_path / "rewrites.jsonl").read_text().splitlines()] == [
        {**record, "trained_on": 0}]


def test_training_updates_moving_nll(rewriting_trainer):
    trainer, rewriter, _ = rewriting_trainer
    trainer.model.train()
    rows = sorted(trainer.train_dataset, key=lambda r: r["sample_index"])[:4]
    for _ in range(2):
        trainer.compute_loss(trainer.model, dict(trainer.data_collator(rows)))
    assert sorted(trainer.store.moving_nll) == [0, 1, 2, 3]
    assert all(torch.isfinite(torch.tensor(v)) and v > 0 for v in trainer.store.moving_nll.values())


def test_visit_plan_is_what_the_training_loop_draws(tokenizer, tmp_path):
    # 10 samples, micro-batches of 4, 2 per step: an epoch is 2 steps (8 + 2 samples); 5 steps cross 2 epochs
    trainer = cadft_trainer(
        tokenizer, tmp_path, "data.arith.num_train=10", "warmup.max_steps=5", "warmup.per_device_train_batch_size=4",
        "warmup.gradient_accumulation_steps=2", "warmup.rewrite.enabled=false",
    )
    drawn, planned = drawn_and_planned(trainer)
    plan = trainer.visit_plan()
    assert plan.steps_per_epoch == 2
    assert sorted(drawn) == [1, 2, 3, 4, 5] and drawn == planned
    assert sorted(drawn[1] + drawn[2]) == list(range(10)) and len(drawn[2]) == 2
    after = plan.visits_after(3, 5)
    assert sum(after.values()) == len(drawn[4]) + len(drawn[5])


def test_an_accepted_rewrite_is_trained_on_by_the_real_loop(tokenizer, tmp_path, monkeypatch):
    # one epoch of 8 samples in 4 steps of 2; one round after step 2, picking every sample still to be drawn: the
    # 4 samples of steps 3 and 4, none trained on yet, so ranked by the current policy's NLL
    trainer = cadft_trainer(
        tokenizer, tmp_path, "data.arith.num_train=8", "warmup.max_steps=4", "warmup.per_device_train_batch_size=2",
        "warmup.rewrite.start=2", "warmup.rewrite.every=10", "warmup.rewrite.fraction=1.0",
        "warmup.rewrite.replace_prob=1.0", "warmup.rewrite.num_candidates=1", "warmup.rewrite.verify=false",
    )
    monkeypatch.setattr("coldstart.generation.generate", fake_generate(["Rewritten: 3 + 4 = 7, \\boxed{7}"]))
    monkeypatch.setattr("coldstart.compatibility.score", fake_score({"Rewritten: 3 + 4 = 7, \\boxed{7}": 0.9}))
    seen = recording(trainer)
    trainer.train()
    records = [json.loads(line) for line in trainer.rewriter.log_path.read_text().splitlines()]
    later = {i for step, index, _ in seen if step > 2 for i in index}
    assert {r["index"] for r in records} == later and len(later) == 4  # only samples drawn after the round
    assert all(r["accepted"] and r["moving_nll"] is None and r["visits_left"] == 1 for r in records)
    rewrite = tokenize_sample(tokenizer, trainer.store.sample(0)["prompt"],
                              [{"role": "assistant", "content": "Rewritten: 3 + 4 = 7, \\boxed{7}"}], None)
    target = [t for t in rewrite["labels"] if t != -100]
    trained = {i: labels for step, index, rows in seen if step > 2 for i, labels in zip(index, rows)}
    # step 3's batch was fetched before the round (the data loader reads one ahead): it too trains on the rewrite
    assert all(trained[r["index"]] == target for r in records)
    assert all(r["trained_on"] == 1 for r in records)
    assert rewrite_summary(records) == {"rounds": 1, "attempts": 4, "accepted": 4, "trained_on": 4,
                                        "trained_on_visits": 4}
    assert all(labels != target for step, _, rows in seen if step <= 2 for labels in rows)


def test_a_schedule_without_a_round_is_refused(tokenizer, tmp_path):
    with pytest.raises(ColdstartError) as err:
        load_config(None, ["warmup.loss=cadft", "warmup.max_steps=16", "warmup.rewrite.start=3000"])
    assert str(err.value).startswith(
        "--set warmup.rewrite.start=3000: warmup.rewrite.start: the first rewriting round would come after step 3000, "
        "but the warm-up has 16 steps"
    )
    # trained by epochs, the length is known once the data is: 8 samples at 4 a step, 2 steps
    with pytest.raises(ColdstartError, match="warmup.rewrite.start=0.9: .* the warm-up has 2 steps"):
        cadft_trainer(tokenizer, tmp_path, "data.arith.num_train=8", "warmup.max_steps=-1",
                       "warmup.per_device_train_batch_size=4", "warmup.rewrite.start=0.9")


def test_a_round_with_too_few_samples_left_warns(tokenizer, tmp_path, caplog):
    cadft_trainer(tokenizer, tmp_path, "data.arith.num_train=8", "warmup.max_steps=2",
                   "warmup.per_device_train_batch_size=4", "warmup.rewrite.start=1", "warmup.rewrite.fraction=1.0")
    assert "the round after step 1 can pick only 4 samples (of 8 asked by warmup.rewrite.fraction)" in caplog.text
