"""What every benchmark worker shares: the workload's config, peak memory, and the result line the runner reads."""

from __future__ import annotations

import json
import resource
import sys

from coldstart.config import Config, load_config

RESULT_PREFIX = "BENCH_RESULT "
CONFIG = "configs/quickstart.yaml"


def workload(*overrides: str) -> Config:
    """The quickstart's config (the embedded model and its arithmetic data), with `section.key=value` overrides."""
    return load_config(CONFIG, list(overrides))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (what an out-of-memory killer sees), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(result: dict) -> None:
    """Hand a worker's measurements to the runner: one JSON line on stdout."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()
