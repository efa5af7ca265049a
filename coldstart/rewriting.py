"""Delayed, low-frequency rewriting of persistently incompatible demonstrations.

Each sample's NLL is tracked as a moving average whenever it is trained on. From step `start`, every `every`
steps, a round picks the `fraction` of the data set with the highest NLL among the samples that the rest of training
will draw again (`coldstart.sampling.VisitPlan`): a rewrite of a sample never drawn again changes nothing. A picked
sample already trained on is ranked by its moving-average NLL (the paper's "persistently incompatible"); one not yet
drawn (the rest of a first epoch) is scored by the current policy. Each picked sample, with probability
`replace_prob`, gets `num_candidates` samples from the current policy. With `verify` on, the most compatible
candidate whose final answer math-verify finds equal to the gold answer replaces the target, and a sample with no
verified candidate is left as it was; with `verify` off, the first candidate replaces it (the paper's rule). The
replacement is what later batches train on, and how often they do is counted. Every attempt is written to
`rewrites.jsonl`; once training ends, each accepted one carries `trained_on`, the number of times it was trained on.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from trl.models import unwrap_model_for_generation

from coldstart import distributed, faults, generation
from coldstart.compatibility import score, tokenize_sample
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


def choose(candidates: list[str], compat: list[float], verified: list[bool], verify: bool) -> tuple[int | None, str]:
    """Which candidate replaces the target, and why; None leaves the target as it was."""
    if not candidates:
        return None, "no candidate"
    if not verify:
        return 0, "accepted unverified (verify: false)"
    ok = [i for i, v in enumerate(verified) if v]
    if not ok:
        return None, "no candidate has the reference answer"
    return max(ok, key=lambda i: compat[i]), "most compatible verified candidate"


class Rewriter(TrainerCallback):
    """Runs rewriting rounds on a CADFTTrainer's data as training goes (a Trainer callback)."""

    def __init__(self, section: RewriteSection, trainer, train_dataset, tokenizer, log_path: Path, seed: int):
        self.section, self.trainer, self.tokenizer = section, trainer, tokenizer
        self.prompts = train_dataset["prompt"]
        self.completions = train_dataset["completion"]
        names = train_dataset.column_names
        self.answers = train_dataset["answer"] if "answer" in names else None
        if self.answers is None and section.verify:
            raise ColdstartError("rewriting verifies each candidate against the gold answer: the train dataset needs "
                                 "an `answer` column (or turn verification off, as the paper has it)")
        self.ids = train_dataset["id"] if "id" in names else [str(i) for i in range(len(train_dataset))]
        self.log_path, self.seed = Path(log_path), seed
        self.max_length = trainer.args.max_length
        self.plan = trainer.visit_plan()
        self.row_index = trainer.train_dataset["sample_index"]  # trainer row -> sample index (TRL may drop rows)
        self.moving_nll: dict[int, float] = {}
        self.current: dict[int, str] = {}  # accepted replacement text per sample index
        self.trained_on: Counter = Counter()  # (round step, sample index) -> times its rewrite was trained on
        trainer.nll_observers.append(self.observe)
        trainer.rewriter = self

    def check(self, total_steps: int) -> None:
        """Before training: refuse a schedule without a round, warn about rounds with fewer samples left to pick
        from than a round picks."""
        problem = schedule_problem(self.section.start, self.section.every, total_steps)
        if problem:
            raise ColdstartError(f"warmup.rewrite.start={self.section.start:g}: {problem}")
        k = num_picks(self.section.fraction, len(self.prompts))
        for step in round_steps(self.section.start, self.section.every, total_steps):
            left = len(self.plan.visits_after(step, total_steps))
            if left < k:
                logger.warning(
                    "warmup.rewrite: the round after step %d can pick only %d samples (of %d asked by "
                    "warmup.rewrite.fraction): training draws no others after it", step, left, k,
                )

    def observe(self, index: list[int], nll: list[float], rewrite_step: list[int]) -> None:
        d = self.section.nll_decay
        for i, n, step in zip(index, nll, rewrite_step):
            self.moving_nll[i] = n if i not in self.moving_nll else d * self.moving_nll[i] + (1 - d) * n
            if step:
                self.trained_on[(step, i)] += 1

    def on_step_end(self, args, state, control, **kwargs):
        if is_round(state.global_step, self.section.start, self.section.every, state.max_steps):
            self.round(state.global_step, state.max_steps)

    def on_train_end(self, args, state, control, **kwargs):
        """Write into each accepted attempt how many times training drew its rewrite."""
        if not distributed.is_main() or not self.log_path.is_file():
            return
        records = [json.loads(line) for line in self.log_path.read_text(encoding="utf-8").splitlines()]
        for r in records:
            if r["accepted"]:
                r["trained_on"] = self.trained_on[(r["step"], r["index"])]
        self.log_path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")

    def candidates(self, step: int, total_steps: int) -> dict[int, tuple[float, str, int]]:
        """Samples training draws again after `step`: (the NLL they are ranked by, where it comes from, visits)."""
        visits = Counter()
        for row, n in self.plan.visits_after(step, total_steps).items():
            visits[self.row_index[row]] += n
        out = {i: (self.moving_nll[i], "moving average", n) for i, n in visits.items() if i in self.moving_nll}
        unseen = sorted(i for i in visits if i not in self.moving_nll)
        if unseen:
            with unwrap_model_for_generation(self.trainer.model_wrapped, self.trainer.accelerator) as model:
                scored = score(
                    model, self.tokenizer,
                    [{"prompt": self.prompts[i], "completion": self._as_completion(i, self._current_text(i))}
                     for i in unseen],
                    self.max_length, fused=self.trainer.fused,
                )
            out.update({i: (r["nll"], "current policy", visits[i]) for i, r in zip(unseen, scored)})
        return out

    def round(self, step: int, total_steps: int) -> list[dict[str, Any]]:
        """One rewriting round at `step`: returns the attempts it logged.

        In several processes every one generates and scores (sharded models need all of them for each forward),
        on the main process's candidates, and the main process's decisions are the ones every process applies.
        """
        s = self.section
        rng = random.Random(f"rewrite-{self.seed}-{step}")
        ranked = self.candidates(step, total_steps)
        picked = distributed.from_main(pick({i: v[0] for i, v in ranked.items()}, num_picks(s.fraction, len(self.prompts))))
        chosen = [i for i in picked if rng.random() < s.replace_prob]
        records = [self._record(step, i, ranked[i], accepted=False, reason="not drawn (replace_prob)")
                   for i in picked if i not in chosen]
        if chosen:
            records += self._attempt(step, chosen, ranked)
        records = distributed.from_main(records)
        for r in records:
            if r["accepted"]:
                self.apply(r["index"], r["new"], step)
        faults.reach("rewrite")
        if distributed.is_main():
            with self.log_path.open("a", encoding="utf-8") as handle:
                for r in records:
                    handle.write(json.dumps(r) + "\n")
            logger.info("warmup: rewriting round after step %d: %d picked among %d drawn again, %d accepted", step,
                        len(picked), len(ranked), sum(r["accepted"] for r in records))
        return records

    def _attempt(self, step: int, chosen: list[int], ranked: dict[int, tuple[float, str, int]]) -> list[dict[str, Any]]:
        """Candidates for each chosen sample and the decision on each (not applied yet)."""
        s, trainer = self.section, self.trainer
        records = []
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as model:
            prompts = [self._generation_prompt(i) for i in chosen]
            outputs = generation.generate(
                model, self.tokenizer, prompts, num_samples=s.num_candidates, max_new_tokens=s.max_new_tokens,
                temperature=s.temperature, top_p=s.top_p, seed=self.seed + step,
            )
            outputs = distributed.from_main(outputs)
            for i, completions in zip(chosen, outputs):
                texts = [c.text for c in completions if c.finished and c.text.strip()]
                current = self._current_text(i)
                scored = score(
                    model, self.tokenizer,
                    [{"prompt": self.prompts[i], "completion": self._as_completion(i, t)} for t in [current, *texts]],
                    self.max_length, fused=trainer.fused,
                )
                compat = [r["compatibility"] for r in scored]
                verified = [is_correct(self.answers[i], t) for t in texts] if self.answers is not None else [False] * len(texts)
                best, reason = choose(texts, compat[1:], verified, s.verify)
                records.append(
                    self._record(
                        step, i, ranked[i], accepted=best is not None, reason=reason, old=current,
                        new=texts[best] if best is not None else None, old_compat=compat[0],
                        new_compat=compat[1 + best] if best is not None else None,
                        candidates=len(completions), usable=len(texts), verified=sum(verified),
                    )
                )
        return records

    def apply(self, index: int, text: str, step: int) -> None:
        """Make `text` (accepted at `step`) the target that later batches train on for sample `index`."""
        row = tokenize_sample(self.tokenizer, self.prompts[index], self._as_completion(index, text), self.max_length)
        self.trainer.overrides[index] = (step, row)
        self.current[index] = text

    def _current_text(self, index: int) -> str:
        if index in self.current:
            return self.current[index]
        completion = self.completions[index]
        return completion[-1]["content"] if isinstance(completion, list) else completion

    def _as_completion(self, index: int, text: str) -> Any:
        original = self.completions[index]
        return [{"role": "assistant", "content": text}] if isinstance(original, list) else text

    def _generation_prompt(self, index: int) -> Any:
        prompt = self.prompts[index]
        if not self.section.hint_reference:
            return prompt
        hint = HINT.format(reference=self._current_text(index))
        if isinstance(prompt, list):
            return prompt[:-1] + [{**prompt[-1], "content": prompt[-1]["content"] + "\n\n" + hint}]
        return f"{prompt}\n\n{hint}\n"

    def _record(self, step: int, index: int, ranked: tuple[float, str, int], accepted: bool, reason: str,
                **fields: Any) -> dict[str, Any]:
        nll, nll_from, visits = ranked
        return {"step": step, "id": self.ids[index], "index": index, "nll": nll, "nll_from": nll_from,
                "visits_left": visits, "hint": self.section.hint_reference, "accepted": accepted, "reason": reason,
                **fields}

    # -- resume -----------------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {"moving_nll": {str(k): v for k, v in self.moving_nll.items()},
                "trained_on": [[step, i, n] for (step, i), n in self.trained_on.items()]}

    def restore(self, state: dict[str, Any], step: int) -> None:
        """Back to a checkpoint at `step`: its moving averages, and the accepted rewrites up to that step."""
        self.moving_nll = {int(k): v for k, v in state.get("moving_nll", {}).items()}
        self.trained_on = Counter({(s, i): n for s, i, n in state.get("trained_on", [])})
        if not self.log_path.is_file():
            return
        kept = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record["step"] > step:
                continue  # a round after the checkpoint: it will run again
            kept.append(line)
            if record["accepted"]:
                self.apply(record["index"], record["new"], record["step"])
        if distributed.is_main():
            self.log_path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
