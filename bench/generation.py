"""Generation for rollouts and evaluation on the embedded model: coldstart's batched `generate` against one prompt
at a time, greedy, on the same held-out prompts, in generated tokens per second.

    python -m bench.generation --prompts 16 --batch-size 16
"""

from __future__ import annotations

import argparse
import time

from bench.common import emit, workload
from coldstart.data import load_samples
from coldstart.generation import generate
from coldstart.models import load_model, load_tokenizer, resolve_model_path


def tokens_per_second(model, tokenizer, prompts, batch_size: int, max_new_tokens: int) -> tuple[float, list]:
    start = time.perf_counter()
    out = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    seconds = time.perf_counter() - start
    return sum(c[0].num_tokens for c in out) / seconds, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    cfg = workload()
    path = resolve_model_path(cfg.model.name_or_path)
    model, tokenizer = load_model(cfg.model, path), load_tokenizer(path, False)
    test, _ = load_samples(cfg.data, "test", cfg.seed)
    prompts = test["prompt"][: args.prompts]
    generate(model, tokenizer, prompts[:1], max_new_tokens=4)  # first-call set-up, off the clock
    batched, batched_out = tokens_per_second(model, tokenizer, prompts, args.batch_size, args.max_new_tokens)
    single, single_out = tokens_per_second(model, tokenizer, prompts, 1, args.max_new_tokens)
    same = sum(a[0].text == b[0].text for a, b in zip(batched_out, single_out))
    emit({"batched_tokens_per_s": batched, "single_tokens_per_s": single, "speedup": batched / single,
          "batch_size": args.batch_size, "prompts": len(prompts), "same_text": same})


if __name__ == "__main__":
    main()
