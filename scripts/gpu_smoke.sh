#!/usr/bin/env bash
# The first run on a GPU, where the CPU suite cannot go: TRL's fused LM head, bf16, the CADFT loss through it,
# GRPO on CUDA. On a GPU machine without a network, after scripts/gpu_wheels.sh filled .whl/ and .smoke/ here:
#   scripts/gpu_smoke.sh            (writes $OUT/gpu_smoke.md, else runs/gpu-smoke/gpu_smoke.md; ~3-5 minutes)
# It installs the carried wheels and the project into /tmp/site, runs the tests marked `gpu`, then a tiny
# `coldstart run` (a 2-layer random model with the embedded tokenizer: score, warm-up, handoff, GRPO, eval) on CUDA,
# and reports what ran, how long each part took, the device every stage's models were on and its peak memory
# ($OUT/stages.json; a model off the GPU fails the check), and what the run recorded. COLDSTART_SMOKE_CPU=1 runs it on a CPU
# with WHEELS=none and PYTHON=.venv/bin/python (to try the script itself; the gpu tests are then skipped).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPORT_DIR=${OUT:-$ROOT/runs/gpu-smoke}
WORK=$(mktemp -d)
SITE=${SITE:-/tmp/site}
WHEELS=${WHEELS:-$ROOT/.whl}  # WHEELS=none where the packages are installed already (a CPU trial)
PY=${PYTHON:-python3}
case "$PY" in /*) ;; */*) PY=$PWD/$PY ;; esac  # the script runs from a scratch folder
mkdir -p "$REPORT_DIR"
REPORT=$REPORT_DIR/gpu_smoke.md
: > "$REPORT"
say() { echo "$*" | tee -a "$REPORT"; }
now() { date +%s; }

say "# GPU smoke check, $(date -u +%Y-%m-%dT%H:%MZ)"
if [ "$WHEELS" != none ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
    || { say "installing the carried wheels failed"; exit 1; }
fi
# the project itself, built with the image's setuptools (no network for build isolation)
"$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --upgrade --target "$SITE" "$ROOT" \
  || { say "installing the project failed"; exit 1; }
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 COLDSTART_HOME=$WORK/home
# run from outside the checkout: its coldstart/ folder would shadow the installed package, which maps the stages
cd "$WORK"

"$PY" - <<'PY' | tee -a "$REPORT"
import importlib.metadata as m, os, torch
cuda = torch.cuda.is_available()
device = torch.cuda.get_device_name(0) if cuda else "no CUDA device"
print(f"\n- device: {device}; torch {torch.__version__}, CUDA {torch.version.cuda}")
print("- " + ", ".join(f"{p} {m.version(p)}" for p in ("transformers", "trl", "accelerate", "peft", "datasets", "math-verify")))
if not cuda and os.environ.get("COLDSTART_SMOKE_CPU") != "1":
    raise SystemExit("no CUDA device: this is the GPU smoke check (COLDSTART_SMOKE_CPU=1 tries it on a CPU)")
PY
[ "${PIPESTATUS[0]}" = 0 ] || exit 1

# a tiny random model with the embedded model's tokenizer (the 135M model does not travel)
"$PY" - "$ROOT" "$WORK/tiny" <<'PY' || { say "building the tiny model failed"; exit 1; }
import sys
sys.path.insert(0, f"{sys.argv[1]}/tests")
from conftest import make_tiny_model
from coldstart.models import load_tokenizer
tokenizer = load_tokenizer(f"{sys.argv[1]}/.smoke/tokenizer")
model = make_tiny_model(tokenizer)
model.generation_config.eos_token_id = [tokenizer.eos_token_id]
model.save_pretrained(sys.argv[2])
tokenizer.save_pretrained(sys.argv[2])
PY

status=0
start=$(now)
"$PY" -m pytest -q -m gpu -p no:cacheprovider --rootdir "$ROOT" "$ROOT/tests/test_gpu.py" > "$WORK/pytest.log" 2>&1 || status=1
say ""
say "## tests marked gpu ($(( $(now) - start )) s)"
say '```'
tail -n 15 "$WORK/pytest.log" | tee -a "$REPORT"
say '```'

SETS="data.arith.num_train=16 data.arith.num_test=8 warmup.max_steps=4 warmup.per_device_train_batch_size=4
warmup.save_steps=2 warmup.rewrite.max_new_tokens=16 warmup.rewrite.num_candidates=2 handoff.report_prompts=4
handoff.min_finished=0 rl.num_prompts=8 rl.max_steps=4 rl.num_generations=4 rl.per_device_train_batch_size=8
rl.max_completion_length=16 rl.save_steps=2 eval.num_problems=8 eval.max_new_tokens=16"
args=(run "$ROOT/configs/quickstart.yaml" --set "model.name_or_path=$WORK/tiny" --set "output_dir=$WORK/runs" --set name=smoke)
for item in $SETS; do args+=(--set "$item"); done
start=$(now)
"$PY" -m coldstart.cli "${args[@]}" > "$WORK/run.log" 2>&1 || status=1
say ""
say "## tiny coldstart run on $("$PY" -c 'import torch; print("CUDA" if torch.cuda.is_available() else "CPU")') ($(( $(now) - start )) s)"
say '```'
grep -v -E "it/s\]|s/it\]|examples/s\]" "$WORK/run.log" | tail -n 40 | tee -a "$REPORT"
say '```'
"$PY" - "$WORK/runs/smoke" "$REPORT_DIR/stages.json" <<'PY' | tee -a "$REPORT" || status=1
import json, os, sys
from pathlib import Path
run = Path(sys.argv[1])
if not (run / "manifest.json").is_file():
    raise SystemExit("no manifest: the run did not start")
stages = json.loads((run / "manifest.json").read_text())["stages"]
print("\n| stage | status | seconds | models on | precision | peak memory (GiB) | recorded |\n"
      "| --- | --- | --- | --- | --- | --- | --- |")
keep = ("steps", "first_loss", "last_loss", "finished_rate", "checks_failed", "zero_variance_share_mean")
per_stage, off_device = {}, []
for name, entry in stages.items():
    metrics = entry.get("metrics") or {}
    shown = {k: metrics[k] for k in keep if k in metrics}
    on = entry.get("models_on", [])
    per_stage[name] = {"status": entry.get("status"), "seconds": entry.get("seconds"), "models_on": on,
                       "precision": entry.get("precision"), "peak_memory_gib": entry.get("peak_memory_gib")}
    print(f"| {name} | {entry.get('status')} | {entry.get('seconds', 0):.0f} | {', '.join(on) or '-'} | "
          f"{entry.get('precision', '-')} | "
          f"{entry.get('peak_memory_gib', 0):.2f} | {json.dumps(shown)} |")
    # every model a stage loads must be on the GPU (the eval stage may read cached grades and load none)
    off_device += [f"{name}: {d}" for d in on if not d.startswith("cuda") and os.environ.get("COLDSTART_SMOKE_CPU") != "1"]
Path(sys.argv[2]).write_text(json.dumps(per_stage, indent=2) + "\n")
if off_device:
    raise SystemExit(f"\nmodels off the GPU: {'; '.join(off_device)}")
print(f"\nevery model on the GPU; per stage: {sys.argv[2]}")
PY
cp "$WORK/pytest.log" "$WORK/run.log" "$REPORT_DIR/" 2>/dev/null
say ""
say "result: $([ $status = 0 ] && echo passed || echo FAILED)"
exit $status
