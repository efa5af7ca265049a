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
    (1.0, 1.0, 0, 256), (0.7, 0.9, 0, 256), (0.7, 0.9, 0, 2), (1.3, 0.8, 3, 256), (1.0, 0.5, 0, 256)])
def test_the_sampler_draws_from_the_distribution_transformers_samples(temperature, top_p, top_k, nucleus_k):
    """nucleus_k 2 is narrower than the 0.9 nucleus: the whole sorted vocabulary is used instead."""
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
    sampled = [[c.text for c in cs] for cs in generate(model, tokenizer, prompts, num_samples=4, max_new_tokens=8,
                                                        temperature=1.0, seed=3)]
    again = [[c.text for c in cs] for cs in generate(model, tokenizer, prompts, num_samples=4, max_new_tokens=8,
                                                      temperature=1.0, seed=3)]
    other = [[c.text for c in cs] for cs in generate(model, tokenizer, prompts, num_samples=4, max_new_tokens=8,
                                                      temperature=1.0, seed=4)]
    assert sampled == again and sampled != other
    assert len({t for cs in sampled for t in cs}) > 3  # a random tiny model's samples differ
