"""The CADFT trainer and its config: TRL's SFTTrainer with the loss replaced by DFT inside each sample and a
compatibility weight across samples (`coldstart.losses`), plus the per-step metrics users compare and the delayed
rewriting of incompatible targets. A drop-in for `SFTTrainer` / `SFTConfig`:

    from coldstart import CADFTConfig, CADFTTrainer
    trainer = CADFTTrainer(model=model, args=CADFTConfig(output_dir="out", beta=1.0), train_dataset=dataset,
                           processing_class=tokenizer)

Statistics for the z-scores (`cadft.stats`):
- `batch`: the global batch. With one micro-batch per optimizer step they come from the training forward itself,
  all-reduced over processes. With gradient accumulation a no-grad pre-pass (in eval mode) over the step's
  micro-batches gives them, and each sample's NLL for its weight, before the first backward, so the gradient does
  not depend on how the batch is split, nor the weights on dropout.
- `ema`: moving mean/std of the global batches of earlier steps, started from `coldstart score` when present (else
  from a pre-pass on the first step); free, and also independent of the split.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import torch
from accelerate.utils import send_to_device
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTConfig

from coldstart import faults, runtime
from coldstart.compatibility import sequence_nll, use_fused_head
from coldstart.config import CadftSection, RewriteSection, WarmupSection, section_problem
from coldstart.errors import ColdstartError
from coldstart.losses import batch_moments, cadft_weights, effective_sample_fraction, mean_std, token_loss
from coldstart.sample_store import SampleStore
from coldstart.training import TrainedPolicy
from coldstart.warmup_trainer import WarmupTrainer

STATE_FILE = "cadft_state.json"


def _yaml(section: type, name: str, **changed: Any) -> Any:
    """A field whose default and help are those of the YAML section's field `name` (one place says them)."""
    f = next(f for f in dataclasses.fields(section) if f.name == name)
    return dataclasses.field(default=changed.get("default", f.default),
                             metadata={"help": changed.get("help", f.metadata["help"])})


def _section(args: Any, section: type, prefix: str = "") -> Any:
    return section(**{f.name: getattr(args, prefix + f.name) for f in dataclasses.fields(section)})


