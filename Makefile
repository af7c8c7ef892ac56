# Every target creates .venv itself when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-slow lint venv clean reliability

$(BIN)/skiplab: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(BIN)/skiplab

venv: $(BIN)/skiplab

# The chapter's experiments at the quick budget on the embedded synthetic data (no download):
# runs/demo/report.md and report.html. Training runs go JOBS at a time, one core each.
# --amp auto: bf16 autocast only on a CPU with native bf16 (AVX-512 BF16 or AMX), else fp32
# (skiplab.hardware); the report's Run section says which was chosen.
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
DEMO_FLAGS ?= --budget quick --data synthetic --jobs $(JOBS) --amp auto --channels-last

demo: venv
	$(BIN)/skiplab reproduce $(DEMO_FLAGS) --out runs/demo

# The fault-injection suite at its full trial counts; rewrites docs/reliability.{json,md}.
reliability: venv
	OMP_NUM_THREADS=1 $(BIN)/python -m skiplab.selftest --json docs/reliability.json --docs docs/reliability.md

lint: venv
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

# The suite without the tests marked slow (real data, public checkpoints, the GPU suite's smoke
# run, multi-process faults, compile): under 10 minutes from a fresh clone on 2 cores.
test: lint
	$(BIN)/python -m pytest -m "not slow"

# The tests marked slow; CI runs them after `make test` (.ci/run).
test-slow: venv
	$(BIN)/python -m pytest -m slow

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
