"""CADFT in two processes (gloo, `accelerate launch` with the DDP config) against one process on the same global
batch: the same gradients, the same weight statistics on every rank, one rewriting decision, one writer."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_tiny_model

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("distributed_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], tmp_path: Path) -> None:
    # CPU processes and gloo even where GPUs are present: the test is about the arithmetic, not the devices
    env = {**os.environ, "PYTHONPATH": str(WORKER.parent), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tokenizer):
    tmp = tmp_path_factory.mktemp("distributed")
    model_dir = tmp / "model"
    make_tiny_model(tokenizer).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    _run([sys.executable, str(WORKER), str(model_dir), str(tmp / "single"), "1"], tmp)
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "configs/accelerate/ddp.yaml"),
        "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(_free_port()),
    ]
    _run([*launch, str(WORKER), str(model_dir), str(tmp / "multi"), "2"], tmp)
    return tmp / "single", tmp / "multi"


def _load(run: Path, rank: int, name: str):
    path = run / f"rank{rank}" / name
    return torch.load(path) if name.endswith(".pt") else json.loads(path.read_text())


def test_two_processes_give_the_single_process_gradient(runs):
    single, multi = runs
    reference = _load(single, 0, "grads.pt")
    for rank in (0, 1):
        grads = _load(multi, rank, "grads.pt")
        assert grads.keys() == reference.keys()
        for name, ref in reference.items():
            assert ref.abs().max() > 0, name
            torch.testing.assert_close(grads[name], ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()), msg=name)


def test_weight_statistics_are_global_and_equal_on_every_rank(runs):
    single, multi = runs
    reference = _load(single, 0, "stats.json")
    assert len(reference["mean_std"]) == 2  # one loss call per step in one process
    for rank in (0, 1):
        stats = _load(multi, rank, "stats.json")
        assert stats["mean_std"] == _load(multi, 0, "stats.json")["mean_std"]
        assert sum(stats["mean_std"], []) == pytest.approx(sum(reference["mean_std"], []), rel=1e-5)
        assert sorted(stats["nll"]) == sorted(reference["nll"]) == [str(i) for i in range(8)]
        assert [stats["nll"][k] for k in sorted(stats["nll"])] == pytest.approx(
            [reference["nll"][k] for k in sorted(reference["nll"])], rel=1e-5
        )


def test_rewriting_is_decided_once_for_every_rank(runs, tokenizer):
    single, multi = runs
    accepted = _load(multi, 0, "rewrites.json")
    assert accepted == _load(multi, 1, "rewrites.json") == _load(single, 0, "rewrites.json")
    # every rank proposes its own answer; the main process's (0) is right for samples 0-3 only
    assert sorted(accepted) == ["0", "1", "2", "3"]
    assert all("rank 0: \\boxed{0}" in tokenizer.decode(ids) for ids in accepted.values())
    log = [json.loads(line) for line in (multi / "run" / "warmup" / "rewrites.jsonl").read_text().splitlines()]
    assert sorted(r["index"] for r in log) == list(range(8))  # one round, logged once
    assert sorted(r["index"] for r in log if r["accepted"]) == [0, 1, 2, 3]


def test_the_main_process_alone_writes_the_run_directory(runs):
    _, multi = runs
    assert not (multi / "rank1" / "writes.txt").exists()
    written = (multi / "rank0" / "writes.txt").read_text().splitlines()
    assert any(p.endswith("manifest.json") for p in written)
    manifest = json.loads((multi / "run" / "manifest.json").read_text())
    assert manifest["stages"]["warmup"]["status"] == "done"
    assert manifest["stages"]["warmup"]["metrics"]["steps"] == 2
    assert sorted(p.name for p in (multi / "run").iterdir()) == ["config.yaml", "manifest.json", "warmup"]
    assert (multi / "run" / "warmup" / "final" / "model.safetensors").is_file()
