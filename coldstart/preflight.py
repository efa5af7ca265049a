"""Preflight: what would otherwise fail hours into a run, found in seconds from the tokenizer, the model's config
(not its weights), the data and the launcher.

Each check returns findings: `ok`, `fixed` (changed for the run, and said so), `warning`, `error` (the run is
refused before it trains), and `estimate` (GPU memory per stage, from parameter and token counts). `coldstart check
CONFIG` prints them all; `coldstart run` and the training stages run them first and stop at the first error.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import math
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch

from coldstart.checkpoint import id_list, stop_token_ids, training_eos, turn_terminator
from coldstart.config import Config
from coldstart.errors import ColdstartError
from coldstart.lengths import length_policy, sample_lengths

LEVELS = ("ok", "fixed", "warning", "error", "estimate")


@dataclass(frozen=True)
class Finding:
    check: str
    level: str
    message: str

    def line(self) -> str:
        return f"{self.level:<8} {self.check}: {self.message}"


@dataclass(frozen=True)
class Launch:
    """How the stages will be launched: process count and the distributed backend that shards the optimizer."""

    processes: int = 1
    backend: str = "none"  # none | ddp | deepspeed | fsdp
    zero_stage: int = 0

    @property
    def described(self) -> str:
        where = f"{self.processes} process{'es' if self.processes > 1 else ''}"
        if self.backend == "deepspeed":
            return f"{where}, DeepSpeed ZeRO-{self.zero_stage}"
        return f"{where}, FSDP" if self.backend == "fsdp" else where


def launch_from(config_file: str | None = None, processes: int | None = None) -> Launch:
    """The launch an accelerate config file describes, else the one this process runs under (`accelerate launch`
    sets WORLD_SIZE and ACCELERATE_USE_*); `processes` overrides the process count."""
    if config_file:
        from accelerate.commands.config.config_args import load_config_from_file
        from accelerate.utils import DistributedType

        try:
            launcher = load_config_from_file(config_file)
        except (OSError, ValueError) as e:
            raise ColdstartError(f"--launcher {config_file}: not an accelerate config ({e})") from e
        backend = {DistributedType.DEEPSPEED: "deepspeed", DistributedType.FSDP: "fsdp"}.get(launcher.distributed_type)
        count = processes or launcher.num_processes or 1
        zero = int((launcher.deepspeed_config or {}).get("zero_stage", 0)) if backend == "deepspeed" else 0
        return Launch(count, backend or ("ddp" if count > 1 else "none"), zero)
    count = processes or int(os.environ.get("WORLD_SIZE", "1"))
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        return Launch(count, "deepspeed", int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")))
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return Launch(count, "fsdp")
    return Launch(count, "ddp" if count > 1 else "none")


class Context:
    """What the checks read, loaded once: the tokenizer, model config, generation config and data; the model's
    modules are built on the meta device (no memory, no weights) only when a check asks."""

    def __init__(self, cfg: Config, launch: Launch, stages: list[str] | None = None):
        from transformers import AutoConfig, AutoTokenizer, GenerationConfig

        from coldstart.data import load_samples, rl_pool
        from coldstart.models import resolve_model_path

        self.cfg, self.launch, self.stages = cfg, launch, stages
        self.path = resolve_model_path(cfg.model.name_or_path, weights=False)
        remote = cfg.model.trust_remote_code
        try:
            self.model_config = AutoConfig.from_pretrained(self.path, trust_remote_code=remote)
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=remote)
        except (OSError, ValueError) as e:
            raise ColdstartError(f"model.name_or_path: cannot load the config or tokenizer of {self.path} ({e})") from e
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        try:
            self.generation_config = GenerationConfig.from_pretrained(self.path)
        except OSError:
            self.generation_config = GenerationConfig.from_model_config(self.model_config)
        self.train, self.train_stats = load_samples(cfg.data, "train", cfg.seed)
        # the held-out split only where a stage reads it (eval); `coldstart check` (no stages) tries it
        self.test, self.test_problem = None, None
        if stages is None or "eval" in stages:
            try:
                self.test, _ = load_samples(cfg.data, "test", cfg.seed)
            except ColdstartError as e:
                if stages is not None:
                    raise
                self.test_problem = str(e)
        self.prompts = rl_pool(self.train, cfg.data, cfg.rl.num_prompts, cfg.seed)
        self._meta = None

    @property
    def conversational(self) -> bool:
        return isinstance(self.train[0]["prompt"], list)

    @property
    def text_config(self):
        return self.model_config.get_text_config()

    def meta_model(self):
        if self._meta is None:
            from transformers import AutoModelForCausalLM

            with torch.device("meta"):
                self._meta = AutoModelForCausalLM.from_config(
                    self.model_config, trust_remote_code=self.cfg.model.trust_remote_code
                )
        return self._meta


# ---------------------------------------------------------------------------------------------------------------
# the checks


def end_of_turn(ctx: Context) -> list[Finding]:
    """eos, the chat template's end of turn, pad, and the model and generation configs' eos: one token must close a
    turn everywhere, or generations never stop. The known mismatch (a base model's eos is not the template's end
    of turn) is fixed for the run through `warmup.eos_token: auto`."""
    cfg, tok = ctx.cfg, ctx.tokenizer
    name = "end of turn"
    if ctx.conversational and not tok.chat_template:
        return [Finding(name, "error", "the prompts are conversations but the tokenizer has no chat template; use a "
                                       "model folder with chat_template.jinja (or tokenizer_config.json's)")]
    terminator = turn_terminator(tok)
    eos = (training_eos(cfg.warmup.eos_token, tok) if cfg.warmup.loss != "none" else None) or tok.eos_token
    if terminator is not None and terminator != eos:
        if cfg.warmup.loss == "none":
            fix = "warm it up (warmup.loss) or use a model whose tokenizer eos is the end of turn"
        elif terminator in tok.get_added_vocab():
            fix = f"set warmup.eos_token: auto (or {terminator!r})"
        else:
            fix = "use a chat template that closes a turn with a special token"
        return [Finding(name, "error", f"the chat template ends an assistant turn with {terminator!r} but the "
                                       f"run's eos is {eos!r}: generations would not stop there; {fix}")]
    pad = f"pad {tok.pad_token!r}" + (" (= eos; labels come from the completion mask, so no eos label is masked)"
                                      if tok.pad_token == eos else "")
    if eos != tok.eos_token:
        return [Finding(name, "fixed", f"the chat template ends an assistant turn with {eos!r} but the tokenizer's "
                                       f"eos is {tok.eos_token!r} (as base models such as Qwen2.5-Math ship); the "
                                       f"warm-up trains and saves {eos!r} as eos in the tokenizer, the model config "
                                       f"and the generation config (warmup.eos_token: auto); {pad}")]
    eos_id = tok.convert_tokens_to_ids(eos)
    model_eos = set(id_list(ctx.text_config.eos_token_id))
    rewritten = cfg.warmup.loss != "none" and cfg.warmup.eos_token is not None  # TRL mirrors eos onto the configs
    if model_eos and eos_id not in model_eos and not rewritten:
        return [Finding(name, "error", f"the model config's eos_token_id {sorted(model_eos)} is not {eos!r} "
                                       f"({eos_id}) and this run does not rewrite it (warmup.loss: none or "
                                       "warmup.eos_token: null): the handoff would refuse the checkpoint; warm up "
                                       "with warmup.eos_token: auto, or set eos_token_id in the model's config.json")]
    return [Finding(name, "ok", f"{eos!r} closes an assistant turn, is the tokenizer's eos and is written into the "
                                f"model and generation configs as a stop id; {pad}")]


def closing_label(ctx: Context) -> list[Finding]:
    """The token the warm-up trains last in a completion must be a stop id, or the model never learns to stop."""
    if ctx.cfg.warmup.loss == "none":
        return []
    from coldstart.compatibility import tokenize_sample

    tok = ctx.tokenizer
    eos = training_eos(ctx.cfg.warmup.eos_token, tok) or tok.eos_token
    original = tok.eos_token
    tok.eos_token = eos  # as TRL sets it before tokenizing; plain-text completions get it appended
    try:
        sample = ctx.train[0]
        labels = [t for t in tokenize_sample(tok, sample["prompt"], sample["completion"], None)["labels"] if t != -100]
        stops = set(stop_token_ids(tok))
    finally:
        tok.eos_token = original
    trailing = []  # the template may write whitespace after the end of turn (SmolLM2 and Qwen write a newline)
    while len(labels) > 1 and not tok.decode(labels[-1:]).strip() and labels[-1] not in stops:
        trailing.insert(0, labels.pop())
    last = tok.convert_ids_to_tokens(labels[-1])
    after = f" (then {tok.convert_ids_to_tokens(trailing)}, which the template writes after it)" if trailing else ""
    if labels[-1] not in stops:
        names = [tok.convert_ids_to_tokens(i) for i in sorted(stops)]
        return [Finding("closing label", "error", f"the warm-up trains {last!r} as the last token of sample "
                                                  f"{sample['id']!r}, which is none of the stop ids {names}: the model "
                                                  "would never learn to stop; use a chat template that closes the "
                                                  "assistant turn with its end-of-turn token")]
    return [Finding("closing label", "ok", f"the warm-up trains {last!r} as each completion's closing label{after}")]


def gold_answers(ctx: Context) -> list[Finding]:
    """Every gold answer parses with math-verify (data loading refuses or skips the others, by data.on_bad_row)."""
    stats = ctx.train_stats
    held_out = len(ctx.test) if ctx.test is not None else 0
    if stats.skipped:
        return [Finding("data", "warning", f"{stats.skipped} of {stats.rows} training rows skipped (data.on_bad_row: "
                                           f"skip), e.g. {stats.skipped_examples[0]}")]
    rows = f"{len(ctx.train)} training and {held_out} held-out rows" if ctx.test is not None else \
        f"{len(ctx.train)} training rows"
    return [Finding("data", "ok", f"{rows}: roles, fields and every one of {len(ctx.train) + held_out} gold answers "
                                  "read (math-verify)")]


def _problem_key(prompt: Any) -> str:
    """A problem's statement as the overlap check compares it: the last user turn, spacing and case ignored."""
    text = prompt[-1]["content"] if isinstance(prompt, list) else prompt
    return " ".join(text.split()).casefold()


