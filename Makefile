# Two commands for a fresh clone: `make train` and `make test`. Both install first when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export WANDB_MODE ?= offline
export HF_DATASETS_OFFLINE ?= 1
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install train test test-full bench sweep lint clean

install: $(STAMP)

# Reinstall when pyproject.toml changes. torch comes first with its pin: an unpinned torch
# would pull a multi-GB CUDA build, the pinned one is a local CPU wheel here. litdata (token shards) comes
# without its declared torchvision, which it needs only for images and which would replace torch with a CUDA
# build; what it needs beyond the core is the [shards] extra (in [all], so in [dev]). The package's bytecode is
# compiled as a regular install's is (an editable one compiles none, and where PYTHONDONTWRITEBYTECODE is set, as
# on our CI machines, every run compiled the modules it imports again: 0.3-0.4 s of each run's start-up).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps "litdata==0.2.76"
	$(PY) -m compileall -q lightning_llm
	touch $(STAMP)

train: $(STAMP)
	$(PY) train.py $(ARGS)

test: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -n 2 --dist worksteal -m "not slow" $(ARGS)

test-full: $(STAMP)
	$(PY) -m pytest -q -n 2 $(ARGS)

# model step vs HF GPT-2 and Lightning overhead; the three families; fine-tuning methods; data pipeline; packing
bench: $(STAMP)
	$(PY) -m bench $(ARGS)
	$(PY) -m bench.families
	$(PY) -m bench.finetune
	$(PY) -m bench.pipeline
	$(PY) -m bench.packing

# W&B sweep: `make sweep SWEEP=sweeps/gpt_lr.yaml` (needs `wandb login` and network)
SWEEP ?= sweeps/gpt_lr.yaml
sweep: $(STAMP)
	WANDB_MODE=online $(VENV)/bin/wandb sweep --project lightning-llm $(SWEEP) 2>&1 | tee .sweep.log
	WANDB_MODE=online $(VENV)/bin/wandb agent $$(grep -o 'wandb agent .*' .sweep.log | tail -1 | cut -d' ' -f3)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf logs .cache .pytest_cache
