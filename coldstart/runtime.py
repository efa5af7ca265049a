"""The runtime: which device this process computes on, which rank it is, the process group and how long its
collectives wait, and who does what when a stage runs in several processes (`accelerate launch`).

The two trainers get all of this from accelerate; everything else (scoring, rollouts, evaluation, the mechanism)
gets it here. `Runtime.start` creates accelerate's shared `PartialState` (and so the process group) before anything
else does, with the configured timeout: the Trainer's own `ddp_timeout` is ignored once that state exists. Every
model and tokenizer a stage loads comes through `Runtime.load_model` and `Runtime.load_tokenizer` and lands on this
process's device. Work outside the trainers is split over the ranks (`Runtime.map`) and gathered in input order;
the main process alone writes files. In a single process all of this costs nothing.

The module functions (`is_main`, `wait`, `from_main`) read the same shared state for the code that runs inside a
trainer (the CADFT trainer, rewriting) and may be used through the Python API without a runtime.
"""

from __future__ import annotations

import atexit
import datetime
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object

from coldstart import precision as precisions
from coldstart.errors import ColdstartError

T = TypeVar("T")

_LOADED: list[str] = []  # the devices of the models loaded since `take_loads` was last asked
_PRECISION: list[precisions.Precision] = []  # the run's, once resolved
_FAILED: list[bool] = []  # set by leave_failed: this process exits after an error
_EXIT_WAIT = datetime.timedelta(minutes=1)  # how long a clean exit waits for the other ranks


def _state(timeout: datetime.timedelta | None = None) -> PartialState:
    # PartialState is shared with the Trainer's Accelerator, so it is made the way the Trainer asks for it: on the
    # CPU unless CUDA is there (TrainingArguments.use_cpu), which also picks gloo for CPU processes. The first call
    # creates the process group; a timeout given later changes nothing
    kwargs = {} if timeout is None else {"timeout": timeout}
    return PartialState(cpu=not torch.cuda.is_available(), **kwargs)


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


def precision() -> precisions.Precision:
    """The run's precision (`coldstart.precision`): as `Runtime.start` resolved it, else `auto`'s choice here."""
    if not _PRECISION:
        set_precision("auto")
    return _PRECISION[0]


def set_precision(setting: str) -> None:
    """Resolve `setting` for this process's device; `auto`, which may measure the CPU, on the main process alone,
    its answer used on every process (a setting the device refuses fails on every process alike)."""
    if setting != "auto":
        _PRECISION[:] = [precisions.resolve(setting, _state().device)]
        return
    value = precisions.resolve(setting, _state().device) if is_main() else None
    _PRECISION[:] = [from_main(value)]


