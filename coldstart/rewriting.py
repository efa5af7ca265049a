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
paper's rule). The replacement is what later batches train on, and how often they do is counted. Every attempt is
written to `rewrites.jsonl`; once training ends, each accepted one carries `trained_on`, the number of times it was
trained on.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections import Counter
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from trl.models import unwrap_model_for_generation

from coldstart import faults, runtime, generation
from coldstart.compatibility import score
from coldstart.config import RewriteSection
from coldstart.errors import ColdstartError
from coldstart.grading import is_correct
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


class Rewriter(TrainerCallback):
    """Runs rewriting rounds on a CADFTTrainer's data as training goes (a Trainer callback)."""

    def __init__(self, section: RewriteSection, trainer, log_path: Path, seed: int):
        self.section, self.trainer, self.store = section, trainer, trainer.store
        self.tokenizer = trainer.processing_class
        names = self.store.dataset.column_names
        if "answer" not in names and section.verify:
            raise ColdstartError("rewriting verifies each candidate against the gold answer: the train dataset needs "
                                 "an `answer` column (or turn verification off, as the paper has it)")
        self.has_ids = "id" in names
        self.log_path, self.seed = Path(log_path), seed
        self.max_length = trainer.args.max_length
        self.plan = trainer.visit_plan()

    def check(self, total_steps: int) -> None:
        """Before training: refuse a schedule without a round, warn about rounds with fewer samples left to pick
        from than a round picks."""
        problem = schedule_problem(self.section.start, self.section.every, total_steps)
        if problem:
            raise ColdstartError(f"warmup.rewrite.start={self.section.start:g}: {problem}")
        k = num_picks(self.section.fraction, len(self.store))
        for step in round_steps(self.section.start, self.section.every, total_steps):
            left = len(self.plan.visits_after(step, total_steps))
            if left < k:
                logger.warning(
                    "warmup.rewrite: the round after step %d can pick only %d samples (of %d asked by "
                    "warmup.rewrite.fraction): training draws no others after it", step, left, k,
                )

    def on_step_end(self, args, state, control, **kwargs):
        if is_round(state.global_step, self.section.start, self.section.every, state.max_steps):
            self.round(state.global_step, state.max_steps)

    def on_train_end(self, args, state, control, **kwargs):
        """Write into each accepted attempt how many times training drew its rewrite."""
        if not runtime.is_main() or not self.log_path.is_file():
            return
        records = [json.loads(line) for line in self.log_path.read_text(encoding="utf-8").splitlines()]
        for r in records:
            if r["accepted"]:
                r["trained_on"] = self.store.trained_on[(r["step"], r["index"])]
        self.log_path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")

    def _score(self, model, texts: dict[int, list[str]]) -> dict[int, list[dict[str, float]]]:
        """The current policy's scores of each sample's texts as its completion."""
        flat = [(i, t) for i, ts in texts.items() for t in ts]
        scored = score(model, self.tokenizer, [self.store.as_sample(i, t) for i, t in flat], self.max_length,
                       fused=self.trainer.fused)
        out: dict[int, list[dict[str, float]]] = {}
        for (i, _), r in zip(flat, scored):
            out.setdefault(i, []).append(r)
        return out

    def candidates(self, step: int, total_steps: int) -> dict[int, tuple[float, float | None, int]]:
        """The shortlist of samples training draws again after `step`: (their current-policy NLL, their moving NLL
        or None when not trained on yet, visits left)."""
        visits = Counter()
        for row, n in self.plan.visits_after(step, total_steps).items():
            visits[self.trainer.row_samples[row]] += n
        moving = self.store.moving_nll
        seen = pick({i: moving[i] for i in visits if i in moving}, num_picks(self.section.fraction, len(self.store)))
        shortlist = sorted(seen + [i for i in visits if i not in moving])
        with unwrap_model_for_generation(self.trainer.model_wrapped, self.trainer.accelerator) as model:
            scored = self._score(model, {i: [self.store.text(i)] for i in shortlist})
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
        for r in records:
            if r["accepted"]:
                self.store.accept(r["index"], r["new"], step, r["new_nll"])
        faults.reach("rewrite")
        if runtime.is_main():
            with self.log_path.open("a", encoding="utf-8") as handle:
                for r in records:
                    handle.write(json.dumps(r) + "\n")
            logger.info("warmup: rewriting round after step %d: %d picked among %d drawn again, %d accepted", step,
                        len(picked), len(ranked), sum(r["accepted"] for r in records))
        return records

    def _fits(self, index: int, text: str) -> bool:
        """Whether the candidate, as a training row, fits `max_length` with its end of turn (a truncated one would
        be trained without it, which `warmup.too_long: drop` keeps out of the data)."""
        return self.max_length is None or len(self.store.tokenize(index, text)["input_ids"]) <= self.max_length

    def _attempt(self, step: int, chosen: list[int], ranked: dict[int, tuple[float, float | None, int]]) -> list[dict[str, Any]]:
        """Candidates for each chosen sample and the decision on each (not applied yet)."""
        s, trainer = self.section, self.trainer
        records = []
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as model:
            prompts = [self._generation_prompt(i) for i in chosen]
            outputs = generation.generate(
                model, self.tokenizer, prompts, num_samples=s.num_candidates, max_new_tokens=s.max_new_tokens,
                temperature=s.temperature, top_p=s.top_p, seed=self.seed + step,
            )
            outputs = runtime.from_main(outputs)
            finished = {i: [c.text for c in completions if c.finished and c.text.strip()]
                        for i, completions in zip(chosen, outputs)}
            texts = {i: [t for t in ts if self._fits(i, t)] for i, ts in finished.items()}
            scored = self._score(model, {i: ts for i, ts in texts.items() if ts})
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

    def truncate_log(self, step: int) -> None:
        """Back to a checkpoint at `step` (main process): the attempts of later rounds are dropped, as they will
        run again."""
        if not self.log_path.is_file():
            return
        kept = [line for line in self.log_path.read_text(encoding="utf-8").splitlines() if json.loads(line)["step"] <= step]
        self.log_path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