@dataclass
class CADFTConfig(SFTConfig):
    """Configuration of `CADFTTrainer`: every `trl.SFTConfig` field, plus

    beta, stats, ema_decay, gate_min, weight_floor, token_weighting, normalize: the compatibility weights
        `w_i = exp(-beta * max(0, z_i))` of each sample's z-scored NLL (beta 0: TRL's DFT loss exactly), and what
        the loss is divided by (the step's tokens, or each sample by its own and then by the step's samples).
    logprobs: how per-token log-probs are computed (TRL's fused LM head, or logits; auto: fused on CUDA).
    rewrite_*: delayed rewriting of persistently incompatible targets (`coldstart.rewriting`).

    Each field's default and help are those of the YAML config's `warmup.cadft` and `warmup.rewrite` sections
    (`coldstart config` prints them), except `rewrite_enabled`, off here. Two SFTConfig defaults follow the device:
    `bf16` and `activation_checkpointing` are on with CUDA and off without it (the CLI sets `bf16` from
    `runtime.precision`, `coldstart.precision`).
    """

    bf16: Optional[bool] = dataclasses.field(default=None, metadata={
        "help": "bf16 mixed precision; None: on with CUDA, off without (SFTConfig: on unless fp16)."})
    activation_checkpointing: Optional[bool] = dataclasses.field(default=None, metadata={
        "help": "Recompute activations in backward; None: on with CUDA, off without (SFTConfig: on)."})
    gradient_checkpointing: Optional[bool] = dataclasses.field(default=None, metadata={
        "help": "Deprecated name of activation_checkpointing (transformers)."})

    beta: float = _yaml(CadftSection, "beta")
    stats: Literal["batch", "ema"] = _yaml(CadftSection, "stats")
    ema_decay: float = _yaml(CadftSection, "ema_decay")
    gate_min: Optional[float] = _yaml(CadftSection, "gate_min")
    weight_floor: float = _yaml(CadftSection, "weight_floor")
    token_weighting: Literal["dft", "none"] = _yaml(CadftSection, "token_weighting")
    normalize: Literal["tokens", "samples"] = _yaml(CadftSection, "normalize")
    logprobs: Literal["auto", "fused", "logits"] = _yaml(WarmupSection, "logprobs")

    rewrite_enabled: bool = _yaml(RewriteSection, "enabled", default=False, help=(
        "Delayed, low-frequency rewriting of persistently incompatible targets, verified against an `answer` "
        "column (off here; the CLI's warmup.rewrite.enabled is on)."))
    rewrite_start: float = _yaml(RewriteSection, "start")
    rewrite_every: float = _yaml(RewriteSection, "every")
    rewrite_fraction: float = _yaml(RewriteSection, "fraction")
    rewrite_replace_prob: float = _yaml(RewriteSection, "replace_prob")
    rewrite_num_candidates: int = _yaml(RewriteSection, "num_candidates")
    rewrite_temperature: float = _yaml(RewriteSection, "temperature")
    rewrite_top_p: float = _yaml(RewriteSection, "top_p")
    rewrite_max_new_tokens: int = _yaml(RewriteSection, "max_new_tokens")
    rewrite_verify: bool = _yaml(RewriteSection, "verify")
    rewrite_hint_reference: bool = _yaml(RewriteSection, "hint_reference")
    rewrite_nll_decay: float = _yaml(RewriteSection, "nll_decay")

    def __post_init__(self) -> None:
        # bf16 and recomputation left unset are on with CUDA only (TRL turns both on everywhere; a CPU run refuses
        # bf16 without use_cpu, and recomputation only slows it)
        cuda = torch.cuda.is_available()
        if self.bf16 is None:
            self.bf16 = cuda and not self.fp16
        if self.activation_checkpointing is None and self.gradient_checkpointing is None:
            self.activation_checkpointing = cuda
        super().__post_init__()
        for section, prefix in ((self.cadft_section(), ""), (self.rewrite_section(), "rewrite_")):
            problem = section_problem(section)
            if problem:
                raise ColdstartError(f"CADFTConfig: {prefix}{problem[0]}: {problem[1]}")

    def cadft_section(self) -> CadftSection:
        return _section(self, CadftSection)

    def rewrite_section(self) -> RewriteSection:
        return _section(self, RewriteSection, "rewrite_")


class IndexedCollator:
    """Wraps TRL's collator: adds each training row's `sample_index` (evaluation rows have none). It keeps nothing
    between calls, so it runs as well in data loader workers: the trainer puts the current targets of rewritten
    samples into each batch in the main process (`CADFTTrainer._current_targets`)."""

    def __init__(self, base: Callable):
        self.base = base

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if not examples or "sample_index" not in examples[0]:
            return self.base(examples)
        index = [int(e.pop("sample_index")) for e in examples]
        batch = self.base(examples)
        batch["sample_index"] = torch.tensor(index)
        return batch


def _prompt_completion(dataset, which: str):
    """TRL's prompt/completion rows: a `messages` row is split into its prompt (every message before the last) and
    completion (the last, the assistant's), so that the loss covers the completion alone."""
    names = dataset.column_names
    if "messages" in names and "prompt" not in names:
        return dataset.map(lambda row: {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]},
                           remove_columns=["messages"])
    if "prompt" not in names or "completion" not in names:
        raise ColdstartError(
            f"CADFTTrainer: the {which} dataset has columns {names}; CADFT weighs each sample's completion, so it "
            "needs TRL's prompt/completion or messages rows"
        )
    return dataset


