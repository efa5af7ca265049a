"""Batched generation with HF `generate` (left padding, KV cache), or vLLM on GPUs, for rewriting, the handoff report
and evaluation."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from coldstart.checkpoint import stop_token_ids


@dataclass
class Completion:
    text: str
    num_tokens: int
    finished: bool  # ended on a stop token rather than at max_new_tokens
    # the generated tokens, the stop token included (HF generation only; vLLM's completions leave it empty)
    token_ids: tuple[int, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Sampling:
    """How completions are drawn: the run's settings, the one description HF `generate` and vLLM are both built
    from. Nothing comes from a checkpoint's `generation_config` (its `repetition_penalty`, `no_repeat_ngram_size`,
    `suppress_tokens`, ...), which vLLM's `SamplingParams` and TRL's GRPO do not apply either. `temperature = 0`
    is greedy; sampling keeps every token unless `top_k` > 0, as GRPO (TRL's `top_k=0`) and the paper's nucleus
    rule do."""

    max_new_tokens: int = 256
    num_samples: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    def hf_kwargs(self, stop_ids: list[int], pad_token_id: int) -> dict[str, Any]:
        """`model.generate` keyword arguments (inside `run_settings_only`); greedy over the `TokenSampler`'s
        scores samples."""
        kwargs: dict[str, Any] = {"do_sample": False, "max_new_tokens": self.max_new_tokens, "eos_token_id": stop_ids,
                                  "pad_token_id": pad_token_id}
        if self.temperature > 0:
            kwargs["logits_processor"] = LogitsProcessorList([TokenSampler(self.temperature, self.top_p, self.top_k)])
        return kwargs

    def vllm_params(self, stop_ids: list[int]):
        from vllm import SamplingParams

        return SamplingParams(
            n=self.num_samples, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k or -1,
            max_tokens=self.max_new_tokens, seed=self.seed, stop_token_ids=stop_ids, skip_special_tokens=True,
        )


def clean_generation_config(config: GenerationConfig | None) -> GenerationConfig:
    """A generation config with only a checkpoint's token ids (bos, eos, pad) and how it caches keys and values:
    no sampling setting or logits processor of its own for `generate` to merge into the run's."""
    kept = ("bos_token_id", "eos_token_id", "pad_token_id", "use_cache", "cache_implementation")
    ids = {k: getattr(config, k, None) for k in kept}
    return GenerationConfig(**{k: v for k, v in ids.items() if v is not None})


@contextlib.contextmanager
def run_settings_only(model) -> Iterator[None]:
    """`model.generate` inside sees a `clean_generation_config` (transformers fills every setting a call leaves
    unset from the model's own config); the model's config is put back after."""
    own = model.generation_config
    model.generation_config = clean_generation_config(own)
    try:
        yield
    finally:
        model.generation_config = own


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
    top_k: int = 0,
) -> list[list[Completion]]:
    """`num_samples` completions for each prompt, drawn as `Sampling` says (the arguments are its fields)."""
    sampling = Sampling(max_new_tokens, num_samples, temperature, top_p, top_k, seed)
    if seed is None:
        return _generate(model, tokenizer, prompts, sampling, batch_size)
    # a seeded call must not move the caller's random state (a training run's, during a rewriting round); the seed
    # reaches every CUDA device, so all of them are restored
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        torch.manual_seed(seed)
        return _generate(model, tokenizer, prompts, sampling, batch_size)


