"""The stability mechanism at a fixed policy (`coldstart.gradients`): per-sample gradient norms and the minibatch
updates against the exact batched computation on a tiny model, the noise statistics against the sample covariance,
the verdict on the paper's assumption from constructed gradients, and the whole measurement on constructed
demonstrations where the assumption holds and where it fails."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from coldstart.compatibility import pad_batch, sequence_nll, token_logprobs, tokenize_sample
from coldstart.config import load_config
from coldstart.data import load_samples
from coldstart.gradients import assumption, by_decile, measure, noise_statistics, norm_deciles, weighting_nulls
from coldstart.losses import batch_moments, cadft_weights, mean_std, token_loss
from conftest import make_tiny_model


def test_noise_statistics_are_the_sample_covariance():
    rng = np.random.default_rng(0)
    g = rng.normal(1.0, 0.5, (50, 10))  # 50 minibatch updates in 10 dimensions
    s = noise_statistics([float(v @ v) for v in g], float(g.mean(0) @ g.mean(0)), batch_size=8)
    trace = float(np.trace(np.cov(g.T)))  # unbiased, over K - 1
    assert s["trace_cov"] == pytest.approx(trace)
    assert s["mean_sq_update"] == pytest.approx(float((g**2).sum(1).mean()))
    assert s["sq_mean_gradient"] == pytest.approx(float(g.mean(0) @ g.mean(0)) - trace / 50)
    assert s["noise_scale"] == pytest.approx(8 * trace / s["sq_mean_gradient"])
    # the true mean gradient is (1, ..., 1): |G|^2 = 10, tr(cov) = 10 x 0.25
    assert s["sq_mean_gradient"] == pytest.approx(10, rel=0.1) and trace == pytest.approx(2.5, rel=0.25)


def _batched_update(model, tokenizer, samples, loss, beta=1.0, normalize="tokens"):
    """A minibatch's gradient as the warm-up computes it: one padded batch, divided by its token count (or, under
    `normalize: samples`, each sample by its own and the sum by their number)."""
    rows = [tokenize_sample(tokenizer, s["prompt"], s["completion"], None) for s in samples]
    batch = pad_batch(rows, tokenizer.pad_token_id)
    model.zero_grad()
    lp, mask = token_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"], False)
    nll, tokens = sequence_nll(lp.detach().float(), mask)
    w = cadft_weights(nll, *mean_std(batch_moments(nll)), beta)
    weighting = "none" if loss == "sft" else "dft"
    weights = w if loss == "cadft" else torch.ones_like(w)
    if normalize == "samples":
        token_loss(lp, mask, len(samples), weighting, weights / tokens).backward()
    else:
        token_loss(lp, mask, int(mask.sum()), weighting, weights).backward()
    return [p.grad.clone() for p in model.parameters()], w


def _flat(grads):
    return torch.cat([g.double().flatten() for g in grads])


def test_measured_updates_and_norms_are_the_exact_gradients(tokenizer):
    model = make_tiny_model(tokenizer)
    model.eval()
    samples = list(load_samples(load_config(None, ["data.arith.num_train=8"]).data, "train", 0)[0])
    out = measure(model, tokenizer, samples, batch_size=4, progress=False)
    assert out["minibatches"] == 2 and len(out["samples"]) == 8
    updates = {}
    for loss in ("sft", "dft", "cadft"):
        per_batch = [_batched_update(model, tokenizer, samples[b * 4:(b + 1) * 4], loss)[0] for b in (0, 1)]
        sq = [float(sum((g.double() ** 2).sum() for g in grads)) for grads in per_batch]
        mean = [(a + b) / 2 for a, b in zip(*per_batch)]
        updates[loss] = noise_statistics(sq, float(sum((g.double() ** 2).sum() for g in mean)), 4)
        for key in ("mean_sq_update", "trace_cov"):
            assert out["losses"][loss][key] == pytest.approx(updates[loss][key], rel=1e-4)
        assert out["per_minibatch"][loss]["sq_norm"] == pytest.approx(sq, rel=1e-4)
    # one sample alone: its DFT gradient, divided by its minibatch's mean length
    first = samples[0]
    row = tokenize_sample(tokenizer, first["prompt"], first["completion"], None)
    tokens = [len([t for t in tokenize_sample(tokenizer, s["prompt"], s["completion"], None)["labels"] if t != -100])
              for s in samples[:4]]
    batch = pad_batch([row], tokenizer.pad_token_id)
    norms = {}
    for loss, token_weight in (("sft", lambda lp: 1.0), ("dft", lambda lp: lp.detach().exp())):
        model.zero_grad()
        lp, mask = token_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"], False)
        (-(lp * mask * token_weight(lp)).sum() / (sum(tokens) / 4)).backward()
        norms[loss] = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in model.parameters()))
    record = out["samples"][0]
    assert record["norm_sft"] == pytest.approx(norms["sft"], rel=1e-4)
    assert record["norm_dft"] == pytest.approx(norms["dft"], rel=1e-4)
    assert record["norm_sft"] > record["norm_dft"]  # DFT's token weights are probabilities below 1
    assert record["norm_cadft"] == pytest.approx(record["weight"] * norms["dft"], rel=1e-4)
    assert {"id", "style", "nll", "compatibility"} <= set(record)


def test_the_bias_against_the_full_sample_and_held_out_gradients_by_hand(tokenizer):
    """The error figures against the exact gradients: the full-sample DFT gradient (the mean of its minibatch
    updates) and DFT's gradient on held-out demonstrations taken as one batch."""
    model = make_tiny_model(tokenizer)
    model.eval()
    samples = list(load_samples(load_config(None, ["data.arith.num_train=12"]).data, "train", 0)[0])
    measured, held_out = samples[:8], samples[8:]
    out = measure(model, tokenizer, measured, batch_size=4, progress=False, held_out=held_out)
    assert out["held_out"] == 4 and out["weighed_term"] == "dft"
    updates = {loss: [_flat(_batched_update(model, tokenizer, measured[b * 4:(b + 1) * 4], loss)[0]) for b in (0, 1)]
               for loss in ("sft", "dft", "cadft")}
    references = {"full_sample": (updates["dft"][0] + updates["dft"][1]) / 2,
                  "held_out": _flat(_batched_update(model, tokenizer, held_out, "dft")[0])}
    for loss, us in updates.items():
        mean = (us[0] + us[1]) / 2
        for name, r in references.items():
            e = out["errors"][loss][name]
            assert e["cosine"] == pytest.approx(float(mean @ r / (mean.norm() * r.norm())), rel=1e-4)
            assert e["sq_bias"] == pytest.approx(float((mean - r) @ (mean - r)), rel=1e-3, abs=1e-12)
            assert e["mse"] == pytest.approx(float(sum((u - r) @ (u - r) for u in us) / 2), rel=1e-3)
        held = [float(u @ references["held_out"] / (u.norm() * references["held_out"].norm())) for u in us]
        assert out["errors"][loss]["held_out"]["mean_cosine"] == pytest.approx(sum(held) / 2, rel=1e-4)
    assert out["errors"]["dft"]["full_sample"]["cosine"] == pytest.approx(1.0)
    assert out["errors"]["dft"]["full_sample"]["sq_bias"] == pytest.approx(0.0, abs=1e-9)
    # the weights damp some samples: CADFT's mean update leaves DFT's direction
    assert out["errors"]["cadft"]["full_sample"]["cosine"] < 0.9999


