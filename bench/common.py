"""What every benchmark worker shares: the workload's config, the naive log-probs, peak memory, and the result line
the runner reads."""

from __future__ import annotations

import json
import os
import resource
import sys

import torch

from coldstart.config import Config, load_config

RESULT_PREFIX = "BENCH_RESULT "
CONFIG = "configs/quickstart.yaml"


def workload(*overrides: str) -> Config:
    """The quickstart's config (the embedded model and its arithmetic data), with `section.key=value` overrides;
    the trainers the workers build compute in its `runtime.precision`."""
    from coldstart.runtime import set_precision

    cfg = load_config(CONFIG, list(overrides))
    set_precision(cfg.runtime.precision)
    return cfg


def naive_logprobs(model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the labels from the whole `(batch, seq, vocab)` log-softmax, as a first implementation would;
    returns `(log_probs, mask)`, shifted like `coldstart.compatibility.token_logprobs`."""
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False).logits
    log_probs = logits[:, :-1].float().log_softmax(-1)
    labels = inputs["labels"][:, 1:]
    mask = labels != -100
    return log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask, mask


def fresh_compile_cache(folder: str) -> None:
    """torch.compile's caches in `folder`: inductor keeps compiled graphs on disk across processes, and an earlier
    bench run's would hide the compile time a first run pays."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (what an out-of-memory killer sees), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(result: dict) -> None:
    """Hand a worker's measurements to the runner: one JSON line on stdout."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()
