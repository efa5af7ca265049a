"""How far a stage moved the policy, and how sharp it left it: KL and entropy per token on the policy's own samples.

The policy samples one completion per held-out prompt at temperature 1. At each completion position the exact
KL(policy || reference) between the two next-token distributions over the whole vocabulary is taken, given the
sampled prefix, and summed over the completion: by the chain rule its expectation is the KL between the two
models' distributions over completions, so the mean over prompts estimates that sequence KL without the noise of
the sampled token's own log-ratio. Divided by the tokens it is the figure RL users read as "KL per token". The
policy's next-token entropy at the same positions gives its entropy per token (exploration: GRPO learns little
from a policy near 0).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from trl.trainer.utils import entropy_from_logits

from coldstart.generation import generate, render_prompt
from coldstart.losses import kl_divergence


def position_drift(log_p: torch.Tensor, log_q: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(KL(p || q), H(p)) at each position, from full-vocabulary log-probs `(..., vocab)`; no KL without `q`."""
    return (None if log_q is None else kl_divergence(log_p, log_q)), entropy_from_logits(log_p)


def _completion_log_probs(model, ids: torch.Tensor, n: int) -> torch.Tensor:
    """Log-probs over the vocabulary at the positions that predict the last `n` tokens of `ids` (one row)."""
    logits = model(input_ids=ids, use_cache=False, logits_to_keep=n + 1).logits[0, :-1]
    return F.log_softmax(logits.float(), -1)


@torch.no_grad()
def sample_drift(policy, reference, tokenizer, prompts: list[Any], max_new_tokens: int, batch_size: int,
                 seed: int) -> list[dict[str, Any]]:
    """Per prompt: one completion `policy` samples (temperature 1), its tokens, and their summed KL from
    `reference` (None without one) and summed policy entropy. Both models must share the tokenizer."""
    completions = generate(policy, tokenizer, prompts, 1, max_new_tokens, temperature=1.0, batch_size=batch_size,
                           seed=seed)
    device = next(policy.parameters()).device
    records = []
    for prompt, (completion,) in zip(prompts, completions):
        tokens = list(completion.token_ids)
        prompt_ids = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False).input_ids
        ids = torch.tensor([prompt_ids + tokens], device=device)
        log_p = _completion_log_probs(policy, ids, len(tokens))
        log_q = None if reference is None else _completion_log_probs(reference, ids, len(tokens))
        kl, entropy = position_drift(log_p, log_q)
        records.append({"tokens": len(tokens), "kl": None if kl is None else float(kl.sum()),
                        "entropy": float(entropy.sum())})
    return records


def summarize_drift(records: list[dict[str, Any]]) -> dict[str, Any]:
    """KL and entropy per token over every sampled token, the KL per completion, and how many were sampled."""
    tokens = sum(r["tokens"] for r in records)
    out = {"completions": len(records), "tokens": tokens,
           "entropy_per_token": sum(r["entropy"] for r in records) / max(tokens, 1)}
    if records and records[0]["kl"] is not None:
        out["kl_per_token"] = sum(r["kl"] for r in records) / max(tokens, 1)
        out["kl_per_completion"] = sum(r["kl"] for r in records) / len(records)
    return out


def held_out_drift(runtime, policy, reference, tokenizer, problems, eval_section, seed: int) -> dict[str, Any]:
    """`summarize_drift` of `sample_drift` on the first `eval.drift_prompts` of the held-out `problems`, with the
    eval's generation length and batch size, each process sampling its share (`runtime.map`)."""
    e = eval_section
    prompts = problems.select(range(min(e.drift_prompts, len(problems))))
    return summarize_drift(runtime.map(lambda part: sample_drift(
        policy, reference, tokenizer, list(part["prompt"]), e.max_new_tokens, e.batch_size, seed), prompts))
