#!/usr/bin/env bash
# Gathers, on a machine with a network, what scripts/gpu_smoke.sh carries to a GPU machine that has none: wheels of
# the packages its image lacks (or has too old), in the versions this project's venv runs, for CPython 3.12 on
# x86-64, in .whl/; and the embedded model's tokenizer in .smoke/tokenizer/. About 20 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY_VERSION=${PY_VERSION:-3.12}
# the GPU image has torch, accelerate, numpy, pandas, pyarrow, scipy, sympy, tokenizers, safetensors, matplotlib,
# pyyaml, tqdm and huggingface-hub; these it lacks or has older than this project needs
PACKAGES="transformers trl datasets dill multiprocess peft math-verify latex2sympy2_extended antlr4-python3-runtime"
rm -rf .whl && mkdir -p .whl .smoke
for name in $PACKAGES; do
  version=$("$VENV/bin/python" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
  "$VENV/bin/python" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl "$name==$version"
done
"$VENV/bin/python" - <<'PY'
from coldstart.models import embedded_model_dir, load_tokenizer

load_tokenizer(str(embedded_model_dir())).save_pretrained(".smoke/tokenizer")
PY
du -sh .whl .smoke
