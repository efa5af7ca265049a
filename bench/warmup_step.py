"""One warm-up variant on the embedded model, alone in its process: seconds per optimizer step and peak memory.

Variants: coldstart's warm-up with `loss` sft, dft, cadft (rewriting off) or asft (DFT plus the base model's
forward for its anchor); `naive`, CADFT that takes its
log-probs from a full `(batch, seq, vocab)` log-softmax; `plain`, a plain PyTorch loop (forward with labels,
backward, AdamW step). Every variant trains on the same batch, the quickstart's first 8 demonstrations, once per
step: identical work, so the fastest step after the first (allocations, optimizer state) is the measure, the one
least disturbed by other work on the machine. `--compile`: the same under `torch_compile` (Trainer's
`torch.compile` of the model); its first step holds the compile.

    python -m bench.warmup_step --variant cadft --steps 4 [--compile]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from bench.common import emit, fresh_compile_cache, naive_logprobs, peak_rss_mb, workload
from coldstart.data import load_samples
from coldstart.models import load_model, load_tokenizer, resolve_model_path
from coldstart.lengths import apply_length_policy
from coldstart.stages.warmup import build_trainer

VARIANTS = ("plain", "sft", "dft", "cadft", "asft", "naive")
BATCH = 8


class StepClock(TrainerCallback):
    """Wall time of each optimizer step, from the end of the one before (data, forward, backward, update, logs)."""

    def __init__(self):
        self.times: list[float] = []
        self._last = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.times.append(now - self._last)
        self._last = now


def build(variant: str, steps: int, work: Path, compiled: bool = False):
    loss = {"plain": "sft", "naive": "cadft"}.get(variant, variant)
    cfg = workload(
        f"warmup.loss={loss}", "warmup.rewrite.enabled=false", "warmup.save_steps=100000",
        f"warmup.per_device_train_batch_size={BATCH}", f"data.arith.num_train={BATCH}",
        "warmup.max_steps=-1", f"warmup.num_train_epochs={steps}",
        *(["warmup.trainer={torch_compile: true}"] if compiled else []),
    )
    model_path = resolve_model_path(cfg.model.name_or_path)
    tokenizer = load_tokenizer(model_path, False)
    train, _ = load_samples(cfg.data, "train", cfg.seed)
    train, _ = apply_length_policy(train, tokenizer, cfg.warmup.max_length, cfg.warmup.too_long)
    base_model = load_model(cfg.model, model_path) if loss == "asft" else None
    trainer = build_trainer(cfg, work, train, load_model(cfg.model, model_path), tokenizer, base_model=base_model)
    if variant == "naive":
        trainer.token_logprobs = naive_logprobs
    return cfg, model_path, trainer


def plain_loop(cfg, model_path: str, batch: dict, steps: int) -> list[float]:
    model = load_model(cfg.model, model_path)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.warmup.learning_rate)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (Trainer's torch_compile)")
    args = parser.parse_args()
    if args.compile and args.variant in ("plain", "naive"):
        parser.error("--compile measures coldstart's warm-up: --variant sft, dft, cadft or asft")
    with tempfile.TemporaryDirectory() as tmp:
        if args.compile:
            fresh_compile_cache(str(Path(tmp) / "inductor"))
        cfg, model_path, trainer = build(args.variant, args.steps, Path(tmp), args.compile)
        batch = next(iter(trainer.get_train_dataloader()))
        if args.variant == "plain":
            del trainer
            times = plain_loop(cfg, model_path, batch, args.steps)
        else:
            clock = StepClock()
            trainer.add_callback(clock)
            trainer.train()
            times = clock.times
    emit({"variant": args.variant, "step_times": times, "first_step_s": times[0], "step_s": min(times[1:]),
          "peak_rss_mb": peak_rss_mb(),
          "tokens": int(batch["attention_mask"].sum()), "width": batch["input_ids"].shape[1]})


if __name__ == "__main__":
    main()
