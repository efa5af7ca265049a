"""coldstart.generation: the sampler draws what transformers' warpers would, greedy decoding is transformers' own,
and a seed fixes the samples."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from coldstart.generation import TokenSampler, generate, render_prompt
from tests.conftest import make_tiny_model

LOGITS = torch.tensor([2.0, 1.5, 1.4, 0.3, 0.0, -0.5, -1.0, -3.0])


def transformers_probs(temperature: float, top_p: float, top_k: int) -> torch.Tensor:
    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)] + ([TopKLogitsWarper(top_k)] if top_k else [])
                                  + ([TopPLogitsWarper(top_p)] if top_p < 1 else []))
    return warpers(None, LOGITS[None].clone()).softmax(-1)[0]


@pytest.mark.parametrize("temperature, top_p, top_k, nucleus_k", [
    (1.0, 1.0, 0, 256), (0.7, 0.9, 0, 256), (0.7, 0.9, 0, 2), (1.3, 0.8, 3, 256), (1.0, 0.5, 0, 256),
    (1.0, 0.5, 0, 4)])
def test_the_sampler_draws_from_the_distribution_transformers_samples(temperature, top_p, top_k, nucleus_k):
    """nucleus_k 2 is narrower than the 0.9 nucleus: the whole sorted vocabulary is used instead; nucleus_k 4 holds
    the 0.5 nucleus within fewer tokens than the vocabulary (the path a real vocabulary takes)."""
    torch.manual_seed(0)
    rows = 40_000
    scores = TokenSampler(temperature, top_p, top_k, nucleus_k)(None, LOGITS.repeat(rows, 1))
    assert (torch.isfinite(scores).sum(-1) == 1).all() and scores.max() == 0
    counts = torch.bincount(scores.argmax(-1), minlength=len(LOGITS)).double()
    expected = transformers_probs(temperature, top_p, top_k).double()
    assert (counts[expected == 0] == 0).all() and (counts[expected > 0] > 0).all()  # the same tokens kept
    kept = expected > 0
    expected = expected[kept] / expected[kept].sum()  # float32 warpers: renormalised for scipy's exact sum check
    assert chisquare(counts[kept], expected * rows).pvalue > 1e-3


def test_each_row_draws_from_its_own_distribution_when_one_row_needs_the_whole_vocabulary():
    """Two rows in one batch: the second's 0.9 nucleus is wider than nucleus_k = 3, so the batch sorts the whole
    vocabulary; each row still draws from its own nucleus."""
    torch.manual_seed(1)
    rows = 20_000
    flat = torch.zeros_like(LOGITS)
    scores = TokenSampler(1.0, 0.9, 0, nucleus_k=3)(None, torch.stack([LOGITS, flat]).repeat(rows, 1))
    for row, logits in ((0, LOGITS), (1, flat)):
        counts = torch.bincount(scores[row::2].argmax(-1), minlength=len(LOGITS)).double()
        expected = TopPLogitsWarper(0.9)(None, logits[None].clone()).softmax(-1)[0].double()
        kept = expected > 0
        assert (counts[~kept] == 0).all()
        assert chisquare(counts[kept], expected[kept] / expected[kept].sum() * rows).pvalue > 1e-3


def test_a_token_below_float32s_resolution_at_the_end_of_the_sum_can_be_drawn(monkeypatch):
    """p = (1 - 2e-9, 1e-9, 1e-9): in float32 the running sum is 1 at all three tokens. A draw in the last
    billionth of the unit interval must take the last token."""
    logits = torch.tensor([[0.0, -20.7233, -20.7233]])  # exp(-20.7233) = 1e-9
    monkeypatch.setattr(torch, "rand", lambda *shape, **kw: torch.full(shape, 1 - 2.5e-10, dtype=torch.float64))
    assert TokenSampler(1.0)(None, logits).argmax(-1).item() == 2
    monkeypatch.setattr(torch, "rand", lambda *shape, **kw: torch.full(shape, 1 - 1.5e-9, dtype=torch.float64))
    assert TokenSampler(1.0)(None, logits).argmax(-1).item() == 1


def test_greedy_is_transformers_own_and_a_seed_fixes_the_samples(tokenizer):
    model = make_tiny_model(tokenizer)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id]
    prompts = [[{"role": "user", "content": f"What is {i} + 2?"}] for i in range(3)]
    greedy = generate(model, tokenizer, prompts, max_new_tokens=8, batch_size=2)
    enc = tokenizer([render_prompt(tokenizer, p) for p in prompts], return_tensors="pt", padding=True,
                    padding_side="left", add_special_tokens=False)
    ids = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    direct = [tokenizer.decode(row[enc["input_ids"].shape[1]:], skip_special_tokens=True) for row in ids]
    assert [c[0].text for c in greedy] == direct
    state = torch.random.get_rng_state()
    sampled = [[c.text for c in cs] for cs in generate(model, tokenizer, prompts, num_samples=4, max_new_tokens=8,
                                                        temperature=1.0, seed=3)]
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream is left where it was
    again = [[c.text for c in cs] for cs in generate(model, tokenizer, prompts, num_samples=4, max_new_tokens=8,
                                                      temperature=1.0, seed=3)]
    other = [[c.text for c in cs] for cs in generate(model, tokenizer, prompts, num_samples=4, max_new_tokens=8,
                                                      temperature=1.0, seed=4)]
    assert sampled == again and sampled != other
    assert len({t for cs in sampled for t in cs}) > 3  # a random tiny model's samples differ
