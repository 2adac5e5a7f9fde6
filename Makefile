# The two front doors: `make repro` (install, then run the pipeline) and `make test`.
# Both create .venv and install the pinned dependencies the first time.
# `make gate` then judges the metrics for a merge (GATE_ARGS="--rev REV --report PATH").

PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
MLFLOW_PORT ?= 5000
GATE_ARGS ?=
RECIPE ?= quick25k
EXP_ARGS ?=
COMPARE_ARGS ?=

# DVC runs each stage's `python -m stages.X` through the shell: put the venv first.
export PATH := $(BIN):$(PATH)

.PHONY: install repro test gate exp compare bench ui lock clean

install: $(STAMP)

$(STAMP): requirements.txt requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt -c requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation --editable .
	touch $@

repro: install
	dvc repro

test: install
	pytest

gate: install
	python -m stages.gate $(GATE_ARGS)

exp: install  # one experiment from a recipe: make exp RECIPE=tiny10k EXP_ARGS="-S train.seed=1"
	flags="$$(python -m stages.recipe $(RECIPE))" && dvc exp run $$flags $(EXP_ARGS)

bench: install  # the side-by-side benchmark: about 15 minutes on 2 cores
	python -m benchmarks.bench

# Experiments side by side: the train params and the metrics, none of the paths or mirrors.
compare: install
	dvc exp show --drop '.*' \
	  --keep 'Experiment$$|Created$$|State$$|train\.|metrics/test|metrics/train.json:(loss|accuracy)' $(COMPARE_ARGS)

ui: install
	mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --host 127.0.0.1 --port $(MLFLOW_PORT)

lock: install
	{ echo "# Every installed package, pinned: regenerate with 'make lock' after changing requirements.txt."; \
	  $(BIN)/python -m pip freeze; } > requirements.lock

clean:
	rm -rf $(VENV)
