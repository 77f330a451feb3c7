# One command for each job; each does its own set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# PyTorch comes first, pinned: an open-ended requirement with no torch installed pulls a large CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: setup run test test-fast test-ray test-faults test-sweep test-studies soak bench clean

$(BIN)/mnist-study: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/mnist-study

run: setup            ## the paper's ten experiments, the table, and the HTML report
	$(BIN)/mnist-study run paper

test: setup           ## the whole test suite (browser tests need chromium + chromium-driver)
	$(BIN)/python -m pytest -q

test-fast: setup      ## skip the end-to-end and browser tests
	$(BIN)/python -m pytest -q -m "not slow and not browser and not ray and not faults and not soak and not sweep and not studies"

test-ray: setup       ## the Ray executor: a local instance, a 3-node cluster on loopback (also part of `make test`)
	$(BIN)/python -m pytest -q -m ray

test-faults: setup    ## the fault-injection harness: real runs killed at random moments, resumed, compared
	$(BIN)/python -m pytest -q -m faults

test-sweep: setup     ## the built-in width-optimiser sweep (200 networks), its report opened in Chromium
	$(BIN)/python -m pytest -q -m sweep -s

test-studies: setup   ## every built-in study's -small variant, its claims compared with the full study's (about an hour)
	$(BIN)/python -m pytest -q -m studies -s

soak: setup           ## the server under 50 concurrent clients for 10 minutes
	$(BIN)/python -m pytest -q -m soak -s

bench: setup          ## benchmarks -> BENCHMARKS.md
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