def held_out(ctx: Context) -> list[Finding]:
    """The held-out split shares no problem with the training split: the arith generator draws them apart, but a
    file or a Hub data set may not (held-out accuracy would then count problems the warm-up trained on)."""
    if ctx.test is None:
        if ctx.test_problem is None:
            return []
        return [Finding("held-out", "warning", f"{ctx.test_problem}; only eval (and run, which ends with it) reads "
                                               "the held-out split")]
    trained = {}
    for sample_id, prompt in zip(ctx.train["id"], ctx.train["prompt"]):
        trained.setdefault(_problem_key(prompt), sample_id)
    shared = [(sample_id, trained[key]) for sample_id, prompt in zip(ctx.test["id"], ctx.test["prompt"])
              if (key := _problem_key(prompt)) in trained]
    if shared:
        test_id, train_id = shared[0]
        return [Finding("held-out", "error", f"{len(shared)} of {len(ctx.test)} held-out problems also appear in the "
                                             f"training split (e.g. held-out {test_id!r} is training {train_id!r}): "
                                             "held-out accuracy would count problems the warm-up trained on; remove "
                                             "them from one split")]
    return [Finding("held-out", "ok", f"none of the {len(ctx.test)} held-out problems appears in the training split")]


def benchmarks(ctx: Context) -> list[Finding]:
    """Every set of `eval.benchmarks` loads (a typo or an unreachable Hub set fails here, not after training)."""
    if ctx.stages is not None and "eval" not in ctx.stages:
        return []
    from coldstart.benchmarks import load_set

    findings = []
    for name in ctx.cfg.eval.benchmarks:
        try:
            problems = load_set(ctx.cfg, name, ctx.cfg.eval.num_problems)
        except ColdstartError as e:
            findings.append(Finding("benchmarks", "error", str(e)))
            continue
        findings.append(Finding("benchmarks", "ok", f"{name}: {len(problems)} problem{'s' * (len(problems) != 1)}"))
    return findings


