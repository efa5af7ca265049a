"""The CUDA paths the CPU suite cannot reach: TRL's fused LM head (what `warmup.logprobs: auto` picks on CUDA), the
warm-up losses and their gradients through it, bf16 autocast in training. Skipped without CUDA; run by
scripts/gpu_smoke.sh, which also runs a tiny `coldstart run` (warm-up, handoff, GRPO, eval) on the GPU."""

import pytest
import torch

from coldstart.compatibility import ensure_fused_head, pad_batch, token_logprobs, tokenize_sample, use_fused_head
from coldstart.config import load_config
from coldstart.data import load_samples
from coldstart.stages.warmup import build_trainer
from conftest import loss_and_gradients, make_tiny_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_auto_picks_the_fused_head_on_cuda():
    assert use_fused_head("auto")


def test_fused_head_gives_the_logits_log_probs_on_cuda(tokenizer):
    cfg = load_config(None, ["data.arith.num_train=8"])
    train, _ = load_samples(cfg.data, "train", cfg.seed)
    batch = pad_batch([tokenize_sample(tokenizer, s["prompt"], s["completion"], 256) for s in train],
                      tokenizer.pad_token_id)
    batch = {k: v.cuda() for k, v in batch.items()}
    model = make_tiny_model(tokenizer).cuda()
    plain, mask = token_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"], fused=False)
    ensure_fused_head(model)
    fused, fused_mask = token_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"], fused=True)
    assert torch.equal(mask, fused_mask)
    torch.testing.assert_close(fused[mask], plain[mask], rtol=1e-4, atol=1e-4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        fused16, _ = token_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"], fused=True)
    # bf16 keeps ~3 significant digits of the logits; the log-probs move by a few hundredths at most
    assert (fused16.float()[mask] - plain[mask]).abs().max() < 0.1


@pytest.mark.parametrize("loss", ["sft", "dft", "cadft"])
def test_warmup_loss_and_gradient_through_the_fused_head_equal_the_logits_path(loss, tokenizer, tmp_path):
    grads, losses = [], []
    for logprobs in ("fused", "logits"):
        cfg = load_config(None, ["data.arith.num_train=8", "warmup.per_device_train_batch_size=8",
                                 f"warmup.loss={loss}", f"warmup.logprobs={logprobs}", "warmup.rewrite.enabled=false"])
        train, _ = load_samples(cfg.data, "train", cfg.seed)
        trainer = build_trainer(cfg, tmp_path / logprobs, train, make_tiny_model(tokenizer), tokenizer)
        assert trainer.args.bf16 and next(trainer.model.parameters()).is_cuda
        batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in next(iter(trainer.get_train_dataloader())).items()}
        loss, grad = loss_and_gradients(trainer, batch, int((batch["labels"][:, 1:] != -100).sum()))
        losses.append(loss)
        grads.append(grad)
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)


def test_warmup_trains_in_bf16_autocast_on_cuda(tokenizer, tmp_path):
    cfg = load_config(None, ["data.arith.num_train=16", "warmup.per_device_train_batch_size=8", "warmup.max_steps=4",
                             "warmup.learning_rate=1e-3", "warmup.rewrite.enabled=false", "warmup.save_steps=100"])
    train, _ = load_samples(cfg.data, "train", cfg.seed)
    trainer = build_trainer(cfg, tmp_path, train, make_tiny_model(tokenizer), tokenizer)
    trainer.train()
    losses = [m["loss"] for m in trainer.state.log_history if "loss" in m]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]  # lr 1e-3 on a random model: the loss falls within four steps
    assert next(trainer.model.parameters()).dtype == torch.float32  # fp32 weights, bf16 autocast