def _cadft_rows(dataset):
    """Prompt/completion rows, each with `sample_index`: its position here, kept when TRL drops or shuffles rows."""
    if dataset is None:
        raise ColdstartError("CADFTTrainer: give a train_dataset (CADFT weighs the samples it trains on)")
    dataset = _prompt_completion(dataset, "train")
    if "sample_index" in dataset.column_names:  # the index is this data set's own positions, whatever came before
        dataset = dataset.remove_columns("sample_index")
    return dataset.add_column("sample_index", list(range(len(dataset))))


def unsupported_setting(settings: dict[str, Any]) -> str | None:
    """Why CADFT cannot train under these SFTConfig settings (packing, padding_free, completion_only_loss,
    accelerator_config, train_sampling_strategy with rewrite_enabled; missing ones at SFTConfig's defaults), or None.
    Refused rather than trained silently wrong."""
    for field in ("packing", "padding_free"):
        if settings.get(field):
            return (f"{field}=True puts several samples in one row, so each sample's compatibility weight cannot be "
                    f"told apart; set {field}=False (warmup.trainer.{field})")
    if settings.get("completion_only_loss") is False:
        return ("completion_only_loss=False trains on the prompt too, while CADFT weighs each sample by its "
                "completion; leave completion_only_loss unset or True")
    accelerator = settings.get("accelerator_config") or {}
    accelerator = accelerator if isinstance(accelerator, dict) else vars(accelerator)
    if accelerator.get("split_batches") or accelerator.get("even_batches") is False:
        return ("accelerator_config split_batches=True or even_batches=False changes which rows each process "
                "trains on (and how many), which the per-sample bookkeeping gathers across processes; leave both "
                "at their defaults")
    strategy = settings.get("train_sampling_strategy", "random")
    if settings.get("rewrite_enabled") and strategy != "random":
        return (f"train_sampling_strategy={strategy!r} draws samples in an order the rewriting plan cannot predict; "
                "use 'random' (the default) or turn rewriting off (warmup.rewrite.enabled: false)")
    return None