def trackers(ctx: Context) -> list[Finding]:
    """The trackers of `report_to` are known and installed (the extra to install where one is missing)."""
    from coldstart import tracking

    try:
        chosen = tracking.backends(ctx.cfg.report_to)
    except ColdstartError as e:
        return [Finding("tracking", "error", str(e))]
    if not chosen:
        return []
    absent = tracking.missing(ctx.cfg.report_to)
    if absent:
        return [Finding("tracking", "error", f"report_to: {', '.join(chosen)} asked for, not installed: "
                                             + "; ".join(absent))]
    return [Finding("tracking", "ok", f"reporting to {', '.join(chosen)}")]


def cadft_settings(ctx: Context) -> list[Finding]:
    """SFTConfig settings CADFT cannot train under (`coldstart.cadft.unsupported_setting`), and, for a warm-up
    trained by epochs, a rewriting schedule without a round (the config refuses it at load when max_steps is set)."""
    w = ctx.cfg.warmup
    if w.loss != "cadft":
        return []
    from coldstart.cadft import unsupported_setting
    from coldstart.sampling import VisitPlan, schedule_problem

    problem = unsupported_setting({**w.trainer, "rewrite_enabled": w.rewrite.enabled})
    if problem:
        return [Finding("cadft", "error", problem)]
    r = w.rewrite
    if r.enabled and w.max_steps < 0:
        plan = VisitPlan(len(ctx.train), 0, w.per_device_train_batch_size, ctx.launch.processes,
                         w.gradient_accumulation_steps, bool(w.trainer.get("dataloader_drop_last", False)))
        steps = math.ceil(w.num_train_epochs * plan.steps_per_epoch)
        problem = schedule_problem(r.start, r.every, steps)
        if problem:
            return [Finding("cadft", "error", f"warmup.rewrite.start={r.start:g}: {problem} (at most {steps} steps: "
                                              f"{len(ctx.train)} demonstrations, {w.num_train_epochs:g} epochs)")]
    return [Finding("cadft", "ok", "per-sample weights and rewriting under these trainer settings")]


