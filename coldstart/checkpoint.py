"""Checks at the SFT -> RL seam: what makes a warmed checkpoint stop where its turn ends, in every engine.

The failures users report most here: the tokenizer's eos is not the chat template's turn terminator (generations
never end), the generation config lists only some stop ids, the chat template is lost on save, and pad == eos
masked the eos labels during SFT (the last one shows in the smoke rollouts: completions run to the length cap).
"""

from __future__ import annotations

from typing import Any

_MARK = "\u2063coldstart-answer\u2063"


def turn_terminator(tokenizer) -> str | None:
    """The token the chat template writes right after an assistant message; None without a template."""
    if not tokenizer.chat_template:
        return None
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _MARK}], tokenize=False
    )
    after = text.split(_MARK, 1)[1]
    ids = tokenizer(after, add_special_tokens=False)["input_ids"]
    return tokenizer.convert_ids_to_tokens(ids[0]) if ids else None


def training_eos(choice: str | None, tokenizer) -> str | None:
    """The eos the warm-up trains as each completion's last label and saves (`warmup.eos_token`, passed to TRL's
    SFTConfig, which mirrors it onto the model and generation configs). 'auto' is the chat template's end-of-turn
    token when it is an added (special) token, which fixes base models whose configs name another eos; else the
    tokenizer's eos. None leaves the tokenizer as it is."""
    if choice != "auto":
        return choice
    terminator = turn_terminator(tokenizer)
    return terminator if terminator in tokenizer.get_added_vocab() else tokenizer.eos_token


def id_list(value: Any) -> list[int]:
    """A config's token id field (None, one id or a list) as a list."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def stop_token_ids(tokenizer, generation_config=None) -> list[int]:
    """Every id a completion ends at: the tokenizer's eos, the chat template's turn terminator and, given a
    generation config, the eos ids it lists."""
    ids = {tokenizer.eos_token_id, *id_list(getattr(generation_config, "eos_token_id", None))}
    terminator = turn_terminator(tokenizer)
    if terminator is not None:
        ids.add(tokenizer.convert_tokens_to_ids(terminator))
    return sorted(i for i in ids if i is not None)


def check_checkpoint(tokenizer, model_config, generation_config, conversational: bool = True) -> list[str]:
    """The failed checks, each a sentence saying what is wrong and what to change; empty when all pass."""
    failures = []
    if conversational and not tokenizer.chat_template:
        failures.append(
            "chat template: the tokenizer has none, but the prompts are conversations; save the tokenizer with its "
            "chat_template (tokenizer_config.json or chat_template.jinja)"
        )
    terminator = turn_terminator(tokenizer)
    if terminator is not None and terminator != tokenizer.eos_token:
        failures.append(
            f"end of turn: the chat template ends an assistant turn with {terminator!r} but the tokenizer's eos is "
            f"{tokenizer.eos_token!r}; set tokenizer.eos_token to {terminator!r} before the warm-up, or the model "
            "never learns to stop"
        )
    if tokenizer.pad_token_id is None:
        failures.append("pad token: the tokenizer has none; set tokenizer.pad_token (the eos token is fine)")
    stops = set(stop_token_ids(tokenizer))
    listed = set(id_list(generation_config.eos_token_id))
    missing = sorted(stops - listed)
    if missing:
        names = ", ".join(f"{i} ({tokenizer.convert_ids_to_tokens(i)!r})" for i in missing)
        failures.append(
            f"stop ids: generation_config.eos_token_id is {sorted(listed)} and lacks {names}; add them (or set "
            "handoff.add_stop_ids: true) so every engine stops at the end of a turn"
        )
    model_eos = set(id_list(model_config.eos_token_id))
    if model_eos and not model_eos & stops:
        failures.append(
            f"eos mismatch: model.config.eos_token_id {sorted(model_eos)} is none of the tokenizer's stop ids "
            f"{sorted(stops)}; set config.eos_token_id to {tokenizer.eos_token_id}"
        )
    return failures
