"""Where a GRPO step's time goes, on the embedded model with the quickstart's RL settings: one generation round and
the updates it serves, then a checkpoint. Each part is timed where TRL's GRPOTrainer calls it: generation, the
old log-probs (the no-grad forward over the round, needed when a round serves several updates), the training
forward, backward, the optimizer step and the checkpoint write. `--compile`: under `torch_compile` (Trainer's
`torch.compile` of the model), with the first update (which holds the compile) apart from the others.

    python -m bench.grpo_step --logprobs logits|fused [--compile]
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from bench.common import emit, fresh_compile_cache, workload
from coldstart.data import rl_prompts
from coldstart.models import load_model, load_tokenizer, resolve_model_path
from coldstart.stages.rl import build_trainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logprobs", choices=("logits", "fused"), default="logits")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (Trainer's torch_compile)")
    args = parser.parse_args()
    steps = workload().rl.generation_round(1)[1]  # the updates one generation round serves
    cfg = workload(f"rl.logprobs={args.logprobs}", f"rl.max_steps={steps}", f"rl.save_steps={steps}",
                   *(["rl.trainer={torch_compile: true}"] if args.compile else []))
    path = resolve_model_path(cfg.model.name_or_path)
    model, tokenizer = load_model(cfg.model, path), load_tokenizer(path, False)
    prompts, _ = rl_prompts(cfg.data, cfg.rl.num_prompts, cfg.seed)
    spent: dict[str, float] = defaultdict(float)
    calls: dict[str, list[float]] = defaultdict(list)

    def timed(name, fn):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            start = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                part = name(*a, **kw) if callable(name) else name
                spent[part] += time.perf_counter() - start
                calls[part].append(time.perf_counter() - start)
        return wrapper

    with tempfile.TemporaryDirectory() as out:
        if args.compile:
            fresh_compile_cache(str(Path(out) / "inductor"))
        trainer = build_trainer(cfg, Path(out), prompts, model, tokenizer)
        trainer._generate = timed("generation", trainer._generate)
        trainer._get_per_token_logps_and_entropies = timed(
            lambda *a, **kw: "training_forward" if torch.is_grad_enabled() else "old_logprobs",
            trainer._get_per_token_logps_and_entropies)
        trainer.accelerator.backward = timed("backward", trainer.accelerator.backward)
        trainer.create_optimizer()
        trainer.optimizer.step = timed("optimizer", trainer.optimizer.step)
        trainer._save_checkpoint = timed("checkpoint", trainer._save_checkpoint)
        start = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - start
    parts = {f"{k}_s_per_step": v / steps for k, v in spent.items()}
    emit({"step_s": total / steps, **parts, "other_s_per_step": (total - sum(spent.values())) / steps,
          "total_s": total, **updates(calls["training_forward"], calls["backward"])})


def updates(forward: list[float], backward: list[float]) -> dict[str, float]:
    """A micro-batch's training forward and backward: the fastest after the first is the steady rate (a compile
    lands in the first forward of the round, the old log-probs', and in recompiles for new lengths: the round's
    total holds them)."""
    each = [f + b for f, b in zip(forward, backward)]
    return {"updates": len(each), "update_s": min(each[1:]) if len(each) > 1 else each[0]}


if __name__ == "__main__":
    main()
