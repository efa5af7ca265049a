"""The run's precision: what `auto` picks, that a half precision trains around fp32 master weights and runs
inference on half-precision weights, and what it does to the warm-up's loss and to GRPO's ratio."""

from __future__ import annotations

import pytest
import torch

import coldstart.precision as precision
import coldstart.runtime
from coldstart.config import load_config
from coldstart.data import load_samples, rl_prompts
from coldstart.errors import ColdstartError
from conftest import make_tiny_model

MEASURED_SPEEDUP = precision.cpu_bf16_speedup  # the conftest replaces it in every test with an fp32 machine's


def test_auto_picks_bf16_on_cuda_and_names_a_fast_cpus_bf16_without_picking_it(monkeypatch, caplog):
    cpu = torch.device("cpu")
    for speedup, hinted in [(6.1, True), (2.0, True), (1.9, False), (0.4, False)]:
        monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda s=speedup: s)
        caplog.clear()
        with caplog.at_level("INFO", logger="coldstart.precision"):
            assert precision.resolve("auto", cpu) == "fp32"
        assert ("bf16 would train faster" in caplog.text) == hinted
        if hinted:
            assert f"{speedup:.1f}x as fast" in caplog.text
    assert precision.resolve("fp32", cpu) == "fp32" and precision.resolve("bf16", cpu) == "bf16"
    with pytest.raises(ColdstartError, match="runtime.precision: fp16 .* needs a CUDA device"):
        precision.resolve("fp16", cpu)
    for supported, picked in [(True, "bf16"), (False, "fp32")]:
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda s=supported: s)
        assert precision.resolve("auto", torch.device("cuda", 0)) == picked


def test_the_cpu_is_measured_once(monkeypatch, tmp_path):
    monkeypatch.setenv("COLDSTART_HOME", str(tmp_path))
    measured = []
    monkeypatch.setattr(precision, "matmul_rate",
                        lambda dtype: measured.append(dtype) or (300.0 if dtype == torch.bfloat16 else 100.0))
    assert MEASURED_SPEEDUP() == 3.0 and MEASURED_SPEEDUP() == 3.0
    assert measured == [torch.bfloat16, torch.float32]
    assert "threads | torch" in (tmp_path / "precision.json").read_text()


def test_a_stage_setting_overrides_the_runs_precision():
    assert precision.trainer_flags("bf16", None) == {"bf16": True, "fp16": False}
    assert precision.trainer_flags("fp32", None) == {"bf16": False, "fp16": False}
    assert precision.trainer_flags("fp16", None) == {"bf16": False, "fp16": True}
    assert precision.trainer_flags("bf16", False) == {"bf16": False, "fp16": False}
    assert precision.trainer_flags("fp32", True) == {"bf16": True, "fp16": False}
    assert precision.trainer_flags("fp16", False) == {"bf16": False, "fp16": False}  # that stage in fp32
    assert precision.trainer_flags("bf16", None, True) == {"bf16": False, "fp16": True}  # trainer: {fp16: true}
    assert precision.compute_dtype("bf16", "float32") == "bfloat16"
    assert precision.compute_dtype("bf16", "float16") == "float16"  # weights stored in a half precision stay so
    assert precision.compute_dtype("fp32", "float32") == "float32"


@pytest.fixture
def bf16_run(runtime):
    coldstart.runtime.set_precision("bf16")  # forgotten after the test (conftest)
    return runtime


def test_inference_loads_half_precision_weights_training_and_saving_the_stored_ones(tiny_dir, bf16_run):
    cfg = load_config(None, [f"model.name_or_path={tiny_dir}"])
    assert {p.dtype for p in bf16_run.load_model(cfg.model).parameters()} == {torch.bfloat16}
    assert {p.dtype for p in bf16_run.load_model(cfg.model, train=True).parameters()} == {torch.float32}
    assert {p.dtype for p in bf16_run.load_model(cfg.model, master=True).parameters()} == {torch.float32}


class OutputDtypes:
    """The dtypes a module's forward returned."""

    def __init__(self, module):
        self.seen = set()
        module.register_forward_hook(lambda m, args, out: self.seen.add(out.dtype))


def _warmup_loss(tokenizer, tmp_path, name: str) -> tuple[float, object]:
    from coldstart.stages.warmup import build_trainer

    cfg = load_config(None, ["warmup.loss=cadft", "warmup.max_steps=1", "warmup.per_device_train_batch_size=8",
                             "warmup.rewrite.enabled=false", "warmup.save_steps=100", "data.arith.num_train=8",
                             "warmup.learning_rate=1e-3"])
    train, _ = load_samples(cfg.data, "train", cfg.seed)
    trainer = build_trainer(cfg, tmp_path / name, train, make_tiny_model(tokenizer), tokenizer)
    dtypes = OutputDtypes(trainer.model.model.layers[0].mlp.down_proj)
    trainer.train()
    loss = next(h["train_loss"] for h in trainer.state.log_history if "train_loss" in h)
    return loss, (trainer, dtypes.seen)


def test_bf16_trains_in_bf16_around_fp32_master_weights(tokenizer, tmp_path, bf16_run):
    bf16_loss, (trainer, seen) = _warmup_loss(tokenizer, tmp_path, "bf16")
    assert trainer.args.bf16 and seen == {torch.bfloat16}  # the forward ran under bf16 autocast
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    state = trainer.optimizer.state_dict()["state"]
    assert state and {t.dtype for s in state.values() for k, t in s.items() if k != "step"} == {torch.float32}
    coldstart.runtime.set_precision("fp32")
    fp32_loss, (trainer, seen) = _warmup_loss(tokenizer, tmp_path, "fp32")
    assert not trainer.args.bf16 and seen == {torch.float32}
    # the same batch and weights: bf16's 8-bit mantissa moves the loss by well under 1%
    assert bf16_loss == pytest.approx(fp32_loss, rel=1e-2) and bf16_loss != fp32_loss


def test_grpos_ratio_is_one_on_the_first_iteration_under_bf16(tokenizer, tmp_path, bf16_run):
    from coldstart.stages.rl import build_trainer

    # two iterations per generation: TRL computes the old log-probs at generation, and the first micro-step's
    # ratio compares them with the loss's own, on the same weights
    cfg = load_config(None, ["data.arith.num_train=16", "rl.max_steps=1", "rl.num_generations=4",
                             "rl.per_device_train_batch_size=4", "rl.max_completion_length=8",
                             "rl.trainer={num_iterations: 2}"])
    prompts, _ = rl_prompts(cfg.data, 0, cfg.seed)
    trainer = build_trainer(cfg, tmp_path, prompts, make_tiny_model(tokenizer), tokenizer)
    assert trainer.args.bf16
    calls = []
    logps = trainer._get_per_token_logps_and_entropies

    def recording(*args, **kwargs):
        out = logps(*args, **kwargs)
        calls.append(out[0].detach())
        return out

    trainer._get_per_token_logps_and_entropies = recording
    trainer.train()
    old, new = calls[0], calls[1]
    assert old.dtype == torch.float32 and old.shape == new.shape
    # TRL shuffles the generation batch before the loss sees it: each row's ratio against its own old row
    matched = [next(i for i, o in enumerate(old) if torch.equal(row, o)) for row in new]
    assert sorted(matched) == list(range(len(old)))
    assert all(torch.equal(torch.exp(row - old[i]), torch.ones_like(row)) for row, i in zip(new, matched))
