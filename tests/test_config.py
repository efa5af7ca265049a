import re

import pytest

from coldstart.config import dump_config, load_config, settings, trl_kwargs
from coldstart.errors import ColdstartError


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_round_trip_through_the_written_config(tmp_path):
    cfg = load_config(None, ["warmup.learning_rate=1e-5", "data.arith.num_train=3"])
    again = load_config(write(tmp_path, dump_config(cfg)))
    assert again == cfg
    assert again.warmup.learning_rate == pytest.approx(1e-5)  # YAML 1.1 reads 1e-5 as text; taken as a float
    assert again.data.arith.num_train == 3


def test_unknown_key_names_file_line_and_suggests(tmp_path):
    path = write(tmp_path, "name: x\nwarmup:\n  loss: sft\n  learnin_rate: 0.1\n")
    with pytest.raises(ColdstartError) as e:
        load_config(path)
    assert str(e.value) == f"{path}:4: warmup.learnin_rate: unknown key; did you mean 'learning_rate'?"


def test_unknown_section_suggests(tmp_path):
    with pytest.raises(ColdstartError, match=r"c.yaml:1: warmpu: unknown key; did you mean 'warmup'\?"):
        load_config(write(tmp_path, "warmpu: {}\n"))


def test_wrong_type_and_bad_literal(tmp_path):
    with pytest.raises(ColdstartError, match=r"c.yaml:2: warmup.max_steps: expected int, got 'ten'"):
        load_config(write(tmp_path, "warmup:\n  max_steps: ten\n"))
    with pytest.raises(ColdstartError, match=r"warmup.loss: 'dtf' is not one of 'sft', 'dft', 'cadft', 'asft', 'none'; did you mean 'dft'\?"):
        load_config(write(tmp_path, "warmup:\n  loss: dtf\n"))


def test_set_override_wins_and_is_named_in_errors(tmp_path):
    path = write(tmp_path, "warmup:\n  learning_rate: 0.1\n")
    assert load_config(path, ["warmup.learning_rate=0.5"]).warmup.learning_rate == 0.5
    with pytest.raises(ColdstartError, match=r"--set warmup.lr=1: warmup.lr: unknown key"):
        load_config(path, ["warmup.lr=1"])


def test_non_positive_learning_rate_is_refused():
    with pytest.raises(ColdstartError, match="warmup.learning_rate: must be positive"):
        load_config(None, ["warmup.learning_rate=0"])


def test_trainer_passthrough_is_checked_against_sftconfig():
    cfg = load_config(None, ["warmup.trainer={optim: adamw_torch, adam_beta2: 0.95}"])
    kwargs = trl_kwargs(cfg.warmup)
    assert kwargs["adam_beta2"] == 0.95 and kwargs["learning_rate"] == cfg.warmup.learning_rate
    assert "loss" not in kwargs and "trainer" not in kwargs
    with pytest.raises(ColdstartError, match=r"warmup.trainer.adam_beta: not a SFTConfig field; did you mean 'adam_beta[12]'"):
        load_config(None, ["warmup.trainer={adam_beta: 0.9}"])
    with pytest.raises(ColdstartError, match="set warmup.learning_rate directly"):
        load_config(None, ["warmup.trainer={learning_rate: 0.1}"])
    # fields the stage sets itself were passed twice (a TypeError when the warm-up started)
    with pytest.raises(ColdstartError, match=r"warmup.trainer.completion_only_loss: the warmup stage sets "
                                             r"completion_only_loss itself; use warmup.loss"):
        load_config(None, ["warmup.trainer={completion_only_loss: false}"])
    with pytest.raises(ColdstartError, match=r"rl.trainer.output_dir: the rl stage sets output_dir itself"):
        load_config(None, ["rl.trainer={output_dir: elsewhere}"])


@pytest.mark.parametrize("name", ["quickstart.yaml", "compare_cpu.yaml", "gsm8k_gpu.yaml", "paper_qwen_math.yaml"])
def test_shipped_configs_load(name):
    import importlib.util

    if name in ("gsm8k_gpu.yaml", "paper_qwen_math.yaml") and importlib.util.find_spec("vllm") is None:
        with pytest.raises(ColdstartError, match="rl.use_vllm: vLLM is not installed"):
            load_config(f"configs/{name}")
        cfg = load_config(f"configs/{name}", ["rl.use_vllm=false", "eval.use_vllm=false"])
    else:
        cfg = load_config(f"configs/{name}")
    assert cfg.warmup.loss == "cadft" and cfg.rl.learning_rate < cfg.warmup.learning_rate


def test_fingerprint_settings_hold_only_what_differs_from_the_defaults():
    cfg = load_config(None, ["rl.learning_rate=3e-6", "data.arith.max_operand=50", "rl.rewards={accuracy: 1.0}"])
    assert settings(cfg.rl) == {"learning_rate": 3e-6, "rewards": {"accuracy": 1.0}}
    assert settings(cfg.data) == {"arith": {"max_operand": 50}}  # a nested section only where it differs
    assert settings(load_config(None).warmup) == {}
    # a value equal to its default is not recorded even when written out
    assert settings(load_config(None, ["rl.learning_rate=1e-6"]).rl) == {}


@pytest.mark.parametrize("overrides, message", [
    ([], None),  # 16 steps saved every 8, two kept: 8 and 16
    (["warmup.keep_checkpoints=false"], "set warmup.keep_checkpoints: true"),
    (["compare.mechanism=[0.25, 1.0]"], "steps [4] of the warm-up's 16 are not all saved"),
    (["compare.mechanism=[0.03, 1.0]"], "0.03 of the warm-up's 16 steps is step 0"),
    (["warmup.save_steps=4", "compare.mechanism=[0.25, 1.0]"],
     "warmup.save_total_limit: 2 keeps only the checkpoints of steps [12, 16], and compare.mechanism measures step 4; "
     "set it to 4 or more"),
    (["warmup.save_steps=4", "warmup.save_total_limit=4", "compare.mechanism=[0.25, 1.0]"], None),
    (["warmup.save_steps=0.25", "warmup.save_total_limit=0", "compare.mechanism=[0.25, 1.0]"], None),
    (["warmup.max_steps=-1"], "fractions below 1 need a warm-up counted in steps"),
    (["warmup.max_steps=-1", "compare.mechanism=[1.0]"], None),  # the final model is always there
    (["warmup.trainer={save_strategy: epoch}"], "save_strategy: compare.mechanism measures checkpoints saved every"),
    (["warmup.trainer={load_best_model_at_end: true}"], "load_best_model_at_end: compare.mechanism measures"),
])
def test_the_mechanisms_checkpoints_are_checked_at_load(overrides, message):
    """A checkpoint compare.mechanism measures must be saved and still there when the warm-up ends: a config that
    would lose one fails at load, not after the study's runs (the study's config with its mechanism on)."""
    args = ["configs/compare_cpu.yaml", ["compare.mechanism=[0.5, 1.0]", *overrides]]
    if message is None:
        load_config(*args)
    else:
        with pytest.raises(ColdstartError, match=re.escape(message)):
            load_config(*args)


def test_the_removed_step_size_control_is_refused_by_name():
    with pytest.raises(ColdstartError, match="'weights' is not one of 'tokens', 'samples'"):
        load_config(None, ["warmup.loss=cadft", "warmup.cadft.normalize=weights"])
