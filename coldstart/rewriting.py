"""Delayed, low-frequency rewriting of persistently incompatible demonstrations: the policy (which samples, which
candidate). The per-sample state it reads and the targets it sets belong to the trainer's `SampleStore`.

Each sample's NLL is tracked (by the store) as a moving average whenever it is trained on. From step `start`, every
`every` steps, a round picks the `fraction` of the data set with the highest NLL among the samples that the rest of
training will draw again (`coldstart.sampling.VisitPlan`): a rewrite of a sample never drawn again changes nothing.
The shortlist is the samples already trained on with the highest moving-average NLL (the paper's "persistently
incompatible") and the samples not drawn yet (the rest of a first epoch); all of it is scored by the current policy,
so that both kinds are ranked on one scale. Each picked sample, with probability `replace_prob`, gets
`num_candidates` samples from the current policy; a candidate is usable when it ended by itself, fits `max_length`
with its end of turn, and is more compatible than the target it would replace. With `verify` on, the most
compatible usable candidate whose final answer math-verify finds equal to the gold answer replaces the target, and a
sample with no such candidate is left as it was; with `verify` off, the first usable candidate replaces it (the
paper's rule). The replacement is what later batches train on, and how often they do is counted. Every attempt goes to
the store, and `rewrites.jsonl` is written from it after each round; once training ends, each accepted attempt there
carries `trained_on`, the number of times it was trained on.

The rewriter is handed what it uses, not the trainer: the store, the policy (`Policy`: scoring and sampling with
the model as it trains, on its device), which samples the rest of training draws, and the training row's length
limit.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Protocol

from transformers import TrainerCallback

from coldstart import faults, runtime
from coldstart.config import RewriteSection
from coldstart.errors import ColdstartError
from coldstart.generation import Completion
from coldstart.grading import is_correct
from coldstart.runs import write_jsonl
from coldstart.sample_store import SampleStore
from coldstart.sampling import is_round, round_steps, schedule_problem

logger = logging.getLogger(__name__)

HINT = (
    "Here is a reference solution:\n\n{reference}\n\nRestate this solution in your own words, step by step, and end "
    "with the final answer as \\boxed{{N}}."
)


def num_picks(fraction: float, num_samples: int) -> int:
    return max(1, round(fraction * num_samples))


def pick(nll: dict[int, float], k: int) -> list[int]:
    """The `k` samples with the highest NLL (ties by index)."""
    return sorted(nll, key=lambda i: (-nll[i], i))[:k]


def choose(candidates: list[str], compat: list[float], verified: list[bool], verify: bool,
           current: float) -> tuple[int | None, str]:
    """Which candidate replaces the target whose compatibility is `current`, and why; None leaves it as it was. A
    candidate less compatible than the target would move the data away from the policy: never taken."""
    if not candidates:
        return None, "no usable candidate"
    better = [i for i, c in enumerate(compat) if c > current]
    if not better:
        return None, "no candidate more compatible than the current target"
    if not verify:
        return better[0], "accepted unverified (verify: false)"
    ok = [i for i in better if verified[i]]
    if not ok:
        return None, "no more compatible candidate has the reference answer"
    return max(ok, key=lambda i: compat[i]), "most compatible verified candidate"


class Policy(Protocol):
    """The model being trained, as the rewriter uses it (every process calls both together)."""

    def score(self, samples: list[dict[str, Any]]) -> list[dict[str, float]]:
        """`coldstart.compatibility.score`'s record for each prompt/completion sample."""

    def generate(self, prompts: list[Any], num_samples: int, max_new_tokens: int, temperature: float, top_p: float,
                 seed: int) -> list[list[Completion]]:
        """`coldstart.generation.generate`'s completions of each prompt."""


