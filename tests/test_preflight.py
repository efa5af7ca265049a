"""`coldstart check`: each check fires on its bad case and stays quiet on the good one; the fix for base models
whose eos is not the chat template's end of turn carries through a warm-up and the handoff's checks."""

import copy
import importlib.metadata
import json
import re
from pathlib import Path

import pytest
from transformers import GenerationConfig, Qwen2Config

from coldstart.cli import main
from coldstart.config import load_config
from coldstart.preflight import Launch, run_checks
from conftest import make_tiny_model

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "gsm8k_gpu.yaml"
SMALL = ["data.arith.num_train=8", "data.arith.num_test=4", "warmup.max_steps=2", "warmup.per_device_train_batch_size=4",
         "rl.num_prompts=4"]


def as_qwen_math(tokenizer):
    """The embedded tokenizer set up the way Qwen2.5-Math-1.5B ships: eos and pad '<|endoftext|>', while the chat
    template closes each turn with '<|im_end|>'."""
    tok = copy.deepcopy(tokenizer)
    tok.eos_token = tok.pad_token = "<|endoftext|>"
    return tok


def save(folder: Path, tokenizer, model=None, config=None) -> Path:
    """A model folder: a tiny random model's weights, or (with `config`) only the config, as `check` needs."""
    eos = tokenizer.eos_token_id
    if model is not None:
        model.config.eos_token_id = eos
        model.generation_config.eos_token_id = [eos]
        model.save_pretrained(folder)
    else:
        config.save_pretrained(folder)
        GenerationConfig(bos_token_id=eos, eos_token_id=eos).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory, tokenizer):
    tok = as_qwen_math(tokenizer)
    return save(tmp_path_factory.mktemp("qwen-like"), tok, make_tiny_model(tok))


def findings(folder, *sets, launch=Launch(), check=None):
    cfg = load_config(None, [f"model.name_or_path={folder}", *SMALL, *sets])
    found = run_checks(cfg, launch)
    return [f for f in found if check is None or f.check == check]


def one(folder, check, *sets, launch=Launch()):
    found = findings(folder, *sets, launch=launch, check=check)
    assert len(found) == 1, found
    return found[0]


def write_rows(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


GOOD = {"prompt": [{"role": "user", "content": "2+2?"}], "completion": [{"role": "assistant", "content": "\\boxed{4}"}],
        "answer": "4"}


# ---------------------------------------------------------------------------------------------------------------
# end of turn, closing label


def test_end_of_turn_passes_the_embedded_tokenizer(tiny_dir):
    f = one(tiny_dir, "end of turn")
    assert f.level == "ok" and f.message.startswith("'<|im_end|>' closes an assistant turn")


def test_end_of_turn_fixes_a_base_model_eos_for_the_run(qwen_dir):
    f = one(qwen_dir, "end of turn")
    assert f.level == "fixed"
    assert f.message.startswith("the chat template ends an assistant turn with '<|im_end|>' but the tokenizer's eos is "
                                "'<|endoftext|>' (as base models such as Qwen2.5-Math ship); the warm-up trains and "
                                "saves '<|im_end|>' as eos")


@pytest.mark.parametrize("sets, fix", [
    (["warmup.eos_token=null"], "set warmup.eos_token: auto (or '<|im_end|>')"),
    (["warmup.loss=none"], "warm it up (warmup.loss)"),
])
def test_end_of_turn_refuses_what_the_run_cannot_fix(qwen_dir, sets, fix):
    f = one(qwen_dir, "end of turn", *sets)
    assert f.level == "error" and fix in f.message
    assert "the run's eos is '<|endoftext|>'" in f.message


def test_end_of_turn_refuses_a_model_config_eos_the_run_leaves_as_it_is(tmp_path, tokenizer):
    model = make_tiny_model(tokenizer)
    folder = save(tmp_path / "m", tokenizer, model)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "eos_token_id": 0}))
    assert one(folder, "end of turn").level == "ok"  # the warm-up writes '<|im_end|>' into the config
    f = one(folder, "end of turn", "warmup.eos_token=null")
    assert f.level == "error" and f.message.startswith(
        "the model config's eos_token_id [0] is not '<|im_end|>' (2) and this run does not rewrite it")


