# Two commands do all the set-up: `make reproduce` and `make test` (README "Quick start").
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=
PRESET ?= mini

.PHONY: setup test test-fast reproduce lab bench gpu-carry clean-scratch

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 $(TORCH_PIP_ARGS)
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests/
	GIFT_PRESET=smoke $(PY) -m pytest -q --nbval-lax notebooks/

reproduce: $(STAMP)
	$(PY) -m gift_lite reproduce --preset $(PRESET)

lab: $(STAMP)
	$(PY) -m pip install -q -e '.[lab]'
	$(VENV)/bin/jupyter lab notebooks/

bench: $(STAMP)
	$(PY) benchmarks/bench_loss.py

# Wheels a GPU machine without network needs for benchmarks/gpu_check.py, into .wheels/ (gpu_carry.sh says which)
gpu-carry:
	bash benchmarks/gpu_carry.sh

clean-scratch:
	rm -rf scratch/