def lengths(ctx: Context) -> list[Finding]:
    """How many demonstrations `warmup.max_length` drops or truncates, that none reaches training without a
    completion token, and that RL prompts leave room for `rl.max_completion_length`."""
    cfg, out = ctx.cfg, []
    w = cfg.warmup
    if w.loss != "none":
        found = sample_lengths(ctx.tokenizer, ctx.train)
        keep, too_long, empty = length_policy(found, w.max_length, w.too_long)
        longest = max(n.tokens for n in found)
        where = f"warmup.max_length={w.max_length}"
        if not keep:
            out.append(Finding("lengths", "error", f"no demonstration keeps a completion token within {where} "
                                                   f"(longest {longest} tokens); raise max_length"))
        elif too_long and w.too_long == "error":
            out.append(Finding("lengths", "error", f"{len(too_long)} of {len(found)} demonstrations are longer than "
                                                   f"{where} (longest {longest} tokens) and warmup.too_long is "
                                                   "'error'; raise max_length or set warmup.too_long: drop"))
        elif too_long:
            did = "are dropped" if w.too_long == "drop" else "are cut (their closing label is never trained)"
            gone = f"; {len(empty)} keep no completion token and are dropped" if empty and w.too_long == "truncate" else ""
            out.append(Finding("lengths", "warning", f"{len(too_long)} of {len(found)} demonstrations are longer than "
                                                     f"{where} and {did} (warmup.too_long: {w.too_long}; longest "
                                                     f"{longest} tokens){gone}"))
        else:
            out.append(Finding("lengths", "ok", f"all {len(found)} demonstrations fit {where} (longest {longest})"))
    positions = getattr(ctx.text_config, "max_position_embeddings", None)
    limit = cfg.rl.trainer.get("vllm_max_model_length") or positions
    # RL prompts are rolled out by the handoff and trained on by GRPO: a stage list without either does not need them
    if limit and (ctx.stages is None or {"handoff", "rl"} & set(ctx.stages)):
        prompt_tokens = [_prompt_tokens(ctx.tokenizer, p) for p in ctx.prompts["prompt"]]
        room = [n for n in prompt_tokens if n + cfg.rl.max_completion_length > limit]
        what = f"rl.max_completion_length={cfg.rl.max_completion_length}"
        if room:
            out.append(Finding("rl lengths", "error", f"{len(room)} of {len(prompt_tokens)} RL prompts leave no room "
                                                      f"for {what} within the model's {limit} positions (longest "
                                                      f"prompt {max(prompt_tokens)} tokens); lower it or shorten the "
                                                      "prompts"))
        else:
            out.append(Finding("rl lengths", "ok", f"the longest of {len(prompt_tokens)} RL prompts ({max(prompt_tokens)} "
                                                   f"tokens) + {what} fit the model's {limit} positions"))
    return out


