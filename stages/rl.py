"""RL stage: GRPO with verifiable rewards on TRL's GRPOTrainer, from the handoff checkpoint.

Recipe: load the RL prompts (every gold answer must parse; those the handoff kept when it curated them) and
`handoff/model/`, build the rewards from the registry, train (resuming an interrupted attempt), save `final/` in HF
format, plot the reward curves.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
import trl
from accelerate.utils import gather_object
from transformers import TrainerCallback
from transformers.integrations import is_deepspeed_zero3_enabled
from trl import GRPOConfig
from trl.trainer.utils import selective_log_softmax, selective_log_softmax_and_entropy

from coldstart import cards, tracking
from coldstart.benchmarks import held_out
from coldstart.compatibility import use_fused_head
from coldstart.config import Config, DynamicSamplingSection, settings
from coldstart.data import rl_prompts
from coldstart.dynamic_sampling import PromptStream, constant_groups, groups_to_draw, join, pick, weighted_rewards
from coldstart.eval.evaluate import grade
from coldstart.generation import clean_generation_config
from coldstart.runtime import Runtime, num_processes
from coldstart.errors import ColdstartError
from coldstart.grading import parse_gold
from coldstart.plots import rl_curves
from coldstart.rewards import build_rewards
from coldstart.runs import RunDir, read_jsonl, write_jsonl
from coldstart.statistics import curve_area, mean_present
from coldstart.training import (
    CheckpointSeal, MetricsLog, NumericalGuard, TrainedPolicy, readable_console, resume_point, stage_keep, trainer_kwargs,
)

logger = logging.getLogger(__name__)

# what the console shows per logged step
CONSOLE = {
    "reward": "reward", "rewards/accuracy/mean": "accuracy", "zero_variance_share": "zero-variance groups",
    "completions/mean_length": "length", "completions/clipped_ratio": "clipped",
    "dynamic_sampling/rounds": "generation rounds",
}
REFILLS = "dynamic_sampling.json"  # in a checkpoint: how far the refill prompts were drawn


class ZeroVarianceShare:
    """The share of GRPO groups whose completions all got the same total reward (no advantage to learn from), for
    the trainer's logs as `zero_variance_share`, and a warning when it reaches `threshold`; beside it, with an
    `accuracy` reward, the share of groups all right or all wrong (`zero_variance_accuracy_share`), the figure the
    handoff's report gives before GRPO: a group all wrong whose format rewards differ has reward variance but
    nothing to say about correctness.

    TRL's own `frac_reward_zero_std` tests the group std with `isclose(std, 0)` (absolute tolerance 1e-8), and a
    group whose rewards are all 1.2 in float32 (accuracy 1 + format 0.2) has a std of 1.3e-7, so it misses most
    such groups. Here the reward functions are wrapped to see each generation batch's rewards, and a group counts
    when its weighted rewards differ by at most 1e-6 (`coldstart.dynamic_sampling.constant_groups`). Groups are
    consecutive runs of `num_generations` completions (TRL's order); in several processes each scores a contiguous
    slice of the generation batch, so the slices are gathered, in process order, before groups are counted. A batch
    that does not hold whole groups is not counted.
    """

    def __init__(self, funcs: list, weights: list[float], num_generations: int, threshold: float):
        self.names, self.weights, self.k, self.threshold = [f.__name__ for f in funcs], weights, num_generations, threshold
        self.funcs = [self._recording(f) for f in funcs]
        self.pending: dict[str, list[float]] = {}
        self.counts: dict[str, list[int]] = {}  # share -> [constant groups, groups] since the last pop

    def _recording(self, func):
        def recorded(*args, **kwargs):
            rewards = func(*args, **kwargs)
            self.pending[func.__name__] = rewards
            if len(self.pending) == len(self.names):
                self._count([self.pending[n] for n in self.names])
                self.pending = {}
            return rewards

        recorded.__name__ = func.__name__
        return recorded

    def _count(self, per_func: list[list[float]]) -> None:
        # a reward function's None (it did not score the completion) is NaN, as TRL has it
        rows = [[float("nan") if r is None else r for r in row] for row in zip(*per_func)]
        if num_processes() > 1:
            rows = gather_object(rows)
        if not rows or len(rows) % self.k:
            return
        rewards = torch.tensor(rows, dtype=torch.float64)
        self._add("zero_variance_share", constant_groups(weighted_rewards(rewards, self.weights), self.k))
        if "accuracy" in self.names:
            self._add("zero_variance_accuracy_share", constant_groups(rewards[:, self.names.index("accuracy")], self.k))

    def _add(self, name: str, constant: list[bool]) -> None:
        counts = self.counts.setdefault(name, [0, 0])
        counts[0] += sum(constant)
        counts[1] += len(constant)

    def pop(self, step: int) -> dict[str, float]:
        """The shares over every group of the generation batches since the last call (none when there was none)."""
        out = {name: constant / total for name, (constant, total) in self.counts.items()}
        self.counts = {}
        share = out.get("zero_variance_share")
        if share is not None and share >= self.threshold:
            logger.warning(
                "step %d: %.0f%% of GRPO groups have zero reward variance, so no learning signal; consider a larger "
                "rl.num_generations or prompts of better-matched difficulty", step, 100 * share
            )
        return out


class HeldOutCurve(TrainerCallback):
    """The learning curve: greedy accuracy on fixed held-out problems before the first GRPO step, every `every`
    steps and after the last, a line per point in `path` (those past the step a resume starts from are dropped).
    Not TRL's eval loop (`eval_strategy`): that samples at the rollouts' temperature, which differs between starts
    under `rl.temperature: auto`, and computes the loss too; this grades as the eval stage does. Each process
    grades its share of the problems (all of them under ZeRO-3, where every forward is collective)."""

    def __init__(self, policy: TrainedPolicy, problems, runtime: Runtime, path: Path, every: int,
                 max_new_tokens: int, batch_size: int):
        self.policy, self.problems, self.runtime, self.path = policy, problems, runtime, path
        self.every, self.max_new_tokens, self.batch_size = every, max_new_tokens, batch_size

    def _measure(self, step: int) -> None:
        generate = functools.partial(self.policy.generate, batch_size=self.batch_size)
        if is_deepspeed_zero3_enabled():  # each forward gathers the sharded weights: every process makes the same calls
            records = grade(generate, self.problems, self.max_new_tokens)
        else:
            records = self.runtime.map(lambda part: grade(generate, part, self.max_new_tokens), self.problems)
        if self.runtime.is_main:
            accuracy = sum(r["correct"] for r in records) / len(records)
            logger.info("rl: step %d, greedy accuracy on %d held-out problems %.1f%%", step, len(records), 100 * accuracy)
            write_jsonl(self.path, read_jsonl(self.path) + [{"step": step, "accuracy": accuracy, "problems": len(records)}])

    def on_train_begin(self, args, state, control, **kwargs):
        if self.runtime.is_main:  # a fresh start (an attempt that crashed before its first checkpoint) starts over
            kept = [p for p in read_jsonl(self.path) if p["step"] <= state.global_step] if state.global_step else []
            write_jsonl(self.path, kept)
        if state.global_step == 0:
            self._measure(0)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self._measure(state.global_step)


class GRPOTrainer(trl.GRPOTrainer):
    """TRL's GRPOTrainer, with two changes.

    With `fused=False`, the per-token log-probs and entropies of the completions come from the model's logits at the
    completion positions (TRL's `selective_log_softmax_and_entropy`) instead of TRL's fused LM head. Off CUDA that
    head projects every prompt position as well and recomputes the projection in backward tile by tile; the plain
    logits give the same values (to float error, tests/test_rl_logprobs.py) in less time (`make bench`). Multimodal
    inputs, MoE auxiliary losses and an fp32 LM head go to TRL's path.

    With `dynamic.enabled` (DAPO's dynamic sampling), each generation batch drops the groups whose weighted rewards
    do not vary and draws groups of new prompts until every process holds as many varying groups as its batch has,
    in at most `dynamic.max_rounds` rounds (then groups that did not vary fill it). Each round is TRL's own
    generation and scoring, so advantages are TRL's, computed per round; every process takes part in every round,
    drawing as many groups as the process furthest short needs. Refill prompts come from their own seeded order of
    the RL prompts (`PromptStream`), whose position a checkpoint keeps."""

    def __init__(self, *args, fused: bool = True, zero_variance: ZeroVarianceShare | None = None,
                 dynamic: DynamicSamplingSection | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fused, self.zero_variance = fused, zero_variance
        self.max_rounds = dynamic.max_rounds if dynamic and dynamic.enabled else 0
        local = self.args.generation_batch_size // self.accelerator.num_processes
        if self.max_rounds and local % self.num_generations:
            raise ColdstartError(
                f"rl.dynamic_sampling: each process's generation batch ({local} completions) must hold whole groups "
                f"of num_generations = {self.num_generations} for groups to be dropped and refilled")
        self.refills = PromptStream(len(self.train_dataset), self.args.seed + 1) if self.max_rounds else None
        self._scored: torch.Tensor | None = None

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        self._scored = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        return self._scored

    def _constant_groups(self, rows: int) -> list[bool]:
        """Whether each of this process's groups in the batch just scored got the same weighted reward throughout."""
        start = self.accelerator.process_index * rows
        scored = self._scored[start: start + rows].cpu()
        return constant_groups(weighted_rewards(scored, self.reward_weights.cpu()), self.num_generations)

    def _generate_and_score_completions(self, inputs):
        if not self.max_rounds or not self.model.training:
            return super()._generate_and_score_completions(inputs)
        k, rank, world = self.num_generations, self.accelerator.process_index, self.accelerator.num_processes
        needed = len(inputs) // k
        batches, groups, constant, rows = [], [], [], []
        logged = {name: len(values) for name, values in self._metrics["train"].items()}
        while True:
            rows.append(len(inputs))
            batches.append(super()._generate_and_score_completions(inputs))
            flags = self._constant_groups(len(inputs))
            groups += [(len(batches) - 1, g) for g in range(len(flags))]
            constant += flags
            counts = self.accelerator.gather(torch.tensor(
                [[max(needed - constant.count(False), 0), len(constant), constant.count(False)]],
                device=self.accelerator.device)).view(-1, 3)
            short, drawn, varying = counts[:, 0].max().item(), counts[:, 1].sum().item(), counts[:, 2].sum().item()
            if not short or len(batches) == self.max_rounds:
                break
            draw = groups_to_draw(short, varying / drawn, needed)
            ids = self.refills.take(draw * world)[rank * draw: (rank + 1) * draw]
            inputs = [self.train_dataset[i] for i in ids for _ in range(k)]
        self._merge_rounds(logged, rows)
        kept = pick(constant, needed)
        batch = join(batches, [(groups[g][0], groups[g][1] * k + i) for g in kept for i in range(k)],
                     self._tokenizer.pad_token_id, self.pad_to_multiple_of)
        mask = batch["completion_mask"] * batch.get("tool_mask", 1)
        batch["num_items_in_batch"] = self.accelerator.gather(mask.sum()).sum()
        left = self.accelerator.gather(torch.tensor([sum(constant[g] for g in kept)], device=self.accelerator.device))
        metrics = self._metrics["train"]
        metrics["dynamic_sampling/rounds"].append(len(batches))
        metrics["dynamic_sampling/groups_drawn"].append(drawn)
        metrics["dynamic_sampling/groups_dropped"].append(drawn - needed * world)
        metrics["dynamic_sampling/zero_variance_share_after"].append(left.sum().item() / (needed * world))
        return batch

    def _merge_rounds(self, logged: dict[str, int], rows: list[int]) -> None:
        """TRL logs its figures (reward, lengths, ...) once per call; a step's refill rounds are smaller than its
        first, so each figure logged once per round becomes one mean over the rounds weighted by their rows."""
        for name, values in self._metrics["train"].items():
            new = values[logged.get(name, 0):]
            if len(new) == len(rows) > 1:
                del values[logged.get(name, 0):]
                values.append(sum(v * n for v, n in zip(new, rows)) / sum(rows))

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.max_rounds and self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            with open(os.path.join(folder, REFILLS), "w") as f:
                json.dump({"drawn": self.refills.drawn}, f)

    def _load_optimizer_and_scheduler(self, checkpoint):
        """TRL's, and where the refill prompts' order stood (it is called with the checkpoint a resume starts from)."""
        super()._load_optimizer_and_scheduler(checkpoint)
        if self.max_rounds and checkpoint is not None and os.path.exists(os.path.join(checkpoint, REFILLS)):
            with open(os.path.join(checkpoint, REFILLS)) as f:
                self.refills.drawn = json.load(f)["drawn"]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """TRL's logs with the zero-variance shares added before any callback (the console, metrics.jsonl, a
        tracker) reads them."""
        if self.zero_variance and "loss" in logs:
            logs.update(self.zero_variance.pop(self.state.global_step))
        super().log(logs, start_time)

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **multimodal):
        if (self.fused or compute_aux_loss or self.args.cast_lm_head_to_fp32
                or any(v is not None for v in multimodal.values())):
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss,
                **multimodal,
            )
        batch_size = batch_size or input_ids.size(0)
        logps, entropies = [], []
        for start in range(0, input_ids.size(0), batch_size):
            ids, mask = input_ids[start: start + batch_size], attention_mask[start: start + batch_size]
            with self.accelerator.autocast():
                # position t predicts token t + 1: the last logits_to_keep + 1 positions, less the very last
                logits = model(input_ids=ids, attention_mask=mask, use_cache=False,
                               logits_to_keep=logits_to_keep + 1).logits[:, :-1].float()
            targets, row_mask = ids[:, -logits_to_keep:], mask[:, -logits_to_keep:]
            if compute_entropy:
                logp, entropy = selective_log_softmax_and_entropy(logits, targets, temperature=self.temperature,
                                                                  row_mask=row_mask)
                entropies.append(entropy)
            else:
                logp = selective_log_softmax(logits, targets, temperature=self.temperature, row_mask=row_mask)
            logps.append(logp)
        return torch.cat(logps), torch.cat(entropies) if compute_entropy else None, None


def check_answers(prompts) -> None:
    """Every gold answer must parse: an unparsable one would make the accuracy reward meaningless."""
    for sample in prompts:
        try:
            parse_gold(sample["answer"])
        except ColdstartError as e:
            raise ColdstartError(f"RL prompt {sample['id']!r}: field 'answer': {e}") from None


def curated(cfg: Config, prompts, handoff_dir: Path):
    """The prompts the handoff kept (`handoff.curate`), all of them when it did not curate. GRPO draws whole
    generation rounds of distinct prompts, so fewer kept prompts than a round draws would train on nothing."""
    chosen = read_jsonl(handoff_dir / "prompts.jsonl")
    if not chosen:
        return prompts
    kept = {r["id"] for r in chosen if r["kept"]}
    rl = cfg.rl
    per_round = rl.generation_round(num_processes())[0] // rl.num_generations
    if len(kept) < per_round:
        raise ColdstartError(
            f"{handoff_dir / 'prompts.jsonl'}: the handoff kept {len(kept)} of {len(chosen)} RL prompts, fewer than "
            f"the {per_round} one generation round draws (the others are all right or all wrong under the warmed "
            "policy); widen handoff.curate's band, set handoff.curate.keep_rest, or raise rl.num_prompts"
        )
    return prompts.filter(lambda row: row["id"] in kept)


def build_trainer(cfg: Config, output_dir: Path, prompts, model, tokenizer, runtime: Runtime | None = None) -> GRPOTrainer:
    rl = cfg.rl
    funcs, weights = build_rewards(rl.rewards, rl.max_completion_length, rl.reward_timeout)
    kwargs = trainer_kwargs(rl, output_dir, cfg.seed, tracking.trainer_args(cfg, "rl"), cfg.runtime.timeout_minutes)
    kwargs.setdefault("reward_weights", weights)
    args = GRPOConfig(**kwargs)
    signal = ZeroVarianceShare(funcs, kwargs["reward_weights"], rl.num_generations, rl.zero_std_warning)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=signal.funcs,
        args=args,
        train_dataset=prompts.select_columns(["prompt", "answer", "id"]),
        processing_class=tokenizer,
        callbacks=[MetricsLog(output_dir / "metrics.jsonl"), NumericalGuard("rl"), CheckpointSeal()],
        fused=use_fused_head(rl.logprobs), zero_variance=signal, dynamic=rl.dynamic_sampling,
    )
    if rl.curve_every and runtime is not None:
        problems, _ = held_out(cfg)  # the eval stage's, the curve's the first of them
        trainer.add_callback(HeldOutCurve(
            TrainedPolicy(trainer), problems.select(range(min(rl.curve_problems, len(problems)))), runtime,
            output_dir / "curve.jsonl", rl.curve_every, cfg.eval.max_new_tokens, cfg.eval.batch_size))
    readable_console(trainer, "rl", CONSOLE)
    return trainer


