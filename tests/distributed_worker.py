"""One CADFT warm-up on a tiny model through the real warm-up stage, run by `test_distributed.py` in one process and
under `accelerate launch` in two. Each process writes what the test compares into `<out>/rank<k>/`:

- `grads.pt`: every parameter's gradient at the first optimizer step (clipping off, after DDP's all-reduce);
- `stats.json`: the (mean, std) each loss call weighted its samples with, and each sample's first NLL by index;
- `rewrites.json`: the targets this process trains on after the rewriting round;
- `writes.txt`: every file of the run directory this process wrote through `atomic_write_text`.

The rewriting candidates are made to differ between processes (each proposes only its own rank's answer as
right), so the processes agree on the accepted set only if the main one decides for all.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import TrainerCallback

import coldstart.cadft
import coldstart.generation
import coldstart.compatibility
import coldstart.runs
import coldstart.stages.warmup as warmup_stage
from coldstart.config import load_config
from coldstart.runtime import Runtime, _state
from coldstart.generation import Completion
from coldstart.runs import RunDir


def main(model_dir: str, out: str, num_processes: int) -> None:
    state = _state()
    mine = Path(out) / f"rank{state.process_index}"
    mine.mkdir(parents=True, exist_ok=True)
    cfg = load_config(None, [
        f"output_dir={out}",
        "name=run",
        f"model.name_or_path={model_dir}",
        "data.arith.num_train=8",
        "warmup.loss=cadft",
        "warmup.max_steps=2",
        f"warmup.per_device_train_batch_size={8 // num_processes}",
        "warmup.max_grad_norm=0",
        "warmup.save_steps=10",
        "warmup.rewrite.enabled=true",
        "warmup.rewrite.start=1",
        "warmup.rewrite.every=1",
        "warmup.rewrite.fraction=1.0",
        "warmup.rewrite.replace_prob=1.0",
        "warmup.rewrite.num_candidates=2",
    ])

    writes = mine / "writes.txt"
    atomic_write_text = coldstart.runs.atomic_write_text

    def recording_write(path, text):
        with writes.open("a") as handle:
            handle.write(f"{path}\n")
        atomic_write_text(path, text)

    coldstart.runs.atomic_write_text = recording_write

    stats: dict = {"mean_std": [], "nll": {}}
    cadft_weights = coldstart.cadft.cadft_weights

    def recording_weights(nll, mean, std, *args):
        stats["mean_std"].append([float(mean), float(std)])
        return cadft_weights(nll, mean, std, *args)

    coldstart.cadft.cadft_weights = recording_weights

    def proposing_generate(model, tokenizer, prompts, num_samples, **kwargs):
        return [[Completion(f"rank {state.process_index}: \\boxed{{{state.process_index}}}", 5, True)] * num_samples
                for _ in prompts]

    coldstart.generation.generate = proposing_generate
    score = coldstart.compatibility.score

    def scoring_proposals_high(model, tokenizer, samples, *args, **kwargs):
        # every proposal is more compatible than its demonstration, so that only the answer check decides
        scored = score(model, tokenizer, samples, *args, **kwargs)
        for sample, r in zip(samples, scored):
            if sample["completion"][-1]["content"].startswith("rank "):
                r.update(nll=0.01, compatibility=0.99)
        return scored

    coldstart.compatibility.score = scoring_proposals_high
    build_trainer = warmup_stage.build_trainer

    def instrumented_trainer(*args, **kwargs):
        trainer = build_trainer(*args, **kwargs)
        trainer.add_callback(Capture(trainer, mine))
        # the gold answer is 0 (the main process's proposal) for the first half of the samples, 1 for the rest
        store = trainer.store
        store.dataset = store.dataset.remove_columns("answer").add_column("answer", ["0"] * 4 + ["1"] * 4)
        observe = store.observe

        def recording_observe(index, nll, rewrite_step):
            stats["nll"].update({str(i): n for i, n in zip(index, nll) if str(i) not in stats["nll"]})
            observe(index, nll, rewrite_step)

        store.observe = recording_observe
        return trainer

    warmup_stage.build_trainer = instrumented_trainer
    warmup_stage.run(cfg, RunDir(Path(out) / "run"), Runtime.start(cfg.runtime.timeout_minutes, "fp32"))
    (mine / "stats.json").write_text(json.dumps(stats))


class Capture(TrainerCallback):
    def __init__(self, trainer, out: Path):
        self.trainer, self.out = trainer, out

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0:
            grads = {n: p.grad.detach().clone() for n, p in self.trainer.accelerator.unwrap_model(model).named_parameters()}
            torch.save(grads, self.out / "grads.pt")

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            targets = {str(i): t.row["input_ids"] for i, t in self.trainer.store.targets.items()}
            (self.out / "rewrites.json").write_text(json.dumps(targets))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
