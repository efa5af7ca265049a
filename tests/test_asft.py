"""ASFT (anchored SFT): its loss by hand, its reductions to DFT, and the trainer on tiny random models."""

import copy
import math

import pytest
import torch

from coldstart.config import load_config, start_parts
from coldstart.errors import ColdstartError
from coldstart.losses import anchor_kl, asft_loss
from coldstart.stages.warmup import build_trainer
from coldstart.data import load_samples


def test_anchor_kl_by_hand():
    policy = torch.tensor([[0.9, 0.1]]).log()
    base = torch.tensor([[0.5, 0.5]]).log()
    want = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert anchor_kl(policy, base).item() == pytest.approx(want, rel=1e-6)
    assert anchor_kl(base, base).item() == pytest.approx(0.0, abs=1e-7)


def test_asft_gradient_on_the_logits_by_hand():
    """d loss / d z_v = (-p_y (1[v = y] - p_v) + a (p_v - p_base,v)) / N at each token (p_y held fixed by DFT)."""
    torch.manual_seed(0)
    logits = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    base = torch.log_softmax(torch.randn(5, 7, dtype=torch.float64), -1)
    labels = torch.tensor([0, 3, 6, 2, 2])
    anchor, n = 0.3, 8  # a count larger than these tokens, as another micro-batch's tokens make it
    log_probs = torch.log_softmax(logits, -1)
    loss = asft_loss(log_probs.gather(-1, labels[:, None])[:, 0], anchor_kl(log_probs, base), n, anchor)
    loss.backward()
    p = log_probs.detach().exp()
    p_label = p.gather(-1, labels[:, None])
    one_hot = torch.nn.functional.one_hot(labels, 7).double()
    want = (-p_label * (one_hot - p) + anchor * (p - base.exp())) / n
    torch.testing.assert_close(logits.grad, want)
    # and the value: DFT's term plus the anchor's
    kl = (base.exp() * (base - log_probs.detach())).sum(-1)
    assert loss.item() == pytest.approx(float((-(p_label[:, 0] * p_label[:, 0].log())).sum() + anchor * kl.sum()) / n)


def trainer_and_batch(tokenizer, tmp_path, loss, anchor=0.1, lora=False, base_model=True):
    from conftest import make_tiny_model

    cfg = load_config(None, ["data.arith.num_train=4", "warmup.per_device_train_batch_size=4", f"warmup.loss={loss}",
                             f"warmup.asft.anchor={anchor}", f"model.lora.enabled={str(lora).lower()}"])
    train, _ = load_samples(cfg.data, "train", cfg.seed)
    model = make_tiny_model(tokenizer)
    base = make_tiny_model(tokenizer, seed=1) if loss == "asft" and base_model else None
    trainer = build_trainer(cfg, tmp_path / loss, train, model, tokenizer, base_model=base)
    return trainer, next(iter(trainer.get_train_dataloader())), base


def test_asft_with_anchor_zero_is_dft(tokenizer, tmp_path):
    """The same model and batch: asft at anchor 0 gives DFT's loss and gradients, though its base model differs."""
    from conftest import assert_same_loss_and_gradients

    asft, batch, _ = trainer_and_batch(tokenizer, tmp_path, "asft", anchor=0.0)
    dft, dft_batch, _ = trainer_and_batch(tokenizer, tmp_path, "dft")
    assert_same_loss_and_gradients(asft, batch, dft, dft_batch, rel=1e-6, rtol=1e-5, atol=1e-9)


def test_asft_loss_and_gradients_match_a_direct_computation(tokenizer, tmp_path):
    from conftest import loss_and_gradients

    anchor = 0.5
    trainer, batch, base = trainer_and_batch(tokenizer, tmp_path, "asft", anchor=anchor)
    n = int((batch["labels"][:, 1:] != -100).sum())
    got, grads = loss_and_gradients(trainer, batch, n)

    model = trainer.model
    model.zero_grad()
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    log_p = torch.log_softmax(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1], -1)
    with torch.no_grad():
        log_b = torch.log_softmax(base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1], -1)
    lp = log_p.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    kl = (log_b.exp() * (log_b - log_p)).sum(-1)
    want = ((-lp.detach().exp() * lp + anchor * kl) * mask).sum() / n
    want.backward()
    assert got == pytest.approx(want.item(), rel=1e-5)
    assert anchor * float((kl * mask).sum().detach()) / n > 0.1 * got  # the anchor is a real part of the loss here
    for a, b in zip(grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-8)
    assert trainer._metrics["train"]["anchor_kl"][-1] == pytest.approx(float((kl * mask).sum() / mask.sum()), rel=1e-5)


