import json

import pytest
import torch

from coldstart.config import load_config
from coldstart.data import load_samples
from coldstart.eval.generation import Completion
from coldstart.rewriting import choose, is_due, pick, resolve_steps
from coldstart.stages.warmup import build_trainer
from conftest import make_tiny_model


def test_pick_is_the_highest_moving_nll_fraction():
    moving = {i: float(v) for i, v in enumerate([3, 9, 1, 7, 5, 8, 2, 6, 4, 0])}
    assert pick(moving, 0.3, 10) == [1, 5, 3]
    assert pick(moving, 0.001, 10) == [1]  # at least one
    assert pick({4: 1.0, 2: 1.0}, 1.0, 2) == [2, 4]  # ties by index, only seen samples


def test_schedule_starts_late_and_repeats():
    assert resolve_steps(0.5, 40) == 20 and resolve_steps(3000, 40) == 3000 and resolve_steps(0.001, 10) == 1
    due = [s for s in range(1, 41) if is_due(s, 20, 8)]
    assert due == [20, 28, 36]


def test_choose_never_takes_a_wrong_answer_when_verifying():
    texts = ["\\boxed{4}", "\\boxed{5}", "\\boxed{5} again"]
    compat = [0.9, 0.2, 0.3]
    assert choose(texts, compat, [False, True, True], verify=True) == (2, "most compatible verified candidate")
    assert choose(texts, compat, [False, False, False], verify=True)[0] is None
    assert choose(texts, compat, [False, False, False], verify=False)[0] == 0


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


def fake_generate(candidates):
    def generate(model, tokenizer, prompts, num_samples, **kwargs):
        return [[Completion(text, 5, True) for text in candidates] for _ in prompts]

    return generate


def test_round_accepts_only_the_reference_answer(rewriting_trainer, monkeypatch, tokenizer):
    trainer, rewriter, train = rewriting_trainer
    rewriter.moving_nll = {0: 9.0, 1: 1.0, 2: 8.0, 3: 2.0}
    gold0, gold2 = train[0]["answer"], train[2]["answer"]
    assert gold0 != gold2
    # sample 0 gets a right candidate among wrong ones; sample 2 only wrong ones
    wrong = str(int(gold0) + 1000)
    monkeypatch.setattr(
        "coldstart.eval.generation.generate", fake_generate([f"\\boxed{{{wrong}}}", f"so \\boxed{{{gold0}}}"])
    )
    records = rewriter.round(step=2)
    by_index = {r["index"]: r for r in records}
    assert sorted(by_index) == [0, 2]
    assert by_index[0]["accepted"] and by_index[0]["new"] == f"so \\boxed{{{gold0}}}"
    assert not by_index[2]["accepted"] and by_index[2]["reason"] == "no candidate has the reference answer"
    assert 2 not in trainer.overrides
    logged = [json.loads(line) for line in rewriter.log_path.read_text().splitlines()]
    assert [r["index"] for r in logged] == [r["index"] for r in records]
    assert {"id", "step", "old", "new", "old_compat", "new_compat", "accepted", "reason"} <= set(logged[0])

    # the next batch holding sample 0 trains on the accepted text
    row = next(r for r in trainer.train_dataset if r["sample_index"] == 0)
    batch = trainer.data_collator([row])
    trained = batch["labels"][0][batch["labels"][0] != -100]
    assert tokenizer.decode(trained).startswith(f"so \\boxed{{{gold0}}}<|im_end|>")


def test_nothing_is_rewritten_before_start(rewriting_trainer, monkeypatch):
    trainer, rewriter, _ = rewriting_trainer
    calls = []
    monkeypatch.setattr(rewriter, "round", lambda step: calls.append(step))
    state = type("S", (), {"max_steps": 4})()
    for step in range(1, 5):
        state.global_step = step
        rewriter.on_step_end(None, state, None)
    assert calls == [2]  # step 4 is the last step: nothing would train on a rewrite there


def test_restore_replays_accepted_rewrites_up_to_the_checkpoint(rewriting_trainer, tokenizer):
    trainer, rewriter, _ = rewriting_trainer
    lines = [
        {"step": 2, "index": 1, "accepted": True, "new": "A \\boxed{1}"},
        {"step": 2, "index": 3, "accepted": False, "new": None},
        {"step": 4, "index": 5, "accepted": True, "new": "B \\boxed{2}"},
    ]
    rewriter.log_path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    rewriter.restore({"moving_nll": {"1": 3.5}}, step=2)
    assert set(trainer.overrides) == {1} and rewriter.current == {1: "A \\boxed{1}"}
    assert rewriter.moving_nll == {1: 3.5}
    assert [json.loads(x)["step"] for x in rewriter.log_path.read_text().splitlines()] == [2, 2]


def test_training_updates_moving_nll(rewriting_trainer):
    trainer, rewriter, _ = rewriting_trainer
    trainer.model.train()
    rows = sorted(trainer.train_dataset, key=lambda r: r["sample_index"])[:4]
    for _ in range(2):
        trainer.compute_loss(trainer.model, dict(trainer.data_collator(rows)))
    assert sorted(rewriter.moving_nll) == [0, 1, 2, 3]
    assert all(torch.isfinite(torch.tensor(v)) and v > 0 for v in rewriter.moving_nll.values())
