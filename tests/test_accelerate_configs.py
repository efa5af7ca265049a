"""The accelerate configs in configs/accelerate/ read the way `accelerate launch` reads them."""

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DistributedType

CONFIGS = Path(__file__).parent.parent / "configs" / "accelerate"


@pytest.mark.parametrize(
    "name, kind, launcher_flag",
    [
        ("ddp", DistributedType.MULTI_GPU, "multi_gpu"),
        ("zero2", DistributedType.DEEPSPEED, "use_deepspeed"),
        ("zero3", DistributedType.DEEPSPEED, "use_deepspeed"),
        ("fsdp", DistributedType.FSDP, "use_fsdp"),
    ],
)
def test_accelerate_config_is_what_accelerate_launch_runs(name, kind, launcher_flag):
    path = CONFIGS / f"{name}.yaml"
    config = load_config_from_file(str(path))  # unknown top-level keys raise here
    assert config.distributed_type == kind
    parser = launch_command_parser()
    known = set(vars(parser.parse_args(["x.py"])))
    args, _, _ = _validate_launch_command(parser.parse_args(["--config_file", str(path), "x.py"]))
    assert getattr(args, launcher_flag) and args.num_processes == config.num_processes
    # every engine setting is one the launcher knows: accelerate copies nested keys without checking them
    for key, value in {**config.deepspeed_config, **config.fsdp_config}.items():
        assert key in known, f"{path.name}: {key} is not an accelerate launch setting"
        assert str(getattr(args, key)) == str(value)
    if kind == DistributedType.DEEPSPEED:
        assert args.zero_stage == int(name[-1])
    if kind == DistributedType.FSDP:
        assert args.fsdp_version == 2
