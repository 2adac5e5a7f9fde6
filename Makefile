# The two front doors: `make repro` (install, then run the pipeline) and `make test`.
# Both create .venv and install the pinned dependencies the first time.
# `make gate` then judges the metrics for a merge (GATE_ARGS="--rev REV --report PATH").

PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
MLFLOW_PORT ?= 5000
SERVER_PORT ?= 5001
SERVER_DIR ?= server
SERVER_HOST ?= 127.0.0.1
ALLOWED_HOSTS ?=
SERVE_PORT ?= 5002
STUDY_PORT ?= 5003
GATE_ARGS ?=
RECIPE ?= quick25k
EXP_ARGS ?=
COMPARE_ARGS ?=
FRONTIER_ARGS ?=

# DVC runs each stage's `python -m stages.X` through the shell: put the venv first.
export PATH := $(BIN):$(PATH)

.PHONY: install repro check-repro test test-fast test-cpus qemu gate promote serve reset exp compare frontier budget search bench bench-e2e bench-search bench-tls bench-serve bench-kernels bench-speedup bench-gate ui browser sshd plots-lib server server-stop push pull lock clean

install: $(STAMP) plots-lib

$(STAMP): requirements.txt requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt -c requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation --editable .
	touch $@

# The page `dvc plots show` and `dvc plots diff` draw on (.dvc/config's plots.html_template): vega,
# vega-lite and vega-embed inlined, so that it draws with no network. They are fetched once from the
# npm registry, at the versions plots/offline.py pins, and checked by their sha512. In .dvc/, beside
# the config that names it: a copy of the folder (the tests' repositories) draws the same.
PLOTS_PAGE := .dvc/plots_template.html
plots-lib: $(PLOTS_PAGE)

$(PLOTS_PAGE): plots/offline.py plots/template.html
	$(PYTHON) -m plots.offline $@

repro: install
	dvc repro

# After `make repro`: did this machine reproduce the committed results, bit for bit? (README: Reproducibility)
check-repro:
	@git diff --exit-code --stat -- dvc.lock metrics/ || { echo "check-repro: this machine's \`dvc repro\` changed" \
	  "the committed dvc.lock or metrics/ (above): its CPU or settings give other bits" >&2; exit 1; }

# Every test but the emulated CPUs' (tests/cpus: pyproject keeps a plain `pytest` out of it). Test
# modules run in parallel, one to a worker (TEST_WORKERS=0: one process): three on 2 cores, since
# the tests wait on servers and subprocesses; the modules that need a team server share one
# (tests/conftest.py). docs/testing.md: the tiers and what they take.
# OpenMP threads sleep at once when idle: three workers share 2 cores (stages/__init__.py).
TEST_WORKERS ?= 3
test: install browser sshd
	OMP_WAIT_POLICY=PASSIVE pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

# The unit tier, within a minute: pure functions, the schema, the architectures, the verdict, compare,
# the docs and CI checks (the tests marked `unit`); no server, no pipeline, no browser.
test-fast: install
	pytest -m unit

# The same weights on other CPUs: the recipes' kernels natively and under qemu's emulated Intel and
# AMD CPUs (tests/cpus/test_same_bits.py), about 5 minutes on 2 cores; .ci/run runs it.
test-cpus: install qemu
	pytest tests/cpus

qemu: $(BIN)/qemu-x86_64

$(BIN)/qemu-x86_64: tests/cpus/get_qemu.sh | $(STAMP)
	bash tests/cpus/get_qemu.sh $@

gate: install
	python -m stages.gate $(GATE_ARGS)

# After a passing gate: register the model in the MLflow Model Registry, move its alias (stages/promote.py).
# On the team server, as its promoter (the one user who may: password in $(SERVER_DIR)/promoter.password),
# unless MLFLOW_TRACKING_USERNAME names another login with that right (the CI's).
promote: install
	@if [ -z "$$MLFLOW_TRACKING_USERNAME" ] && [ -f $(SERVER_DIR)/promoter.password ]; then \
	  export MLFLOW_TRACKING_USERNAME=promoter MLFLOW_TRACKING_PASSWORD="$$(cat $(SERVER_DIR)/promoter.password)"; fi; \
	python -m stages.promote

# The champion's weights (or MODEL_URI=...'s), once main's dvc.lock shows it trained them, scored by this
# checkout's code behind guards (stages/serve.py); bound to 127.0.0.1, SERVE_WORKERS processes.
SERVE_WORKERS ?= 2
serve: install
	python -m stages.serve --port $(SERVE_PORT) --workers $(SERVE_WORKERS)

# The scoring server under load (32 clients for 60 s) and abuse (a 50 MB body, deep JSON, slow clients):
# figures into benchmarks/serve.json; after make promote, about 11 minutes
bench-serve: install
	python -m benchmarks.load

# The workspace back to the commit's params.yaml, dvc.lock, metrics and DVC outputs: a workspace
# `dvc exp run` leaves its values applied, and the next experiment would start from them.
reset: install
	python -m stages.reset

exp: install  # one experiment from a recipe: make exp RECIPE=tiny10k EXP_ARGS="-S train.seed=1"
	flags="$$(python -m stages.recipe $(RECIPE))" && dvc exp run $$flags $(EXP_ARGS)

