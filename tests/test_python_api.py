"""The Python API a TRL user meets: `CADFTConfig` / `CADFTTrainer` as a drop-in for SFTConfig / SFTTrainer, the
README's scripts run as they are written there, and the CLI's warm-up built on the same class."""

import json
import re
import typing
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from coldstart import CADFTConfig, CADFTTrainer
from coldstart.cli import main
from coldstart.config import load_config
from coldstart.data import load_samples
from coldstart.errors import ColdstartError
from conftest import assert_same_loss_and_gradients, make_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def readme_python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use it from Python", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readme_scripts_run_as_written(tiny_dir, tmp_path, monkeypatch):
    blocks = readme_python_blocks()
    assert len(blocks) == 2 and "embedded_model_dir()" in blocks[0]
    monkeypatch.chdir(tmp_path)
    namespace = {}
    # the one change: a tiny random model with the embedded tokenizer stands in for the 135M model
    exec(blocks[0].replace("embedded_model_dir()", repr(str(tiny_dir))), namespace)
    trainer = namespace["trainer"]
    losses = [m["loss"] for m in trainer.state.log_history if "loss" in m]
    assert trainer.state.global_step == 8 and len(losses) == 4 and all(map(torch.isfinite, torch.tensor(losses)))
    assert (tmp_path / "cadft-out" / "model.safetensors").is_file()
    assert set(namespace["dataset"].column_names) == {"prompt", "completion"}  # no id, style, answer, sample_index
    exec(blocks[1], namespace)
    scores = namespace["scores"]
    assert len(scores) == 64 and all(0 < s["compatibility"] <= 1 and s["num_tokens"] > 0 for s in scores)


def cli_and_python_losses(tmp_path, tiny_dir, tokenizer, sets):
    """Per-step losses of `coldstart warmup` and of a user's CADFTTrainer on the same data, seed and settings."""
    base = [f"model.name_or_path={tiny_dir}", f"output_dir={tmp_path}", "data.arith.num_train=24",
            "warmup.max_steps=6", "warmup.per_device_train_batch_size=4", "warmup.save_steps=100", *sets]
    args = ["warmup", "configs/quickstart.yaml"]
    for item in base:
        args += ["--set", item]
    assert main(args) == 0
    cli = [m["loss"] for m in map(json.loads, (tmp_path / "quickstart" / "warmup" / "metrics.jsonl").open())
           if "loss" in m]

    cfg = load_config("configs/quickstart.yaml", base)
    samples, _ = load_samples(cfg.data, "train", cfg.seed)
    dataset = Dataset.from_list([{"prompt": s["prompt"], "completion": s["completion"], "answer": s["answer"]}
                                 for s in samples])
    w = cfg.warmup
    config = CADFTConfig(
        output_dir=str(tmp_path / "python"), seed=cfg.seed, learning_rate=w.learning_rate, max_steps=w.max_steps,
        per_device_train_batch_size=w.per_device_train_batch_size, max_length=w.max_length,
        lr_scheduler_type=w.lr_scheduler_type, warmup_steps=w.warmup_steps, logging_steps=1, report_to="none",
        save_strategy="no", **asdict(w.cadft), **{f"rewrite_{k}": v for k, v in asdict(w.rewrite).items()},
    )
    trainer = CADFTTrainer(model=make_tiny_model(tokenizer), args=config, train_dataset=dataset,
                           processing_class=tokenizer)
    trainer.train()
    python = [m["loss"] for m in trainer.state.log_history if "loss" in m]
    return cli, python


@pytest.mark.parametrize("rewriting", [False, True])
def test_the_public_class_and_the_cli_warmup_give_the_same_loss_at_every_step(tmp_path, tiny_dir, tokenizer, rewriting):
    sets = [f"warmup.rewrite.enabled={str(rewriting).lower()}", "warmup.rewrite.max_new_tokens=8",
            "warmup.rewrite.num_candidates=2", "warmup.rewrite.fraction=0.1"]
    cli, python = cli_and_python_losses(tmp_path, tiny_dir, tokenizer, sets)
    assert len(cli) == len(python) == 6
    assert python == pytest.approx(cli, rel=1e-6)


