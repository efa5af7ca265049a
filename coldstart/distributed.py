"""Which process keeps the run directory when a stage runs in several processes (`accelerate launch`).

Every process trains; the main one alone creates, renames and records stage folders, and the others wait for it
at the same points. In a single process both calls cost nothing.
"""

from __future__ import annotations

import torch
from accelerate import PartialState


def _state() -> PartialState:
    # PartialState is shared with the Trainer's Accelerator, so it is made the way the Trainer asks for it: on the
    # CPU unless CUDA is there (TrainingArguments.use_cpu), which also picks gloo for CPU processes
    return PartialState(cpu=not torch.cuda.is_available())


def is_main() -> bool:
    return _state().is_main_process


def wait() -> None:
    """Every process waits here until all have arrived."""
    _state().wait_for_everyone()
