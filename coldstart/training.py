"""What the warm-up and RL stages share around TRL's trainers: device defaults, the metrics log, resuming."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, ProgressCallback, TrainerCallback
from trl.models import unwrap_model_for_generation

from coldstart import compatibility, faults, generation, precision, runtime
from coldstart.config import trl_kwargs
from coldstart.errors import ColdstartError
from coldstart.runs import is_checkpoint, link_if_identical

logger = logging.getLogger(__name__)


def trainer_kwargs(section: Any, output_dir: Path, seed: int, tracking: dict[str, Any] | None = None,
                   timeout_minutes: float | None = None) -> dict[str, Any]:
    """Keyword arguments for a TRL config: the section's TRL fields, with `None` settings resolved, and
    `tracking` (`coldstart.tracking.trainer_args`: report_to, run_name, project) where the section sets none, and
    `ddp_timeout` from the runtime's `timeout_minutes` (the process group exists by then with that timeout; the
    Trainer's value would otherwise say another).

    `bf16` / `fp16` follow the run's precision (`coldstart.runtime.precision`) unless the section sets `bf16`
    (or `trainer: {fp16: ...}`).
    TRL turns gradient checkpointing on by default; on a CPU it makes a small model slower (recomputation with
    plenty of memory), so `None` means on for CUDA only.
    """
    kwargs = trl_kwargs(section)
    cuda = torch.cuda.is_available()
    kwargs.update(precision.trainer_flags(runtime.precision(), kwargs.pop("bf16", None), kwargs.pop("fp16", None)))
    if kwargs.get("activation_checkpointing") is None:
        kwargs["activation_checkpointing"] = cuda
    kwargs.setdefault("use_cpu", not cuda)
    if timeout_minutes is not None:
        kwargs.setdefault("ddp_timeout", round(timeout_minutes * 60))
    # every parameter takes part in every forward: DDP's search for unused ones is a wasted graph traversal
    kwargs.setdefault("ddp_find_unused_parameters", False)
    for key, value in (tracking or {"report_to": "none"}).items():
        kwargs.setdefault(key, value)
    kwargs.setdefault("save_strategy", "steps")
    kwargs.setdefault("seed", seed)
    kwargs.setdefault("data_seed", seed)
    kwargs["output_dir"] = str(output_dir)
    return kwargs


class TrainedPolicy:
    """The model as a trainer trains it, for work done between its steps (rewriting, held-out curves): unwrapped
    from its wrappers (gathered under ZeRO-3) for each call, in eval mode (no dropout: as CADFT's prepass scores
    the NLLs its weights are drawn from), under the training's autocast, on its device. Every process calls it
    together."""

    def __init__(self, trainer):
        self._trainer = trainer

    @contextlib.contextmanager
    def _model(self):
        t = self._trainer
        with unwrap_model_for_generation(t.model_wrapped, t.accelerator) as model, t.accelerator.autocast():
            was_training = model.training
            model.eval()
            try:
                yield model
            finally:
                model.train(was_training)

    def score(self, samples: list[dict[str, Any]]) -> list[dict[str, float]]:
        t = self._trainer
        with self._model() as model:
            return compatibility.score(model, t.processing_class, samples, t.args.max_length, fused=t.fused)

    def generate(self, prompts: list[Any], **sampling: Any) -> list[list[generation.Completion]]:
        with self._model() as model:
            return generation.generate(model, self._trainer.processing_class, prompts, **sampling)


RESUME_STATE = ("optimizer.pt", "scheduler.pt", "rng_state*.pth", "scaler.pt")


def trim_checkpoints(output_dir: Path, final: Path) -> None:
    """Checkpoints kept for their weights alone (`keep_checkpoints: weights`): what only a resume reads (optimizer,
    scheduler and RNG state, ~3x the model) removed, and weights the same as `final`'s linked to them. A checkpoint
    with no resume state left was trimmed before: not hashed again each time a finished warm-up is skipped."""
    for checkpoint in _checkpoints(output_dir):
        state = [path for pattern in RESUME_STATE for path in checkpoint.glob(pattern)]
        if not state:
            continue
        for weights in checkpoint.glob("*.safetensors"):
            link_if_identical(weights, final / weights.name)
        for path in state:  # last: a crash before it leaves the checkpoint to be trimmed on the next run
            path.unlink()


def stage_keep(keep_checkpoints: bool | str):
    """What a training stage keeps of its folder when it finishes: not TRL's own model card beside the exported
    model (the exported folder gets coldstart's, `coldstart.cards`), and the checkpoints only when asked."""
    return lambda rel: rel.as_posix() != "README.md" and (keep_checkpoints or not is_checkpoint(rel))


SEAL = ".complete"


def _checkpoints(output_dir: Path) -> list[Path]:
    found = [p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=checkpoint_step)


def sealed_checkpoints(output_dir: Path) -> list[Path]:
    """The checkpoints that were saved to the end, oldest first."""
    return [p for p in _checkpoints(output_dir) if (p / SEAL).is_file()]


def checkpoint_step(path: Path) -> int:
    return int(Path(path).name.split("-")[-1])


def last_checkpoint(output_dir: Path) -> str | None:
    """The newest checkpoint that was saved to the end (sealed), or None."""
    sealed = sealed_checkpoints(output_dir)
    return str(sealed[-1]) if sealed else None


def resume_point(output_dir: Path) -> str | None:
    """The checkpoint an interrupted stage resumes from; checkpoints a crash cut short are removed first."""
    for path in _checkpoints(output_dir):
        if not (path / SEAL).is_file():
            logger.warning("removing %s: a crash interrupted its saving", path)
            shutil.rmtree(path)
    return last_checkpoint(output_dir)


class CheckpointSeal(TrainerCallback):
    """Marks a checkpoint complete once the Trainer has saved all of it (on_save comes after the whole save)."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            (Path(args.output_dir) / f"checkpoint-{state.global_step}" / SEAL).touch()


class MetricsLog(TrainerCallback):
    """Appends every Trainer log to a JSONL file; on resume, drops the lines past the checkpoint's step."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not self.path.is_file():
            return
        kept = [
            line
            for line in self.path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= state.global_step
        ]
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        faults.reach("log")
        record = {"step": state.global_step, "epoch": state.epoch, **logs}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


class NumericalGuard(TrainerCallback):
    """Stops training on a NaN or infinite loss, naming the step and the last good checkpoint, and logs gradient-norm
    spikes (above `spike_factor` times the median of the norms so far)."""

    def __init__(self, stage: str, spike_factor: float = 10.0):
        self.stage, self.spike_factor = stage, spike_factor
        self.norms: list[float] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):
            checkpoint = last_checkpoint(Path(args.output_dir))
            raise ColdstartError(
                f"{self.stage}: the loss became {loss} at step {state.global_step}; last good checkpoint: "
                f"{checkpoint or 'none yet'} (lower the learning rate, or check the data for empty targets)"
            )
        norm = logs.get("grad_norm")
        # zero norms (GRPO steps whose groups all had the same reward) carry no scale: they are not counted
        if norm is None or not math.isfinite(norm) or norm == 0:
            return
        if len(self.norms) >= 5:
            median = sorted(self.norms)[len(self.norms) // 2]
            if norm > self.spike_factor * median:
                logger.warning("%s: gradient norm spike at step %d: %.3g (median so far %.3g)", self.stage,
                               state.global_step, norm, median)
        self.norms.append(norm)


class StepLines(ProgressCallback):
    """Trainer's progress bar, with one compact line per logged step of the few figures that matter for the stage
    (`fields`: metric -> label) instead of the raw metric dictionary; `metrics.jsonl` still gets everything."""

    def __init__(self, stage: str, fields: dict[str, str]):
        super().__init__()
        self.stage, self.fields = stage, fields

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        parts = [f"{label} {logs[key]:.4g}" for key, label in self.fields.items() if isinstance(logs.get(key), (int, float))]
        if parts:
            self.training_bar.write(f"{self.stage} step {state.global_step}/{state.max_steps}: {', '.join(parts)}")


def readable_console(trainer, stage: str, fields: dict[str, str]) -> None:
    """Replace the Trainer's printing of raw log dictionaries by `StepLines` (unless its progress bar is off)."""
    if trainer.args.disable_tqdm:
        return
    for callback in (ProgressCallback, PrinterCallback):
        trainer.remove_callback(callback)
    trainer.add_callback(StepLines(stage, fields))
