"""Dynamic sampling (`rl.dynamic_sampling`): on a toy reward where the even prompts' groups are constant, every group
GRPO trains on varies, the batch is full, the rounds are bounded, a resume continues the refill order, and two
processes each fill their own share."""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig

from coldstart.config import DynamicSamplingSection
from coldstart.dynamic_sampling import PromptStream, constant_groups, groups_to_draw, join, pick, weighted_rewards
from coldstart.stages.rl import GRPOTrainer
from tests.conftest import launch_two, make_tiny_model

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = 16
ROWS = 8  # per process and generation: per_device_train_batch_size 4 x steps_per_generation 2, groups of 2


def toy_trainer(tokenizer, model, out, varying=lambda i: i % 2 == 1, max_rounds: int = 4, max_steps: int = 4):
    """A GRPO run on prompts 'question i:' whose reward is 1 whatever the completion unless `varying(i)`, then a
    number taken from the completion's text (so a group's completions, which differ, get different rewards)."""

    def toy(completions, id, **kwargs):
        return [zlib.crc32(c.encode()) / 2 ** 32 if varying(i) else 1.0 for c, i in zip(completions, id)]

    dataset = Dataset.from_dict({"prompt": [f"question {i}:" for i in range(PROMPTS)], "id": list(range(PROMPTS))})
    args = GRPOConfig(
        output_dir=str(out), per_device_train_batch_size=4, steps_per_generation=2, num_generations=2,
        max_completion_length=6, max_steps=max_steps, save_steps=2, logging_steps=1, learning_rate=1e-5, bf16=False,
        report_to=[], disable_tqdm=True, seed=0, use_cpu=True,
    )
    return GRPOTrainer(model=model, reward_funcs=[toy], args=args, train_dataset=dataset, processing_class=tokenizer,
                       fused=False, dynamic=DynamicSamplingSection(enabled=True, max_rounds=max_rounds))


def recording(trainer) -> tuple[list[dict], list[list[int]]]:
    """The batches GRPO trains on, and the prompts each refill round draws."""
    batches, drawn = [], []
    outer, take = trainer._generate_and_score_completions, trainer.refills.take

    def generate(inputs):
        batches.append(outer(inputs))
        return batches[-1]

    def taking(n):
        drawn.append(take(n))
        return drawn[-1]

    trainer._generate_and_score_completions, trainer.refills.take = generate, taking
    return batches, drawn


def prompt_ids(tokenizer, batch) -> list[int]:
    """The prompt number of each row."""
    return [int(re.search(r"question (\d+)", tokenizer.decode(ids[mask.bool()])).group(1))
            for ids, mask in zip(batch["prompt_ids"], batch["prompt_mask"])]


def test_constant_groups_by_hand():
    assert constant_groups([1.2, 1.2, 0.0, 1.0, 0.5, 0.5 + 1e-7], 2) == [True, False, True]
    assert constant_groups([float("nan"), 1.0, float("nan"), float("nan")], 2) == [True, True]
    assert constant_groups(torch.tensor([float("nan"), 0.0, 1.0, 0.0]), 2) == [True, False]


def test_weighted_rewards_leave_out_what_a_function_did_not_score():
    nan = float("nan")
    out = weighted_rewards([[1.0, 1.0], [nan, 1.0], [nan, nan]], [1.0, 0.2])
    assert out[:2].tolist() == pytest.approx([1.2, 0.2]) and torch.isnan(out[2])


def test_picking_and_drawing_by_hand():
    assert pick([True, False, True, False, False], 2) == [1, 3]
    assert pick([True, False, True, True], 3) == [0, 1, 2]  # one varied: the first constant ones fill the batch
    assert groups_to_draw(2, 0.5, 4) == 4 and groups_to_draw(3, 1.0, 4) == 3 and groups_to_draw(3, 0.0, 4) == 4
    assert groups_to_draw(1, 0.4, 4) == 3


