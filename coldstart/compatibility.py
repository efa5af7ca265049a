"""Compatibility of a demonstration with a policy, the one implementation the loss, scorer, rewriting and report use.

Per sample, the length-normalised NLL of its completion tokens `n = -mean_t log pi(y_t | x, y_<t)` and its friendly
form `c = exp(-n)`, the geometric-mean token probability, in (0, 1]. Per-token log-probs come from a single
forward: either TRL's fused, tiled LM head (no `(batch, seq, vocab)` logits; pays on GPUs with large vocabularies)
or plain logits of the completion positions only (faster off CUDA: `make bench`).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Iterable, Iterator

import torch
import torch.nn.functional as F


def use_fused_head(choice: str) -> bool:
    """`auto` picks the fused head on CUDA and plain logits elsewhere (faster on CPU: `make bench`)."""
    return torch.cuda.is_available() if choice == "auto" else choice == "fused"


def token_logprobs(
    model, input_ids, attention_mask, labels, fused: bool, cache=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of the labelled tokens, shifted to (batch, seq - 1), zero where the label is -100.

    Returns `(log_probs, mask)`. With `fused=True` the model must carry TRL's fused LM head
    (`trl.trainer.utils.add_fused_lm_head`), which SFTTrainer adds and `ensure_fused_head` adds elsewhere. Otherwise
    the LM head projects only the positions that predict a label (transformers' boolean `logits_to_keep`): prompt
    and padding cost no `vocab`-wide logits. `cache` (a transformers Cache) holds keys and values of tokens before
    `input_ids` (a shared prefix), which `attention_mask` then covers too.
    """
    if fused:
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True,
                    cache=cache)
        return out.log_probs, out.label_mask
    logits, shifted, keep = label_logits(model, input_ids, attention_mask, labels, cache)
    per_token = -F.cross_entropy(logits.float(), shifted[keep], reduction="none")
    # masked_scatter keeps a batch without labels connected to the graph: a differentiable zero
    log_probs = per_token.new_zeros(keep.shape).masked_scatter(keep, per_token)
    return log_probs[:, :-1], keep[:, :-1]


def label_logits(model, input_ids, attention_mask, labels, cache=None):
    """The logits of the positions that predict a label, row by row (transformers' boolean `logits_to_keep`: prompt
    and padding cost no `vocab`-wide logits); with the labels shifted onto those positions and the kept mask."""
    # position t predicts token t + 1; the last position predicts nothing
    shifted = F.pad(labels[:, 1:], (0, 1), value=-100)
    keep = shifted != -100
    logits = model(input_ids=input_ids, attention_mask=attention_mask, cache=cache, use_cache=False,
                   logits_to_keep=keep).logits
    return logits, shifted, keep


def ensure_fused_head(model) -> None:
    """Add TRL's fused LM head to a model that does not have it yet (a model SFTTrainer prepared already has it)."""
    from trl.trainer.utils import add_fused_lm_head

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "_coldstart_fused", False):
        add_fused_lm_head(base)
        base._coldstart_fused = True


