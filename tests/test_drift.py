"""KL and entropy per token on a policy's own samples: by hand, and on tiny random models."""

import math

import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from coldstart.drift import position_drift, sample_drift, summarize_drift
from coldstart.generation import generate, render_prompt

PROMPTS = [[{"role": "user", "content": f"What is {a} + {b}?"}] for a, b in ((2, 3), (10, 7), (4, 4))]


def test_position_drift_by_hand():
    p, q = torch.tensor([[0.9, 0.1]]).log(), torch.tensor([[0.5, 0.5]]).log()
    kl, entropy = position_drift(p, q)
    assert kl.item() == pytest.approx(0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5), rel=1e-6)
    assert entropy.item() == pytest.approx(-(0.9 * math.log(0.9) + 0.1 * math.log(0.1)), rel=1e-6)
    assert position_drift(p, None)[0] is None


def test_sample_drift_matches_a_direct_computation(tokenizer):
    from conftest import make_tiny_model

    policy, reference = make_tiny_model(tokenizer, seed=0), make_tiny_model(tokenizer, seed=1)
    records = sample_drift(policy, reference, tokenizer, PROMPTS, max_new_tokens=6, batch_size=2, seed=3)
    completions = generate(policy, tokenizer, PROMPTS, 1, 6, temperature=1.0, batch_size=2, seed=3)
    for prompt, (completion,), record in zip(PROMPTS, completions, records):
        tokens = list(completion.token_ids)
        assert record["tokens"] == len(tokens) > 0
        prompt_ids = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False).input_ids
        ids = torch.tensor([prompt_ids + tokens])
        with torch.no_grad():
            # every position's logits; those at len(prompt) - 1 ... predict the completion's tokens
            at = slice(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(tokens))
            p = Categorical(logits=policy(input_ids=ids).logits[0, at].double())
            q = Categorical(logits=reference(input_ids=ids).logits[0, at].double())
        assert record["kl"] == pytest.approx(float(kl_divergence(p, q).sum()), rel=1e-4)
        assert record["entropy"] == pytest.approx(float(p.entropy().sum()), rel=1e-4)
    same = sample_drift(policy, policy, tokenizer, PROMPTS, max_new_tokens=6, batch_size=2, seed=3)
    assert all(r["kl"] == pytest.approx(0.0, abs=1e-6) for r in same)


def test_summarize_by_hand():
    records = [{"tokens": 2, "kl": 0.4, "entropy": 3.0}, {"tokens": 6, "kl": 0.4, "entropy": 1.0}]
    out = summarize_drift(records)
    assert out == {"completions": 2, "tokens": 8, "entropy_per_token": 0.5, "kl_per_token": 0.1,
                   "kl_per_completion": pytest.approx(0.4)}
    assert "kl_per_token" not in summarize_drift([{"tokens": 2, "kl": None, "entropy": 1.0}])
