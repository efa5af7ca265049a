"""The runtime: one owner of the device, the ranks and the process group's timeout; every model and tokenizer a
stage loads comes through it; generation samples with the run's settings only; the mechanism's memory."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from conftest import make_tiny_model
from test_distributed import ROOT, _free_port

WORKER = """
import json, sys
from coldstart.runtime import Runtime, process_group_timeout
from coldstart.training import trainer_kwargs
from coldstart.config import load_config
from trl import SFTConfig

runtime = Runtime.start(77.0, "fp32")
cfg = load_config(None, ["runtime.timeout_minutes=77"])
args = SFTConfig(**trainer_kwargs(cfg.warmup, sys.argv[1], 0, timeout_minutes=cfg.runtime.timeout_minutes))
items = list(range(7))
gathered = runtime.map(lambda part: [(x, runtime.process_index) for x in part], items)
out = {"timeout_minutes": process_group_timeout().total_seconds() / 60, "ddp_timeout": args.ddp_timeout,
       "device": str(runtime.device), "mine": list(runtime.mine(7)), "gathered": gathered,
       "mine_of": runtime.mine_of(["a", "b", "c"])}
with open(f"{sys.argv[1]}/rank{runtime.process_index}.json", "w") as handle:
    json.dump(out, handle)
"""


def test_the_process_group_waits_as_configured_and_work_is_split_and_gathered_in_order(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HOME": str(tmp_path)}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              str(ROOT / "configs/accelerate/ddp.yaml"), "--num_processes", "2", "--mixed_precision", "no",
              "--main_process_port", str(_free_port()), str(script), str(tmp_path)]
    done = subprocess.run(launch, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank, out in enumerate(ranks):
        assert out["timeout_minutes"] == pytest.approx(77.0)  # not NCCL's or gloo's 10 or 30 minutes
        assert out["ddp_timeout"] == 77 * 60
        assert out["device"].startswith("cpu")
        # contiguous shares, put back in input order on every rank
        assert out["gathered"] == [[x, 0] for x in range(4)] + [[x, 1] for x in range(4, 7)]
    assert ranks[0]["mine"] == [0, 1, 2, 3] and ranks[1]["mine"] == [4, 5, 6]
    assert ranks[0]["mine_of"] == ["a", "c"] and ranks[1]["mine_of"] == ["b"]


@pytest.mark.parametrize("gloo, failed, barrier_fails, expected", [
    (True, None, False, ["barrier", "destroy"]),  # a clean exit meets the other ranks first
    (True, None, True, ["barrier", "destroy"]),   # a peer gone: the group goes down all the same
    (True, "uncaught", False, ["destroy"]),       # after an error no rank waits for the others
    (True, "reported", False, ["destroy"]),
    (False, None, False, ["destroy"]),            # NCCL: no exit group, no barrier
])
def test_the_process_group_goes_down_at_exit(monkeypatch, gloo, failed, barrier_fails, expected):
    from types import SimpleNamespace

    import coldstart.runtime as runtime

    calls, exit_group = [], object()

    def barrier(group, timeout):
        assert group is exit_group and timeout == runtime._EXIT_WAIT
        calls.append("barrier")
        if barrier_fails:
            raise RuntimeError("Rank 1 failed to pass monitoredBarrier")

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "monitored_barrier", barrier)
    monkeypatch.setattr(runtime, "_FAILED", [])
    monkeypatch.delattr(sys, "last_value", raising=False)
    if failed == "uncaught":
        monkeypatch.setattr(sys, "last_value", ValueError("a rank's error"), raising=False)
    elif failed == "reported":
        runtime.leave_failed()
    runtime._leave(SimpleNamespace(destroy_process_group=lambda: calls.append("destroy")), exit_group if gloo else None)
    assert calls == expected


def test_a_reported_error_leaves_without_waiting(monkeypatch, tmp_path):
    """The CLI's one-line error exits with 2 and marks the process as failed, so its exit does not wait for ranks
    that may never come."""
    import coldstart.runtime as runtime
    from coldstart.cli import main

    monkeypatch.setattr(runtime, "_FAILED", [])
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert runtime._FAILED == [True]


LOADERS = {"load_model", "load_tokenizer"}
CONFIG_ONLY = {"GenerationConfig", "AutoConfig"}  # configs, not models or tokenizers


def _loads_outside_the_runtime(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None
        if name == "from_pretrained" and owner not in CONFIG_ONLY:
            found.append(f"{path.name}:{node.lineno}: {owner}.from_pretrained")
        elif name in LOADERS and owner != "runtime":
            found.append(f"{path.name}:{node.lineno}: {owner + '.' if owner else ''}{name}")
    return found


def test_no_stage_eval_or_mechanism_code_loads_a_model_or_tokenizer_outside_the_runtime():
    # the loaders themselves, and the preflight (which reads configs and a tokenizer before any stage, on no device)
    exempt = {"models.py", "runtime.py", "preflight.py"}
    files = [p for folder in ("stages", "eval", "coldstart") for p in sorted((ROOT / folder).glob("*.py"))
             if p.name not in exempt]
    assert len(files) > 30
    assert [hit for p in files for hit in _loads_outside_the_runtime(p)] == []
    # the scan sees what it looks for
    sample = ROOT / "coldstart" / "models.py"
    assert any("from_pretrained" in hit for hit in _loads_outside_the_runtime(sample))


def test_a_model_loaded_through_the_runtime_is_on_its_device(tiny_dir, runtime, monkeypatch):
    from coldstart.config import load_config
    from coldstart.runtime import Runtime

    cfg = load_config(None, [f"model.name_or_path={tiny_dir}"])
    model = runtime.load_model(cfg.model)
    assert {p.device for p in model.parameters()} == {runtime.device}
    # a device other than where from_pretrained leaves a model (the CPU): the model is moved there
    monkeypatch.setattr(Runtime, "device", property(lambda self: torch.device("meta")))
    model = runtime.load_model(cfg.model)
    assert {p.device.type for p in model.parameters()} == {"meta"}


@pytest.fixture(scope="module")
def unpadded_dir(tmp_path_factory, tokenizer):
    """A tiny model whose tokenizer has no pad token, as Llama-3's has none."""
    path = tmp_path_factory.mktemp("unpadded")
    make_tiny_model(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    config = json.loads((path / "tokenizer_config.json").read_text())
    config.pop("pad_token", None)
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    special = path / "special_tokens_map.json"
    if special.is_file():
        tokens = json.loads(special.read_text())
        tokens.pop("pad_token", None)
        special.write_text(json.dumps(tokens))
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(path).pad_token is None
    return path


def test_a_tokenizer_without_a_pad_token_goes_through_evaluation_and_the_handoff(unpadded_dir, tmp_path, tiny_cfg,
                                                                                  runtime):
    import dataclasses

    from coldstart.cli import main
    from coldstart.stages import evaluation

    # the eval stage's base model (graded like every arm), and `coldstart eval --model`
    cfg = dataclasses.replace(tiny_cfg, eval=dataclasses.replace(tiny_cfg.eval, max_new_tokens=4))
    problems, _ = evaluation.held_out(cfg)
    records, metrics = evaluation.evaluate_cached(cfg, unpadded_dir, problems, runtime, reuse=False)
    assert metrics["problems"] == len(records) == 4
    common = ["--set", f"output_dir={tmp_path}", "--set", "name=u", "--set", f"model.name_or_path={unpadded_dir}",
              "--set", "data.arith.num_train=8", "--set", "data.arith.num_test=4", "--set", "eval.max_new_tokens=4"]
    assert main(["eval", "configs/quickstart.yaml", "--model", str(unpadded_dir), "--benchmark", "arith",
                 "--out", str(tmp_path / "eval"), *common]) == 0
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["benchmarks"]["arith"]["problems"] == 4
    # the 'none' start hands the base model over: exported with a pad token, its rollouts graded
    none = [*common, "--set", "warmup.loss=none", "--set", "handoff.report_prompts=2", "--set", "handoff.min_finished=0",
            "--set", "rl.max_completion_length=8", "--set", "handoff.report_demos=2"]
    assert main(["warmup", "configs/quickstart.yaml", *none]) == 0
    assert main(["handoff", "configs/quickstart.yaml", *none]) == 0
    handoff = json.loads((tmp_path / "u" / "handoff" / "handoff.json").read_text())
    assert handoff["checks_failed"] == []
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path / "u" / "handoff" / "model").pad_token is not None