def fingerprint(cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    e = cfg.eval
    return {
        "seed": cfg.seed,
        "handoff": run_dir.finished("handoff").get("outputs_sha256"),
        "data": settings(cfg.data),
        "rl": settings(cfg.rl),
        # the learning curve grades the eval's first problems with its generation length
        **({"curve": {"num_problems": e.num_problems, "max_new_tokens": e.max_new_tokens}} if cfg.rl.curve_every else {}),
    }


def sampling_temperature(cfg: Config, run_dir: RunDir) -> float:
    """rl.temperature, or with auto the one the handoff calibrated for this warmed policy."""
    if cfg.rl.temperature != "auto":
        return cfg.rl.temperature
    calibration = run_dir.finished("handoff")["metrics"].get("calibration")
    if not calibration:
        raise ColdstartError("rl.temperature: auto, but the handoff calibrated no temperature; run it again with "
                             "rl.temperature: auto (coldstart run CONFIG --force handoff)")
    return calibration["chosen"]


def run(cfg: Config, run_dir: RunDir, runtime: Runtime, force: bool = False) -> dict[str, Any]:
    handoff_dir = run_dir.require("handoff", "rl")
    cfg = dataclasses.replace(cfg, rl=dataclasses.replace(cfg.rl, temperature=sampling_temperature(cfg, run_dir)))
    model_dir = handoff_dir / "model"

    def body(work: Path) -> dict[str, Any]:
        prompts, stats = rl_prompts(cfg.data, cfg.rl.num_prompts, cfg.seed)
        pool = len(prompts)
        prompts = curated(cfg, prompts, handoff_dir)
        check_answers(prompts)
        tokenizer = runtime.load_tokenizer(model_dir, cfg.model.trust_remote_code)
        model = runtime.load_model(cfg.model, model_dir, train=True)
        # GRPO samples with the run's settings: TRL's generation config fills what it leaves unset (a
        # no_repeat_ngram_size, suppressed tokens) from the model's own, so the model gets only its token ids while
        # it trains, and its own config back for the saved folder
        own = model.generation_config
        model.generation_config = clean_generation_config(own)
        with tracking.stage_env(cfg, "rl"):
            trainer = build_trainer(cfg, work, prompts, model, tokenizer, runtime)
            result = trainer.train(resume_from_checkpoint=resume_point(work))
        model.generation_config = own
        trainer.save_model(str(work / "final"))
        if not runtime.is_main:  # the report reads what the main process logged, and only its metrics are recorded
            return {}
        metrics = read_jsonl(work / "metrics.jsonl")
        rl_curves(metrics, work / "rewards.png")
        logged = [m for m in metrics if "reward" in m]
        first, last = (logged[0], logged[-1]) if logged else ({}, {})
        curve = read_jsonl(work / "curve.jsonl")
        return {
            **({"curve": curve, "curve_area": curve_area([p["step"] for p in curve], [p["accuracy"] for p in curve])}
               if curve else {}),
            "steps": trainer.state.global_step,
            "temperature": cfg.rl.temperature,
            "train_runtime_s": result.metrics.get("train_runtime"),
            "reward_first": first.get("reward"),
            "reward_last": last.get("reward"),
            "reward_mean": sum(m["reward"] for m in logged) / len(logged) if logged else None,
            # a log window without a whole generation batch has no share: it does not count as 0
            # under dynamic sampling: over every group drawn, before the constant ones were dropped
            "zero_variance_share_mean": mean_present([m.get("zero_variance_share") for m in logged]),
            "zero_variance_accuracy_share_mean": mean_present([m.get("zero_variance_accuracy_share") for m in logged]),
            "clipped_ratio_mean": (
                sum(m.get("completions/clipped_ratio", 0) for m in logged) / len(logged) if logged else None
            ),
            "prompts": stats.to_dict() | {"pool": pool, "used": len(prompts)},
            **({"dynamic_sampling": {
                name: mean_present([m.get(f"dynamic_sampling/{name}") for m in logged])
                for name in ("rounds", "groups_drawn", "groups_dropped", "zero_variance_share_after")
            }} if cfg.rl.dynamic_sampling.enabled else {}),
        }

    entry = run_dir.run_stage("rl", fingerprint(cfg, run_dir), body, force=force,
                              keep=stage_keep(cfg.rl.keep_checkpoints))
    cards.refresh(cfg, run_dir, ("rl",))
    return entry
