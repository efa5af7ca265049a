"""Batched generation with HF `generate` (left padding, KV cache), for rewriting, the handoff report and evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Completion:
    text: str
    num_tokens: int
    finished: bool  # ended on a stop token rather than at max_new_tokens


def render_prompt(tokenizer, prompt: Any) -> str:
    """The text the model sees for a prompt: the chat template with the generation prompt, or the plain text."""
    if isinstance(prompt, list):
        return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    return prompt


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[Any],
    num_samples: int = 1,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 16,
    seed: int | None = None,
) -> list[list[Completion]]:
    """`num_samples` completions for each prompt; `temperature = 0` is greedy decoding."""
    if seed is not None:
        torch.manual_seed(seed)
    stop_ids = model.generation_config.eos_token_id
    stop_ids = set(stop_ids if isinstance(stop_ids, list) else [stop_ids]) | {tokenizer.eos_token_id}
    texts = [render_prompt(tokenizer, p) for p in prompts for _ in range(num_samples)]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
    flat: list[Completion] = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[start : start + batch_size], return_tensors="pt", padding=True, padding_side="left",
            add_special_tokens=False,
        ).to(device)
        out = model.generate(
            **enc, max_new_tokens=max_new_tokens, eos_token_id=sorted(stop_ids), pad_token_id=tokenizer.pad_token_id,
            **sampling,
        )
        for row in out[:, enc["input_ids"].shape[1] :].tolist():
            end = next((i for i, t in enumerate(row) if t in stop_ids), None)
            tokens = row if end is None else row[:end]
            flat.append(Completion(tokenizer.decode(tokens, skip_special_tokens=True), len(tokens), end is not None))
    model.train(was_training)
    return [flat[i * num_samples : (i + 1) * num_samples] for i in range(len(prompts))]