class TokenSampler(LogitsProcessor):
    """Draws each row's next token (temperature, then top-k, then the nucleus, as transformers' warpers apply them)
    and leaves it the only finite score, so that greedy decoding over these scores samples.

    transformers' own sampling sorts the whole vocabulary every step when `top_p` < 1 and draws with
    `torch.multinomial`; on a CPU those take a quarter to a third of a decode step at the batch sizes used here
    (`make bench`). Here the nucleus is found among the `nucleus_k` most likely tokens (the whole sorted vocabulary
    only for a batch where some row's nucleus is wider) and one uniform number per row is looked up in the cumulative
    probabilities: the same distribution, with another use of the random stream."""

    def __init__(self, temperature: float, top_p: float = 1.0, top_k: int = 0, nucleus_k: int = 256):
        if not (temperature > 0 and 0 < top_p <= 1 and top_k >= 0):
            raise ValueError(f"sampling needs temperature > 0, 0 < top_p <= 1 and top_k >= 0, got {temperature}, "
                             f"{top_p}, {top_k}")
        self.temperature, self.top_p, self.top_k, self.nucleus_k = temperature, top_p, top_k, nucleus_k

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logits = scores.float() / self.temperature
        if 0 < self.top_k < logits.shape[-1]:
            logits = logits.masked_fill(logits < logits.topk(self.top_k).values[:, -1:], -math.inf)
        probs = logits.softmax(-1)
        # float64 for the running sum and the draw: in float32 the sum reaches 1 long before the last of tens of
        # thousands of tokens, so that a token below ~6e-8 could never be drawn and the rest were rounded
        u = torch.rand(probs.shape[0], 1, dtype=torch.float64, device=probs.device)
        if self.top_p < 1.0:
            top, index = probs.topk(min(self.nucleus_k, probs.shape[-1]))
            if (top.double().sum(-1) < self.top_p).any():
                top, index = probs.sort(-1, descending=True)
            top = top.double()
            kept = top * ((top.cumsum(-1) - top) < self.top_p)  # a token stays while the mass before it is below top_p
            cumulative = kept.cumsum(-1)
        else:
            index, cumulative = None, probs.double().cumsum(-1)
        choice = torch.searchsorted(cumulative, u * cumulative[:, -1:], right=True).clamp(max=cumulative.shape[-1] - 1)
        token = choice if index is None else index.gather(1, choice)
        return torch.full_like(scores, -math.inf).scatter_(1, token, 0.0)


def _generate(model, tokenizer, prompts, sampling: Sampling, batch_size: int) -> list[list[Completion]]:
    stop_ids = set(stop_token_ids(tokenizer, model.generation_config))
    k = sampling.num_samples
    texts = [render_prompt(tokenizer, p) for p in prompts for _ in range(k)]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    kwargs = sampling.hf_kwargs(sorted(stop_ids), tokenizer.pad_token_id)
    from tqdm.auto import tqdm

    flat: list[Completion] = []
    starts = range(0, len(texts), batch_size)
    with run_settings_only(model):
        for start in tqdm(starts, desc="generating", unit="batch", disable=len(starts) < 2, leave=False):
            enc = tokenizer(
                texts[start : start + batch_size], return_tensors="pt", padding=True, padding_side="left",
                add_special_tokens=False,
            ).to(device)
            out = model.generate(**enc, **kwargs)
            for row in out[:, enc["input_ids"].shape[1] :].tolist():
                end = next((i for i, t in enumerate(row) if t in stop_ids), None)
                tokens = row if end is None else row[:end]
                flat.append(Completion(tokenizer.decode(tokens, skip_special_tokens=True), len(tokens), end is not None,
                                       tuple(row if end is None else row[: end + 1])))
    model.train(was_training)
    return [flat[i * k : (i + 1) * k] for i in range(len(prompts))]


class VllmGenerator:
    """`generate` for one model folder on a GPU with vLLM: the same rendered prompts (no added special tokens), the
    same stop tokens and the same `Completion`s. The engine loads once, for all calls; `close()` frees the GPU."""

    def __init__(self, model_dir: str, tokenizer, gpu_memory_utilization: float, seed: int, dtype: str = "auto",
                 processes: int = 1):
        from vllm import LLM

        self.tokenizer = tokenizer
        try:
            generation_config = GenerationConfig.from_pretrained(model_dir)
        except OSError:  # no generation_config.json: the tokenizer's end-of-sequence token alone
            generation_config = None
        self.stop_ids = set(stop_token_ids(self.tokenizer, generation_config))
        # in a launch of several processes each runs an engine of its own on its own GPU (accelerate set the device),
        # as TRL's colocated vLLM does
        launched = {"distributed_executor_backend": "external_launcher"} if processes > 1 else {}
        self.llm = LLM(model=str(model_dir), dtype=dtype, seed=seed, gpu_memory_utilization=gpu_memory_utilization,
                       **launched)

    def __call__(self, prompts: list[Any], num_samples: int = 1, max_new_tokens: int = 256, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int | None = None, top_k: int = 0) -> list[list[Completion]]:
        params = Sampling(max_new_tokens, num_samples, temperature, top_p, top_k, seed).vllm_params(sorted(self.stop_ids))
        inputs = [
            {"prompt_token_ids": self.tokenizer(render_prompt(self.tokenizer, p), add_special_tokens=False)["input_ids"]}
            for p in prompts
        ]
        out = []
        for request in self.llm.generate(inputs, params):
            completions = []
            for o in request.outputs:
                tokens = list(o.token_ids)
                if tokens and tokens[-1] in self.stop_ids:  # `generate` does not count the stop token
                    tokens.pop()
                completions.append(Completion(o.text, len(tokens), o.finish_reason == "stop"))
            out.append(completions)
        return out

    def close(self) -> None:
        import gc

        del self.llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
