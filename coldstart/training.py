"""What the warm-up and RL stages share around TRL's trainers: device defaults, the metrics log, resuming."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from coldstart.config import trl_kwargs


def trainer_kwargs(section: Any, output_dir: Path, seed: int) -> dict[str, Any]:
    """Keyword arguments for a TRL config: the section's TRL fields, with `None` precision settings resolved.

    TRL turns bf16 and gradient checkpointing on by default; on a CPU both make a small model slower (bf16
    autocast without AMX, recomputation with plenty of memory), so `None` means on for CUDA only.
    """
    kwargs = trl_kwargs(section)
    cuda = torch.cuda.is_available()
    for key in ("bf16", "activation_checkpointing"):
        if kwargs.get(key) is None:
            kwargs[key] = cuda
    kwargs.setdefault("use_cpu", not cuda)
    kwargs.setdefault("report_to", "none")
    kwargs.setdefault("save_strategy", "steps")
    kwargs.setdefault("seed", seed)
    kwargs.setdefault("data_seed", seed)
    kwargs["output_dir"] = str(output_dir)
    return kwargs


def last_checkpoint(output_dir: Path) -> str | None:
    return get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None


class MetricsLog(TrainerCallback):
    """Appends every Trainer log to a JSONL file; on resume, drops the lines past the checkpoint's step."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kwargs):
        if not self.path.is_file():
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
        record = {"step": state.global_step, "epoch": state.epoch, **logs}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

