"""Anchored SFT (ASFT): DFT with a KL anchor to the frozen base model, on TRL's SFTTrainer.

Each demonstration token adds `anchor * KL(base || policy)`, over the whole vocabulary, to DFT's term; both are
divided by the global count of completion tokens, TRL's DFT normalisation, so `anchor = 0` is DFT exactly
(`coldstart.losses`). The anchor needs the base model's logits at the completion positions: one more forward per
micro-batch. Under LoRA the base model is the policy with its adapters disabled, as TRL's GRPO gets its reference;
otherwise it is a frozen copy, placed as TRL places GRPO's reference model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from trl.models.utils import prepare_deepspeed, prepare_fsdp

from coldstart.compatibility import label_logits
from coldstart.losses import anchor_kl, asft_loss
from coldstart.warmup_trainer import WarmupTrainer


class ASFTTrainer(WarmupTrainer):
    """The warm-up trainer of `warmup.loss: asft`. `base_model` is the frozen base (None under LoRA, whose
    disabled adapters give it); `anchor` the KL anchor's weight. Logs `anchor_kl`, the mean KL per token."""

    def __init__(self, *args, anchor: float, base_model=None, **kwargs):
        super().__init__(*args, fused=False, **kwargs)
        self.anchor = anchor
        self.base_model = None if base_model is None else self._place(base_model)

    def _place(self, model):
        model.eval().requires_grad_(False)
        if self.is_deepspeed_enabled:
            return prepare_deepspeed(model, self.accelerator)
        if self.is_fsdp_enabled:
            return prepare_fsdp(model, self.accelerator)
        return self.accelerator.prepare_model(model, evaluation_mode=True)

    @torch.no_grad()
    def base_log_probs(self, model, inputs) -> torch.Tensor:
        """The base model's log-probs over the vocabulary at the positions that predict a label."""
        args = (inputs["input_ids"], inputs.get("attention_mask"), inputs["labels"])
        if self.base_model is not None:
            logits = label_logits(self.base_model, *args)[0]
        else:
            with self.accelerator.unwrap_model(model).disable_adapter():
                logits = label_logits(model, *args)[0]
        return F.log_softmax(logits.float(), -1)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logits, shifted, keep = label_logits(model, inputs["input_ids"], inputs.get("attention_mask"), inputs["labels"])
        log_probs = F.log_softmax(logits.float(), -1)
        kl = anchor_kl(log_probs, self.base_log_probs(model, inputs))
        token_log_probs = log_probs.gather(-1, shifted[keep].unsqueeze(-1)).squeeze(-1)
        num_items = keep.sum() if num_items_in_batch is None else num_items_in_batch
        loss = self.scale_for_devices(asft_loss(token_log_probs, kl, num_items, self.anchor), num_items_in_batch)
        totals = self.accelerator.reduce(torch.stack([kl.detach().sum(), keep.sum().to(kl.dtype)]), reduction="sum")
        self._metrics["train" if model.training else "eval"]["anchor_kl"].append(float(totals[0] / totals[1].clamp(min=1)))
        return (loss, None) if return_outputs else loss
