import math

import pytest
import torch
from transformers import TrainerCallback

from coldstart.config import load_config
from coldstart.data import load_samples
from coldstart.losses import batch_moments, cadft_weights, effective_sample_fraction, mean_std, token_loss
from coldstart.stages.warmup import build_trainer
from conftest import assert_same_loss_and_gradients, make_tiny_model


def test_weights_by_hand():
    nll = torch.tensor([1.0, 2.0, 3.0, 6.0])
    mean, std = mean_std(batch_moments(nll))
    assert mean == pytest.approx(3.0) and std == pytest.approx(math.sqrt(3.5))  # population std
    w = cadft_weights(nll, mean, std, beta=1.0)
    # z = (6 - 3) / sqrt(3.5) = 1.6036; samples at or below the mean keep weight 1
    assert w.tolist() == pytest.approx([1.0, 1.0, 1.0, math.exp(-3 / (math.sqrt(3.5) + 1e-6))])
    assert cadft_weights(nll, mean, std, beta=2.0)[3].item() == pytest.approx(math.exp(-2 * 1.603567), rel=1e-5)
    assert cadft_weights(nll, mean, std, beta=1.0, weight_floor=0.5)[3].item() == 0.5
    # gate on compatibility exp(-n): exp(-3) = 0.0498 and exp(-6) are below 0.1
    assert cadft_weights(nll, mean, std, beta=1.0, gate_min=0.1).tolist() == pytest.approx([1.0, 1.0, 0.0, 0.0])
    assert effective_sample_fraction(torch.tensor([1.0, 1.0, 0.0, 0.0])) == pytest.approx(0.5)


def test_loss_on_a_fixed_batch_by_hand():
    # two samples: p = (0.5, 0.25) and p = (0.8, pad); weights (1, 0.5); 3 tokens in the global batch
    log_probs = torch.log(torch.tensor([[0.5, 0.25], [0.8, 1.0]]))
    mask = torch.tensor([[True, True], [True, False]])
    w = torch.tensor([1.0, 0.5])
    dft = (0.5 * math.log(2) + 0.25 * math.log(4) + 0.5 * 0.8 * -math.log(0.8)) / 3
    sft = (math.log(2) + math.log(4) + 0.5 * -math.log(0.8)) / 3
    assert token_loss(log_probs, mask, 3, "dft", w).item() == pytest.approx(dft)
    assert token_loss(log_probs, mask, 3, "none", w).item() == pytest.approx(sft)
    assert token_loss(log_probs, torch.zeros_like(mask), 0, "dft").item() == 0.0  # nothing to train on: finite 0


def test_identical_samples_give_finite_weights():
    nll = torch.full((4,), 2.5)
    w = cadft_weights(nll, *mean_std(batch_moments(nll)), beta=1.0)
    assert torch.isfinite(w).all() and w.tolist() == [1.0] * 4


def make_trainer(tokenizer, tmp_path, sets, seed=0, ema_init=None):
    cfg = load_config(None, ["data.arith.num_train=8", "warmup.rewrite.enabled=false", *sets])
    train, _ = load_samples(cfg.data, "train", cfg.seed)
    trainer = build_trainer(cfg, tmp_path, train, make_tiny_model(tokenizer, seed), tokenizer, ema_init=ema_init)
    rows = sorted(trainer.train_dataset, key=lambda r: r.get("sample_index", 0))
    return trainer, rows


class FirstGradients(TrainerCallback):
    """The gradients of the first optimizer step, as the optimizer is about to apply them."""

    def __init__(self, trainer):
        self.trainer, self.grads = trainer, None

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.grads is None:
            self.grads = [p.grad.detach().clone() for p in self.trainer.model.parameters()]


def first_step_gradients(tokenizer, tmp_path, stats: str, micro: int, ema_init=None, normalize: str = "tokens"):
    """One optimizer step over the same 8 samples through `Trainer.train()`, as `8 // micro` micro-batches of
    `micro` (Trainer's accumulation loop: its loss scaling, `num_items_in_batch` and the CADFT pre-pass)."""
    cfg = load_config(None, [
        "data.arith.num_train=8", "warmup.loss=cadft", f"warmup.cadft.stats={stats}", "warmup.max_steps=1",
        f"warmup.per_device_train_batch_size={micro}", f"warmup.gradient_accumulation_steps={8 // micro}",
        "warmup.rewrite.enabled=false", "warmup.save_steps=100", f"warmup.cadft.normalize={normalize}",
    ])
    train, _ = load_samples(cfg.data, "train", cfg.seed)
    trainer = build_trainer(cfg, tmp_path, train, make_tiny_model(tokenizer), tokenizer, ema_init=ema_init)
    capture = FirstGradients(trainer)
    trainer.add_callback(capture)
    trainer.train()
    return capture.grads


