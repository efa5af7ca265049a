"""The warm-up trainer on a tiny random model with the embedded model's real tokenizer."""

import pytest
import torch

from coldstart.config import load_config
from coldstart.data import load_samples
from coldstart.stages.warmup import build_trainer


def first_batch(cfg, tmp_path, model, tokenizer):
    train, _ = load_samples(cfg.data, "train", cfg.seed)
    trainer = build_trainer(cfg, tmp_path / "out", train, model, tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    return trainer, batch


def test_closing_end_of_turn_is_trained_on_although_pad_is_eos(tiny_cfg, tmp_path, tiny_model, tokenizer):
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    _, batch = first_batch(tiny_cfg, tmp_path, tiny_model, tokenizer)
    eos = tokenizer.eos_token_id
    lengths = batch["attention_mask"].sum(1)
    assert lengths.min() < lengths.max()  # some rows are padded with the eos id
    for ids, labels, n in zip(batch["input_ids"], batch["labels"], lengths):
        trained = (labels != -100).nonzero().flatten()
        completion_ids = ids[trained[0] : n]
        # the completion's own <|im_end|>: the first eos inside the trained span, and its label is kept
        closing = trained[0] + (completion_ids == eos).nonzero().flatten()[0]
        assert labels[closing] == eos
        assert (labels[n:] == -100).all()  # padding is not trained on
        assert (labels[: trained[0]] == -100).all()  # nor is the prompt


def reference_loss(model, batch, loss):
    """Per-token NLL straight from the logits: -sum_t w_t log p_t / N, w_t = 1 (sft) or sg(p_t) (dft)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    logp = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    weight = torch.ones_like(logp) if loss == "sft" else logp.exp().detach()
    return -(weight * logp * mask).sum() / mask.sum()


@pytest.mark.parametrize("logprobs", ["fused", "logits"])
@pytest.mark.parametrize("loss", ["sft", "dft"])
def test_warmup_loss_matches_the_logits(loss, logprobs, tmp_path, tokenizer):
    """TRL's own loss through the fused head, and coldstart's logits path, both equal the direct computation."""
    from conftest import make_tiny_model

    cfg = load_config(None, ["data.arith.num_train=4", "warmup.per_device_train_batch_size=4", f"warmup.loss={loss}",
                             f"warmup.logprobs={logprobs}"])
    model = make_tiny_model(tokenizer)
    trainer, batch = first_batch(cfg, tmp_path, model, tokenizer)
    got = trainer.compute_loss(trainer.model, dict(batch))
    want = reference_loss(model, batch, loss)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    # and the gradients agree: the loss path is the one it claims
    got.backward()
    g_trainer = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    want.backward()
    for a, b in zip(g_trainer, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_dft_differs_from_sft_on_the_same_batch(tmp_path, tokenizer):
    from conftest import make_tiny_model

    values = {}
    for loss in ("sft", "dft"):
        cfg = load_config(None, ["data.arith.num_train=4", "warmup.per_device_train_batch_size=4", f"warmup.loss={loss}"])
        trainer, batch = first_batch(cfg, tmp_path / loss, make_tiny_model(tokenizer), tokenizer)
        values[loss] = trainer.compute_loss(trainer.model, dict(batch)).item()
    # a random model over a 49k vocabulary: p_t ~ 2e-5, so DFT is several orders of magnitude below NLL
    assert values["sft"] > 10.0
    assert values["dft"] < values["sft"] * 1e-3



def test_too_long_samples_are_dropped_or_refused(tokenizer):
    from coldstart.errors import ColdstartError
    from coldstart.lengths import apply_length_policy

    cfg = load_config(None, ["data.arith.num_train=20", "data.arith.max_steps=4"])
    train, _ = load_samples(cfg.data, "train", 0)
    lengths = sorted(len(tokenizer.apply_chat_template(s["prompt"] + s["completion"], tokenize=True, return_dict=True)["input_ids"]) for s in train)
    cut = lengths[10]  # about half are longer
    kept, dropped = apply_length_policy(train, tokenizer, cut, "drop")
    assert dropped == sum(n > cut for n in lengths) and len(kept) == 20 - dropped and 0 < dropped < 20
    with pytest.raises(ColdstartError, match=rf"longer than warmup.max_length={cut} tokens \({dropped} such samples\)"):
        apply_length_policy(train, tokenizer, cut, "error")
    assert apply_length_policy(train, tokenizer, cut, "truncate") == (train, 0)


def test_nan_loss_stops_with_step_and_checkpoint(tmp_path, caplog):
    from types import SimpleNamespace

    from coldstart.errors import ColdstartError
    from coldstart.training import NumericalGuard

    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / ".complete").touch()
    (tmp_path / "checkpoint-5").mkdir()  # cut short by a crash: not a good checkpoint
    guard = NumericalGuard("warmup")
    args, state = SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(global_step=6)
    for norm in (1.0, 1.2, 0.9, 1.1, 1.0):
        guard.on_log(args, state, None, logs={"loss": 0.5, "grad_norm": norm})
    with caplog.at_level("WARNING"):
        guard.on_log(args, state, None, logs={"loss": 0.5, "grad_norm": 50.0})
    assert "gradient norm spike at step 6: 50" in caplog.text
    with pytest.raises(ColdstartError, match=rf"warmup: the loss became nan at step 6; last good checkpoint: {tmp_path}/checkpoint-4"):
        guard.on_log(args, state, None, logs={"loss": float("nan")})


def test_no_spike_warning_against_steps_without_signal(tmp_path, caplog):
    """GRPO steps whose groups all had one reward have zero gradient: they set no scale for a spike."""
    from types import SimpleNamespace

    from coldstart.training import NumericalGuard

    guard = NumericalGuard("rl")
    args, state = SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(global_step=8)
    with caplog.at_level("WARNING"):
        for norm in (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 0.0, 0.4, 0.35, 0.0, 0.3, 0.32):
            guard.on_log(args, state, None, logs={"loss": 0.0, "grad_norm": norm})
    assert "spike" not in caplog.text
    with caplog.at_level("WARNING"):
        guard.on_log(args, state, None, logs={"loss": 0.0, "grad_norm": 9.0})
    assert "gradient norm spike at step 8: 9 (median so far 0.32)" in caplog.text
