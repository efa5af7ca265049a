"""Per-sample warm-up state, with one owner: the CADFT trainer holds a `SampleStore`, updates it from every trained
micro-batch, and saves it with each checkpoint; rewriting asks it which targets are current and hands it each
round's attempts, whose accepted ones become the new targets.

It reads the samples themselves from the data set (prompt, completion, answer, id; not copied into memory) and
keeps, by sample index (the row's position in that data set):
- the moving-average NLL of the sample's current target (reset to the new target's NLL when a rewrite is accepted,
  so that a rewritten sample is not picked again for the target it no longer has);
- visits: how many times training drew the sample;
- every rewriting attempt, in order (the one record of them: the current targets are its accepted attempts, and
  `warmup/rewrites.jsonl` is written from it);
- the current target of a rewritten sample: the text, the step of the round that accepted it, its tokenized row;
- trained_on: how many times each accepted rewrite was trained on.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from coldstart.compatibility import tokenize_sample


@dataclass(frozen=True)
class Target:
    step: int  # the rewriting round that accepted it
    text: str
    row: dict[str, list[int]]  # tokenized as the collator takes it (input_ids, completion_mask)


class SampleStore:
    def __init__(self, nll_decay: float, dataset, tokenizer):
        """`dataset`: prompt/completion rows (TRL's formats), the sample index being the row's position."""
        self.nll_decay, self.dataset, self.tokenizer = nll_decay, dataset, tokenizer
        self.moving_nll: dict[int, float] = {}
        self.visits: Counter = Counter()
        self.attempts: list[dict[str, Any]] = []
        self.targets: dict[int, Target] = {}
        self.trained_on: Counter = Counter()  # (round step, sample index) -> times its rewrite was trained on

    def observe(self, index: list[int], nll: list[float], rewrite_step: list[int]) -> None:
        """One trained micro-batch (every process's rows): each sample's NLL and the round of the target it had."""
        d = self.nll_decay
        for i, n, step in zip(index, nll, rewrite_step):
            self.visits[i] += 1
            self.moving_nll[i] = n if i not in self.moving_nll else d * self.moving_nll[i] + (1 - d) * n
            if step:
                self.trained_on[(step, i)] += 1

    def rewrite_step(self, index: int) -> int:
        """The round that set the sample's current target (0: the original demonstration)."""
        target = self.targets.get(index)
        return target.step if target else 0

    def target(self, index: int) -> Target | None:
        return self.targets.get(index)

    def __len__(self) -> int:
        return len(self.dataset)

    def sample(self, index: int) -> dict[str, Any]:
        return self.dataset[index]

    def text(self, index: int) -> str:
        """The sample's current target text: its accepted rewrite, else the demonstration."""
        if index in self.targets:
            return self.targets[index].text
        completion = self.dataset[index]["completion"]
        return completion[-1]["content"] if isinstance(completion, list) else completion

    def as_sample(self, index: int, text: str) -> dict[str, Any]:
        """Sample `index` with `text` as its completion, in the data set's format (plain or conversational)."""
        row = self.dataset[index]
        completion = [{"role": "assistant", "content": text}] if isinstance(row["completion"], list) else text
        return {"prompt": row["prompt"], "completion": completion}

    def tokenize(self, index: int, text: str) -> dict[str, list[int]]:
        """The training row of sample `index` with `text` as its completion (untruncated)."""
        sample = self.as_sample(index, text)
        return tokenize_sample(self.tokenizer, sample["prompt"], sample["completion"], None)

    def record_round(self, attempts: list[dict[str, Any]]) -> None:
        """A rewriting round's attempts (each with `step`, `index`, `accepted`, and for an accepted one `new`, the
        text, and `new_nll`, its NLL under the policy): an accepted text is the sample's target from now on, and its
        moving NLL starts again from that of the new target."""
        for a in attempts:
            self.attempts.append(a)
            if a["accepted"]:
                self._accept(a)
                self.moving_nll[a["index"]] = a["new_nll"]

    def _accept(self, attempt: dict[str, Any]) -> None:
        index = attempt["index"]
        self.targets[index] = Target(attempt["step"], attempt["new"], self.tokenize(index, attempt["new"]))

    def attempts_log(self) -> list[dict[str, Any]]:
        """Every attempt so far; each accepted one with `trained_on`, the times training drew its rewrite."""
        return [{**a, "trained_on": self.trained_on[(a["step"], a["index"])]} if a["accepted"] else a
                for a in self.attempts]

    # -- resume -----------------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "moving_nll": {str(k): v for k, v in self.moving_nll.items()},
            "visits": {str(k): v for k, v in self.visits.items()},
            "attempts": self.attempts,
            "trained_on": [[step, i, n] for (step, i), n in self.trained_on.items()],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """`state()`'s; the targets are rebuilt from the accepted attempts."""
        self.moving_nll = {int(k): v for k, v in state.get("moving_nll", {}).items()}
        self.visits = Counter({int(k): v for k, v in state.get("visits", {}).items()})
        self.attempts = list(state.get("attempts", []))
        self.targets = {}
        for a in self.attempts:
            if a["accepted"]:
                self._accept(a)
        self.trained_on = Counter({(s, i): n for s, i, n in state.get("trained_on", [])})
