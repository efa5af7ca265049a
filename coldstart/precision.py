"""Which precision a run computes in: `runtime.precision` (auto | fp32 | bf16 | fp16), resolved for this machine.

A half precision means two things, one per kind of work:
- the trainers train under autocast in it, around fp32 master weights and optimizer state (Trainer's `bf16` /
  `fp16`; a stage's own `bf16` setting overrides the run's);
- work that only runs the model (scoring, handoff rollouts, evaluation) loads the weights in it.

`auto` picks bf16 on a CUDA device that supports it (as GPU recipes train) and fp32 elsewhere. On a CPU bf16 is
opt-in: side by side on the quickstart, its accuracy after GRPO left fp32's interval on one seed of two
(docs/performance.md, "Precision"), so a CPU result stays fp32's unless asked. Where the CPU's bf16 matrix multiply
runs at least `CPU_BF16_SPEEDUP` times as fast as its fp32 one (AMX or avx512_bf16; measured once per CPU, thread
count and torch version, and cached under COLDSTART_HOME), `auto` says that `bf16` would be faster. fp16 is never
picked by `auto` (its range needs loss scaling, which TRL applies on CUDA only).
"""

from __future__ import annotations

import json
import logging
import platform
import time
from typing import Literal

import torch

from coldstart.errors import ColdstartError

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16", "fp16"]
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # as `model.dtype` and transformers spell them
CPU_BF16_SPEEDUP = 2.0


def matmul_rate(dtype: torch.dtype, size: int = 1024, seconds: float = 0.3) -> float:
    """GFLOP/s of a `size` x `size` matrix multiply in `dtype` on the CPU (the best of repeated timings)."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b  # the first call picks and warms the kernel
    best, spent = float("inf"), 0.0
    while spent < seconds:
        start = time.perf_counter()
        a @ b
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
    return 2 * size**3 / best / 1e9


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what the platform says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_bf16_speedup() -> float:
    """How many times faster this CPU multiplies bf16 matrices than fp32 ones, with torch's current thread count
    (cached: measuring takes about a second)."""
    from coldstart.models import cache_home
    from coldstart.runs import atomic_write_text

    key = f"{cpu_name()} | {torch.get_num_threads()} threads | torch {torch.__version__}"
    path = cache_home() / "precision.json"
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if key not in cached:
        cached[key] = matmul_rate(torch.bfloat16) / matmul_rate(torch.float32)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(cached, indent=2) + "\n")
        except OSError:  # a read-only home: measured again next time
            pass
    return cached[key]


def resolve(setting: str, device: torch.device) -> Precision:
    """The precision `setting` means on `device`."""
    if setting == "fp16" and device.type != "cuda":
        raise ColdstartError(f"runtime.precision: fp16 trains with loss scaling, which needs a CUDA device; this "
                             f"process runs on {device.type}: use bf16 or fp32")
    if setting != "auto":
        return setting  # type: ignore[return-value]
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu" and (speedup := cpu_bf16_speedup()) >= CPU_BF16_SPEEDUP:
        logger.info("runtime.precision: auto is fp32 on a CPU; this one multiplies bf16 %.1fx as fast as fp32, so "
                    "runtime.precision: bf16 would train faster, with results not shown equal to fp32's "
                    "(docs/performance.md, Precision)", speedup)
    return "fp32"


def compute_dtype(precision: Precision, stored: str) -> str:
    """The dtype work that only runs the model loads weights stored as `stored` (`model.dtype`) in: the run's half
    precision when it has one and the weights are fp32 (or 'auto'), else as they are stored."""
    if precision != "fp32" and stored in ("float32", "auto"):
        return NAMES[precision]
    return stored


def trainer_flags(precision: Precision, bf16: bool | None, fp16: bool | None = None) -> dict[str, bool]:
    """Trainer's `bf16` and `fp16` for a stage whose own settings are `bf16` and `fp16` (None: the run's precision).
    A stage that sets either decides both: `bf16: false` trains that stage in fp32."""
    if bf16 is not None or fp16 is not None:
        return {"bf16": bool(bf16), "fp16": bool(fp16)}
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}
