"""The CADFT trainer: TRL's SFTTrainer with the loss replaced by DFT inside each sample and a compatibility weight
across samples (`coldstart.losses`), plus the per-step metrics users compare.

Statistics for the z-scores (`cadft.stats`):
- `batch`: the global batch. With one micro-batch per optimizer step they come from the training forward itself,
  all-reduced over processes. With gradient accumulation a no-grad pre-pass over the step's micro-batches gives
  them before the first backward, so the gradient does not depend on how the batch is split.
- `ema`: moving mean/std of the global batches of earlier steps, started from `coldstart score` when present (else
  from a pre-pass on the first step); free, and also independent of the split.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate.utils import send_to_device

from coldstart import faults
from coldstart.compatibility import sequence_nll
from coldstart.config import CadftSection
from coldstart.losses import batch_moments, cadft_weights, effective_sample_fraction, mean_std, token_loss
from coldstart.warmup_trainer import WarmupTrainer

STATE_FILE = "cadft_state.json"


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


class CADFTTrainer(WarmupTrainer):
    """The warm-up trainer whose loss is `-sum_i w_i sum_t sg(p_t) l_t / N` with the paper's compatibility weights
    `w_i`.

    Extra arguments: `cadft` (the config section), `fused` (`WarmupTrainer`'s choice of log-prob path), `styles`
    (the style of each training row, for per-style metrics), `ema_init` ((mean, std) of the NLL from
    `coldstart score`, for `ema` mode). The train dataset must carry a `sample_index` column.
    """

    def __init__(self, *args, cadft: CadftSection, styles: list[str], ema_init=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.cadft, self.styles = cadft, styles
        self.ema: tuple[float, float] | None = ema_init
        self.overrides: dict[int, tuple[int, dict[str, list[int]]]] = {}
        self.data_collator = IndexedCollator(self.data_collator, self.overrides)
        # called after each training micro-batch with its sample indices, NLLs and rewrite steps (all processes')
        self.nll_observers: list[Callable[[list[int], list[float], list[int]], None]] = []
        self.rewriter = None  # a coldstart.rewriting.Rewriter attaches itself here
        self._step_stats: tuple[float, float] | None = None
        self._step_moments: torch.Tensor | None = None

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
