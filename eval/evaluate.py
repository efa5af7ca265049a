"""Evaluation of one model on problems with gold answers: per-problem records (`grade`, which processes can split
between them) and summary figures over all of them (`summarize_records`).

Greedy decoding gives the accuracy; with `num_samples > 0`, that many sampled completions per problem give avg@k
(k = `num_samples`: the mean correctness of the k samples, averaged over problems, as the field reports avg@16) and
pass@k for k = 1, 2, 4, ... up to `num_samples` (unbiased estimator). Figures come with 95% bootstrap intervals over
problems, overall and by `source` (for `arith`, the number of steps: the difficulty).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

from coldstart.generation import Completion
from coldstart.grading import extract_answer, has_boxed_answer, is_correct
from coldstart.statistics import bootstrap_ci, macro_mean_ci, pass_at_k


def grade(generate: Callable[..., list[list[Completion]]], samples, max_new_tokens: int, num_samples: int = 0,
          temperature: float = 1.0, seed: int = 0, top_p: float = 1.0) -> list[dict[str, Any]]:
    """One record per sample: its greedy completion graded, and with `num_samples` k, how many of k sampled
    completions are right.

    `generate(prompts, num_samples=, max_new_tokens=, temperature=, top_p=, seed=)` makes the completions: HF
    `generate` bound to a model (`coldstart.generation.generate`) or a `VllmGenerator`.
    """
    greedy = generate(samples["prompt"], num_samples=1, max_new_tokens=max_new_tokens)
    sampled = None
    if num_samples:
        sampled = generate(samples["prompt"], num_samples=num_samples, max_new_tokens=max_new_tokens,
                           temperature=temperature, top_p=top_p, seed=seed)
    records = []
    for i, (sample, (completion,)) in enumerate(zip(samples, greedy)):
        record = {
            "id": sample["id"],
            "style": sample["style"],
            "source": sample["source"],
            "answer": sample["answer"],
            "completion": completion.text,
            "extracted": extract_answer(completion.text),
            "correct": is_correct(sample["answer"], completion.text),
            "boxed": has_boxed_answer(completion.text),
            "finished": completion.finished,
            "num_tokens": completion.num_tokens,
        }
        if sampled is not None:
            record["samples_correct"] = sum(is_correct(sample["answer"], c.text) for c in sampled[i])
            record["num_samples"] = num_samples
        records.append(record)
    return records


def summarize_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy (with its bootstrap interval), format, truncation, length, pass@k, and accuracy by source."""
    n = len(records)
    correct = [float(r["correct"]) for r in records]
    low, high = bootstrap_ci(correct)
    metrics: dict[str, Any] = {
        "problems": n,
        "accuracy": sum(correct) / n,
        "accuracy_ci": [low, high],
        "format": sum(r["boxed"] for r in records) / n,
        "truncated": sum(not r["finished"] for r in records) / n,
        "mean_length": sum(r["num_tokens"] for r in records) / n,
    }
    if "samples_correct" in records[0]:
        samples = records[0]["num_samples"]
        averages = [r["samples_correct"] / samples for r in records]
        metrics[f"avg@{samples}"] = sum(averages) / n
        metrics[f"avg@{samples}_ci"] = list(bootstrap_ci(averages))
        k = 1
        while k <= samples:
            values = [pass_at_k(samples, r["samples_correct"], k) for r in records]
            metrics[f"pass@{k}"] = sum(values) / n
            metrics[f"pass@{k}_ci"] = list(bootstrap_ci(values))
            k *= 2
    groups: dict[str, list[float]] = defaultdict(list)
    for r in records:
        groups[r["source"]].append(float(r["correct"]))
    if len(groups) > 1:
        metrics["accuracy_by_source"] = {g: {"problems": len(v), "accuracy": sum(v) / len(v)} for g, v in sorted(groups.items())}
    return metrics


def suite_average(records_by_set: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The macro average over sets, as benchmark tables report it (every set weighs the same): the greedy accuracy
    and, with samples, avg@k, each with a bootstrap interval that resamples every set's problems on its own."""
    sets = list(records_by_set.values())
    acc, low, high = macro_mean_ci([[float(r["correct"]) for r in records] for records in sets])
    out: dict[str, Any] = {"sets": len(sets), "problems": sum(len(r) for r in sets), "accuracy": acc,
                           "accuracy_ci": [low, high]}
    if "samples_correct" in sets[0][0]:
        k = sets[0][0]["num_samples"]
        mean, low, high = macro_mean_ci([[r["samples_correct"] / k for r in records] for records in sets])
        out[f"avg@{k}"], out[f"avg@{k}_ci"] = mean, [low, high]
    return out
