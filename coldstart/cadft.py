"""The CADFT trainer and its config: TRL's SFTTrainer with the loss replaced by DFT inside each sample and a
compatibility weight across samples (`coldstart.losses`), plus the per-step metrics users compare and the delayed
rewriting of incompatible targets. A drop-in for `SFTTrainer` / `SFTConfig`:

    from coldstart import CADFTConfig, CADFTTrainer
    trainer = CADFTTrainer(model=model, args=CADFTConfig(output_dir="out", beta=1.0), train_dataset=dataset,
                           processing_class=tokenizer)

Statistics for the z-scores (`cadft.stats`):
- `batch`: the global batch. With one micro-batch per optimizer step they come from the training forward itself,
  all-reduced over processes. With gradient accumulation a no-grad pre-pass over the step's micro-batches gives
  them before the first backward, so the gradient does not depend on how the batch is split.
- `ema`: moving mean/std of the global batches of earlier steps, started from `coldstart score` when present (else
  from a pre-pass on the first step); free, and also independent of the split.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate.utils import send_to_device
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTConfig

from coldstart import faults
from coldstart.compatibility import sequence_nll, use_fused_head
from coldstart.config import CadftSection, RewriteSection, WarmupSection
from coldstart.errors import ColdstartError
from coldstart.losses import batch_moments, cadft_weights, effective_sample_fraction, mean_std, token_loss
from coldstart.warmup_trainer import WarmupTrainer

STATE_FILE = "cadft_state.json"


def _options(section: type, prefix: str = "", **changed: Any) -> list[tuple[str, Any, Any]]:
    """A YAML section's fields as TRL config fields: the same types, defaults and help (one place says them)."""
    hints = typing.get_type_hints(section)
    out = []
    for f in dataclasses.fields(section):
        default, help_text = changed.get(f.name, (f.default, f.metadata["help"]))
        out.append((prefix + f.name, hints[f.name], dataclasses.field(default=default, metadata={"help": help_text})))
    return out


def _section(args: Any, section: type, prefix: str = "") -> Any:
    return section(**{f.name: getattr(args, prefix + f.name) for f in dataclasses.fields(section)})


def _resolve_device_defaults(self) -> None:
    """bf16 and recomputation left unset are on with CUDA only (TRL turns both on everywhere; a CPU run refuses bf16
    without use_cpu, and recomputation only slows it)."""
    cuda = torch.cuda.is_available()
    if self.bf16 is None:
        self.bf16 = cuda and not self.fp16
    if self.activation_checkpointing is None and self.gradient_checkpointing is None:
        self.activation_checkpointing = cuda
    SFTConfig.__post_init__(self)


CADFTConfig = dataclasses.make_dataclass(
    "CADFTConfig",
    [
        ("bf16", typing.Optional[bool], dataclasses.field(default=None, metadata={
            "help": "bf16 mixed precision; None: on with CUDA, off without (SFTConfig: on unless fp16)."})),
        ("activation_checkpointing", typing.Optional[bool], dataclasses.field(default=None, metadata={
            "help": "Recompute activations in backward; None: on with CUDA, off without (SFTConfig: on)."})),
        ("gradient_checkpointing", typing.Optional[bool], dataclasses.field(default=None, metadata={
            "help": "Deprecated name of activation_checkpointing (transformers)."})),
        *_options(CadftSection),
        *[o for o in _options(WarmupSection) if o[0] == "logprobs"],
        *_options(RewriteSection, "rewrite_", enabled=(
            False, "Delayed, low-frequency rewriting of persistently incompatible targets, verified against an "
                   "`answer` column (off here; the CLI's warmup.rewrite.enabled is on).")),
    ],
    bases=(SFTConfig,),
    namespace={
        "__module__": __name__,
        "__post_init__": _resolve_device_defaults,
        "__doc__": """Configuration of `CADFTTrainer`: every `trl.SFTConfig` field, plus

        beta, stats, ema_decay, gate_min, weight_floor, token_weighting: the compatibility weights
            `w_i = exp(-beta * max(0, z_i))` of each sample's z-scored NLL (beta 0: TRL's DFT loss exactly).
        logprobs: how per-token log-probs are computed (TRL's fused LM head, or logits; auto: fused on CUDA).
        rewrite_enabled, rewrite_start, rewrite_every, rewrite_fraction, rewrite_replace_prob, rewrite_num_candidates,
        rewrite_temperature, rewrite_top_p, rewrite_max_new_tokens, rewrite_verify, rewrite_hint_reference,
        rewrite_nll_decay: delayed rewriting of persistently incompatible targets (`coldstart.rewriting`).

        Each field's default and help are those of the YAML config's `warmup.cadft` and `warmup.rewrite` sections
        (`coldstart config` prints them), except `rewrite_enabled`, off here. Two SFTConfig defaults follow the
        device, as in the CLI: `bf16` and `activation_checkpointing` are on with CUDA and off without it.""",
        "cadft_section": lambda self: _section(self, CadftSection),
        "rewrite_section": lambda self: _section(self, RewriteSection, "rewrite_"),
    },
)