def test_the_base_model_is_frozen_and_a_copy_of_the_policy_gives_no_anchor(tokenizer, tmp_path):
    from conftest import make_tiny_model

    cfg = load_config(None, ["data.arith.num_train=4", "warmup.per_device_train_batch_size=4", "warmup.loss=asft"])
    train, _ = load_samples(cfg.data, "train", cfg.seed)
    model = make_tiny_model(tokenizer)
    trainer = build_trainer(cfg, tmp_path, train, model, tokenizer, base_model=copy.deepcopy(model))
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    trainer.compute_loss(trainer.model, dict(batch))
    assert trainer._metrics["train"]["anchor_kl"][-1] == pytest.approx(0.0, abs=1e-6)
    assert not any(p.requires_grad for p in trainer.base_model.parameters())
    assert not trainer.base_model.training


def test_under_lora_the_base_is_the_policy_without_its_adapters(tokenizer, tmp_path):
    """LoRA's B starts at zero: before any step the anchor is 0; once the adapters move, it is not."""
    trainer, batch, _ = trainer_and_batch(tokenizer, tmp_path, "asft", lora=True, base_model=False)
    assert trainer.base_model is None
    trainer.model.train()
    trainer.compute_loss(trainer.model, dict(batch))
    assert trainer._metrics["train"]["anchor_kl"][-1] == pytest.approx(0.0, abs=1e-7)
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
    trainer.compute_loss(trainer.model, dict(batch))
    assert trainer._metrics["train"]["anchor_kl"][-1] > 1e-3


@pytest.mark.parametrize("sets, field", [
    (["warmup.asft.anchor=-0.1"], "warmup.asft.anchor"),
    (["warmup.loss=asft", "warmup.logprobs=fused"], "warmup.logprobs"),
])
def test_bad_asft_settings_are_refused_by_name(sets, field):
    with pytest.raises(ColdstartError, match=field.replace(".", r"\.")):
        load_config(None, sets)


def test_compare_accepts_asft_starts():
    cfg = load_config(None, ["compare.starts=[none, dft, cadft, asft, asft-matched]"])
    assert cfg.compare.starts[-2:] == ["asft", "asft-matched"]
    assert start_parts("asft-rewrite") is None  # rewriting is cadft's


def test_the_warmup_stage_trains_asft_against_the_base_model_it_loaded(tmp_path, tiny_dir):
    """Through the stage: the first step's policy is the base model (anchor 0), the second's has moved away from
    the frozen base (anchor > 0), and the card names the loss."""
    import json

    from coldstart.cli import main

    base = ["--set", f"model.name_or_path={tiny_dir}", "--set", f"output_dir={tmp_path}", "--set", "name=asft",
            "--set", "data.arith.num_train=16", "--set", "warmup.loss=asft", "--set", "warmup.max_steps=2",
            "--set", "warmup.learning_rate=1e-2", "--set", "warmup.logging_steps=1", "--set", "warmup.warmup_steps=0"]
    assert main(["warmup", "configs/quickstart.yaml", *base]) == 0
    logged = [json.loads(line) for line in (tmp_path / "asft" / "warmup" / "metrics.jsonl").read_text().splitlines()]
    kl = [m["anchor_kl"] for m in logged if "anchor_kl" in m]
    assert len(kl) == 2
    assert kl[0] == pytest.approx(0.0, abs=1e-6) and kl[1] > 1e-4
    assert "ASFT" in (tmp_path / "asft" / "warmup" / "final" / "README.md").read_text()