bench: install  # the side-by-side benchmark, then experiments end to end: about 20 minutes on 2 cores
	python -m benchmarks.bench

bench-e2e: install  # only the end-to-end part: experiments broken down, against the plain script
	python -m benchmarks.e2e

bench-search: install  # what pruning saves a search, and trials per minute for 1 and 2 workers: ~15 minutes
	python -m benchmarks.search

# What TLS costs a search trial and a logged run: two team servers on a test host (network namespaces,
# as root), one with TLS and one in clear, alternating (docs/team.md): ~3 minutes
bench-tls: install
	python -m benchmarks.tls

bench-kernels: install  # what the portable CPU code paths cost against native ones (after make repro): ~6 minutes
	python -m benchmarks.kernels

# One epoch of quick25k, tiny10k and cnn24k-reference, this checkout against commit BEFORE, alternating
# (after make repro): ~12 minutes on 2 cores. docs/speed.md's before-and-after table comes from it.
BEFORE ?= b094a21
bench-speedup: install
	python -m benchmarks.speedup --before $(BEFORE)

# How often the gate fails a change that does nothing, and catches a 0.25-pp regression (after make repro):
# 123 trainings of the default, about 25 minutes on 2 cores; kept seed by seed in benchmarks/gate_rates.jsonl
bench-gate: install
	python -m benchmarks.gate_rates quick25k --set lr=0.0035

# Experiments side by side, in a table that fits the terminal: validation accuracy (choose on it),
# the test's and the parameter count, best validation first, then the train params that differ.
# COMPARE_ARGS go to `dvc exp show` (-A: every commit's); `dvc exp show` itself shows everything.
compare: install
	python -m stages.compare $(COMPARE_ARGS)

# The accuracy-vs-parameters front of every run and complete trial in the MLflow store, pooled by group
# (docs/search.md#the-frontier): FRONTIER_ARGS="[--under 25000] [--max-epochs 1] [--figure PATH]"
frontier: install
	python -m stages.frontier $(FRONTIER_ARGS)

# The parameter count and multiply-adds of params.yaml's model, against gate.max_params, without
# training (exit 1 when over): make budget BUDGET_ARGS="-S train.model=declared -S 'train.arch.blocks=[...]'"
BUDGET_ARGS ?=
budget: install
	python -m stages.budget $(BUDGET_ARGS)

# An Optuna study for the best model under search.max_params (stages/search.py; README: Searching):
# make search SEARCH_ARGS="--trials 20 [--study NAME] [--storage URL] [-S key=value]". The data first.
SEARCH_ARGS ?=
search: install
	dvc repro download
	python -m stages.search $(SEARCH_ARGS)

# The MLflow UI, opened on the runs table of params.yaml's tracking.experiment (not MLflow 3's GenAI view).
ui: install
	python -m mnistcnn.team.ui --backend-store-uri sqlite:///mlruns/mlflow.db --host 127.0.0.1 --port $(MLFLOW_PORT) \
	  --experiment "$$(python -c 'from mnistcnn.params.config import load; print(load().tracking.experiment)' || echo mnist-compact-cnn)"

# The UI test (tests/test_ui.py) drives the real MLflow UI in headless Chromium: Debian's, installed once (as root).
browser:
	test -x /usr/bin/chromium || { apt-get update && apt-get install -y --no-install-recommends chromium; }

# The multi-host tests make hosts with iproute2's `ip` (tests/hosts.py), and the SSH remote's runs Debian's
# OpenSSH server on one of them (tests/test_ssh_remote.py): installed once (as root).
sshd:
	test -x /usr/sbin/sshd -a -x /usr/sbin/ip || { apt-get update && \
	  apt-get install -y --no-install-recommends openssh-server iproute2; }

# The team's MLflow tracking server on PostgreSQL (mnistcnn/team/tracking_server.py), its data in $(SERVER_DIR)/;
# then MLFLOW_TRACKING_URI=http://127.0.0.1:$(SERVER_PORT) sends every stage's run there, and the
# SEARCH_STORAGE in $(SERVER_DIR)/search_storage.url (PostgreSQL on port $(STUDY_PORT), with its password;
# mode 0600, never printed) joins workers to a study. For other machines (docs/team.md): SERVER_HOST=<its
# address> ALLOWED_HOSTS=<the names and address:port clients use>; both servers then speak TLS only.
server: install
	python -m stages.tracking_server start --folder $(SERVER_DIR) --host $(SERVER_HOST) --port $(SERVER_PORT) \
	  --study-port $(STUDY_PORT) $(if $(ALLOWED_HOSTS),--allowed-hosts $(ALLOWED_HOSTS))

server-stop: install
	python -m stages.tracking_server stop --folder $(SERVER_DIR)

# Outputs and run-cache to and from the team's DVC remote (README: "Working as a team"). An SSH remote's
# host key is checked first with OpenSSH (stages/remote.py): dvc-ssh checks none.
push: install
	python -m stages.remote check && dvc push --run-cache

pull: install
	python -m stages.remote check && dvc pull --run-cache

lock: install
	{ echo "# Every installed package, pinned: regenerate with 'make lock' after changing requirements.txt."; \
	  $(BIN)/python -m pip freeze --exclude-editable; } > requirements.lock

clean:
	rm -rf $(VENV) $(PLOTS_PAGE)