def test_the_samples_normalisation_measured_as_trained(tokenizer):
    from coldstart.config import CadftSection

    model = make_tiny_model(tokenizer)
    model.eval()
    samples = list(load_samples(load_config(None, ["data.arith.num_train=8"]).data, "train", 0)[0])
    out = measure(model, tokenizer, samples, 4, CadftSection(normalize="samples"), progress=False)
    for loss in ("sft", "dft", "cadft"):
        sq = [float(_flat(_batched_update(model, tokenizer, samples[b * 4:(b + 1) * 4], loss,
                                          normalize="samples")[0]).square().sum()) for b in (0, 1)]
        assert out["per_minibatch"][loss]["sq_norm"] == pytest.approx(sq, rel=1e-4)
    tokens = out["samples"][0]["tokens"]
    by_tokens = measure(model, tokenizer, samples, 4, progress=False)
    mean_tokens = sum(r["tokens"] for r in by_tokens["samples"][:4]) / 4
    # one sample's gradient over its own tokens instead of its minibatch's mean
    assert out["samples"][0]["norm_dft"] == pytest.approx(by_tokens["samples"][0]["norm_dft"] * mean_tokens / tokens,
                                                          rel=1e-4)


def test_adams_geometry_from_a_checkpoints_optimizer_state(tokenizer, tmp_path, caplog):
    """The preconditioner read back from a warm-up checkpoint's optimizer.pt is AdamW's own 1 / (sqrt(v_hat) + eps)
    for every parameter (matched through Trainer's parameter groups), and the measurement in that geometry is
    the gradient times it."""
    from coldstart.gradients import adam_preconditioner
    from coldstart.stages.warmup import build_trainer

    cfg = load_config(None, ["data.arith.num_train=8", "warmup.loss=dft", "warmup.max_steps=2",
                             "warmup.per_device_train_batch_size=4", "warmup.save_steps=2",
                             "warmup.rewrite.enabled=false"])
    train, _ = load_samples(cfg.data, "train", cfg.seed)
    model = make_tiny_model(tokenizer)
    trainer = build_trainer(cfg, tmp_path, train, model, tokenizer)
    trainer.train()
    optimizer = trainer.optimizer
    group = optimizer.param_groups[0]
    beta2, eps = group["betas"][1], group["eps"]
    expected = []
    for p in model.parameters():
        state = optimizer.state[p]
        v_hat = state["exp_avg_sq"] / (1 - beta2 ** float(state["step"]))
        expected.append(1 / (v_hat.sqrt() + eps))
    found = adam_preconditioner(model, tmp_path / "checkpoint-2")
    assert len(found) == len(expected)
    for a, b in zip(found, expected):
        torch.testing.assert_close(a, b)
    assert adam_preconditioner(model, tmp_path) is None  # no optimizer.pt there
    frozen = next(p for n, p in model.named_parameters() if "layers.0." in n)
    frozen.requires_grad_(False)  # a state that does not fit the model (a LoRA run's adapters, merged): a warning
    assert adam_preconditioner(model, tmp_path / "checkpoint-2") is None
    assert "the optimizer holds" in caplog.text and "not measured in Adam's geometry" in caplog.text
    frozen.requires_grad_(True)
    model.eval()
    samples = list(train)[:4]
    plain = measure(model, tokenizer, samples, 4, progress=False)
    adam = measure(model, tokenizer, samples, 4, progress=False, preconditioner=found)
    rows = [tokenize_sample(tokenizer, s["prompt"], s["completion"], None) for s in samples]
    mean_tokens = sum(sum(t != -100 for t in r["labels"]) for r in rows) / 4
    batch = pad_batch(rows[:1], tokenizer.pad_token_id)
    model.zero_grad()
    lp, mask = token_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"], False)
    (-(lp * mask * lp.detach().exp()).sum() / mean_tokens).backward()
    by_hand = math.sqrt(sum(float(((p.grad * d).double() ** 2).sum()) for p, d in zip(model.parameters(), found)))
    assert adam["geometry"] == "adam" and adam["samples"][0]["norm_dft"] == pytest.approx(by_hand, rel=1e-4)
    assert adam["samples"][0]["norm_dft"] != pytest.approx(plain["samples"][0]["norm_dft"], rel=1e-2)


