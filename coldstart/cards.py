"""Model cards for the folders a run exports (`warmup/final`, `handoff/model`, `rl/final`): TRL's card
(`trl.trainer.utils.generate_model_card`: base model, quick start, framework versions, citations) with the run's own
sections: how the folder was trained (the warm-up's loss, settings, data and steps; GRPO's rewards and settings),
the handoff's checks and mismatch figures, the evaluation's results with their intervals, and the command and
config fingerprint that made it. The metadata, as the Hub reads it (`huggingface_hub.ModelCard`), carries
`base_model`, the base model's licence and the results (`model-index`).

Each stage's folder gets its card when the stage finishes; the eval stage rewrites the cards of the folders it
graded with their results.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from coldstart.config import Config
from coldstart.runtime import is_main
from coldstart.models import EMBEDDED, EMBEDDED_HUB_ID, EMBEDDED_LICENCE, EMBEDDED_QUANTISATION
from coldstart.runs import RunDir, json_sha256

logger = logging.getLogger(__name__)

EXPORTS = {"warmup": "final", "handoff": "model", "rl": "final"}  # stage -> the folder it exports
GRADED_AS = {"warmup": "warmup", "handoff": "warmup", "rl": "rl"}  # the eval arm that may grade each folder
METHOD = {"sft": "SFT (plain NLL)", "dft": "DFT (each token's NLL weighted by its detached probability)",
          "cadft": "CADFT (DFT with a per-demonstration compatibility weight)",
          "asft": "ASFT (DFT with a KL anchor to the frozen base model)", "none": "no warm-up"}


def base_model(cfg: Config) -> tuple[str | None, str | None]:
    """The base model's Hub id (None for a local folder: the Hub's metadata takes ids only) and the licence its own
    card states (a local folder's, or a Hub model's card where it is cached; None where there is none). Never
    downloads."""
    if cfg.model.name_or_path == EMBEDDED:
        return EMBEDDED_HUB_ID, EMBEDDED_LICENCE
    from huggingface_hub import ModelCard, try_to_load_from_cache

    from huggingface_hub.errors import HFValidationError

    local = Path(cfg.model.name_or_path).expanduser()
    hub_id = None if local.exists() else cfg.model.name_or_path
    try:
        readme = local / "README.md" if hub_id is None else try_to_load_from_cache(hub_id, "README.md")
    except HFValidationError:  # neither a folder here nor a Hub id
        return None, None
    licence = ModelCard.load(readme).data.license if isinstance(readme, (str, Path)) and Path(readme).is_file() else None
    return hub_id, licence


def hub_dataset(source: str) -> str | None:
    """The data source as a Hub dataset id the card can link to (None for a built-in set or a local path)."""
    return source if "/" in source and not Path(source).expanduser().exists() else None


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _training(cfg: Config, stage: str, stages: dict[str, Any]) -> list[str]:
    w, rl = cfg.warmup, cfg.rl
    warm = stages.get("warmup", {}).get("metrics", {})
    data = warm.get("data") or {}
    lines = ["## How this folder was trained (coldstart)", ""]
    if w.loss == "none":
        lines.append("- Warm-up: none; the base model went to the handoff as it is.")
    else:
        lines.append(f"- Warm-up: {METHOD[w.loss]}, learning rate {w.learning_rate:g}, {warm.get('steps', '?')} steps "
                     f"of {w.per_device_train_batch_size} x {w.gradient_accumulation_steps} demonstrations per device, "
                     f"at most {w.max_length} tokens, on `{cfg.data.source}`"
                     + (f" ({data['kept']} demonstrations)" if "kept" in data else "") + ".")
    if w.loss == "asft":
        lines.append(f"- ASFT: KL(base || policy) at each demonstration token, weight {w.asft.anchor:g}.")
    if w.loss == "cadft":
        c = w.cadft
        lines.append(f"- CADFT: weight exp(-{c.beta:g} max(0, z)) of the z-scored NLL ({c.stats} statistics), token "
                     f"weighting {c.token_weighting}, normalised by {c.normalize}; rewriting "
                     + ("on" if w.rewrite.enabled else "off") + ".")
    if stage in ("handoff", "rl") and "handoff" in stages:
        h = stages["handoff"].get("metrics", {})
        failed = h.get("checks_failed") or []
        rollouts = h.get("rollouts", {})
        lines.append(f"- Handoff checks: {'passed' if not failed else 'failed: ' + '; '.join(failed)}; "
                     f"{_pct(h.get('finished_rate', 0))}% of the rollouts on RL prompts ended by themselves"
                     + (f", pass@1 {_pct(rollouts['pass@1'])}%" if "pass@1" in rollouts else "")
                     + (f", {_pct(rollouts['zero_variance'])}% of groups with zero reward variance"
                        if "zero_variance" in rollouts else "") + ".")
        lines += [f"  - {v}" for v in h.get("verdicts") or []]
    if stage == "rl":
        r = stages.get("rl", {}).get("metrics", {})
        rewards = ", ".join(f"{k} x {v:g}" for k, v in rl.rewards.items())
        temperature = r.get("temperature", rl.temperature)  # what GRPO sampled at (rl.temperature: auto resolved)
        lines.append(f"- GRPO (TRL): rewards {rewards}; {r.get('steps', '?')} steps, learning rate "
                     f"{rl.learning_rate:g}, {rl.num_generations} completions per prompt of at most "
                     f"{rl.max_completion_length} tokens, temperature {temperature if temperature == 'auto' else format(temperature, 'g')}"
                     + (f"; mean reward {r['reward_first']:.2f} at the first step, {r['reward_last']:.2f} at the last"
                        if r.get("reward_first") is not None else "") + ".")
    return lines + [""]


def _results(results: dict[str, Any], arm: str) -> tuple[list[str], list[Any]]:
    """The card's table of this arm's results and their `EvalResult`s."""
    from huggingface_hub import EvalResult

    rows, evals = [], []
    sets = {"held-out": results["models"][arm]} | {
        name: by_arm[arm] for name, by_arm in (results.get("benchmarks") or {}).items() if arm in by_arm}
    for name, m in sets.items():
        low, high = m["accuracy_ci"]
        rows.append(f"| {name} | {m['problems']} | {_pct(m['accuracy'])} | [{_pct(low)}, {_pct(high)}] |")
        evals.append(EvalResult(task_type="text-generation", dataset_type=name, dataset_name=name,
                                metric_type="accuracy", metric_value=round(100 * m["accuracy"], 2),
                                metric_name="greedy accuracy (%)"))
    table = ["## Evaluation", "", "Greedy accuracy in %, 95% bootstrap interval over problems:", "",
             "| set | problems | accuracy | 95% interval |", "|---|---|---|---|", *rows, ""]
    gain = "rl_gain" if arm == "rl" else "warmup_gain"
    if gain in results:
        g = results[gain]
        what = "GRPO over the warm-up" if arm == "rl" else "the warm-up over the base model"
        table += [f"Gain of {what} on the held-out problems: {100 * g['difference']:+.1f} points "
                  f"[{100 * g['ci_low']:+.1f}, {100 * g['ci_high']:+.1f}].", ""]
    return table, evals


def card(cfg: Config, run_dir: RunDir, stage: str):
    """The card of `stage`'s exported folder, from the run's manifest and eval results."""
    import json

    from huggingface_hub import ModelCardData
    from trl.trainer.utils import generate_model_card

    stages = run_dir.manifest()["stages"]
    base, licence = base_model(cfg)
    folder = run_dir.stage_dir(stage) / EXPORTS[stage]
    tags = ["coldstart", cfg.warmup.loss] + (["grpo"] if stage == "rl" else [])
    trainer = "GRPO (TRL's GRPOTrainer) after a coldstart warm-up" if stage == "rl" else \
        f"coldstart's {cfg.warmup.loss.upper()} warm-up on TRL's SFTTrainer"
    made = generate_model_card(base_model=base or cfg.model.name_or_path, model_name=f"{cfg.name}/{stage}/{EXPORTS[stage]}",
                               hub_model_id=str(folder), dataset_name=hub_dataset(cfg.data.source),
                               tags=tags, wandb_url=None, trackio_url=None, trainer_name=trainer)
    if base is None:  # TRL's card links the base model on the Hub: a local folder is named instead
        path = cfg.model.name_or_path
        made.text = made.text.replace(f"[{path}](https://huggingface.co/{path})", f"the local model folder `{path}`")
    elif cfg.model.name_or_path == EMBEDDED:  # the weights trained were not the Hub model's own
        link = f"[{base}](https://huggingface.co/{base})"
        made.text = made.text.replace(link, f"{link} ({EMBEDDED_QUANTISATION})")
    sections = _training(cfg, stage, stages)
    evals = []
    results_file = run_dir.stage_dir("eval") / "results.json"
    arm = GRADED_AS.get(stage)
    graded = stages.get("eval", {})
    # the results are this folder's only if eval graded it as it is now (not a model a --force re-run replaced,
    # nor the warm-up's folder where the handoff's was graded)
    this = arm and graded.get("fingerprint_data", {}).get("models", {}).get(arm) == stages.get(stage, {}).get("outputs_sha256")
    if this and graded.get("status") == "done" and results_file.is_file():
        results = json.loads(results_file.read_text())
        if arm in results["models"]:
            table, evals = _results(results, arm)
            sections = table + sections
    entry = stages.get(stage, {})
    sections += ["## Reproduce", "", f"- Command: `{entry.get('command', '?')}`",
                 f"- Config fingerprint: `{json_sha256(cfg.to_dict())[:16]}` (sha256 of the resolved config; the run "
                 f"folder's `config.yaml` holds every value)", ""]
    data = ModelCardData(base_model=base, license=licence, library_name="transformers", tags=made.data.tags,
                         model_name=f"{cfg.name}/{stage}/{EXPORTS[stage]}", eval_results=evals or None)
    head, _, rest = made.text.partition("## Quick start")
    made.data = data
    made.text = head + "\n".join(sections) + "\n## Quick start" + rest
    return made


def refresh(cfg: Config, run_dir: RunDir, stages: tuple[str, ...] = tuple(EXPORTS)) -> list[Path]:
    """Write the card of each of `stages`' exported folders that exists (main process); the paths written."""
    if not is_main():
        return []
    written = []
    for stage in stages:
        folder = run_dir.stage_dir(stage) / EXPORTS[stage]
        if not (run_dir.finished(stage) and folder.is_dir()):
            continue
        try:
            card(cfg, run_dir, stage).save(folder / "README.md")
        except Exception as e:  # the stage finished: a card that cannot be written is reported, not fatal
            logger.warning("%s: the model card was not written (%s: %s)", folder, type(e).__name__, e)
            continue
        written.append(folder / "README.md")
    return written
