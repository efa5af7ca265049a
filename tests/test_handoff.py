import copy
import json

import pytest
import torch
from transformers import GenerationConfig

from coldstart.checkpoint import check_checkpoint, stop_token_ids, turn_terminator
from coldstart.config import load_config
from coldstart.mismatch import rollout_stats
from coldstart.stages.handoff import export


def test_embedded_tokenizer_passes(tokenizer, tiny_model):
    assert turn_terminator(tokenizer) == "<|im_end|>"
    assert stop_token_ids(tokenizer) == [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    gen = GenerationConfig(eos_token_id=[2], pad_token_id=2)
    assert check_checkpoint(tokenizer, tiny_model.config, gen) == []


def test_eos_that_is_not_the_turn_terminator_is_caught(tokenizer, tiny_model):
    tok = copy.deepcopy(tokenizer)
    tok.eos_token = "<|endoftext|>"
    failures = check_checkpoint(tok, tiny_model.config, GenerationConfig(eos_token_id=[0, 2]))
    assert any(f.startswith("end of turn: the chat template ends an assistant turn with '<|im_end|>' but the tokenizer's eos is '<|endoftext|>'") for f in failures)


def test_generation_config_missing_a_stop_id_is_caught(tokenizer, tiny_model):
    failures = check_checkpoint(tokenizer, tiny_model.config, GenerationConfig(eos_token_id=[0]))
    assert failures == [
        "stop ids: generation_config.eos_token_id is [0] and lacks 2 ('<|im_end|>'); add them (or set "
        "handoff.add_stop_ids: true) so every engine stops at the end of a turn"
    ]


def test_model_config_eos_mismatch_is_caught(tokenizer, tiny_model):
    config = copy.deepcopy(tiny_model.config)
    config.eos_token_id = 0
    failures = check_checkpoint(tokenizer, config, GenerationConfig(eos_token_id=[2]))
    assert failures and failures[0].startswith("eos mismatch: model.config.eos_token_id [0]")


def test_missing_chat_template_is_caught(tokenizer, tiny_model):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    failures = check_checkpoint(tok, tiny_model.config, GenerationConfig(eos_token_id=[2]), conversational=True)
    assert failures[0].startswith("chat template: the tokenizer has none")


def test_lora_merge_gives_the_adapter_models_logits(tmp_path, tokenizer, tiny_model, runtime):
    from peft import LoraConfig, get_peft_model

    base_dir = tmp_path / "base"
    tiny_model.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    peft_model = get_peft_model(tiny_model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    torch.manual_seed(1)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)  # a trained-looking adapter (lora_B starts at zero)
    final = tmp_path / "final"
    peft_model.save_pretrained(final)
    tokenizer.save_pretrained(final)
    cfg = load_config(None, [f"model.name_or_path={base_dir}", "model.lora.enabled=true"])
    changes = export(cfg, runtime, final, tmp_path / "out")
    assert changes["merged_lora"]

    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    ids = torch.tensor([tokenizer("What is 2 + 3? \\boxed{5}")["input_ids"]])
    with torch.no_grad():
        want = peft_model(input_ids=ids).logits
        got = merged(input_ids=ids).logits
    assert not (tmp_path / "out" / "adapter_config.json").exists()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_an_unchanged_model_is_exported_as_links_to_the_warmed_weights(tmp_path, tokenizer, tiny_model, runtime):
    final = tmp_path / "final"
    tiny_model.save_pretrained(final)
    tokenizer.save_pretrained(final)
    cfg = load_config(None, [f"model.name_or_path={final}"])
    export(cfg, runtime, final, tmp_path / "out")
    weights = tmp_path / "out" / "model.safetensors"
    assert weights.stat().st_ino == (final / "model.safetensors").stat().st_ino
    assert json.loads((tmp_path / "out" / "generation_config.json").read_text())["use_cache"]  # its own, not linked
    before = (final / "model.safetensors").read_bytes()
    export(cfg, runtime, final, tmp_path / "out")  # a resumed attempt saves again: through a new file, not the link
    assert (final / "model.safetensors").read_bytes() == before
    assert weights.stat().st_ino == (final / "model.safetensors").stat().st_ino


def test_rollout_stats_by_hand():
    def r(correct, finished=True, boxed=True, n=10):
        return {"correct": correct, "finished": finished, "boxed": boxed, "num_tokens": n}

    groups = [
        [r(1), r(1), r(1), r(1)],  # all right
        [r(0), r(0, finished=False, boxed=False, n=30), r(0), r(0)],  # all wrong
        [r(1), r(0), r(0), r(0)],
        [r(1), r(1), r(0), r(0)],
    ]
    s = rollout_stats(groups, max_completion_length=30)
    assert s["pass@1"] == pytest.approx(7 / 16)
    assert s["pass@4"] == pytest.approx(3 / 4)
    assert s["all_correct"] == s["all_wrong"] == 0.25 and s["zero_variance"] == 0.5
    assert s["truncated"] == 1 / 16 and s["format"] == 15 / 16
    assert s["mean_length"] == pytest.approx((15 * 10 + 30) / 16)
    assert s["correct_per_prompt"] == [4, 0, 1, 2]