def test_token_bins_by_hand():
    from coldstart.gradients import token_bins

    bins = token_bins(torch.tensor([0.05, 0.05, 0.5, 1.0]))
    assert [b["tokens"] for b in bins if b["tokens"]] == [0.5, 0.25, 0.25]
    assert bins[0]["sft"] == pytest.approx(1.9 / 2.4) and bins[5]["sft"] == pytest.approx(0.5 / 2.4)
    # DFT's: p (1 - p) is 0.0475 twice and 0.25: the p = 0.5 token carries most of it, p = 1 none
    assert bins[5]["dft"] == pytest.approx(0.25 / 0.345) and bins[9]["dft"] == 0.0
    assert sum(b["tokens"] for b in bins) == pytest.approx(1.0)


def _constructed(norm_of_nll, seed=0, n=200, dim=20, batch=8):
    """Per-sample gradient vectors whose norm follows the NLL as `norm_of_nll` says, around a shared direction:
    the per-sample records `measure` writes (each minibatch's CADFT weights from its own NLL statistics)."""
    rng = np.random.default_rng(seed)
    nll = rng.uniform(0.5, 3.0, n)
    direction = np.ones(dim) / math.sqrt(dim)
    g = np.array([norm_of_nll(x) * (direction + rng.normal(0, 1.0, dim)) for x in nll])
    records = []
    for b in range(n // batch):
        part = slice(b * batch, (b + 1) * batch)
        x = torch.tensor(nll[part])
        w = cadft_weights(x, *mean_std(batch_moments(x)), 1.0).tolist()
        records += [{"minibatch": b, "weight": wi, "nll": float(v), "compatibility": math.exp(-v), "tokens": 10,
                     "norm_dft": float(np.linalg.norm(gi))} for v, gi, wi in zip(nll[part], g[part], w)]
    return records


def test_where_incompatible_samples_carry_the_largest_gradients_cadft_moves_less():
    records = _constructed(lambda nll: nll**2)
    a = assumption(records)
    assert a["verdict"] == "holds" and a["rho"] > 0.5
    assert a["least_compatible_decile"] == a["largest_decile"] == by_decile(records, "norm_dft")[0]["value"]
    nulls = weighting_nulls(records, permutations=500)
    assert nulls["verdict"] == "compatibility lowers the noise" and nulls["effect_interval"][1] < 1


def test_norm_deciles_by_hand():
    # 20 samples, compatibility i/20: each decile holds two, and each loss's norm is a fixed multiple of i
    records = [{"compatibility": i / 20, "norm_sft": float(i), "norm_dft": 2.0 * i, "norm_cadft": 3.0 * i}
               for i in range(20)]
    deciles = norm_deciles(records)
    assert set(deciles) == {"sft", "dft", "cadft"}
    assert [d["value"] for d in deciles["dft"]] == [2.0 * (2 * d + 0.5) for d in range(10)]
    assert deciles["cadft"][0] == {"decile": 1, "compatibility": 0.025, "value": 1.5, "samples": 2}


def test_where_the_assumption_fails_the_measurement_says_so():
    records = _constructed(lambda nll: 1 / nll**2)
    a = assumption(records)
    assert a["verdict"] == "fails" and a["rho"] < -0.5
    # damping the small-gradient samples leaves the large ones more weight: more noise than shuffled weights give
    nulls = weighting_nulls(records, permutations=500)
    assert nulls["verdict"] == "compatibility raises the noise" and nulls["effect_interval"][0] > 1
    assert assumption(_constructed(lambda nll: 1.0))["verdict"] == "not shown"


class _PredictedRow(torch.nn.Module):
    """A toy policy that gives each token the probability `p[token]` wherever it is the label: a position's logits are
    the row of the token it predicts (the model reads ahead, which a measurement of gradients at a fixed policy
    allows), so each token's gradient lies in its own row and has the size its probability sets."""

    def __init__(self, vocab: int, p: dict[int, float]):
        super().__init__()
        self.register_buffer("row_of", torch.zeros(vocab, dtype=torch.long))
        table = torch.full((len(p) + 1, vocab), 1.0 / vocab)
        for row, (token, q) in enumerate(p.items(), start=1):
            self.row_of[token] = row
            table[row] = (1 - q) / (vocab - 1)
            table[row, token] = q
        self.logits = torch.nn.Parameter(table.log())

    def forward(self, input_ids, attention_mask=None, logits_to_keep=None, **_):
        assert logits_to_keep.dtype == torch.bool  # the labelled positions, as the measurement asks for them
        predicted = torch.nn.functional.pad(input_ids[:, 1:], (0, 1), value=0)
        return SimpleNamespace(logits=self.logits[self.row_of[predicted]][logits_to_keep])


def _measured(tokenizer, p_incompatible: float, p_compatible: float, balanced: bool = False, beta: float = 1.0):
    """`measure` on 24 demonstrations of 4-12 tokens drawn from " c" / " d" (probability `p_incompatible` each) and
    24 of " b" (`p_compatible`), shuffled into 6 minibatches of 8; each ends with eos at 0.97. `balanced`: every
    minibatch holds four of each kind, of the same four lengths, all " c": two kinds whose tokens' gradients are
    as large (p (1 - p) is symmetric) carry gradients independent of their compatibility."""
    from coldstart.config import CadftSection

    b, c, d = (tokenizer(f" {x}")["input_ids"][0] for x in "bcd")
    rng = random.Random(0)
    if balanced:
        samples = [{"prompt": "Say:", "completion": token * length} for _ in range(6)
                   for token in (" c", " b") for length in (4, 6, 8, 12)]
    else:
        samples = [{"prompt": "Say:", "completion": "".join(rng.choice([" c", " d"]) for _ in range(rng.randint(4, 12)))}
                   for _ in range(24)]
        samples += [{"prompt": "Say:", "completion": " b" * rng.randint(4, 12)} for _ in range(24)]
        rng.shuffle(samples)
    p = {c: p_incompatible, d: p_incompatible, b: p_compatible, tokenizer.eos_token_id: 0.97}
    return measure(_PredictedRow(len(tokenizer), p), tokenizer, samples, batch_size=8, progress=False,
                   cadft=CadftSection(beta=beta))


def test_measured_on_data_where_incompatible_samples_carry_the_largest_gradients(tokenizer):
    from coldstart.gradients import update_ratios, weighting_nulls

    # a DFT token term's gradient is p (e_y - softmax): 0.25 at p = 0.5, 0.03 at p = 0.97, so the long, less
    # compatible c/d demonstrations carry the largest gradients
    out = _measured(tokenizer, 0.5, 0.97)
    a = assumption(out["samples"])
    assert a["verdict"] == "holds" and a["rho"] > 0.9 and a["partial_interval"][0] > 0.5
    nulls = weighting_nulls(out["samples"], "norm_dft")
    assert nulls["verdict"] == "compatibility lowers the noise" and nulls["effect_interval"][1] < 1
    ratios = update_ratios(out["per_minibatch"])
    assert ratios["cadft"]["interval"][1] < 0.6 and ratios["dft"]["ratio"] == 1.0
    # damping the c/d rows moves CADFT's mean update off DFT's direction: a bias, shown against the full sample
    assert out["errors"]["cadft"]["full_sample"]["cosine"] < 0.99


def test_measured_on_data_where_the_assumption_fails(tokenizer):
    from coldstart.gradients import weighting_nulls

    # at p = 0.01 the incompatible tokens' DFT gradients are 0.01: the least compatible carry the smallest
    out = _measured(tokenizer, 0.01, 0.5)
    a = assumption(out["samples"])
    assert a["verdict"] == "fails" and a["rho"] < -0.4 and a["partial_interval"][1] < 0
    assert weighting_nulls(out["samples"], "norm_dft")["verdict"] == "compatibility raises the noise"
    bins = out["token_bins"]
    # the incompatible tokens (p = 0.01) are a third or more of the tokens but hold almost none of DFT's gradient
    assert bins[0]["tokens"] > 0.3 and bins[0]["dft"] < 0.1 and bins[0]["sft"] > 0.5


def test_measured_where_the_weights_know_nothing_of_the_gradients(tokenizer):
    from coldstart.gradients import weighting_nulls

    # p = 0.2 and p = 0.8: the incompatible and the compatible tokens carry DFT gradients of one size, and every
    # minibatch pairs the two kinds at the same lengths: unequal weights alone, which Kish's null predicts
    out = _measured(tokenizer, 0.2, 0.8, balanced=True)
    weights = {r["weight"] < 1 for r in out["samples"]}
    assert weights == {True, False}  # the c demonstrations are damped
    nulls = weighting_nulls(out["samples"], "norm_dft")
    assert nulls["verdict"] == "no compatibility effect"
    assert nulls["observed"] == pytest.approx(nulls["kish"], rel=0.02)
    assert nulls["permuted"] == pytest.approx(nulls["kish"], rel=0.02)


def test_equal_weights_have_no_bias(tokenizer):
    out = _measured(tokenizer, 0.5, 0.97, beta=0.0)
    e = out["errors"]["cadft"]["full_sample"]
    assert e["cosine"] == pytest.approx(1.0) and e["sq_bias"] == pytest.approx(0.0, abs=1e-12)
    assert out["losses"]["cadft"]["mean_sq_update"] == pytest.approx(out["losses"]["dft"]["mean_sq_update"])


def test_the_mechanism_command_writes_its_report(tmp_path, tiny_dir, capsys):
    import json

    from coldstart.cli import main

    out = tmp_path / "m"
    assert main(["mechanism", "configs/quickstart.yaml", "--set", f"model.name_or_path={tiny_dir}",
                 "--set", "data.arith.num_train=16", "--set", "warmup.per_device_train_batch_size=4",
                 "--minibatches", "3", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["minibatches"] == 3 and len(results["samples"]) == 12 and results["batch_size"] == 4
    assert set(results["assumption"]) == {"sft", "dft"} and (out / "gradients.png").is_file()
    report = (out / "report.md").read_text()
    assert "## The paper's assumption" in report and "## Bias" in report and "| cadft |" in report
    assert results["held_out"] == 4 and "adam" not in results  # a final model keeps no optimizer state
    assert capsys.readouterr().out.strip().endswith(f"mechanism: {out}/ (12 demonstrations)")


def test_a_checkpoint_is_named_by_its_run_and_stage(tmp_path, monkeypatch):
    from coldstart.eval.mechanism import policy_name

    assert policy_name("runs/study/cadft-seed7/warmup/checkpoint-8") == "cadft-seed7/warmup/checkpoint-8"
    assert policy_name("runs/quickstart/rl/final") == "quickstart/rl/final"
    assert policy_name("/models/SmolLM2-135M-Instruct") == "SmolLM2-135M-Instruct"
    run = tmp_path / "quickstart" / "rl" / "final"
    run.mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "quickstart")
    assert policy_name("rl/final") == "quickstart/rl/final"  # a relative path, resolved


def test_the_mechanism_measures_the_warmups_global_batch():
    """CADFT's batch statistics z-score over the global batch: every process's micro-batches, accumulated."""
    from coldstart.config import load_config
    from coldstart.eval.mechanism import global_batch

    cfg = load_config(None, ["warmup.per_device_train_batch_size=4", "warmup.gradient_accumulation_steps=2"])
    assert global_batch(cfg, 1) == 8
    assert global_batch(cfg, 8) == 64


def _records(weight_of, norm_of, minibatches: int = 40, batch: int = 16, seed: int = 3):
    """Per-sample records of `minibatches` minibatches: each sample's weight and DFT norm from its NLL."""
    rng = random.Random(seed)
    out = []
    for b in range(minibatches):
        for _ in range(batch):
            nll = rng.uniform(0.2, 3.0)
            out.append({"minibatch": b, "nll": nll, "weight": weight_of(nll, rng), "norm_dft": norm_of(nll, rng)})
    return out


def _damping(nll: float, rng) -> float:
    return min(1.0, math.exp(-(nll - 1.6)))  # the least compatible weigh least


def test_weights_that_know_nothing_of_the_gradients_are_their_own_null():
    from coldstart.gradients import weighting_nulls

    # the norms do not depend on the NLL: unequal weights alone, which Kish's design effect predicts
    n = weighting_nulls(_records(_damping, lambda nll, rng: rng.uniform(0.5, 1.5)), permutations=500)
    assert n["verdict"] == "no compatibility effect"
    assert n["observed"] == pytest.approx(n["kish"], rel=0.05) and n["permuted"] == pytest.approx(n["kish"], rel=0.01)
    low, high = n["effect_interval"]
    assert low < 1 < high and n["observed"] < 1  # below DFT's, as any weights below 1 are


def test_damping_the_largest_gradients_beats_the_permuted_control():
    from coldstart.gradients import weighting_nulls

    # the least compatible carry the largest gradients (the paper's assumption): CADFT damps exactly those
    n = weighting_nulls(_records(_damping, lambda nll, rng: nll * rng.uniform(0.9, 1.1)), permutations=500)
    assert n["verdict"] == "compatibility lowers the noise" and n["p_lower"] == pytest.approx(1 / 501)
    assert n["effect_interval"][1] < 1 and n["observed"] < n["permuted_interval"][0]
    # the opposite: the compatible carry the largest gradients, and the damped are the small ones
    n = weighting_nulls(_records(_damping, lambda nll, rng: (3.2 - nll) * rng.uniform(0.9, 1.1)), permutations=500)
    assert n["verdict"] == "compatibility raises the noise" and n["effect_interval"][0] > 1


def test_the_nulls_by_hand():
    from coldstart.gradients import weighting_nulls

    records = [{"minibatch": 0, "weight": w, "norm_dft": g} for w, g in [(1.0, 1.0), (0.5, 2.0)]]
    n = weighting_nulls(records, permutations=200)
    # observed (1 x 1 + 0.25 x 4) / (1 + 4) = 0.4; Kish: mean w^2 = 0.625; the two orders give 0.4 and 0.85
    assert n["observed"] == pytest.approx(0.4) and n["kish"] == pytest.approx(0.625)
    assert n["permuted_interval"] == [pytest.approx(0.4), pytest.approx(0.85)]
    assert n["matched_step"]["observed"] == pytest.approx(0.4 / 0.75**2)
    assert n["matched_step"]["kish"] == pytest.approx(0.625 / 0.75**2)


def test_a_minibatch_the_gate_zeroes_is_left_out_of_the_matched_step():
    from coldstart.gradients import weighting_nulls

    records = [{"minibatch": b, "weight": w, "norm_dft": 1.0} for b, ws in enumerate([[0.0, 0.0], [1.0, 0.5]])
               for w in ws]
    n = weighting_nulls(records, permutations=100)
    assert n["observed"] == pytest.approx(1.25 / 4) and n["effect"] == pytest.approx(1.0)
    assert n["matched_step"]["observed"] == pytest.approx(1.25 / 0.75**2 / 2)
    everything_gated = [{"minibatch": 0, "weight": 0.0, "norm_dft": 1.0}] * 2
    assert weighting_nulls(everything_gated, permutations=10)["effect"] is None
