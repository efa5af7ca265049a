"""Experiment tracking as TRL users set it up: the run's `report_to` goes to the warm-up's and GRPO's trainers, and
a run is one group in the tracker. The run name is the project (trackio; wandb's group), each stage a run in it
(`warmup`, `rl`, `handoff`, `eval`); a `coldstart compare` arm's stages are `<arm>-seed<N>/<stage>` in the
comparison's project. TensorBoard writes under `<run_dir>/tensorboard/<stage>/` (`tensorboard --logdir` on the run
or the comparison folder). The stages that do not train (handoff, eval) log their figures once, as summary
metrics. A tracker's package is imported only when it is asked for.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from coldstart.config import Config
from coldstart.errors import ColdstartError

logger = logging.getLogger(__name__)

# tracker -> (the module it needs, how to install it)
BACKENDS = {
    "trackio": ("trackio", "pip install 'coldstart[trackio]'"),
    "tensorboard": ("tensorboard", "pip install 'coldstart[tensorboard]'"),
    "wandb": ("wandb", "pip install wandb"),
}


def backends(report_to: str | list[str]) -> list[str]:
    """The trackers asked for (`none` and [] ask for none); an unknown name is an error naming the closest."""
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    names = [n for n in names if n != "none"]
    for name in names:
        if name not in BACKENDS:
            close = difflib.get_close_matches(name, BACKENDS, n=1)
            raise ColdstartError(f"report_to: {name!r} is not a tracker coldstart groups runs for ("
                                 f"{', '.join(BACKENDS)} or none)" + (f"; did you mean {close[0]!r}?" if close else ""))
    return names


def missing(report_to: str | list[str]) -> list[str]:
    """The install command of each tracker asked for whose package is not installed."""
    return [BACKENDS[n][1] for n in backends(report_to) if importlib.util.find_spec(BACKENDS[n][0]) is None]


def names(run_name: str, stage: str) -> tuple[str, str]:
    """(project, run) of a stage: a compare arm (`<study>/<arm>-seed<N>`) is a run prefix in its study's project."""
    project, _, arm = run_name.partition("/")
    return project, f"{arm}/{stage}" if arm else stage


def trainer_args(cfg: Config, stage: str) -> dict[str, Any]:
    """The TrainingArguments fields a TRL trainer reads its tracking from."""
    project, run = names(cfg.name, stage)
    return {"report_to": backends(cfg.report_to) or "none", "run_name": run, "project": project}


@contextmanager
def stage_env(cfg: Config, stage: str) -> Iterator[None]:
    """The environment transformers' integrations read when a trainer is built and starts training: TensorBoard's
    log folder and wandb's project and group. Restored after."""
    chosen = backends(cfg.report_to)
    project, _ = names(cfg.name, stage)
    env = {}
    if "tensorboard" in chosen:
        env["TENSORBOARD_LOGGING_DIR"] = str(cfg.run_dir / "tensorboard" / stage)
    if "wandb" in chosen:
        env["WANDB_PROJECT"] = os.environ.get("WANDB_PROJECT", project)
        env["WANDB_RUN_GROUP"] = cfg.name
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    failed = True
    try:
        yield
        failed = False
    finally:
        wandb = sys.modules.get("wandb")  # imported by transformers' callback if the stage got as far as training
        if "wandb" in chosen and wandb is not None:  # the callback leaves the run open: the next stage's would log into it
            wandb.finish(exit_code=1 if failed else 0)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _numbers(figures: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every number in nested figures, under slash-joined keys."""
    out: dict[str, float] = {}
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_numbers(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def log_summary(cfg: Config, stage: str, figures: dict[str, Any]) -> None:
    """A stage's figures (numbers in nested dicts) as summary metrics of its run in each tracker asked for."""
    chosen = backends(cfg.report_to)
    if not chosen:
        return
    try:
        _log(chosen, cfg, stage, _numbers(figures))
    except Exception as e:  # the stage's own outputs are written: a tracker that fails must not undo them
        logger.warning("%s: logging the summary to %s failed (%s: %s)", stage, ", ".join(chosen), type(e).__name__, e)


def _log(chosen: list[str], cfg: Config, stage: str, metrics: dict[str, float]) -> None:
    project, run = names(cfg.name, stage)
    if "trackio" in chosen:
        import trackio

        trackio.init(project=project, name=run)
        trackio.log(metrics)
        trackio.finish()
    if "tensorboard" in chosen:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(log_dir=str(cfg.run_dir / "tensorboard" / stage)) as writer:
            for key, value in metrics.items():
                writer.add_scalar(key, value, 0)
    if "wandb" in chosen:
        import wandb

        with wandb.init(project=os.environ.get("WANDB_PROJECT", project), group=cfg.name, name=run) as logged:
            logged.summary.update(metrics)
