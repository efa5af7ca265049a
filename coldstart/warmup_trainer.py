"""TRL's SFTTrainer with a choice of how the per-token log-probs are computed, the base of every warm-up trainer.

TRL 1.16 always computes the SFT and DFT losses through its fused, tiled LM head. Off Triton devices its tiles are
folded in plain torch ops over every position, which on a CPU costs more than the whole LM head of a small model
(`make bench`). With `fused=False` the loss comes from `coldstart.compatibility.token_logprobs` instead: plain
logits of the completion positions only. The loss formulas are TRL's (`coldstart.losses.token_loss`).
"""

from __future__ import annotations

from typing import Any

import torch
from trl import SFTTrainer

from coldstart.compatibility import token_logprobs
from coldstart.losses import token_loss
from coldstart.sampling import EpochOrder, VisitPlan


class WarmupTrainer(SFTTrainer):
    """SFTTrainer for `loss_type` nll or dft whose log-probs come from the fused head (`fused=True`, TRL's own
    `compute_loss`) or from logits of the completion positions (`fused=False`; TRL's entropy and token-accuracy
    metrics, which need the fused head's extra outputs, are not logged then)."""

    def __init__(self, *args, fused: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fused = fused

    def _get_train_sampler(self, train_dataset=None):
        """The default random order, drawn so that `visit_plan` can tell in advance which step trains on what."""
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if self.args.train_sampling_strategy != "random":
            return super()._get_train_sampler(train_dataset)
        return EpochOrder(len(dataset), self._order_seed())

    def _order_seed(self) -> int:
        return self.args.data_seed if self.args.data_seed is not None else self.args.seed

    def visit_plan(self) -> VisitPlan:
        """Which rows of the train dataset each optimizer step trains on (the default random order only)."""
        a = self.args
        return VisitPlan(len(self.train_dataset), self._order_seed(), a.per_device_train_batch_size,
                         a.world_size, a.gradient_accumulation_steps, a.dataloader_drop_last)

    def token_logprobs(self, model, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs of the batch's labels and their mask (`coldstart.compatibility.token_logprobs`)."""
        return token_logprobs(model, inputs["input_ids"], inputs.get("attention_mask"), inputs["labels"], self.fused)

    def scale_for_devices(self, loss: torch.Tensor, num_items_in_batch) -> torch.Tensor:
        """Like Trainer: `num_items_in_batch` counts every rank's tokens and DDP averages the gradients over ranks."""
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            return loss * self.accelerator.num_processes
        return loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """TRL's, with this trainer's loss; the logits `compute_metrics` and `predict` ask for come from a plain
        forward, since the loss computes log-probs of the completion positions alone (or none, fused)."""
        loss, _, _ = super().prediction_step(model, inputs, True, ignore_keys)
        if prediction_loss_only:
            return loss, None, None
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask")).logits
        return loss, logits, inputs.get("labels")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.fused:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        log_probs, mask = self.token_logprobs(model, inputs)
        num_items = mask.sum() if num_items_in_batch is None else num_items_in_batch
        weighting = "dft" if self.args.loss_type == "dft" else "none"
        loss = self.scale_for_devices(token_loss(log_probs, mask, num_items, weighting), num_items_in_batch)
        return (loss, None) if return_outputs else loss
