"""Shared fixtures: the embedded model's real tokenizer, tiny random models built from a config, and a launch of
two processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from coldstart.config import load_config
from coldstart.models import embedded_model_dir, load_tokenizer


@pytest.fixture(scope="session")
def embedded_dir():
    return embedded_model_dir()


@pytest.fixture(scope="session")
def tokenizer(embedded_dir):
    return load_tokenizer(str(embedded_dir))


def make_tiny_model(tokenizer, seed: int = 0, tied: bool = True) -> LlamaForCausalLM:
    """A 2-layer Llama with the real tokenizer's vocabulary and special tokens, random weights (the input and
    output embeddings one matrix unless `tied` is off)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=tied,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tokenizer):
    """A saved tiny random model with the embedded tokenizer: a model folder, as a config points at one."""
    path = tmp_path_factory.mktemp("tiny")
    make_tiny_model(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def loss_and_gradients(trainer, inputs, num_items: int) -> tuple[float, list[torch.Tensor]]:
    """One `compute_loss` and backward in training mode: the loss and every parameter's gradient."""
    trainer.model.train()
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, dict(inputs), num_items_in_batch=num_items)
    loss.backward()
    return loss.item(), [p.grad.clone() for p in trainer.model.parameters()]


def assert_same_loss_and_gradients(trainer_a, batch_a, trainer_b, batch_b, rel: float, rtol: float, atol: float):
    """Both trainers' loss and gradients on their batch (the same tokens: `batch_b` may lack `batch_a`'s extra
    columns), normalised by the same label count, agree within the tolerances."""
    n = int((batch_a["labels"][:, 1:] != -100).sum())
    loss_a, grads_a = loss_and_gradients(trainer_a, batch_a, n)
    loss_b, grads_b = loss_and_gradients(trainer_b, batch_b, n)
    assert loss_a == pytest.approx(loss_b, rel=rel)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def cadft_trainer(tokenizer, tmp_path, *sets, model=None):
    """The CLI's CADFT warm-up trainer on a tiny random model and the default config with `sets` (no checkpoints)."""
    from coldstart.data import load_samples
    from coldstart.stages.warmup import build_trainer

    cfg = load_config(None, ["warmup.loss=cadft", "warmup.save_steps=100", *sets])
    train, _ = load_samples(cfg.data, "train", cfg.seed)
    return build_trainer(cfg, tmp_path, train, model or make_tiny_model(tokenizer), tokenizer)


def recording(trainer) -> list[tuple[int, list[int], list[list[int]]]]:
    """Wrap the trainer's loss to record, per training micro-batch, its optimizer step, the sample indices and the
    label rows it trained on."""
    seen = []
    compute_loss = trainer.compute_loss

    def recording_loss(model, inputs, *args, **kwargs):
        if model.training:
            labels = [row[row != -100].tolist() for row in inputs["labels"]]
            seen.append((trainer.state.global_step + 1, inputs["sample_index"].tolist(), labels))
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = recording_loss
    return seen


def drawn_and_planned(trainer) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """Train; the samples each optimizer step drew, and those the trainer's visit plan says it would draw."""
    seen = recording(trainer)
    trainer.train()
    drawn: dict[int, list[int]] = {}
    for step, index, _ in seen:
        drawn.setdefault(step, []).extend(index)
    plan, rows = trainer.visit_plan(), trainer.train_dataset["sample_index"]
    return drawn, {step: [rows[r] for r in plan.rows(step)] for step in range(1, trainer.state.global_step + 1)}


@pytest.fixture(autouse=True)
def fp32_machine(monkeypatch):
    """Tests compute in fp32 on any CPU: `auto` reads the machine as one without fast bf16 (the precision tests
    choose their own), and a precision a test sets is forgotten after it."""
    import coldstart.runtime

    monkeypatch.setattr("coldstart.precision.cpu_bf16_speedup", lambda: 1.0)
    monkeypatch.setattr(coldstart.runtime, "_PRECISION", [])


@pytest.fixture(scope="session")
def runtime():
    """This process's runtime, as the CLI starts it (one process: the CPU, rank 0)."""
    from coldstart.runtime import Runtime

    return Runtime.start(180.0, "fp32")


@pytest.fixture
def tiny_model(tokenizer):
    return make_tiny_model(tokenizer)


@pytest.fixture
def tiny_cfg(tmp_path):
    """A config sized for unit tests: a few arith samples, two optimizer steps."""
    return load_config(
        None,
        [
            f"output_dir={tmp_path / 'runs'}",
            "name=t",
            "data.arith.num_train=8",
            "data.arith.num_test=4",
            "warmup.max_steps=2",
            "warmup.per_device_train_batch_size=4",
            "warmup.max_length=256",
            "warmup.save_steps=1",
        ],
    )


def launch_two(script, *args, cwd, timeout: int = 600):
    """`accelerate launch --num_processes 2` of `script` with `args`, on CPU (gloo, the DDP config) and a free port;
    the finished process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(root / "configs/accelerate/ddp.yaml"), "--num_processes", "2", "--mixed_precision", "no",
                           "--main_process_port", str(port), str(script), *map(str, args)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
