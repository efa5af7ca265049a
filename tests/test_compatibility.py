import math

import pytest
import torch

from coldstart.compatibility import (
    ensure_fused_head,
    gate_keep,
    length_buckets,
    mean_token_entropy,
    pad_batch,
    score,
    sequence_nll,
    shared_prefix,
    summarize,
    token_logprobs,
    tokenize_sample,
)
from coldstart.config import load_config
from coldstart.data import load_samples
from coldstart.stages.warmup import build_trainer
from conftest import make_tiny_model


def two_samples(tokenizer):
    prompt = [{"role": "user", "content": "What is 2 + 3?"}]
    rows = [
        tokenize_sample(tokenizer, prompt, [{"role": "assistant", "content": "2 + 3 = 5, so \\boxed{5}."}], None),
        tokenize_sample(tokenizer, prompt, [{"role": "assistant", "content": "\\boxed{5}"}], None),
    ]
    return rows, pad_batch(rows, tokenizer.pad_token_id)


@pytest.mark.parametrize("fused", [False, True])
def test_nll_and_compatibility_match_a_direct_computation(tiny_model, tokenizer, fused):
    rows, batch = two_samples(tokenizer)
    if fused:
        ensure_fused_head(tiny_model)
    with torch.no_grad():
        log_probs, mask = token_logprobs(tiny_model, batch["input_ids"], batch["attention_mask"], batch["labels"], fused)
        nll, count = sequence_nll(log_probs, mask)
    for i, row in enumerate(rows):  # each sample alone, unpadded, straight from the logits
        ids = torch.tensor([row["input_ids"]])
        with torch.no_grad():
            logits = tiny_model(input_ids=ids).logits[0]
        start = next(t for t, label in enumerate(row["labels"]) if label != -100)
        total = sum(
            torch.log_softmax(logits[t - 1], -1)[row["input_ids"][t]].item() for t in range(start, len(row["input_ids"]))
        )
        n = len(row["input_ids"]) - start
        assert count[i].item() == n
        assert nll[i].item() == pytest.approx(-total / n, rel=1e-5)
        assert math.exp(-nll[i].item()) == pytest.approx(math.exp(total / n), rel=1e-5)


def test_tokenization_matches_the_trainers(tiny_model, tokenizer, tmp_path):
    cfg = load_config(None, ["data.arith.num_train=12", "warmup.loss=cadft", "warmup.per_device_train_batch_size=12",
                             "warmup.rewrite.enabled=false"])
    train, _ = load_samples(cfg.data, "train", cfg.seed)
    trainer = build_trainer(cfg, tmp_path, train, tiny_model, tokenizer)
    prepared = {row["sample_index"]: row for row in trainer.train_dataset}
    for i, sample in enumerate(train):
        mine = tokenize_sample(tokenizer, sample["prompt"], sample["completion"], cfg.warmup.max_length)
        assert mine["input_ids"] == prepared[i]["input_ids"]
        assert mine["labels"] == prepared[i]["labels"]


@pytest.mark.parametrize("fused", [False, True])
def test_scorer_batches_by_length_and_shares_the_prefix_without_changing_results(tiny_model, tokenizer, fused):
    cfg = load_config(None, ["data.arith.num_train=10"])
    train, _ = load_samples(cfg.data, "train", cfg.seed)
    rows = [tokenize_sample(tokenizer, s["prompt"], s["completion"], 256) for s in train]
    assert shared_prefix(rows) > 10  # the chat template's system prompt
    batched = score(tiny_model, tokenizer, train, 256, max_tokens=400, fused=fused)
    alone = score(tiny_model, tokenizer, train, 256, max_tokens=1, share_prefix=False, fused=fused)
    for a, b, row in zip(batched, alone, rows):
        assert a["nll"] == pytest.approx(b["nll"], rel=1e-5) and a["num_tokens"] == b["num_tokens"]
        assert a["num_tokens"] == sum(label != -100 for label in row["labels"])
        assert a["compatibility"] == pytest.approx(math.exp(-a["nll"]))


def test_shared_prefix_stops_before_the_first_label():
    rows = [
        {"input_ids": [1, 2, 3, 4, 5, 6], "labels": [-100, -100, -100, -100, 5, 6]},
        {"input_ids": [1, 2, 9, 4, 5], "labels": [-100, -100, -100, -100, 5]},
    ]
    assert shared_prefix(rows) == 2  # the rows part at the 3rd token
    rows[1]["input_ids"][2] = 3
    assert shared_prefix(rows) == 3  # the logits at position 3 predict the first label: not in the prefix
    rows[1]["labels"] = [-100, 2, 3, 4, 5]
    assert shared_prefix(rows) == 0  # a label at position 1 leaves nothing worth sharing


def test_length_buckets_cover_every_index_once_and_respect_the_budget():
    lengths = [5, 50, 7, 48, 6, 49, 100]
    groups = list(length_buckets(lengths, max_tokens=100))
    assert sorted(i for g in groups for i in g) == list(range(7))
    assert groups[0] == [6]  # the longest alone
    for g in groups:
        assert max(lengths[i] for i in g) * len(g) <= 100 or len(g) == 1


def test_gate_keep_threshold_and_fraction():
    compat = [0.9, 0.1, 0.5, 0.3, 0.7]
    assert gate_keep(compat, 0.4, 0.0) == [True, False, True, False, True]
    assert gate_keep(compat, None, 0.4) == [True, False, True, False, True]
    assert gate_keep(compat, 0.6, 0.2) == [True, False, False, False, True]


def test_summary_quantiles_and_styles():
    records = [{"nll": -math.log(c), "compatibility": c, "style": s} for c, s in [(0.2, "a"), (0.4, "a"), (0.8, "b")]]
    out = summarize(records)
    assert out["count"] == 3 and out["compatibility_quantiles"]["q50"] == pytest.approx(0.4)
    assert out["by_style"]["a"]["compatibility_mean"] == pytest.approx(0.3)
    assert out["nll_mean"] == pytest.approx(-(math.log(0.2) + math.log(0.4) + math.log(0.8)) / 3)


def test_mean_token_entropy_of_known_distributions(tokenizer, tiny_model):
    samples = [{"prompt": [{"role": "user", "content": "2+2?"}],
                "completion": [{"role": "assistant", "content": "The answer is \\boxed{4}."}]},
               {"prompt": "1+1=", "completion": "2"}]
    with torch.no_grad():
        tiny_model.lm_head.weight.zero_()  # every logit 0: the uniform distribution over the vocabulary
    assert mean_token_entropy(tiny_model, tokenizer, samples) == pytest.approx([math.log(len(tokenizer))] * 2, rel=1e-5)

    model = make_tiny_model(tokenizer, seed=3)  # against the entropy of the full softmax at the completion positions
    row = tokenize_sample(tokenizer, samples[0]["prompt"], samples[0]["completion"], None)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([row["input_ids"]])).logits[0, :-1]
    at = torch.tensor(row["labels"][1:]) != -100
    p = torch.softmax(logits[at].double(), -1)
    direct = float((-(p * p.log()).sum(-1)).mean())
    assert mean_token_entropy(model, tokenizer, samples[:1])[0] == pytest.approx(direct, rel=1e-4)