def test_beta_zero_is_trls_dft_loss_and_gradient(tokenizer, tmp_path):
    rows = load_samples(load_config(None, ["data.arith.num_train=8"]).data, "train", 0)[0]
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    common = dict(per_device_train_batch_size=8, report_to="none", bf16=False, use_cpu=True)
    cadft = CADFTTrainer(model=make_tiny_model(tokenizer), train_dataset=dataset, processing_class=tokenizer,
                         args=CADFTConfig(output_dir=str(tmp_path / "c"), beta=0.0, **common))
    trl = SFTTrainer(model=make_tiny_model(tokenizer), train_dataset=dataset, processing_class=tokenizer,
                     args=SFTConfig(output_dir=str(tmp_path / "t"), loss_type="dft", gradient_checkpointing=False,
                                    **common))
    batch = next(iter(cadft.get_train_dataloader()))
    plain = {k: v for k, v in batch.items() if k not in ("sample_index", "rewrite_step")}
    assert_same_loss_and_gradients(cadft, batch, trl, plain, rel=1e-5, rtol=1e-4, atol=1e-8)


def test_messages_rows_and_peft_train(tokenizer, tmp_path):
    from peft import LoraConfig, PeftModel

    rows = load_samples(load_config(None, ["data.arith.num_train=8"]).data, "train", 0)[0]
    dataset = Dataset.from_list([{"messages": r["prompt"] + r["completion"]} for r in rows])
    trainer = CADFTTrainer(
        model=make_tiny_model(tokenizer), train_dataset=dataset, processing_class=tokenizer,
        args=CADFTConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, report_to="none",
                         save_strategy="no", logging_steps=1),
        peft_config=LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    assert isinstance(trainer.model, PeftModel)
    trainer.train()
    logs = [m for m in trainer.state.log_history if "loss" in m]
    # messages are split into prompt and completion: the weights are those of the completion alone
    assert len(logs) == 2 and all(0 < m["weight_mean"] <= 1 and m["compat_mean"] > 0 for m in logs)


def test_rewriting_asks_for_answers_and_text_rows_are_refused(tokenizer, tmp_path):
    dataset = Dataset.from_list([{"prompt": "1+1=", "completion": "2"}] * 8)
    args = CADFTConfig(output_dir=str(tmp_path), max_steps=4, report_to="none", rewrite_enabled=True)
    with pytest.raises(ColdstartError, match="the train dataset needs an `answer` column"):
        CADFTTrainer(model=make_tiny_model(tokenizer), args=args, train_dataset=dataset, processing_class=tokenizer)
    with pytest.raises(ColdstartError, match="needs TRL's prompt/completion or messages rows"):
        CADFTTrainer(model=make_tiny_model(tokenizer), args=CADFTConfig(output_dir=str(tmp_path), report_to="none"),
                     train_dataset=Dataset.from_list([{"text": "1+1=2"}]), processing_class=tokenizer)


def test_config_fields_carry_the_yaml_sections_defaults_and_help():
    from dataclasses import fields

    from coldstart.config import CadftSection, RewriteSection

    by_name = {f.name: f for f in fields(CADFTConfig)}
    types = typing.get_type_hints(CADFTConfig)
    for section, prefix in ((CadftSection, ""), (RewriteSection, "rewrite_")):
        section_types = typing.get_type_hints(section)
        for f in fields(section):
            mine = by_name[prefix + f.name]
            assert mine.metadata["help"] == f.metadata["help"] or f.name == "enabled"
            assert mine.default == f.default or f.name == "enabled"
            assert types[prefix + f.name] == section_types[f.name]
    assert by_name["rewrite_enabled"].default is False and issubclass(CADFTConfig, SFTConfig)


def test_rewards_take_the_call_grpo_trainer_makes():
    from coldstart.rewards import accuracy, boxed_format

    # GRPOTrainer passes prompts, completions, completion_ids, the trainer state and every other dataset column
    call = dict(
        prompts=[[{"role": "user", "content": "2+2?"}]] * 2,
        completions=[[{"role": "assistant", "content": "so \\boxed{4}"}], [{"role": "assistant", "content": "5"}]],
        completion_ids=[[1, 2], [3]], trainer_state=None, answer=["4", "4"], id=["a", "b"],
    )
    assert accuracy(**call) == [1.0, 0.0]
    assert boxed_format(**call) == [1.0, 0.0]
