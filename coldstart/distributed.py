"""Which process keeps the run directory and decides, when a stage runs in several processes (`accelerate launch`).

Every process trains; the main one alone creates, renames and records stage folders, and the others wait for it
at the same points. Decisions that must be the same everywhere (which rewrites to accept) are taken on the main
process and sent to the others. In a single process all of this costs nothing.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list

T = TypeVar("T")


def _state() -> PartialState:
    # PartialState is shared with the Trainer's Accelerator, so it is made the way the Trainer asks for it: on the
    # CPU unless CUDA is there (TrainingArguments.use_cpu), which also picks gloo for CPU processes
    return PartialState(cpu=not torch.cuda.is_available())


def is_main() -> bool:
    return _state().is_main_process


def num_processes() -> int:
    return _state().num_processes


def wait() -> None:
    """Every process waits here until all have arrived."""
    _state().wait_for_everyone()


def from_main(value: T) -> T:
    """The main process's `value`, on every process (each passes its own; only the main one's is kept)."""
    if num_processes() == 1:
        return value
    return broadcast_object_list([value], from_process=0)[0]