def _prompt_tokens(tokenizer, prompt: Any) -> int:
    """Tokens of a prompt as generation feeds it to the model."""
    from coldstart.generation import render_prompt

    return len(tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"])


def rl_batch(ctx: Context) -> list[Finding]:
    """GRPO's generation batch holds whole groups of `num_generations` completions for the launch's process count
    (TRL checks it only when the RL stage starts, after the warm-up)."""
    rl, n = ctx.cfg.rl, ctx.launch.processes
    generation, steps = rl.generation_round(n)
    spelled = f"{rl.per_device_train_batch_size} completions x {n} process{'es' if n > 1 else ''} x {steps} " \
              f"step{'s' if steps > 1 else ''} per generation = {generation}"
    if generation % rl.num_generations:
        return [Finding("rl batch", "error", f"{spelled}, not a multiple of rl.num_generations="
                                             f"{rl.num_generations}: a group would be split; change "
                                             "rl.per_device_train_batch_size or rl.steps_per_generation")]
    groups = generation // rl.num_generations
    return [Finding("rl batch", "ok", f"{spelled}: {groups} prompt{'s' if groups > 1 else ''} x "
                                      f"{rl.num_generations} completions per generation round")]


def steps_per_generation(ctx: Context) -> list[Finding]:
    """One generation round should serve whole optimizer steps."""
    rl = ctx.cfg.rl
    steps = rl.steps_per_generation
    if steps is None:
        return []
    if steps < 1:
        return [Finding("steps per generation", "error", f"rl.steps_per_generation={steps}: must be at least 1")]
    if steps % rl.gradient_accumulation_steps:
        return [Finding("steps per generation", "warning",
                        f"rl.steps_per_generation={steps} is not a multiple of rl.gradient_accumulation_steps="
                        f"{rl.gradient_accumulation_steps}: a generation round ends inside an optimizer step")]
    rounds = steps // rl.gradient_accumulation_steps
    return [Finding("steps per generation", "ok", f"one generation round serves {rounds} optimizer "
                                                  f"step{'s' if rounds > 1 else ''} (the later ones slightly "
                                                  "off-policy, which GRPO's importance ratio accounts for)")]


def lora_targets(ctx: Context) -> list[Finding]:
    """LoRA target modules that the model has (peft fails on a name it cannot find only when training starts)."""
    lora = ctx.cfg.model.lora
    if not lora.enabled:
        return []
    linear = {name.rsplit(".", 1)[-1] for name, m in ctx.meta_model().named_modules() if isinstance(m, torch.nn.Linear)}
    if lora.target_modules == "all-linear":
        return [Finding("lora", "ok", f"all-linear: adapters on {', '.join(sorted(linear - {'lm_head'}))}")]
    names = [t.strip() for t in lora.target_modules.split(",") if t.strip()]
    missing = [t for t in names if t not in linear]
    if missing:
        close = difflib.get_close_matches(missing[0], sorted(linear), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return [Finding("lora", "error", f"model.lora.target_modules names {missing[0]!r}, which the model does not "
                                         f"have; its linear modules are {', '.join(sorted(linear))}{hint}")]
    return [Finding("lora", "ok", f"adapters on {', '.join(names)}")]


def _requirement_range(package: str, requirement: str) -> str | None:
    """The version range `package`'s metadata asks for `requirement` (in any extra), e.g. TRL's range for vLLM."""
    from packaging.requirements import Requirement

    for text in importlib.metadata.requires(package) or []:
        req = Requirement(text)
        if req.name == requirement:
            return str(req.specifier)
    return None


def _installed(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(ctx: Context) -> list[Finding]:
    """What the config uses is installed, in a version the pinned libraries support."""
    from packaging.specifiers import SpecifierSet

    cfg, out, found = ctx.cfg, [], []
    for package in ("torch", "transformers", "trl", "math-verify", "scipy"):
        if _installed(package) is None:
            out.append(Finding("versions", "error", f"{package} is not installed; pip install {package}"))
        else:
            found.append(f"{package} {_installed(package)}")
    if cfg.rl.use_vllm or cfg.eval.use_vllm:
        supported = _requirement_range("trl", "vllm")
        installed = _installed("vllm")  # present: the config refuses use_vllm without it when it loads
        if supported and installed not in SpecifierSet(supported):
            out.append(Finding("versions", "error", f"vLLM {installed} is outside the range the installed TRL "
                                                    f"supports ({supported}); pip install 'vllm{supported}'"))
        else:
            found.append(f"vllm {installed}")
    if ctx.launch.backend == "deepspeed":
        if _installed("deepspeed") is None:
            out.append(Finding("versions", "error", "the launcher asks for DeepSpeed, which is not installed: pip "
                                                    "install 'coldstart[deepspeed]'"))
        else:
            found.append(f"deepspeed {_installed('deepspeed')}")
    return out or [Finding("versions", "ok", ", ".join(found))]


_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def _load_dtype(ctx: Context) -> str:
    if ctx.cfg.model.dtype != "auto":
        return ctx.cfg.model.dtype
    dtype = getattr(ctx.model_config, "dtype", None) or getattr(ctx.model_config, "torch_dtype", None) or "float32"
    return str(dtype).replace("torch.", "")


def dtype(ctx: Context) -> list[Finding]:
    """16-bit weights trained without fp32 master weights lose small updates to rounding (a weight of 0.02 moves in
    steps of ~1e-4 in bf16; an update of lr 1e-6 is far below that). DeepSpeed keeps fp32 masters; plain DDP, FSDP
    on 16-bit parameters and one process do not. LoRA adapters are kept in fp32 by peft."""
    cfg = ctx.cfg
    loaded = _load_dtype(ctx)
    if _BYTES.get(loaded, 4) == 4 or cfg.model.lora.enabled:
        return [Finding("dtype", "ok", f"weights load as {loaded}" + (
            "; bf16 autocast where bf16 is on" if _BYTES.get(loaded, 4) == 4 else "; LoRA adapters train in fp32"))]
    if ctx.launch.backend == "deepspeed":
        return [Finding("dtype", "ok", f"{loaded} weights with DeepSpeed's fp32 master weights")]
    lr = min(x for x in (cfg.warmup.learning_rate, cfg.rl.learning_rate) if x > 0)
    return [Finding("dtype", "error", f"model.dtype {loaded} trains {loaded} weights without fp32 master weights "
                                      f"({ctx.launch.described}): updates of lr {lr:g} are lost to rounding; set "
                                      "model.dtype: float32 (bf16 autocast stays on with bf16: true) or launch with "
                                      "a DeepSpeed config")]


def memory(ctx: Context) -> list[Finding]:
    """GPU memory per process, stage by stage: weights, gradients, optimizer state (sharded as the launch shards
    them), activations of one micro-batch, the generation cache or the vLLM share. An estimate from counts, with
    the CUDA defaults (16-bit activations unless runtime.precision is fp32, recomputation and the fused LM head where
    the config leaves them to the device)."""
    cfg, launch, text = ctx.cfg, ctx.launch, ctx.text_config
    model = ctx.meta_model()
    params = sum(p.numel() for p in model.parameters())
    loaded = _BYTES.get(_load_dtype(ctx), 4)
    hidden, layers = text.hidden_size, text.num_hidden_layers
    heads = text.num_attention_heads
    kv = (getattr(text, "num_key_value_heads", None) or heads) * (getattr(text, "head_dim", None) or hidden // heads)
    n = launch.processes
    shard = {"deepspeed": launch.zero_stage, "fsdp": 3}.get(launch.backend, 0)

    def training(trainable: int, tokens: int, labelled: int, checkpointing: bool, bf16: bool,
                 fused: bool) -> dict[str, float]:
        act = 2 if bf16 or loaded == 2 else 4
        kept = 4 if loaded == 4 or cfg.model.lora.enabled else 2  # peft keeps LoRA adapters in fp32
        if launch.backend == "deepspeed" and kept == 2:
            optimizer = trainable * 12  # fp32 master weights and Adam's two moments
        else:
            optimizer = trainable * 2 * kept  # Adam's moments in the parameters' dtype
        # per token and layer ~34 x hidden bytes of 16-bit activations (SDPA/flash attention: no score matrix);
        # with recomputation each layer keeps its input and one layer at a time holds the rest
        layer = 34 * hidden * act / 2
        per_token = layers * hidden * act + layer if checkpointing else layers * layer
        parts = {
            "weights": params * loaded / (n if shard >= 3 else 1),
            "gradients": trainable * kept / (n if shard >= 2 else 1),
            "optimizer": optimizer / (n if shard >= 1 else 1),
            "activations": tokens * per_token,
        }
        if not fused:  # logits of the labelled positions, and their gradient
            parts["activations"] += labelled * text.vocab_size * act * 2
        return parts

    def resolve(flag: bool | None) -> bool:
        # None: the run's precision, whose auto is bf16 on the CUDA devices this memory is on
        return cfg.runtime.precision != "fp32" if flag is None else flag

    trainable = _lora_parameters(ctx, model) if cfg.model.lora.enabled else params
    fused = cfg.warmup.logprobs != "logits"  # auto: fused on CUDA
    out = []
    w = cfg.warmup
    if w.loss != "none":
        tokens = w.per_device_train_batch_size * w.max_length
        parts = training(trainable, tokens, tokens, resolve(w.activation_checkpointing), resolve(w.bf16), fused)
        out.append(_estimate("warm-up", parts, f"micro-batches of {w.per_device_train_batch_size} x {w.max_length} tokens", launch))
    rl = cfg.rl
    longest_prompt = max(_prompt_tokens(ctx.tokenizer, p) for p in ctx.prompts["prompt"][:256])
    sequence = longest_prompt + rl.max_completion_length
    parts = training(trainable, rl.per_device_train_batch_size * sequence,
                     rl.per_device_train_batch_size * rl.max_completion_length, resolve(rl.activation_checkpointing),
                     resolve(rl.bf16), False)
    if rl.beta > 0:
        parts["reference model"] = params * loaded
    if rl.use_vllm:
        share = rl.trainer.get("vllm_gpu_memory_utilization", 0.3)
        extra = f" + vLLM's {share:.0%} of the GPU" if rl.vllm_mode == "colocate" else " (vLLM on its own GPUs)"
    else:
        batch = rl.generation_round(n)[0] // n  # this process's share of a generation round
        parts["generation cache"] = batch * sequence * layers * 2 * kv * (2 if resolve(rl.bf16) or loaded == 2 else 4)
        extra = ""
    out.append(_estimate("rl", parts, f"micro-batches of {rl.per_device_train_batch_size} x {sequence} tokens", launch, extra))
    e = cfg.eval
    if e.use_vllm:
        out.append(Finding("memory", "estimate", f"eval: vLLM takes {e.vllm_gpu_memory_utilization:.0%} of GPU 0"))
    else:
        cache = e.batch_size * (longest_prompt + e.max_new_tokens) * layers * 2 * kv * loaded
        out.append(_estimate("eval", {"weights": params * loaded, "generation cache": cache},
                             f"batches of {e.batch_size} x {longest_prompt + e.max_new_tokens} tokens", Launch()))
    return out


def _lora_parameters(ctx: Context, model) -> int:
    lora = ctx.cfg.model.lora
    names = None if lora.target_modules == "all-linear" else {t.strip() for t in lora.target_modules.split(",")}
    total = 0
    for name, m in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(m, torch.nn.Linear) and leaf != "lm_head" and (names is None or leaf in names):
            total += lora.r * (m.in_features + m.out_features)
    return total


def _gb(size: float) -> str:
    return f"{size / 1e9:.1f}" if size >= 1e8 else f"{size / 1e9:.2f}"


def _estimate(stage: str, parts: dict[str, float], batch: str, launch: Launch, extra: str = "") -> Finding:
    spelled = " + ".join(f"{k} {_gb(v)}" for k, v in parts.items())
    return Finding("memory", "estimate", f"{stage}: ~{_gb(sum(parts.values()))} GB per GPU{extra} = {spelled} GB "
                                         f"({batch}; {launch.described})")


CHECKS: dict[str, Callable[[Context], list[Finding]]] = {
    "end of turn": end_of_turn,
    "closing label": closing_label,
    "data": gold_answers,
    "held-out": held_out,
    "benchmarks": benchmarks,
    "tracking": trackers,
    "cadft": cadft_settings,
    "lengths": lengths,
    "rl batch": rl_batch,
    "steps per generation": steps_per_generation,
    "lora": lora_targets,
    "versions": versions,
    "dtype": dtype,
    "memory": memory,
}


# the checks that tokenize conversations through the chat template
TOKENIZES = ("closing label", "lengths", "memory")


def run_checks(cfg: Config, launch: Launch | None = None, stages: list[str] | None = None) -> list[Finding]:
    """Every check's findings, in order; a config, model or data that cannot be read is one error finding.
    `stages`: the stages about to run, whose inputs alone are loaded (None: `coldstart check`, every input that
    can be read; a held-out split that cannot is then a warning)."""
    launch = launch or launch_from()
    try:
        ctx = Context(cfg, launch, stages)
    except ColdstartError as e:
        return [Finding("load", "error", str(e))]
    findings: list[Finding] = []
    untemplated = ctx.conversational and not ctx.tokenizer.chat_template
    for name, check in CHECKS.items():
        if untemplated and name in TOKENIZES:  # conversations cannot be tokenized without a template
            continue
        findings.extend(check(ctx))
    return findings


def summary(findings: list[Finding]) -> str:
    counts = {level: sum(f.level == level for f in findings) for level in LEVELS}

    def n(level: str, word: str) -> str:
        return f"{counts[level]} {word}{'' if counts[level] == 1 else 's'}"

    return f"check: {n('error', 'error')}, {n('warning', 'warning')}, {counts['fixed']} fixed for the run, {counts['ok']} passed"
