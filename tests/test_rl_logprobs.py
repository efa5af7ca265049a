"""GRPO's per-token log-probs from plain logits (`rl.logprobs: logits`, the CPU default) against TRL's fused LM head:
the same values and gradients, on a batch with left-padded prompts and right-padded completions."""

from __future__ import annotations

import torch

from coldstart.config import load_config
from coldstart.data import rl_prompts
from coldstart.stages.rl import build_trainer
from tests.conftest import make_tiny_model


def logps_and_gradients(tokenizer, tmp_path, logprobs: str, batch):
    cfg = load_config(None, [f"rl.logprobs={logprobs}", "rl.temperature=0.7", "data.arith.num_train=16"])
    prompts, _ = rl_prompts(cfg.data, 0, cfg.seed)
    trainer = build_trainer(cfg, tmp_path / logprobs, prompts, make_tiny_model(tokenizer), tokenizer)
    model = trainer.model
    model.train()
    model.zero_grad()
    ids, mask, keep = batch
    logps, entropy, _ = trainer._get_per_token_logps_and_entropies(model, ids, mask, keep, batch_size=3,
                                                                   compute_entropy=True)
    completion = mask[:, -keep:].float()
    ((logps * completion).sum() + (entropy * completion).sum()).backward()
    return logps.detach(), entropy.detach(), [p.grad.clone() for p in model.parameters()]


def test_logits_path_matches_the_fused_head(tokenizer, tmp_path):
    torch.manual_seed(1)
    ids = torch.randint(10, len(tokenizer), (5, 14))
    mask = torch.ones_like(ids)
    mask[:2, :3] = 0   # left-padded prompts
    mask[1:4, -2:] = 0  # completions that ended early
    batch = (ids, mask, 6)
    fused = logps_and_gradients(tokenizer, tmp_path, "fused", batch)
    plain = logps_and_gradients(tokenizer, tmp_path, "logits", batch)
    completion = mask[:, -6:].bool()
    assert fused[0].shape == plain[0].shape == (5, 6)
    # the values the loss reads (completion tokens), and zero where the completion is padding, as TRL's head gives
    torch.testing.assert_close(plain[0][completion], fused[0][completion], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain[1][completion], fused[1][completion], rtol=1e-5, atol=1e-5)
    assert (plain[0][~completion] == 0).all() and (plain[1][~completion] == 0).all()
    assert plain[0][completion].abs().min() > 0  # not trivially zero
    for a, b in zip(plain[2], fused[2]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
