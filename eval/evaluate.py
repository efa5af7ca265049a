"""Greedy evaluation of one model on problems with gold answers: per-problem records and summary figures."""

from __future__ import annotations

from typing import Any

from coldstart.eval.generation import generate
from coldstart.eval.grading import extract_answer, is_correct
from coldstart.rewards import has_boxed_answer


def evaluate(model, tokenizer, samples, max_new_tokens: int, batch_size: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Greedy completions for every sample, graded by math-verify; returns (records, metrics)."""
    outputs = generate(model, tokenizer, samples["prompt"], num_samples=1, max_new_tokens=max_new_tokens,
                       batch_size=batch_size)
    records = []
    for sample, (completion,) in zip(samples, outputs):
        records.append({
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
        })
    n = len(records)
    metrics = {
        "problems": n,
        "accuracy": sum(r["correct"] for r in records) / n,
        "format": sum(r["boxed"] for r in records) / n,
        "truncated": sum(not r["finished"] for r in records) / n,
        "mean_length": sum(r["num_tokens"] for r in records) / n,
    }
    return records, metrics