@pytest.mark.parametrize("stats", ["batch", "ema", "ema-uninitialised", "batch-samples", "ema-samples"])
def test_gradient_does_not_depend_on_the_split(tokenizer, tmp_path, stats):
    mode, ema_init = stats.split("-")[0], (10.8, 0.02) if stats.startswith("ema") and "uninit" not in stats else None
    normalize = "samples" if stats.endswith("samples") else "tokens"
    results = [first_step_gradients(tokenizer, tmp_path / str(micro), mode, micro, ema_init, normalize)
               for micro in (8, 4, 2)]
    for other in results[1:]:
        for a, b in zip(results[0], other):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)
    assert any(g.abs().sum() > 0 for g in results[0])


def test_beta_zero_is_exactly_dft(tokenizer, tmp_path):
    cadft, rows = make_trainer(tokenizer, tmp_path / "c", ["warmup.loss=cadft", "warmup.cadft.beta=0"])
    dft, _ = make_trainer(tokenizer, tmp_path / "d", ["warmup.loss=dft"])
    batch = cadft.data_collator(rows)
    plain = {k: v for k, v in batch.items() if k != "sample_index"}
    assert_same_loss_and_gradients(cadft, batch, dft, plain, rel=1e-6, rtol=1e-5, atol=1e-10)


def test_normalised_by_samples_by_hand(tokenizer, tmp_path):
    """Each sample's term over its own tokens, weighted, over the samples: the paper's per-demonstration form,
    which differs from the token normalisation wherever lengths differ."""
    from coldstart.compatibility import sequence_nll

    trainers = {n: make_trainer(tokenizer, tmp_path / n, ["warmup.loss=cadft", f"warmup.cadft.normalize={n}"])
                for n in ("tokens", "samples")}
    (tokens_trainer, rows), (samples_trainer, _) = trainers["tokens"], trainers["samples"]
    batch = samples_trainer.data_collator(rows)
    n = int((batch["labels"][:, 1:] != -100).sum())
    samples_trainer.model.train()
    with torch.no_grad():
        log_probs, mask = samples_trainer.token_logprobs(samples_trainer.model, batch)
        nll, count = sequence_nll(log_probs.float(), mask)
        w = cadft_weights(nll, *mean_std(batch_moments(nll)), beta=1.0)
        by_tokens = tokens_trainer.compute_loss(tokens_trainer.model, dict(batch), num_items_in_batch=n)
        # outside a training step (no step count): this micro-batch's samples
        loss = samples_trainer.compute_loss(samples_trainer.model, dict(batch))
    per_sample = (-(log_probs * mask * log_probs.exp()).sum(-1) / count) * w
    assert len(set(count.tolist())) > 1  # lengths differ, so the two normalisations differ
    assert loss.item() == pytest.approx(float(per_sample.mean()), rel=1e-5)
    assert loss.item() != pytest.approx(by_tokens.item(), rel=1e-3)


def test_cadft_damps_the_less_compatible_samples(tokenizer, tmp_path):
    trainer, rows = make_trainer(tokenizer, tmp_path, ["warmup.loss=cadft"])
    trainer.model.train()
    batch = trainer.data_collator(rows)
    trainer.compute_loss(trainer.model, dict(batch))
    metrics = trainer._metrics["train"]
    assert metrics["weight_min"][0] < 1.0 and metrics["compat_min"][0] <= metrics["compat_max"][0]
    assert 0 < metrics["ess_fraction"][0] <= 1.0
    assert any(key.startswith("style/") for key in metrics)


def test_an_all_gated_batch_is_a_finite_zero(tokenizer, tmp_path):
    trainer, rows = make_trainer(tokenizer, tmp_path, ["warmup.loss=cadft", "warmup.cadft.gate_min=0.5"])
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, dict(trainer.data_collator(rows)))
    loss.backward()
    assert loss.item() == 0.0
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() == 0 for p in trainer.model.parameters())
