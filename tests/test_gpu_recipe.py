"""The GPU recipe (configs/gsm8k_gpu.yaml) read without a GPU: what it asks for, the launch commands written in it,
and TRL's configs built from it. The run itself needs GPUs (not lent to this project's sessions so far)."""

import re
import shlex
from pathlib import Path

from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType
from trl import GRPOConfig, SFTConfig

from coldstart.config import load_config
from coldstart.training import trainer_kwargs

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "gsm8k_gpu.yaml"


def commands() -> list[list[str]]:
    text = RECIPE.read_text()
    return [shlex.split(line.lstrip("# ").rstrip(" \\")) for line in text.splitlines()
            if re.match(r"#\s+(accelerate launch|coldstart) ", line)]


def test_launch_commands_use_the_zero2_config_and_known_stages():
    found = commands()
    launches = [c for c in found if c[:2] == ["accelerate", "launch"]]
    assert len(launches) == 3 and len(found) == 6
    for command in launches:
        config = load_config_from_file(str(ROOT / command[command.index("--config_file") + 1]))
        assert config.distributed_type == DistributedType.DEEPSPEED and config.deepspeed_config["zero_stage"] == 2
        assert command[command.index("-m") + 1] == "coldstart.cli"
    assert all(c[-1] == "configs/gsm8k_gpu.yaml" for c in found)
    assert [c[-2] for c in found] == ["run", "warmup", "handoff", "rl", "eval", "run"]  # the last on one GPU


def test_trl_configs_build_and_rl_batches_hold_whole_groups(tmp_path):
    cfg = load_config(str(RECIPE), ["rl.use_vllm=false", "eval.use_vllm=false"])
    SFTConfig(**trainer_kwargs(cfg.warmup, tmp_path, cfg.seed))
    args = GRPOConfig(**{**trainer_kwargs(cfg.rl, tmp_path, cfg.seed), "use_vllm": True})
    assert args.use_vllm and args.vllm_mode == "colocate" and args.vllm_gpu_memory_utilization == 0.3
    processes = load_config_from_file(str(ROOT / "configs/accelerate/zero2.yaml")).num_processes
    for gpus, accumulation in ((processes, cfg.rl.gradient_accumulation_steps), (1, 8)):  # the node, one GPU
        completions = cfg.rl.per_device_train_batch_size * gpus * accumulation
        assert completions % cfg.rl.num_generations == 0 and completions == 128
