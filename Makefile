# Two entry points do all set-up on a fresh machine:
#   make demo   train -> export -> batch-score on the built-in generated dataset
#   make test   the whole test suite (what CI runs)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: setup demo test test-unit test-integration test-e2e gpu-check bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e ".[test]"
	rm -f $(VENV)/.installed-*; touch $@

demo: setup
	$(PY) -m jobs.demo

test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests

test-unit: setup
	$(PY) -m pytest -q -m unit tests

test-integration: setup
	$(PY) -m pytest -q -m integration tests

test-e2e: setup
	$(PY) -m pytest -q -m e2e tests

# The GPU path without Ray (AMP training, padding invariance, loss vs CPU, ONNX parity, a DDP step,
# samples/s); on a machine without CUDA it checks the CPU path. Extra options: GPU_CHECK_ARGS="--quick".
gpu-check: setup
	$(PY) scripts/gpu_check.py --device auto --out out/gpu_check.json $(GPU_CHECK_ARGS)

clean:
	rm -rf demo
	rm -rf runs out artifacts data/demo .pytest_cache