def test_figures_logged_once_per_round_become_one_mean_weighted_by_rows():
    from types import SimpleNamespace

    metrics = {"train": {"reward": [0.9, 0.5, 1.0], "step_time": [3.0], "completions/mean_length": [10.0, 20.0]}}
    GRPOTrainer._merge_rounds(SimpleNamespace(_metrics=metrics), {"reward": 1, "step_time": 1}, rows=[8, 2])
    assert metrics["train"]["reward"] == [0.9, pytest.approx((0.5 * 8 + 1.0 * 2) / 10)]
    assert metrics["train"]["step_time"] == [3.0]  # not logged by the rounds
    assert metrics["train"]["completions/mean_length"] == [pytest.approx(12.0)]


def test_the_refill_order_is_seeded_passes_and_resumes():
    stream = PromptStream(5, seed=3)
    first = stream.take(7)
    assert sorted(first[:5]) == list(range(5)) and stream.drawn == 7
    assert first[:5] != list(range(5))  # shuffled
    again = PromptStream(5, seed=3, drawn=4)
    assert again.take(3) == first[4:]


def test_join_repads_prompts_left_and_completions_right():
    a = {"prompt_ids": torch.tensor([[0, 5, 6]]), "prompt_mask": torch.tensor([[0, 1, 1]]),
         "completion_ids": torch.tensor([[7, 0]]), "completion_mask": torch.tensor([[1, 0]]),
         "advantages": torch.tensor([0.5]), "num_items_in_batch": torch.tensor(1)}
    b = {"prompt_ids": torch.tensor([[8]]), "prompt_mask": torch.tensor([[1]]),
         "completion_ids": torch.tensor([[9, 9, 9]]), "completion_mask": torch.tensor([[1, 1, 1]]),
         "advantages": torch.tensor([-1.0]), "num_items_in_batch": torch.tensor(3)}
    out = join([a, b], [(1, 0), (0, 0)], pad_token_id=2)
    # both rows' first prompt column is padding: it is cut
    assert out["prompt_ids"].tolist() == [[2, 8], [5, 6]] and out["prompt_mask"].tolist() == [[0, 1], [1, 1]]
    assert out["completion_ids"].tolist() == [[9, 9, 9], [7, 0, 2]]
    assert out["completion_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["advantages"].tolist() == [-1.0, 0.5] and "num_items_in_batch" not in out
    with pytest.raises(ValueError, match="pixel_values"):
        join([{**a, "pixel_values": torch.zeros(1, 2)}], [(0, 0)], 2)


def test_every_trained_group_varies_the_batch_is_full_and_a_resume_continues(tokenizer, tmp_path):
    trainer = toy_trainer(tokenizer, make_tiny_model(tokenizer), tmp_path / "run")
    batches, drawn = recording(trainer)
    trainer.train()
    assert len(batches) == 2  # 4 steps, a generation serves 2
    for batch in batches:
        ids = prompt_ids(tokenizer, batch)
        assert len(ids) == ROWS and all(i % 2 == 1 for i in ids), ids
        assert ids[0::2] == ids[1::2]  # whole groups
        assert batch["num_items_in_batch"].item() == batch["completion_mask"].sum().item()
    assert drawn  # the dataloader's batches hold even prompts, so refills were drawn
    logs = [m for m in trainer.state.log_history if "dynamic_sampling/rounds" in m]
    assert all(m["dynamic_sampling/zero_variance_share_after"] == 0 for m in logs)
    assert all(m["dynamic_sampling/groups_drawn"] - m["dynamic_sampling/groups_dropped"] == ROWS // 2 for m in logs)
    total = trainer.refills.drawn
    saved = json.loads((tmp_path / "run" / "checkpoint-2" / "dynamic_sampling.json").read_text())["drawn"]
    assert 0 < saved < total

    resumed = toy_trainer(tokenizer, make_tiny_model(tokenizer), tmp_path / "run")
    batches_after, drawn_after = recording(resumed)
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    assert resumed.refills.drawn == total
    later = PromptStream(PROMPTS, seed=1, drawn=saved)  # seed + 1: the refills' own order
    assert sum(drawn_after, []) == later.take(total - saved)
    assert prompt_ids(tokenizer, batches_after[0]) == prompt_ids(tokenizer, batches[1])


def test_the_rounds_are_bounded_and_constant_groups_fill_the_rest(tokenizer, tmp_path):
    trainer = toy_trainer(tokenizer, make_tiny_model(tokenizer), tmp_path, varying=lambda i: i == 1, max_rounds=2,
                          max_steps=2)
    batches, drawn = recording(trainer)
    trainer.train()
    assert len(batches) == 1 and len(drawn) == 1  # one refill round, then the bound
    ids = prompt_ids(tokenizer, batches[0])
    assert len(ids) == ROWS
    logs = [m for m in trainer.state.log_history if "dynamic_sampling/rounds" in m]
    assert logs[0]["dynamic_sampling/rounds"] == 2
    varied = ids.count(1) // 2
    assert logs[0]["dynamic_sampling/zero_variance_share_after"] == pytest.approx(1 - varied / (ROWS // 2))


WORKER = """
import json, sys
sys.path.insert(0, sys.argv[3])
from pathlib import Path
from transformers import AutoModelForCausalLM, AutoTokenizer
from tests.test_dynamic_sampling import prompt_ids, recording, toy_trainer

model_dir, out = sys.argv[1], Path(sys.argv[2])
tokenizer = AutoTokenizer.from_pretrained(model_dir)
trainer = toy_trainer(tokenizer, AutoModelForCausalLM.from_pretrained(model_dir), out, max_steps=2)
batches, drawn = recording(trainer)
trainer.train()
rank = trainer.accelerator.process_index
(out / f"rank{rank}.json").write_text(json.dumps({"trained": [prompt_ids(tokenizer, b) for b in batches],
                                                  "drawn": drawn, "total": trainer.refills.drawn}))
"""


def test_two_processes_each_fill_their_share(tmp_path, tokenizer):
    """Under `accelerate launch --num_processes 2`: each process trains on a full batch of varying groups, both
    take part in every refill round and draw different prompts of it from one order."""
    model_dir = tmp_path / "model"
    make_tiny_model(tokenizer).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    (tmp_path / "worker.py").write_text(WORKER)
    done = launch_two(tmp_path / "worker.py", model_dir, tmp_path / "out", ROOT, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((tmp_path / "out" / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:
        assert [len(t) for t in rank["trained"]] == [ROWS]
        assert all(i % 2 == 1 for t in rank["trained"] for i in t)
    assert len(ranks[0]["drawn"]) == len(ranks[1]["drawn"]) > 0  # the same rounds on both
    assert ranks[0]["total"] == ranks[1]["total"]
    for round0, round1 in zip(ranks[0]["drawn"], ranks[1]["drawn"]):
        assert round0 == round1  # the whole round's prompts, of which each takes its slice


def test_the_rl_stage_passes_the_setting_and_logs_the_rounds(tokenizer, tmp_path):
    from coldstart.config import load_config
    from coldstart.data import rl_prompts
    from coldstart.runs import read_jsonl
    from coldstart.stages.rl import build_trainer

    cfg = load_config(None, ["rl.max_steps=1", "rl.num_generations=2", "rl.per_device_train_batch_size=4",
                             "rl.max_completion_length=6", "data.arith.num_train=16", "rl.dynamic_sampling.enabled=true",
                             "rl.dynamic_sampling.max_rounds=3"])
    prompts, _ = rl_prompts(cfg.data, 0, cfg.seed)
    trainer = build_trainer(cfg, tmp_path, prompts, make_tiny_model(tokenizer), tokenizer)
    assert trainer.max_rounds == 3
    trainer.train()
    logged = [m for m in read_jsonl(tmp_path / "metrics.jsonl") if "dynamic_sampling/rounds" in m]
    assert len(logged) == 1 and 1 <= logged[0]["dynamic_sampling/rounds"] <= 3
    assert build_trainer(load_config(None, ["data.arith.num_train=16"]), tmp_path / "off", prompts,
                         make_tiny_model(tokenizer), tokenizer).max_rounds == 0