class IndexedCollator:
    """Wraps TRL's collator: adds each row's `sample_index`, and serves the current target of rewritten samples.

    `overrides` maps a sample index to (the step of the round that rewrote it, its tokenized row). Each batch
    carries `rewrite_step` per row (0: the original demonstration), so the trainer can tell a batch collated
    before a round (the data loader fetches one batch ahead) and collate it again with `recollate`.
    """

    def __init__(self, base: Callable, overrides: dict[int, tuple[int, dict[str, list[int]]]]):
        self.base, self.overrides = base, overrides
        self.examples: dict[int, dict[str, Any]] = {}

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        index = [int(e["sample_index"]) for e in examples]
        self.examples.update(zip(index, examples))
        served = [self.overrides.get(i, (0, e)) for i, e in zip(index, examples)]
        batch = self.base([row for _, row in served])
        batch["sample_index"] = torch.tensor(index)
        batch["rewrite_step"] = torch.tensor([step for step, _ in served])
        return batch

    def is_stale(self, batch: dict[str, Any]) -> bool:
        """Whether a row of `batch` was rewritten after the batch was collated."""
        current = [self.overrides.get(int(i), (0, None))[0] for i in batch["sample_index"]]
        return current != batch["rewrite_step"].tolist()

    def recollate(self, batch: dict[str, Any]) -> dict[str, Any]:
        return self([self.examples[int(i)] for i in batch["sample_index"]])


def _cadft_rows(dataset):
    """TRL's prompt/completion rows, each with `sample_index` (its position, kept when TRL drops rows): a `messages`
    row is split into its prompt (every message before the last) and completion (the last, the assistant's)."""
    names = dataset.column_names
    if "messages" in names and "prompt" not in names:
        dataset = dataset.map(lambda row: {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]},
                              remove_columns=["messages"])
    elif "prompt" not in names or "completion" not in names:
        raise ColdstartError(
            f"CADFTTrainer: the train dataset has columns {names}; CADFT weighs each sample's completion, so it "
            "needs TRL's prompt/completion or messages rows"
        )
    if "sample_index" not in names:
        dataset = dataset.add_column("sample_index", list(range(len(dataset))))
    return dataset


