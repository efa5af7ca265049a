"""TRL's GRPO options named in `rl`: TRL's defaults, refused by name when out of range or in a combination TRL
refuses, and passed to TRL's GRPOConfig as set."""

import dataclasses

import pytest
from trl import GRPOConfig

from coldstart.config import GRPO_OPTIONS, RlSection, load_config
from coldstart.errors import ColdstartError
from coldstart.training import trainer_kwargs

def test_the_named_options_default_to_trls_defaults():
    ours = {f.name: f.default for f in dataclasses.fields(RlSection)}
    trl = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
    for name in GRPO_OPTIONS:
        assert ours[name] == trl[name], name


@pytest.mark.parametrize("sets, field", [
    (["rl.beta=-0.1"], "rl.beta"),
    (["rl.loss_type=ppo"], "rl.loss_type"),
    (["rl.epsilon=0"], "rl.epsilon"),
    (["rl.epsilon_high=0.1"], "rl.epsilon_high"),
    (["rl.scale_rewards=std"], "rl.scale_rewards"),
    (["rl.top_entropy_quantile=1.2"], "rl.top_entropy_quantile"),
    (["rl.entropy_coef=-0.01"], "rl.entropy_coef"),
    (["rl.use_adaptive_entropy=true", "rl.entropy_coef=0.5", "rl.entropy_coef_max=0.1"], "rl.entropy_coef"),
    (["rl.use_adaptive_entropy=true", "rl.entropy_coef_delta=0"], "rl.entropy_coef_delta"),
    (["rl.use_adaptive_entropy=true", "rl.entropy_target=0"], "rl.entropy_target"),
    (["rl.vllm_importance_sampling_mode=token"], "rl.vllm_importance_sampling_mode"),
    # combinations TRL refuses, only once the RL stage builds its trainer
    (["rl.vllm_importance_sampling_clip_min=3.0"], "rl.vllm_importance_sampling_clip_min"),
    (["rl.vllm_importance_sampling_mode=sequence_truncate", "rl.vllm_importance_sampling_clip_max=null"],
     "rl.vllm_importance_sampling_mode"),
    (["rl.trainer={sync_ref_model: true}"], "rl.trainer.sync_ref_model"),
    # dynamic sampling drops groups on their weighted reward, with advantages normalised within each group
    (["rl.dynamic_sampling.max_rounds=0"], "rl.dynamic_sampling.max_rounds"),
    (["rl.dynamic_sampling.enabled=true", "rl.per_device_train_batch_size=6"], "rl.dynamic_sampling.enabled"),
    (["rl.dynamic_sampling.enabled=true", "rl.scale_rewards=batch"], "rl.dynamic_sampling.enabled"),
    (["rl.dynamic_sampling.enabled=true", "rl.trainer={multi_objective_aggregation: normalize_then_sum}"],
     "rl.dynamic_sampling.enabled"),
])
def test_a_bad_option_is_refused_by_name(sets, field):
    with pytest.raises(ColdstartError, match=field.replace(".", r"\.") + ":"):
        load_config(None, sets)


def test_trl_refuses_what_the_config_refuses():
    """The combinations checked at load are the ones TRL itself refuses (here its config; the trainer for the
    reference-model sync)."""
    with pytest.raises(ValueError, match="vllm_importance_sampling_clip_min"):
        GRPOConfig(output_dir="x", bf16=False, vllm_importance_sampling_clip_min=3.0, vllm_importance_sampling_clip_max=3.0)
    with pytest.raises(ValueError, match="_truncate"):
        GRPOConfig(output_dir="x", bf16=False, vllm_importance_sampling_mode="token_truncate",
                   vllm_importance_sampling_clip_max=None)


def test_the_options_reach_trls_config(tmp_path):
    sets = {"loss_type": "dr_grpo", "epsilon": 0.1, "epsilon_high": 0.28, "scale_rewards": "none",
            "mask_truncated_completions": True, "top_entropy_quantile": 0.2, "entropy_coef": 0.01,
            "use_adaptive_entropy": True, "entropy_target": 0.5, "beta": 0.04}
    cfg = load_config(None, [f"rl.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in sets.items()])
    args = GRPOConfig(**trainer_kwargs(cfg.rl, tmp_path, 0))
    for key, value in sets.items():
        assert getattr(args, key) == value, key
