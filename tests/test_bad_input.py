"""Every bad input gets a non-zero exit and one line naming the file (and line, field or key) and what to do."""

import json

import pytest

from coldstart.cli import main

GOOD = {"prompt": "What is 2+2?", "completion": "2 + 2 = 4, so \\boxed{4}", "answer": "4"}


def data_case(last_line):
    return [json.dumps({**GOOD, "id": "a"}), json.dumps({**GOOD, "id": "b"}), last_line]


DATA_CASES = {
    "invalid JSON": (data_case('{"prompt": "x",'), "{data}:3: field '<line>': invalid JSON"),
    "wrong field type": (data_case(json.dumps({**GOOD, "completion": ["x"]})), "{data}:3: field 'completion': expected text, got list"),
    "missing answer": (data_case(json.dumps({"prompt": "x", "completion": "y"})), "{data}:3: field 'answer': missing field"),
    "empty completion": (data_case(json.dumps({**GOOD, "completion": "   "})), "{data}:3: field 'completion': empty completion"),
    "duplicate id": (data_case(json.dumps({**GOOD, "id": "a"})), "{data}:3: field 'id': duplicate id 'a' (first at {data}:1)"),
    "empty dataset": (["", "  "], "data.source: '{data}' split 'train' has no usable rows"),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data(case, tmp_path, tiny_dir, capsys):
    lines, message = DATA_CASES[case]
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(lines) + "\n")
    code = main(["score", "configs/quickstart.yaml", "--set", f"data.source={data}", "--set", f"model.name_or_path={tiny_dir}",
                 "--set", f"output_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("coldstart: error: " + message.format(data=data))


def test_non_utf8_bytes(tmp_path, tiny_dir, capsys):
    data = tmp_path / "train.jsonl"
    data.write_bytes(json.dumps(GOOD).encode() + b"\n\xff\xfe\n")
    assert main(["score", "configs/quickstart.yaml", "--set", f"data.source={data}", "--set", f"model.name_or_path={tiny_dir}",
                 "--set", f"output_dir={tmp_path}"]) == 2
    assert capsys.readouterr().err.startswith(f"coldstart: error: {data}:2: field '<line>': not UTF-8 text")


CONFIG_CASES = {
    "unknown key": ("warmup:\n  lerning_rate: 0.1\n", "{cfg}:2: warmup.lerning_rate: unknown key; did you mean 'learning_rate'?"),
    "wrong type": ("rl:\n  max_steps: many\n", "{cfg}:2: rl.max_steps: expected int, got 'many'"),
    "negative learning rate": ("warmup:\n  learning_rate: -1.0e-5\n", "{cfg}:2: warmup.learning_rate: must be positive, got -1e-05"),
    "zero steps": ("rl:\n  max_steps: 0\n", "{cfg}:2: rl.max_steps: must be positive, or -1 to train by epochs"),
    "unknown loss": ("warmup:\n  loss: cadtf\n", "{cfg}:2: warmup.loss: 'cadtf' is not one of 'sft', 'dft', 'cadft', 'asft', 'none'; did you mean 'cadft'?"),
    "unknown reward": ("rl:\n  rewards:\n    acuracy: 1.0\n", "{cfg}:3: rl.rewards.acuracy: unknown reward; did you mean 'accuracy'?"),
    "missing model folder": ("model:\n  name_or_path: ./no/such/model\n", "model.name_or_path: folder ./no/such/model not found"),
    "vllm without vllm": ("rl:\n  use_vllm: true\n", "{cfg}:2: rl.use_vllm: vLLM is not installed; pip install 'coldstart[vllm]'"),
    "eval vllm without vllm": ("eval:\n  use_vllm: true\n", "{cfg}:2: eval.use_vllm: vLLM is not installed; pip install 'coldstart[vllm]'"),
    "escaping run name": ("name: ../../outside\n", "{cfg}:1: name: '../../outside' must be a relative name inside output_dir"),
    "invalid YAML": ("warmup: [1, 2\n", "{cfg}:2: invalid YAML"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config(case, tmp_path, capsys):
    text, message = CONFIG_CASES[case]
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    assert main(["warmup", str(cfg), "--set", f"output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("coldstart: error: " + message.format(cfg=cfg))


def test_folder_without_weights(tmp_path, capsys):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    assert main(["warmup", "configs/quickstart.yaml", "--set", f"model.name_or_path={folder}"]) == 2
    assert capsys.readouterr().err == (
        f"coldstart: error: model.name_or_path: {folder} has no .safetensors weights (pickled weights are not loaded)\n"
    )


def test_gate_that_drops_everything(tmp_path, tiny_dir, capsys):
    base = ["--set", f"model.name_or_path={tiny_dir}", "--set", f"output_dir={tmp_path}", "--set", "data.arith.num_train=8"]
    assert main(["score", "configs/quickstart.yaml", *base]) == 0
    capsys.readouterr()
    assert main(["warmup", "configs/quickstart.yaml", *base, "--set", "warmup.gate.min_compatibility=0.99"]) == 2
    assert capsys.readouterr().err == (
        "coldstart: error: warmup.gate: drops every training sample; lower min_compatibility or drop_fraction\n"
    )


def test_debug_shows_the_traceback(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("warmup:\n  lerning_rate: 0.1\n")
    from coldstart.errors import ColdstartError

    with pytest.raises(ColdstartError):
        main(["warmup", str(cfg), "--debug"])


def test_score_checks_only_what_it_runs(tmp_path, tiny_dir, capsys):
    """A prompt too long for RL's completions (the tiny model has 512 positions) is no error for `coldstart score`,
    which rolls nothing out; the demonstration itself is dropped as too long for the warm-up, with a warning."""
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({**GOOD, "id": "a"}) + "\n" + json.dumps({**GOOD, "id": "b", "prompt": "2 + 2 " * 400}) + "\n")
    code = main(["score", "configs/quickstart.yaml", "--set", f"data.source={data}", "--set", f"model.name_or_path={tiny_dir}",
                 "--set", f"output_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "rl lengths" not in err
    scores = (tmp_path / "quickstart" / "score" / "scores.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in scores] == ["a"]


def test_the_scipy_floor_has_what_the_statistics_call():
    """statistics.spearman passes `rng=` to scipy's PermutationMethod, which takes it from scipy 1.15 on."""
    import re
    from pathlib import Path

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    floor = re.search(r'"scipy>=([\d.]+)"', pyproject).group(1)
    assert tuple(int(x) for x in floor.split(".")[:2]) >= (1, 15)