def shards_parameters() -> bool:
    """Whether the launch shards the model over the processes (DeepSpeed or FSDP): a trainer then places it."""
    return any(os.environ.get(k, "").lower() == "true" for k in ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP"))


def process_group_timeout() -> datetime.timedelta | None:
    """The timeout the default process group's collectives wait (None in a single process)."""
    if not torch.distributed.is_initialized():
        return None
    return torch.distributed.group.WORLD._get_backend(_state().device).options._timeout


def take_loads() -> list[str]:
    """The devices the models loaded since the last call landed on (the run directory records them per stage)."""
    loads = sorted(set(_LOADED))
    _LOADED.clear()
    return loads


def reset_peak_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib() -> float:
    """The peak memory of this process's device since `reset_peak_memory`: CUDA's allocated peak, or on a CPU the
    process's resident peak (over its whole life)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(_state().device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def leave_failed() -> None:
    """This process is leaving after an error it reported (the CLI's one-line errors, an interrupt): at exit it does
    not wait for the other ranks (`_leave`), so the launcher sees the failure at once."""
    _FAILED[:] = [True]


def _leave(state: PartialState, group) -> None:
    """Take the process group down as the process exits. A process that leaves it alive can abort in gloo's threads
    at interpreter shutdown ("terminate called without an active exception"), and so can one that takes it down
    while a peer still talks to it: on a clean exit the gloo ranks first meet in a barrier on `group`, whose own
    timeout (`_EXIT_WAIT`) bounds every rank's wait. A process leaving after an error (`leave_failed`, or an uncaught
    exception) does not wait."""
    if not torch.distributed.is_initialized():
        return
    if group is not None and not _FAILED and getattr(sys, "last_value", None) is None:
        try:
            torch.distributed.monitored_barrier(group=group, timeout=_EXIT_WAIT)
        except RuntimeError:
            pass  # a peer that failed or left: the group goes down all the same
    state.destroy_process_group()


class Runtime:
    """This process's place in the run: its device and rank, read from the process group it creates (`start`);
    the group's timeout is `process_group_timeout()`."""

    @classmethod
    def start(cls, timeout_minutes: float, precision: str = "auto") -> "Runtime":
        """The runtime of this process, creating the process group with `timeout_minutes` when it does not exist,
        computing in `precision` (`runtime.precision`)."""
        state = _state(datetime.timedelta(minutes=timeout_minutes))
        if torch.distributed.is_initialized():
            gloo = torch.distributed.get_backend() == "gloo"
            # the exit barrier's own group: the default group's timeout (hours) would bound a rank other than 0
            group = torch.distributed.new_group(backend="gloo", timeout=_EXIT_WAIT) if gloo else None
            atexit.register(_leave, state, group)
        set_precision(precision)
        return cls()

    @property
    def precision(self) -> precisions.Precision:
        return precision()

    @property
    def device(self) -> torch.device:
        return _state().device

    @property
    def is_main(self) -> bool:
        return is_main()

    @property
    def num_processes(self) -> int:
        return num_processes()

    @property
    def process_index(self) -> int:
        return _state().process_index

    def wait(self) -> None:
        wait()

    def from_main(self, value: T) -> T:
        return from_main(value)

    def mine(self, count: int) -> range:
        """The positions of `count` items this process works on: one contiguous share of them (`map` puts the
        shares back in order)."""
        share = math.ceil(count / self.num_processes)
        return range(min(count, self.process_index * share), min(count, (self.process_index + 1) * share))

    def map(self, fn: Callable[[Any], list[T]], items: Sequence) -> list[T]:
        """`fn` on this process's share of `items` (a list, or a `datasets.Dataset`, which keeps its type), the
        results of every process gathered in the order of `items`, on every process. `fn` returns one result per
        item it is given."""
        part = self.mine(len(items))
        if self.num_processes == 1:
            return list(fn(items))
        share = items.select(part) if hasattr(items, "select") else [items[i] for i in part]
        results = list(fn(share)) if len(part) else []
        if len(results) != len(part):
            raise RuntimeError(f"runtime.map: {len(results)} results for {len(part)} items")
        return gather_object(results)

    def mine_of(self, items: Sequence[T]) -> list[T]:
        """Every `num_processes`-th item, starting at this process's rank: work that is not gathered (each process
        writes its own items' outputs, as the mechanism's policies)."""
        return list(items)[self.process_index::self.num_processes]

    def load_tokenizer(self, path: str | Path, trust_remote_code: bool = False):
        """The tokenizer of a model folder or Hub id, with a pad token (its eos where it has none)."""
        from coldstart.models import load_tokenizer

        return load_tokenizer(str(path), trust_remote_code)

    def compute_dtype(self, section) -> str:
        """The dtype a model that is only run (not trained, saved or differentiated) loads in: the run's half
        precision for fp32 weights, else the section's `dtype`."""
        return precisions.compute_dtype(self.precision, section.dtype)

    def load_model(self, section, path: str | Path | None = None, train: bool = False, master: bool = False):
        """A causal LM (`models.load_model`; LoRA adapters in `path` merged into the section's base model unless
        `train`) on this process's device, its weights in `compute_dtype` unless `train` or `master` (weights to
        train, save or differentiate: the section's `dtype`); with `train` under DeepSpeed or FSDP it stays where
        it loaded and the trainer places it. Refused by name when its weights cannot fit the device."""
        from coldstart.models import load_model, resolve_model_path, weights_bytes

        path = str(path or resolve_model_path(section.name_or_path))
        dtype = section.dtype if train or master else self.compute_dtype(section)
        if self.device.type == "cuda" and not (train and shards_parameters()):
            need, free = weights_bytes(path, dtype), torch.cuda.mem_get_info(self.device)[0]
            if need is not None and need > free:
                raise ColdstartError(
                    f"model.name_or_path: {path} needs {need / 2**30:.1f} GiB for its weights, but {self.device} has "
                    f"{free / 2**30:.1f} GiB free; launch with a DeepSpeed ZeRO-3 or FSDP config "
                    "(configs/accelerate/) or use LoRA on a smaller dtype"
                )
        model = load_model(section, path, merge_adapters=not train, dtype=dtype)
        if not (train and shards_parameters()):
            model = model.to(self.device)
        _LOADED.append(str(next(model.parameters()).device))
        return model