def test_end_of_turn_refuses_conversations_without_a_chat_template(tmp_path, tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    folder = save(tmp_path / "m", tok, make_tiny_model(tok))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    f = one(folder, "end of turn")
    assert f.level == "error" and f.message.startswith("the prompts are conversations but the tokenizer has no chat template")


def test_closing_label_must_be_a_stop_id(tmp_path, tokenizer, tiny_dir):
    assert one(tiny_dir, "closing label").message == (
        "the warm-up trains '<|im_end|>' as each completion's closing label (then ['Ċ'], which the template writes "
        "after it)")
    tok = copy.deepcopy(tokenizer)  # a template that writes nothing after an assistant message
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    folder = save(tmp_path / "m", tok, make_tiny_model(tok))
    f = one(folder, "closing label")
    assert f.level == "error"
    assert re.match(r"the warm-up trains '.+' as the last token of sample 'arith-train-\d+', which is none of the "
                    r"stop ids \['<\|im_end\|>'\]", f.message)


# ---------------------------------------------------------------------------------------------------------------
# data, lengths


def test_unparsable_gold_and_unknown_roles_follow_on_bad_row(tmp_path, tiny_dir):
    rows = [GOOD, {**GOOD, "answer": "}{"},
            {**GOOD, "prompt": [{"role": "bot", "content": "2+2?"}]}]
    data = write_rows(tmp_path / "train.jsonl", rows)
    (tmp_path / "test.jsonl").write_text(data.read_text().splitlines()[0] + "\n")
    source = f"data.source={tmp_path}/{{split}}.jsonl"
    f = one(tiny_dir, "load", source)
    assert f.level == "error" and f.message.startswith(
        f"{data}:2: field 'answer': math-verify cannot parse '}}{{' (rewards, rewriting and evaluation could never "
        "grade it) (set data.on_bad_row: skip")
    f = one(tiny_dir, "data", source, "data.on_bad_row=skip")
    assert f.level == "warning" and f.message.startswith(
        f"2 of 3 training rows skipped (data.on_bad_row: skip), e.g. {data}:2: field 'answer'")
    write_rows(data, [GOOD, rows[2]])
    f = one(tiny_dir, "load", source)
    assert f.message.startswith(f"{data}:2: field 'prompt[0].role': 'bot' is not one of system, user, assistant")
    write_rows(data, [GOOD, {**GOOD, "answer": "5"}])
    f = one(tiny_dir, "data", source)
    assert f.level == "ok" and f.message.startswith("2 training and 1 held-out rows")


def test_lengths_counts_what_max_length_drops(tiny_dir, tokenizer):
    from coldstart.data import load_samples
    from coldstart.lengths import sample_lengths

    cfg = load_config(None, SMALL)
    train, _ = load_samples(cfg.data, "train", cfg.seed)
    found = sample_lengths(tokenizer, train)
    cut = sorted(n.tokens for n in found)[4]
    longer = sum(n.tokens > cut for n in found)
    assert one(tiny_dir, "lengths").level == "ok"
    f = one(tiny_dir, "lengths", f"warmup.max_length={cut}")
    assert f.level == "warning" and f.message.startswith(
        f"{longer} of 8 demonstrations are longer than warmup.max_length={cut} and are dropped")
    f = one(tiny_dir, "lengths", f"warmup.max_length={cut}", "warmup.too_long=error")
    assert f.level == "error" and "warmup.too_long is 'error'" in f.message
    shortest_prompt = min(n.completion_start for n in found)
    f = one(tiny_dir, "lengths", f"warmup.max_length={shortest_prompt}", "warmup.too_long=truncate")
    assert f.level == "error" and f.message.startswith("no demonstration keeps a completion token within")


def test_truncation_drops_samples_left_without_a_completion_token(tokenizer):
    from coldstart.compatibility import score
    from coldstart.data import load_samples
    from coldstart.lengths import apply_length_policy, sample_lengths

    cfg = load_config(None, SMALL)
    train, _ = load_samples(cfg.data, "train", cfg.seed)
    found = sample_lengths(tokenizer, train)
    cut = sorted(n.completion_start for n in found)[3]  # the prompts of about half reach the cut
    empty = sum(n.completion_start >= cut for n in found)
    kept, dropped = apply_length_policy(train, tokenizer, cut, "truncate")
    assert 0 < dropped == empty < 8 and len(kept) == 8 - empty
    assert all(r["num_tokens"] > 0 for r in score(make_tiny_model(tokenizer), tokenizer, kept, cut))
    with pytest.raises(ValueError, match=f"has no completion token within max_length={cut}"):
        score(make_tiny_model(tokenizer), tokenizer, train, cut)  # NLL 0, compatibility 1.0 for nothing


def test_score_stage_never_scores_an_empty_completion(tmp_path, tiny_dir, tokenizer):
    from coldstart.data import load_samples
    from coldstart.lengths import sample_lengths

    cfg = load_config("configs/quickstart.yaml", SMALL)
    found = sample_lengths(tokenizer, load_samples(cfg.data, "train", cfg.seed)[0])
    cut = sorted(n.completion_start for n in found)[3]
    args = ["score", "configs/quickstart.yaml", "--set", f"model.name_or_path={tiny_dir}", "--set",
            f"output_dir={tmp_path}", "--set", f"warmup.max_length={cut}", "--set", "warmup.too_long=truncate"]
    for item in SMALL:
        args += ["--set", item]
    assert main(args) == 0
    manifest = json.loads((tmp_path / "quickstart" / "manifest.json").read_text())
    records = [json.loads(line) for line in (tmp_path / "quickstart" / "score" / "scores.jsonl").read_text().splitlines()]
    dropped = manifest["stages"]["score"]["metrics"]["data"]["too_long_dropped"]
    assert dropped > 0 and len(records) == 8 - dropped and min(r["num_tokens"] for r in records) > 0


def test_rl_prompts_need_room_for_the_completion(tiny_dir):
    assert one(tiny_dir, "rl lengths").level == "ok"
    f = one(tiny_dir, "rl lengths", "rl.max_completion_length=500")  # the tiny model has 512 positions
    assert f.level == "error" and f.message.startswith(
        "4 of 4 RL prompts leave no room for rl.max_completion_length=500 within the model's 512 positions")


def test_benchmarks_load_before_training_and_a_typo_gets_a_suggestion(tiny_dir):
    found = findings(tiny_dir, "eval.benchmarks=[math500, svamp]", "eval.num_problems=7", check="benchmarks")
    assert [(f.level, f.message) for f in found] == [("ok", "math500: 7 problems"), ("ok", "svamp: 7 problems")]
    f = one(tiny_dir, "benchmarks", "eval.benchmarks=[math5000]")
    assert f.level == "error" and f.message == (
        "eval.benchmarks: 'math5000' is no named set, file, folder or Hub id; did you mean 'math500'?")


# ---------------------------------------------------------------------------------------------------------------
# batches, LoRA, versions, dtype, memory


def test_rl_batch_holds_whole_groups_for_the_process_count(tiny_dir):
    sets = ["rl.per_device_train_batch_size=8", "rl.num_generations=16"]
    assert one(tiny_dir, "rl batch", *sets, launch=Launch(2, "ddp")).level == "ok"
    f = one(tiny_dir, "rl batch", *sets, launch=Launch(3, "ddp"))
    assert f.level == "error" and f.message.startswith(
        "8 completions x 3 processes x 1 step per generation = 24, not a multiple of rl.num_generations=16")


def test_steps_per_generation_serve_whole_optimizer_steps(tiny_dir):
    assert one(tiny_dir, "steps per generation", "rl.steps_per_generation=4").level == "ok"
    f = one(tiny_dir, "steps per generation", "rl.steps_per_generation=3", "rl.gradient_accumulation_steps=2")
    assert f.level == "warning" and "a generation round ends inside an optimizer step" in f.message
    assert one(tiny_dir, "steps per generation", "rl.steps_per_generation=0").level == "error"


def test_lora_targets_exist_in_the_model(tiny_dir):
    assert one(tiny_dir, "lora", "model.lora.enabled=true", "model.lora.target_modules=q_proj,v_proj").level == "ok"
    f = one(tiny_dir, "lora", "model.lora.enabled=true", "model.lora.target_modules=q_proj,vproj")
    assert f.level == "error" and f.message.startswith("model.lora.target_modules names 'vproj', which the model does not have")
    assert f.message.endswith("did you mean 'v_proj'?")


def with_versions(monkeypatch, **installed) -> None:
    """`importlib.metadata.version` answering `installed` (None: not installed) and the truth for the rest."""
    monkeypatch.undo()
    real = importlib.metadata.version

    def version(name):
        if name not in installed:
            return real(name)
        if installed[name] is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(importlib.metadata, "version", version)


def test_vllm_outside_trls_range_and_missing_deepspeed(tiny_dir, monkeypatch):
    cfg = load_config(None, [f"model.name_or_path={tiny_dir}", *SMALL])
    cfg.rl.use_vllm = True  # loading refuses use_vllm where vLLM is not installed
    with_versions(monkeypatch, vllm="0.33.0")
    f = [f for f in run_checks(cfg, Launch()) if f.check == "versions"]
    assert f[0].level == "error" and f[0].message.startswith(
        "vLLM 0.33.0 is outside the range the installed TRL supports (<=0.31.0,>=0.22.0)")
    with_versions(monkeypatch, vllm="0.31.0")
    f = [f for f in run_checks(cfg, Launch()) if f.check == "versions"]
    assert f[0].level == "ok" and "vllm 0.31.0" in f[0].message
    with_versions(monkeypatch, deepspeed=None)
    f = one(tiny_dir, "versions", launch=Launch(2, "deepspeed", 2))
    assert f.level == "error" and f.message.startswith("the launcher asks for DeepSpeed, which is not installed")


def test_bf16_weights_need_fp32_master_weights(tiny_dir):
    assert one(tiny_dir, "dtype").level == "ok"
    f = one(tiny_dir, "dtype", "model.dtype=bfloat16")
    assert f.level == "error" and f.message.startswith(
        "model.dtype bfloat16 trains bfloat16 weights without fp32 master weights (1 process): updates of lr 1e-06")
    assert one(tiny_dir, "dtype", "model.dtype=bfloat16", launch=Launch(2, "deepspeed", 2)).level == "ok"
    assert one(tiny_dir, "dtype", "model.dtype=bfloat16", "model.lora.enabled=true").level == "ok"


def qwen_math_standin(folder: Path, tokenizer) -> Path:
    """Qwen2.5-Math-1.5B's shape (config only, no weights) with the embedded tokenizer set up as it ships."""
    tok = as_qwen_math(tokenizer)
    config = Qwen2Config(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=4096,
                         tie_word_embeddings=True, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                         dtype="bfloat16")
    return save(folder, tok, config=config)


@pytest.fixture(scope="module")
def standin(tmp_path_factory, tokenizer):
    return qwen_math_standin(tmp_path_factory.mktemp("qwen-math-1.5b"), tokenizer)


def recipe_findings(standin, launch, *sets):
    cfg = load_config(str(RECIPE), [f"model.name_or_path={standin}", "rl.use_vllm=false", "eval.use_vllm=false", *sets])
    return run_checks(cfg, launch)


def test_memory_estimate_counts_parameters_and_zero_shards(standin, monkeypatch):
    with_versions(monkeypatch, deepspeed="0.16.0")
    params = 1_543_714_304  # Qwen2.5-Math-1.5B, embeddings tied
    for launch, shards in ((Launch(8, "deepspeed", 2), 8), (Launch(4, "deepspeed", 2), 4)):
        found = {f.message.split(":")[0]: f.message for f in recipe_findings(standin, launch) if f.check == "memory"}
        parts = dict(re.findall(r"(weights|gradients|optimizer) ([\d.]+)", found["warm-up"]))
        assert float(parts["weights"]) == round(params * 2 / 1e9, 1)  # bf16, not sharded by ZeRO-2
        assert float(parts["gradients"]) == round(params * 2 / shards / 1e9, 1)
        assert float(parts["optimizer"]) == round(params * 12 / shards / 1e9, 1)  # fp32 masters + two moments


def test_gpu_recipe_passes_for_the_process_counts_it_documents(standin, monkeypatch):
    """8 processes under configs/accelerate/zero2.yaml, and one GPU with the overrides its header gives; the
    header quotes what `check` prints."""
    from coldstart.preflight import launch_from

    with_versions(monkeypatch, deepspeed="0.16.0")
    header = RECIPE.read_text().split("\nname:")[0]
    one_gpu = header.split("# One GPU")[1].split("\n#\n")[0]
    documented = {
        launch_from(str(ROOT / "configs/accelerate/zero2.yaml")): [],
        Launch(): re.findall(r"--set (\S+)", one_gpu),
    }
    assert documented[Launch()]
    for launch, sets in documented.items():
        found = recipe_findings(standin, launch, *sets)
        assert [f for f in found if f.level == "error"] == [], launch
        assert [f.check for f in found if f.level == "fixed"] == ["end of turn"]
    quoted = [line[len("#   "):] for line in header.splitlines() if re.match(r"#   (ok|fixed|estimate) ", line)]
    printed = [f.line() for f in recipe_findings(standin, launch_from(str(ROOT / "configs/accelerate/zero2.yaml")))]
    assert quoted and all(any(p.startswith(q.rstrip(" .")) for p in printed) for q in quoted), quoted


# ---------------------------------------------------------------------------------------------------------------
# the fix through a warm-up and the handoff; the commands


def test_a_base_model_eos_is_fixed_through_warmup_and_handoff(tmp_path, qwen_dir, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = ["--set", f"model.name_or_path={qwen_dir}", "--set", f"output_dir={tmp_path}", "--set", "handoff.min_finished=0",
            "--set", "handoff.report_prompts=2", "--set", "rl.max_completion_length=8", "--set", "rl.num_generations=2",
            "--set", "warmup.rewrite.enabled=false", "--set", "warmup.save_steps=2"]
    for item in SMALL:
        base += ["--set", item]
    for stage in ("warmup", "handoff"):
        assert main([stage, "configs/quickstart.yaml", *base]) == 0, stage
    run = tmp_path / "quickstart"
    handoff = json.loads((run / "handoff" / "handoff.json").read_text())
    assert handoff["checks_failed"] == []
    tok = AutoTokenizer.from_pretrained(run / "handoff" / "model")
    model = AutoModelForCausalLM.from_pretrained(run / "handoff" / "model")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.eos_token == "<|im_end|>" and model.config.eos_token_id == im_end
    assert im_end in model.generation_config.eos_token_id

    # without the fix, the handoff stops where the user was stopped, after the warm-up
    unfixed = [*base, "--set", "warmup.eos_token=null", "--set", "name=unfixed", "--set", "check.skip=true"]
    assert main(["warmup", "configs/quickstart.yaml", *unfixed]) == 0
    capsys.readouterr()
    assert main(["handoff", "configs/quickstart.yaml", *unfixed]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "coldstart: error: handoff: end of turn: the chat template ends an assistant turn with '<|im_end|>' but the "
        "tokenizer's eos is '<|endoftext|>'")


def test_training_stages_start_with_the_check(tmp_path, tiny_dir, capsys):
    args = ["warmup", "configs/quickstart.yaml", "--set", f"model.name_or_path={tiny_dir}", "--set", f"output_dir={tmp_path}",
            "--set", "rl.num_generations=3"]
    for item in SMALL:
        args += ["--set", item]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("coldstart: error: rl batch: 16 completions x 1 process x 4 steps per generation = 64, "
                          "not a multiple of rl.num_generations=3") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "quickstart" / "warmup").exists()  # refused before training
    assert main(args + ["--set", "check.skip=true", "--set", "rl.num_generations=2"]) == 0


def test_check_command_prints_every_finding(tmp_path, tiny_dir, capsys):
    args = ["check", "configs/quickstart.yaml", "--set", f"model.name_or_path={tiny_dir}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "check configs/quickstart.yaml (1 process)"
    checks = [line.split(":")[0].split(None, 1)[1] for line in out.splitlines()[1:-1]]
    assert checks == ["end of turn", "closing label", "data", "held-out", "cadft", "lengths", "rl lengths", "rl batch",
                      "steps per generation", "versions", "dtype", "memory", "memory", "memory"]
    assert out.splitlines()[-1] == "check: 0 errors, 0 warnings, 0 fixed for the run, 11 passed"
    assert main(args + ["--processes", "3", "--set", "rl.num_generations=9"]) == 2
    captured = capsys.readouterr()
    assert "(3 processes)" in captured.out and "error    rl batch: 16 completions x 3 processes" in captured.out
    assert captured.err == "coldstart: error: check: configs/quickstart.yaml would fail; see the errors above\n"


PAPER = ROOT / "configs" / "paper_qwen_math.yaml"


def test_paper_recipe_passes_the_check_offline(standin, monkeypatch, tmp_path):
    """configs/paper_qwen_math.yaml on the stand-in, with NuminaMath-CoT rows (no answer column) in a local file
    and the benchmarks the project does not ship in a local folder: no error, under the launch it documents."""
    from coldstart.preflight import launch_from

    with_versions(monkeypatch, deepspeed="0.16.0")
    numina = [{"source": "amc_aime", "problem": f"What is {i} + {i}?", "solution": f"It is \\boxed{{{2 * i}}}.",
               "messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                            {"role": "assistant", "content": f"It is \\boxed{{{2 * i}}}."}]} for i in range(40)]
    (tmp_path / "numina").mkdir()
    for split, rows in (("train", numina[:32]), ("test", numina[32:])):
        write_rows(tmp_path / "numina" / f"{split}.jsonl", rows)
    for name in ("minerva_math", "aime24", "amc23"):
        (tmp_path / "bench" / name).mkdir(parents=True)
        write_rows(tmp_path / "bench" / name / "test.jsonl", [{"id": 0, "problem": "1 + 1?", "answer": "2",
                                                               "solution": "\\boxed{2}"}])
    header = PAPER.read_text().split("\nname:")[0]
    assert "--config_file configs/accelerate/zero2.yaml" in header
    cfg = load_config(str(PAPER), [f"model.name_or_path={standin}", f"data.source={tmp_path / 'numina'}",
                                   f"eval.benchmark_dir={tmp_path / 'bench'}", "rl.use_vllm=false",
                                   "eval.use_vllm=false"])
    assert cfg.warmup.per_device_train_batch_size * cfg.warmup.gradient_accumulation_steps * 8 == 256  # DFT's batch
    found = run_checks(cfg, launch_from(str(ROOT / "configs/accelerate/zero2.yaml")))
    assert [f for f in found if f.level == "error"] == []
    loaded = {f.message for f in found if f.check == "benchmarks"}
    assert loaded == {"math500: 500 problems", "minerva_math: 1 problem", "olympiadbench: 675 problems",
                      "aime24: 1 problem", "amc23: 1 problem"}