@pytest.mark.parametrize("sampled", [False, True])
def test_a_checkpoints_own_generation_settings_do_not_change_the_completions(tokenizer, sampled):
    from coldstart.generation import generate

    plain = make_tiny_model(tokenizer)
    penalised = make_tiny_model(tokenizer)
    penalised.generation_config.repetition_penalty = 1.3
    prompts = [[{"role": "user", "content": "What is 2 + 3?"}], [{"role": "user", "content": "Count to ten."}]]
    settings = dict(num_samples=2, max_new_tokens=12, temperature=0.9 if sampled else 0.0, seed=4, batch_size=4)
    want = [[c.text for c in group] for group in generate(plain, tokenizer, prompts, **settings)]
    got = [[c.text for c in group] for group in generate(penalised, tokenizer, prompts, **settings)]
    assert got == want
    assert penalised.generation_config.repetition_penalty == 1.3  # the checkpoint's config is left as it was
    # the penalty does change what `generate` makes when the model's config is read: the check can fail
    enc = tokenizer([tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts],
                    return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    bare = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    assert not torch.equal(plain.generate(**enc, **bare), penalised.generate(**enc, **bare))


class LiveBytes(TorchDispatchMode):
    """The bytes of the parameter-shaped tensors (`shapes`) that ops create and are still alive, and their peak:
    the copies of the parameters a computation holds (activations, whose size follows the sequences and not the
    model, are not counted)."""

    def __init__(self, shapes: set[tuple[int, ...]]):
        super().__init__()
        self.shapes = shapes
        self.live = self.peak = 0
        self.storages: dict[int, list] = {}  # storage pointer -> [bytes, tensors alive that use it]

    def _release(self, key: int) -> None:
        entry = self.storages[key]
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self.storages[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and tuple(t.shape) in self.shapes:
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key not in self.storages:
                    self.storages[key] = [storage.nbytes(), 0]
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                self.storages[key][1] += 1
                weakref.finalize(t, self._release, key)
        return out


def test_the_mechanism_holds_at_most_four_copies_of_the_parameters(tokenizer):
    from coldstart.arith import generate_arith
    from coldstart.config import ArithSection
    from coldstart.gradients import measure

    model = make_tiny_model(tokenizer, tied=False)
    samples = generate_arith(ArithSection(), "train", 4, seed=0)
    measure(model, tokenizer, samples, batch_size=2, progress=False)  # warm: lazily made state is not counted
    with LiveBytes({tuple(p.shape) for p in model.parameters()}) as tracker:
        measure(model, tokenizer, samples, batch_size=2, progress=False)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert tracker.peak / param_bytes <= 4.0
    assert tracker.peak / param_bytes > 2.0  # it sees the buffers: a gradient, an update and a sum at least