class CADFTTrainer(WarmupTrainer):
    """The warm-up trainer whose loss is `-sum_i w_i sum_t sg(p_t) l_t / N` with the paper's compatibility weights
    `w_i`: `trl.SFTTrainer` with a `CADFTConfig`.

    `train_dataset` takes what SFTTrainer takes for completion-only training: prompt/completion rows (plain or
    conversational) or messages rows (the last message is the completion). Optional columns: `style` (per-style
    weights in the logs), `answer` (rewriting verifies against it), `id` (names rows in `rewrites.jsonl`).
    `eval_dataset` is evaluated with the same loss (weights from the evaluation batch's own statistics, or the
    moving ones with `stats: ema`). `ema_init`: (mean, std) of the NLL to start the moving statistics from
    (`stats: ema`), e.g. from `coldstart score`. Per-sample state (moving NLL, visits, rewritten targets) lives in
    `trainer.store` (`coldstart.sample_store`); `trainer.train(resume_from_checkpoint=...)` restores it, and the
    moving statistics, from the checkpoint.
    """

    def __init__(self, model=None, args=None, train_dataset=None, processing_class=None, ema_init=None, **kwargs):
        if not isinstance(args, CADFTConfig):
            raise ColdstartError(f"CADFTTrainer: args must be a CADFTConfig, got {type(args).__name__}")
        problem = unsupported_setting(vars(args))
        if problem:
            raise ColdstartError(f"CADFTTrainer: {problem}")
        source = _cadft_rows(train_dataset)
        evaluated = kwargs.get("eval_dataset")
        if isinstance(evaluated, dict):
            kwargs["eval_dataset"] = {k: _prompt_completion(d, f"eval ({k})") for k, d in evaluated.items()}
        elif evaluated is not None:
            kwargs["eval_dataset"] = _prompt_completion(evaluated, "eval")
        kwargs.setdefault("fused", use_fused_head(args.logprobs))
        super().__init__(model=model, args=args, train_dataset=source, processing_class=processing_class, **kwargs)
        self.cadft = args.cadft_section()
        self.styles = source["style"] if "style" in source.column_names else None
        self.ema: tuple[float, float] | None = tuple(ema_init) if ema_init is not None else None
        self.store = SampleStore(args.rewrite_nll_decay, source, self.processing_class)
        self.data_collator = IndexedCollator(self.data_collator)
        # the sample at each position of the processed train dataset (TRL may drop rows, or shuffle them), and back
        self.row_samples: list[int] = self.train_dataset["sample_index"]
        self._positions = {sample: row for row, sample in enumerate(self.row_samples)}
        self._step_stats: tuple[float, float] | None = None
        self._step_samples: torch.Tensor | None = None
        self._prepass_nll: dict[int, float] = {}
        self._step_moments: torch.Tensor | None = None
        self.rewriter = None
        if args.rewrite_enabled:
            from coldstart.rewriting import Rewriter

            self.rewriter = Rewriter(args.rewrite_section(), self.store, TrainedPolicy(self), self.sample_visits_after,
                                     args.max_length, Path(args.output_dir) / "rewrites.jsonl", args.seed)
            self.rewriter.check(self.total_steps())
            self.add_callback(self.rewriter)

    def total_steps(self) -> int:
        """Optimizer steps training will take: `max_steps`, else the epochs' steps."""
        a = self.args
        return a.max_steps if a.max_steps > 0 else math.ceil(a.num_train_epochs * self.visit_plan().steps_per_epoch)

    def sample_visits_after(self, step: int, total_steps: int) -> Counter:
        """How many times each sample (by index) is trained on in the steps after `step`, up to `total_steps`."""
        visits: Counter = Counter()
        for row, n in self.visit_plan().visits_after(step, total_steps).items():
            visits[self.row_samples[row]] += n
        return visits

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        """`Trainer.train`; a resumed run gets back the per-sample state and the moving statistics."""
        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            checkpoint = get_last_checkpoint(self.args.output_dir)  # None: Trainer says none was found
        # the main process's answer, on every process: restoring is a collective
        checkpoint = runtime.from_main(str(checkpoint) if checkpoint else None)
        if checkpoint:
            self.restore_state(checkpoint)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if "sample_index" not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, "sample_index"]

    # -- the step's batches -----------------------------------------------------------------------------------

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Collect the step's micro-batches (as Trainer does, with the current targets of rewritten samples) and,
        where needed, their exact NLL statistics."""
        batches, num_items = super().get_batch_samples(map(self._current_targets, epoch_iterator), num_batches, device)
        self._fold_into_ema()
        c, several = self.cadft, len(batches) > 1
        needs_stats = (c.stats == "batch" and several) or (c.stats == "ema" and self.ema is None)
        self._step_stats, self._prepass_nll = None, {}
        if batches and needs_stats:
            self._step_stats = self._prepass(batches)
        self._step_samples = self._count_samples(batches) if c.normalize == "samples" else None
        return batches, num_items

    def _count_samples(self, batches: list[dict[str, Any]]) -> torch.Tensor:
        """The step's demonstrations, counted as Trainer counts its tokens for `num_items_in_batch`: over every
        process when `average_tokens_across_devices`, else this process's (what `normalize: samples` divides by)."""
        device = self.accelerator.device
        count = torch.tensor(float(sum(len(b["input_ids"]) for b in batches)), device=device)
        if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
            count = self.accelerator.reduce(count, reduction="sum")
        return count

    def _current_targets(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch with the current target of every row (collated again, from the data set and the store, when a
        row's sample was rewritten) and each row's `rewrite_step` (0: the original demonstration)."""
        index = batch["sample_index"].tolist()
        steps = [self.store.rewrite_step(i) for i in index]
        if any(steps):
            self._set_signature_columns_if_needed()
            columns = [c for c in self._signature_columns if c in self.train_dataset.column_names]
            examples = []
            for i in index:
                target = self.store.target(i)
                if target is not None:
                    examples.append({**target.row, "sample_index": i})
                else:
                    row = self.train_dataset[self._positions[i]]
                    examples.append({c: row[c] for c in columns})
            batch = send_to_device(self.data_collator(examples), batch["input_ids"].device)
        batch["rewrite_step"] = torch.tensor(steps, device=batch["input_ids"].device)
        return batch

    @torch.no_grad()
    def _prepass(self, batches: list[dict[str, Any]]) -> tuple[float, float]:
        """The NLL mean/std of the step's global batch, from a forward in eval mode: with dropout, a forward in train mode would give statistics of another pass than the
        loss's weights use. The NLLs are kept by sample index for `compute_loss`."""
        nll = []
        was_training = self.model.training
        self.model.eval()
        try:
            for batch in batches:
                log_probs, mask = self.token_logprobs(self.model, self._prepare_inputs(batch))
                n, _ = sequence_nll(log_probs.float(), mask)
                self._prepass_nll.update(zip(batch["sample_index"].tolist(), n.tolist()))
                nll.append(n)
        finally:
            self.model.train(was_training)
        return mean_std(self.accelerator.reduce(batch_moments(torch.cat(nll)), reduction="sum"))

    def _fold_into_ema(self) -> None:
        """After an optimizer step, move the moving mean/std towards that step's global batch statistics."""
        if self.cadft.stats != "ema" or self._step_moments is None:
            return
        mean, std = mean_std(self._step_moments)
        if self.ema is None:
            self.ema = (mean, std)
        else:
            d = self.cadft.ema_decay
            self.ema = (d * self.ema[0] + (1 - d) * mean, d * self.ema[1] + (1 - d) * std)
        self._step_moments = None

    # -- loss -------------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        index = inputs.pop("sample_index", None)
        rewrite_step = inputs.pop("rewrite_step", None)
        faults.reach("loss")
        log_probs, mask = self.token_logprobs(model, inputs)
        nll, tokens = sequence_nll(log_probs.detach().float(), mask)
        training = model.training
        moments = self.accelerator.reduce(batch_moments(nll), reduction="sum")
        weighed = nll
        if training and self._prepass_nll:
            # the pre-pass's NLLs: the same pass as the statistics (the training forward may differ by dropout)
            weighed = torch.tensor([self._prepass_nll[i] for i in index.tolist()], dtype=nll.dtype, device=nll.device)
        if training and self._step_stats is not None:
            mean, std = self._step_stats
        else:
            mean, std = self.ema if self.cadft.stats == "ema" and self.ema is not None else mean_std(moments)
        c = self.cadft
        weights = cadft_weights(weighed, mean, std, c.beta, c.gate_min, c.weight_floor)
        num_items, per_sample = (mask.sum() if num_items_in_batch is None else num_items_in_batch), weights
        if c.normalize == "samples":
            # each demonstration's term averaged over its own tokens, then over the step's demonstrations (every
            # process's and micro-batch's when Trainer counts the step's tokens, this micro-batch's otherwise,
            # which Trainer then divides by the accumulation steps itself)
            per_sample = weights / tokens.to(weights.dtype).clamp(min=1)
            counted = training and num_items_in_batch is not None and self._step_samples is not None
            num_items = self._step_samples if counted else len(tokens)
        loss = token_loss(log_probs, mask, num_items, c.token_weighting, per_sample)
        loss = self.scale_for_devices(loss, num_items_in_batch)
        if training:
            self._step_moments = moments if self._step_moments is None else self._step_moments + moments
            self._record(index, rewrite_step, nll, weights)
        return (loss, None) if return_outputs else loss

    def _record(self, index, rewrite_step, nll, weights) -> None:
        """Every process's rows of a trained micro-batch into the logged statistics and the store. `gather`, not
        `gather_for_metrics`: the latter trims an epoch's last step to the data set's remainder, though every
        row gathered here was trained on."""
        gather = self.accelerator.gather
        nll, weights = gather(nll), gather(weights)
        compat = torch.exp(-nll)
        m = self._metrics["train"]
        m["nll"].append(float(nll.mean()))  # per-sample mean NLL, as the weights and the scorer use it
        m["compat_mean"].append(float(compat.mean()))
        m["compat_min"].append(float(compat.min()))
        m["compat_max"].append(float(compat.max()))
        m["weight_mean"].append(float(weights.mean()))
        m["weight_min"].append(float(weights.min()))
        m["ess_fraction"].append(effective_sample_fraction(weights))
        m["damped_fraction"].append(float((weights < 0.5).float().mean()))
        if index is None:
            return
        index = gather(index.to(nll.device)).tolist()
        if rewrite_step is None:
            rewrite_step = torch.zeros_like(nll, dtype=torch.long)
        rewrite_step = gather(rewrite_step.to(nll.device)).tolist()
        if self.styles is not None:
            by_style: dict[str, list[int]] = defaultdict(list)
            for row, i in enumerate(index):
                by_style[self.styles[i]].append(row)
            for style, rows in by_style.items():
                m[f"style/{style}/compat"].append(float(compat[rows].mean()))
                m[f"style/{style}/weight"].append(float(weights[rows].mean()))
        self.store.observe(index, nll.tolist(), rewrite_step)

    # -- resume -----------------------------------------------------------------------------------------------

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        faults.reach("save")
        checkpoint = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        state = {
            "ema": self.ema,
            "step_moments": None if self._step_moments is None else self._step_moments.tolist(),
            "samples": self.store.state(),
        }
        if self.args.should_save:
            (checkpoint / STATE_FILE).write_text(json.dumps(state))

    def restore_state(self, checkpoint: str | Path) -> None:
        """Before resuming from `checkpoint`: the moving statistics and the per-sample state, as the main process
        reads them (every process gets the same)."""
        path = Path(checkpoint) / STATE_FILE
        state = json.loads(path.read_text()) if runtime.is_main() and path.is_file() else None
        if state is not None and "attempts" not in (state.get("samples") or {}):
            state["samples"] = self._earlier_release_samples(state, checkpoint)
        state = runtime.from_main(state)
        if state is None:
            return
        self.ema = tuple(state["ema"]) if state.get("ema") else None
        moments = state.get("step_moments")
        self._step_moments = torch.tensor(moments, dtype=torch.float64) if moments else None
        self.store.load_state(state.get("samples") or {})

    def _earlier_release_samples(self, state: dict[str, Any], checkpoint: str | Path) -> dict[str, Any]:
        """The per-sample state of a checkpoint from a release that kept the rewriting attempts in `rewrites.jsonl`
        alone (the attempts of rounds up to the checkpoint's step; the first release also kept the moving NLL under
        `rewriter`, the second the current targets, which stand where the log lacks them)."""
        samples = state.pop("rewriter", None) or state.get("samples") or {}
        log = Path(self.args.output_dir) / "rewrites.jsonl"
        attempts = []
        for line in log.read_text(encoding="utf-8").splitlines() if log.is_file() else []:
            try:
                attempts.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash: the attempts before it stand
                break
        step = _global_step(checkpoint)
        attempts = [a for a in attempts if a["step"] <= step]
        logged = {a["index"] for a in attempts if a["accepted"]}
        attempts += [{"step": at, "index": int(i), "accepted": True, "new": text, "new_nll": None}
                     for i, (at, text) in samples.get("targets", {}).items() if int(i) not in logged]
        return {**samples, "attempts": attempts}


def _global_step(checkpoint: str | Path) -> int:
    return json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"]