def sequence_nll(log_probs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Length-normalised NLL per sample and its token count; a sample without tokens gets NLL 0."""
    count = mask.sum(-1)
    nll = -(log_probs * mask).sum(-1) / count.clamp(min=1)
    return nll, count


def compatibility(nll: torch.Tensor) -> torch.Tensor:
    return torch.exp(-nll)


def tokenize_sample(tokenizer, prompt: Any, completion: Any, max_length: int | None) -> dict[str, list[int]]:
    """`input_ids` and `labels` (-100 outside the completion) as TRL's SFTTrainer builds them for training.

    Conversational samples go through the chat template; the completion starts where the tokenized prompt (with
    the generation prompt) and prompt+completion diverge. Plain-text completions get the eos token appended.
    """
    if isinstance(prompt, list):
        prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
        full_ids = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)
        prompt_ids, full_ids = prompt_ids["input_ids"], full_ids["input_ids"]
    else:
        if not completion.endswith(tokenizer.eos_token):
            completion = completion + tokenizer.eos_token
        prompt_ids = tokenizer(prompt)["input_ids"]
        full_ids = tokenizer(prompt + completion)["input_ids"]
    start = 0
    while start < min(len(prompt_ids), len(full_ids)) and prompt_ids[start] == full_ids[start]:
        start += 1
    labels = [-100] * start + full_ids[start:]
    if max_length is not None:
        full_ids, labels = full_ids[:max_length], labels[:max_length]
    return {"input_ids": full_ids, "labels": labels}


def pad_batch(rows: list[dict[str, list[int]]], pad_id: int, device=None) -> dict[str, torch.Tensor]:
    """Right-pad tokenized rows into `input_ids`, `attention_mask` and `labels` tensors (TRL's `pad`), on `device`."""
    from trl.trainer.utils import pad

    ids = [torch.tensor(r["input_ids"], dtype=torch.long) for r in rows]
    batch = {
        "input_ids": pad(ids, padding_value=pad_id),
        "attention_mask": pad([torch.ones_like(i) for i in ids], padding_value=0),
        "labels": pad([torch.tensor(r["labels"], dtype=torch.long) for r in rows], padding_value=-100),
    }
    return batch if device is None else {k: v.to(device) for k, v in batch.items()}


def length_buckets(lengths: list[int], max_tokens: int) -> Iterator[list[int]]:
    """Indices grouped by similar length (sorted), each group's padded size at most `max_tokens` (or one row)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    group: list[int] = []
    for i in order:
        if group and lengths[group[0]] * (len(group) + 1) > max_tokens:
            yield group
            group = []
        group.append(i)
    if group:
        yield group


def shared_prefix(rows: list[dict[str, list[int]]]) -> int:
    """Length of the token prefix every row starts with (a system prompt, an instruction) that ends before any row's
    first label, so the logits that predict labels all come after it; 0 when there is none worth sharing."""
    first = rows[0]["input_ids"]
    length = min(len(r["input_ids"]) for r in rows)
    for row in rows:
        label_start = next((t for t, label in enumerate(row["labels"]) if label != -100), len(row["labels"]))
        length = min(length, label_start - 1)
    n = 0
    while n < length and all(r["input_ids"][n] == first[n] for r in rows):
        n += 1
    return n if n >= 2 else 0


@torch.inference_mode()
def score(
    model, tokenizer, samples: Iterable[dict[str, Any]], max_length: int | None, fused: bool = False,
    max_tokens: int = 2048, progress: bool = False, share_prefix: bool = True,
) -> list[dict[str, float]]:
    """Compatibility of each sample's completion under `model`: `nll`, `compatibility`, `num_tokens`, `mean_logprob`.

    Samples are batched by length (little padding) and scored under `torch.inference_mode()`; with
    `share_prefix`, the tokens every sample starts with (the chat template's system prompt) go through the model
    once and their keys and values are reused by every batch. Results come back in the input order. A sample
    with no completion token within `max_length` is refused (`coldstart.lengths` drops such samples first).
    """
    from tqdm.auto import tqdm

    rows = [tokenize_sample(tokenizer, s["prompt"], s["completion"], max_length) for s in samples]
    empty = next((i for i, r in enumerate(rows) if all(label == -100 for label in r["labels"])), None)
    if empty is not None:  # its NLL would be 0 and its compatibility 1.0: a perfect score for nothing
        raise ValueError(f"sample {empty} has no completion token within max_length={max_length}")
    if fused:
        ensure_fused_head(model)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    cut = shared_prefix(rows) if share_prefix and rows else 0
    prefix_cache = None
    if cut:
        prefix = torch.tensor([rows[0]["input_ids"][:cut]], device=device)
        prefix_cache = model(input_ids=prefix, use_cache=True).cache
    out: list[dict[str, float]] = [{} for _ in rows]
    buckets = list(length_buckets([len(r["input_ids"]) for r in rows], max_tokens))
    for group in tqdm(buckets, desc="scoring", disable=not progress):
        batch = pad_batch([rows[i] for i in group], tokenizer.pad_token_id, device)
        past = None
        if prefix_cache is not None:
            past = copy.deepcopy(prefix_cache)
            past.batch_repeat_interleave(len(group))
        log_probs, mask = token_logprobs(
            model, batch["input_ids"][:, cut:], batch["attention_mask"], batch["labels"][:, cut:], fused, past
        )
        nll, count = sequence_nll(log_probs.float(), mask)
        for i, n, c in zip(group, nll.tolist(), count.tolist()):
            out[i] = {"nll": n, "compatibility": math.exp(-n), "num_tokens": int(c), "mean_logprob": -n}
    model.train(was_training)
    return out


@torch.inference_mode()
def mean_token_entropy(model, tokenizer, samples: Iterable[dict[str, Any]], max_length: int | None = None,
                       batch_size: int = 16) -> list[float]:
    """Mean entropy (nats) of the policy's next-token distribution over each sample's completion positions: how
    spread the policy still is where it writes its answers (TRL's `entropy_from_logits` on the logits of those
    positions only)."""
    from trl.trainer.utils import entropy_from_logits

    rows = [tokenize_sample(tokenizer, s["prompt"], s["completion"], max_length) for s in samples]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(rows), batch_size):
        batch = pad_batch(rows[start:start + batch_size], tokenizer.pad_token_id, device)
        logits, _, keep = label_logits(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        entropy = entropy_from_logits(logits.float())  # one value per kept position, row by row
        out += [float(e.mean()) if e.numel() else 0.0 for e in entropy.split(keep.sum(-1).tolist())]
    model.train(was_training)
    return out


def score_records(model, tokenizer, dataset, max_length: int | None, fused: bool = False) -> list[dict[str, Any]]:
    """`score` for a data set of samples, each result with the sample's `id`, `style` and `source`."""
    scores = score(model, tokenizer, dataset, max_length, fused=fused, progress=True)
    return [{"id": s["id"], **r, "style": s["style"], "source": s["source"]} for s, r in zip(dataset, scores)]


def quantiles(values: list[float], qs: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)) -> dict[str, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return {f"q{int(q * 100):02d}": float(torch.quantile(t, q)) for q in qs}


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Distribution of compatibility over scored samples: overall, and by `style` and `source` when present."""
    nll = torch.tensor([r["nll"] for r in records], dtype=torch.float64)
    compat = [r["compatibility"] for r in records]
    out: dict[str, Any] = {
        "count": len(records),
        "nll_mean": float(nll.mean()),
        "nll_std": float(nll.std(unbiased=False)),
        "compatibility_mean": sum(compat) / len(compat),
        "compatibility_quantiles": quantiles(compat),
    }
    for key in ("style", "source"):
        groups: dict[str, list[float]] = {}
        for r in records:
            if r.get(key) is not None:
                groups.setdefault(str(r[key]), []).append(r["compatibility"])
        if groups:
            out[f"by_{key}"] = {
                g: {"count": len(v), "compatibility_mean": sum(v) / len(v), "compatibility_median": quantiles(v, (0.5,))["q50"]}
                for g, v in sorted(groups.items())
            }
    return out


def gate_keep(compat: list[float], min_compatibility: float | None, drop_fraction: float) -> list[bool]:
    """Which samples survive the gate: compatibility at least `min_compatibility`, and not in the least compatible
    `drop_fraction` (ties broken by position)."""
    keep = [min_compatibility is None or c >= min_compatibility for c in compat]
    n_drop = int(drop_fraction * len(compat))
    for i in sorted(range(len(compat)), key=lambda i: (compat[i], i))[:n_drop]:
        keep[i] = False
    return keep