class Rewriter(TrainerCallback):
    """Runs rewriting rounds on a warm-up's samples as training goes (a Trainer callback).

    `visits_after(step, total_steps)`: how many times the rest of training draws each sample (by sample index) after
    `step`. `max_length`: the training rows' limit (None: none)."""

    def __init__(self, section: RewriteSection, store: SampleStore, policy: Policy,
                 visits_after: Callable[[int, int], Counter], max_length: int | None, log_path: Path, seed: int):
        self.section, self.store, self.policy, self.visits_after = section, store, policy, visits_after
        names = store.dataset.column_names
        if "answer" not in names and section.verify:
            raise ColdstartError("rewriting verifies each candidate against the gold answer: the train dataset needs "
                                 "an `answer` column (or turn verification off, as the paper has it)")
        self.has_ids = "id" in names
        self.max_length, self.log_path, self.seed = max_length, Path(log_path), seed

    def check(self, total_steps: int) -> None:
        """Before training: refuse a schedule without a round, warn about rounds with fewer samples left to pick
        from than a round picks."""
        problem = schedule_problem(self.section.start, self.section.every, total_steps)
        if problem:
            raise ColdstartError(f"warmup.rewrite.start={self.section.start:g}: {problem}")
        k = num_picks(self.section.fraction, len(self.store))
        for step in round_steps(self.section.start, self.section.every, total_steps):
            left = len(self.visits_after(step, total_steps))
            if left < k:
                logger.warning(
                    "warmup.rewrite: the round after step %d can pick only %d samples (of %d asked by "
                    "warmup.rewrite.fraction): training draws no others after it", step, left, k,
                )

    def on_train_begin(self, args, state, control, **kwargs):
        """The log as the store has it: on a resume, without the rounds after the checkpoint, which run again."""
        self.write_log()

    def on_step_end(self, args, state, control, **kwargs):
        if is_round(state.global_step, self.section.start, self.section.every, state.max_steps):
            self.round(state.global_step, state.max_steps)

    def on_train_end(self, args, state, control, **kwargs):
        self.write_log()

    def write_log(self) -> None:
        """`rewrites.jsonl` from the store's attempts (main process)."""
        if runtime.is_main():
            write_jsonl(self.log_path, self.store.attempts_log())

    def _score(self, texts: dict[int, list[str]]) -> dict[int, list[dict[str, float]]]:
        """The current policy's scores of each sample's texts as its completion."""
        flat = [(i, t) for i, ts in texts.items() for t in ts]
        scored = self.policy.score([self.store.as_sample(i, t) for i, t in flat])
        out: dict[int, list[dict[str, float]]] = {}
        for (i, _), r in zip(flat, scored):
            out.setdefault(i, []).append(r)
        return out

    def candidates(self, step: int, total_steps: int) -> dict[int, tuple[float, float | None, int]]:
        """The shortlist of samples training draws again after `step`: (their current-policy NLL, their moving NLL
        or None when not trained on yet, visits left)."""
        visits = self.visits_after(step, total_steps)
        moving = self.store.moving_nll
        seen = pick({i: moving[i] for i in visits if i in moving}, num_picks(self.section.fraction, len(self.store)))
        shortlist = sorted(seen + [i for i in visits if i not in moving])
        scored = self._score({i: [self.store.text(i)] for i in shortlist})
        return {i: (scored[i][0]["nll"], moving.get(i), visits[i]) for i in shortlist}

    def round(self, step: int, total_steps: int) -> list[dict[str, Any]]:
        """One rewriting round at `step`: returns the attempts it logged.

        In several processes every one generates and scores (sharded models need all of them for each forward),
        on the main process's candidates, and the main process's decisions are the ones every process applies.
        """
        s = self.section
        rng = random.Random(f"rewrite-{self.seed}-{step}")
        ranked = self.candidates(step, total_steps)
        picked = runtime.from_main(pick({i: v[0] for i, v in ranked.items()}, num_picks(s.fraction, len(self.store))))
        chosen = [i for i in picked if rng.random() < s.replace_prob]
        records = [self._record(step, i, ranked[i], accepted=False, reason="not drawn (replace_prob)")
                   for i in picked if i not in chosen]
        if chosen:
            records += self._attempt(step, chosen, ranked)
        records = runtime.from_main(records)
        self.store.record_round(records)
        faults.reach("rewrite")
        self.write_log()
        if runtime.is_main():
            logger.info("warmup: rewriting round after step %d: %d picked among %d drawn again, %d accepted", step,
                        len(picked), len(ranked), sum(r["accepted"] for r in records))
        return records

    def _fits(self, index: int, text: str) -> bool:
        """Whether the candidate, as a training row, fits `max_length` with its end of turn (a truncated one would
        be trained without it, which `warmup.too_long: drop` keeps out of the data)."""
        return self.max_length is None or len(self.store.tokenize(index, text)["input_ids"]) <= self.max_length

    def _attempt(self, step: int, chosen: list[int], ranked: dict[int, tuple[float, float | None, int]]) -> list[dict[str, Any]]:
        """Candidates for each chosen sample and the decision on each (not applied yet)."""
        s = self.section
        prompts = [self._generation_prompt(i) for i in chosen]
        outputs = self.policy.generate(prompts, num_samples=s.num_candidates, max_new_tokens=s.max_new_tokens,
                                       temperature=s.temperature, top_p=s.top_p, seed=self.seed + step)
        outputs = runtime.from_main(outputs)
        finished = {i: [c.text for c in completions if c.finished and c.text.strip()]
                    for i, completions in zip(chosen, outputs)}
        texts = {i: [t for t in ts if self._fits(i, t)] for i, ts in finished.items()}
        scored = self._score({i: ts for i, ts in texts.items() if ts})
        records = []
        for i, completions in zip(chosen, outputs):
            candidates = scored.get(i, [])
            current = math.exp(-ranked[i][0])  # the current target, scored by this policy for the ranking
            answer = self.store.sample(i).get("answer")
            verified = [answer is not None and is_correct(answer, t) for t in texts[i]]
            best, reason = choose(texts[i], [r["compatibility"] for r in candidates], verified, s.verify, current)
            records.append(
                self._record(
                    step, i, ranked[i], accepted=best is not None, reason=reason, old=self.store.text(i),
                    new=texts[i][best] if best is not None else None, old_compat=current,
                    new_compat=candidates[best]["compatibility"] if best is not None else None,
                    new_nll=candidates[best]["nll"] if best is not None else None,
                    candidates=len(completions), too_long=len(finished[i]) - len(texts[i]),
                    usable=len(texts[i]), verified=sum(verified),
                )
            )
        return records

    def _generation_prompt(self, index: int) -> Any:
        prompt = self.store.sample(index)["prompt"]
        if not self.section.hint_reference:
            return prompt
        hint = HINT.format(reference=self.store.text(index))
        if isinstance(prompt, list):
            return prompt[:-1] + [{**prompt[-1], "content": prompt[-1]["content"] + "\n\n" + hint}]
        return f"{prompt}\n\n{hint}\n"

    def _record(self, step: int, index: int, ranked: tuple[float, float | None, int], accepted: bool, reason: str,
                **fields: Any) -> dict[str, Any]:
        nll, moving, visits = ranked
        sample_id = self.store.sample(index)["id"] if self.has_ids else str(index)
        return {"step": step, "id": sample_id, "index": index, "nll": nll, "moving_nll": moving, "visits_left": visits, "hint": self.section.hint_reference,
                "accepted": accepted, "reason": reason, **fields}
