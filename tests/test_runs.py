import json

import pytest

from coldstart.errors import ColdstartError
from coldstart.runs import RunDir, link_if_identical, tree_sha256


def body_writing(text, calls):
    def body(work):
        calls.append(work)
        (work / "out.txt").write_text(text)
        (work / "checkpoint-3").mkdir(exist_ok=True)
        (work / "checkpoint-3" / "state").write_text("x")
        return {"n": len(calls)}

    return body


def test_finished_stage_is_skipped_then_refused_with_the_change_named(tmp_path):
    run = RunDir(tmp_path / "r")
    calls = []
    entry = run.run_stage("warmup", {"lr": 1}, body_writing("a", calls), config_text="x: 1\n")
    assert entry["status"] == "done" and entry["metrics"] == {"n": 1}
    assert (run.stage_dir("warmup") / "out.txt").read_text() == "a"
    assert not run.partial_dir("warmup").exists()
    assert (run.root / "config.yaml").read_text() == "x: 1\n"
    manifest = json.loads(run.manifest_path.read_text())
    assert manifest["stages"]["warmup"]["outputs_sha256"] == tree_sha256(
        run.stage_dir("warmup"), skip=lambda rel: rel.parts[0].startswith("checkpoint-")
    )

    again = run.run_stage("warmup", {"lr": 1}, body_writing("b", calls))
    assert len(calls) == 1 and again["status"] == "done"

    with pytest.raises(ColdstartError, match=r"finished with another config \(lr: 1 -> 2\); pass --force warmup"):
        run.run_stage("warmup", {"lr": 2}, body_writing("b", calls))
    assert (run.stage_dir("warmup") / "out.txt").read_text() == "a"

    run.run_stage("warmup", {"lr": 2}, body_writing("b", calls), force=True)
    assert (run.stage_dir("warmup") / "out.txt").read_text() == "b"


def test_checkpoints_are_dropped_unless_kept(tmp_path):
    run = RunDir(tmp_path / "r")
    run.run_stage("a", {}, body_writing("a", []), keep=lambda rel: not rel.name.startswith("checkpoint-"))
    run.run_stage("b", {}, body_writing("b", []))
    assert not (run.stage_dir("a") / "checkpoint-3").exists()
    assert (run.stage_dir("b") / "checkpoint-3" / "state").exists()


def test_failed_stage_keeps_its_work_for_a_resume_with_the_same_config(tmp_path):
    run = RunDir(tmp_path / "r")
    seen = []

    def crash(work):
        (work / "checkpoint-1").mkdir()
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run.run_stage("warmup", {"lr": 1}, crash)
    assert run.manifest()["stages"]["warmup"]["status"] == "failed"
    assert (run.partial_dir("warmup") / "checkpoint-1").is_dir()

    def resume(work):
        seen.append(sorted(p.name for p in work.iterdir() if not p.name.startswith(".")))
        return {}

    run.run_stage("warmup", {"lr": 1}, resume)
    assert seen == [["checkpoint-1"]]


def test_unfinished_work_of_another_config_is_not_resumed(tmp_path):
    run = RunDir(tmp_path / "r")

    def crash(work):
        (work / "checkpoint-1").mkdir()
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run.run_stage("warmup", {"lr": 1}, crash)
    seen = []
    run.run_stage("warmup", {"lr": 2}, lambda work: seen.append(list(work.glob("checkpoint-*"))) or {})
    assert seen == [[]]


def test_renamed_stage_with_interrupted_manifest_write_is_recognised(tmp_path):
    run = RunDir(tmp_path / "r")
    run.run_stage("warmup", {"lr": 1}, body_writing("a", []))
    run.update_stage("warmup", status="running")  # as if killed between the rename and the manifest write
    calls = []
    entry = run.run_stage("warmup", {"lr": 1}, body_writing("b", calls))
    assert entry["status"] == "done" and calls == []


def test_an_adopted_stage_is_hard_linked_and_skipped_only_for_the_same_fingerprint(tmp_path):
    source, run = RunDir(tmp_path / "a"), RunDir(tmp_path / "b")
    assert not run.adopt("warmup", source)  # nothing finished to adopt
    def body(work):
        body_writing("a", [])(work)
        (work / "model.safetensors").write_bytes(bytes(1 << 20))
        return {}

    source.run_stage("warmup", {"lr": 1}, body)
    assert run.adopt("warmup", source)
    mine, theirs = run.stage_dir("warmup"), source.stage_dir("warmup")
    assert (mine / "model.safetensors").stat().st_ino == (theirs / "model.safetensors").stat().st_ino
    assert (mine / "out.txt").stat().st_ino != (theirs / "out.txt").stat().st_ino  # small files, rewritten in place: copied
    assert (mine / "out.txt").read_text() == "a"
    assert not run.adopt("warmup", source)  # it has its own now
    calls = []
    run.run_stage("warmup", {"lr": 1}, body_writing("b", calls))
    assert calls == []
    with pytest.raises(ColdstartError, match=r"finished with another config \(lr: 1 -> 2\)"):
        run.run_stage("warmup", {"lr": 2}, body_writing("b", calls))
    run.run_stage("warmup", {"lr": 2}, body_writing("b", calls), force=True)
    assert (run.stage_dir("warmup") / "out.txt").read_text() == "b"
    assert (source.stage_dir("warmup") / "out.txt").read_text() == "a"


def test_a_file_is_linked_to_its_original_only_when_their_bytes_are_the_same(tmp_path):
    original, same, other = tmp_path / "o", tmp_path / "s", tmp_path / "d"
    original.write_bytes(b"weights")
    same.write_bytes(b"weights")
    other.write_bytes(b"weighty")  # the same size, other bytes
    assert link_if_identical(same, original) and same.stat().st_ino == original.stat().st_ino
    assert not link_if_identical(other, original) and other.read_bytes() == b"weighty"
    assert not link_if_identical(other, tmp_path / "missing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "o", "s"]


def test_checkpoints_kept_for_their_weights_lose_their_resume_state_and_share_the_final_weights(tmp_path, monkeypatch):
    from coldstart.training import trim_checkpoints

    final = tmp_path / "final"
    final.mkdir()
    (final / "model.safetensors").write_bytes(b"step 16")
    for step, weights in ((8, b"step 8"), (16, b"step 16")):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(weights)
        for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "rng_state_1.pth", "config.json"):
            (folder / name).write_text("x")
    trim_checkpoints(tmp_path, final)
    for step in (8, 16):
        assert sorted(p.name for p in (tmp_path / f"checkpoint-{step}").iterdir()) == ["config.json", "model.safetensors"]
    assert (tmp_path / "checkpoint-16" / "model.safetensors").stat().st_ino == (final / "model.safetensors").stat().st_ino
    assert (tmp_path / "checkpoint-8" / "model.safetensors").read_bytes() == b"step 8"
    import coldstart.training

    hashed = []
    monkeypatch.setattr(coldstart.training, "link_if_identical", lambda *a: hashed.append(a))
    trim_checkpoints(tmp_path, final)  # a skipped warm-up trims again: nothing left to trim, nothing hashed
    assert hashed == []