class CADFTTrainer(WarmupTrainer):
    """The warm-up trainer whose loss is `-sum_i w_i sum_t sg(p_t) l_t / N` with the paper's compatibility weights
    `w_i`: `trl.SFTTrainer` with a `CADFTConfig`.

    `train_dataset` takes what SFTTrainer takes for completion-only training: prompt/completion rows (plain or
    conversational) or messages rows (the last message is the completion). Optional columns: `style` (per-style
    weights in the logs), `answer` (rewriting verifies against it), `id` (names rows in `rewrites.jsonl`).
    `ema_init`: (mean, std) of the NLL to start the moving statistics from (`stats: ema`), e.g. from
    `coldstart score`. `trainer.train(resume_from_checkpoint=...)` restores the statistics and rewrites too.
    """

    def __init__(self, model=None, args=None, train_dataset=None, processing_class=None, ema_init=None, **kwargs):
        if not isinstance(args, CADFTConfig):
            raise ColdstartError(f"CADFTTrainer: args must be a CADFTConfig, got {type(args).__name__}")
        train_dataset = _cadft_rows(train_dataset)
        kwargs.setdefault("fused", use_fused_head(args.logprobs))
        super().__init__(model=model, args=args, train_dataset=train_dataset, processing_class=processing_class,
                         **kwargs)
        self.cadft = args.cadft_section()
        self.styles = train_dataset["style"] if "style" in train_dataset.column_names else ["default"] * len(train_dataset)
        self.ema: tuple[float, float] | None = tuple(ema_init) if ema_init is not None else None
        self.overrides: dict[int, tuple[int, dict[str, list[int]]]] = {}
        self.data_collator = IndexedCollator(self.data_collator, self.overrides)
        # called after each training micro-batch with its sample indices, NLLs and rewrite steps (all processes')
        self.nll_observers: list[Callable[[list[int], list[float], list[int]], None]] = []
        self.rewriter = None
        self._step_stats: tuple[float, float] | None = None
        self._step_moments: torch.Tensor | None = None
        if args.rewrite_enabled:
            from coldstart.rewriting import Rewriter

            rewriter = Rewriter(args.rewrite_section(), self, train_dataset, self.processing_class,
                                Path(args.output_dir) / "rewrites.jsonl", args.seed)
            rewriter.check(self.total_steps())
            self.add_callback(rewriter)

    def total_steps(self) -> int:
        """Optimizer steps training will take: `max_steps`, else the epochs' steps."""
        a = self.args
        return a.max_steps if a.max_steps > 0 else math.ceil(a.num_train_epochs * self.visit_plan().steps_per_epoch)

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        """`Trainer.train`; a resumed run gets back the moving statistics and the rewrites made up to the checkpoint."""
        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            checkpoint = get_last_checkpoint(self.args.output_dir)  # None: Trainer says none was found
        if checkpoint:
            self.restore_state(checkpoint)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if "sample_index" not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, "sample_index"]

    # -- statistics -------------------------------------------------------------------------------------------

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Collect the step's micro-batches (as Trainer does, with the current targets of rewritten samples) and,
        where needed, their exact NLL statistics."""
        batches, num_items = super().get_batch_samples(map(self._current_targets, epoch_iterator), num_batches, device)
        self._fold_into_ema()
        needs_prepass = (self.cadft.stats == "batch" and len(batches) > 1) or (
            self.cadft.stats == "ema" and self.ema is None
        )
        self._step_stats = self._prepass(batches) if needs_prepass and batches else None
        return batches, num_items

    def _current_targets(self, batch: dict[str, Any]) -> dict[str, Any]:
        collator = self.data_collator
        if not collator.overrides or not collator.is_stale(batch):
            return batch
        return send_to_device(collator.recollate(batch), batch["input_ids"].device)

    @torch.no_grad()
    def _prepass(self, batches: list[dict[str, Any]]) -> tuple[float, float]:
        moments = None
        for batch in batches:
            batch = self._prepare_inputs(batch)
            log_probs, mask = self.token_logprobs(self.model, batch)
            m = batch_moments(sequence_nll(log_probs.float(), mask)[0])
            moments = m if moments is None else moments + m
        return mean_std(self.accelerator.reduce(moments, reduction="sum"))

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
        nll, _ = sequence_nll(log_probs.detach().float(), mask)
        moments = self.accelerator.reduce(batch_moments(nll), reduction="sum")
        if self._step_stats is not None:
            mean, std = self._step_stats
        elif self.cadft.stats == "ema" and self.ema is not None:
            mean, std = self.ema
        else:
            mean, std = mean_std(moments)
        c = self.cadft
        weights = cadft_weights(nll, mean, std, c.beta, c.gate_min, c.weight_floor)
        num_items = mask.sum() if num_items_in_batch is None else num_items_in_batch
        loss = token_loss(log_probs, mask, num_items, c.token_weighting, weights)
        loss = self.scale_for_devices(loss, num_items_in_batch)
        if model.training:
            self._step_moments = moments if self._step_moments is None else self._step_moments + moments
            self._record(index, rewrite_step, nll, weights)
        return (loss, None) if return_outputs else loss

    def _record(self, index, rewrite_step, nll, weights) -> None:
        nll, weights = self.accelerator.gather_for_metrics(nll), self.accelerator.gather_for_metrics(weights)
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
        index = self.accelerator.gather_for_metrics(index.to(nll.device)).tolist()
        rewrite_step = self.accelerator.gather_for_metrics(rewrite_step.to(nll.device)).tolist()
        by_style: dict[str, list[int]] = defaultdict(list)
        for row, i in enumerate(index):
            by_style[self.styles[i]].append(row)
        for style, rows in by_style.items():
            m[f"style/{style}/compat"].append(float(compat[rows].mean()))
            m[f"style/{style}/weight"].append(float(weights[rows].mean()))
        for observe in self.nll_observers:
            observe(index, nll.tolist(), rewrite_step)

    # -- resume -----------------------------------------------------------------------------------------------

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        faults.reach("save")
        checkpoint = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        state = {
            "ema": self.ema,
            "step_moments": None if self._step_moments is None else self._step_moments.tolist(),
            "rewriter": None if self.rewriter is None else self.rewriter.state(),
        }
        if self.args.should_save:
            (checkpoint / STATE_FILE).write_text(json.dumps(state))

    def restore_state(self, checkpoint: str | Path) -> None:
        """Before resuming from `checkpoint`: the moving statistics and the rewrites made up to it."""
        path = Path(checkpoint) / STATE_FILE
        if not path.is_file():
            return
        state = json.loads(path.read_text())
        self.ema = tuple(state["ema"]) if state.get("ema") else None
        moments = state.get("step_moments")
        self._step_moments = torch.tensor(moments, dtype=torch.float64) if moments else None
        if self.rewriter is not None:
            step = json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"]
            self.rewriter.restore(state.get("rewriter") or {}, step)
