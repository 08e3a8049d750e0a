# emoplug's front door. `make demo` installs and runs the quickstart; `make test` installs
# everything the suite needs (emoplug with its dev extras and the example plugin) and runs it.
PYTHON ?= python3
WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: install demo test lint bench

install:
	$(PYTHON) -m pip install -q torch==2.13.0
	$(PYTHON) -m pip install -q -e ".[dev]"
	$(PYTHON) -m pip install -q -e examples/emoplug-gated-fusion

demo: install
	emoplug run recipes/quickstart.yaml --workers $(WORKERS)
	emoplug report runs/quickstart

test: install
	$(PYTHON) -m pytest -q

lint: install
	$(PYTHON) -m ruff check .

bench:
	$(PYTHON) benchmarks/featurize.py
	$(PYTHON) benchmarks/train_loop.py
	$(PYTHON) benchmarks/grid.py
	$(PYTHON) benchmarks/rerun.py
	$(PYTHON) benchmarks/memory.py
	$(PYTHON) benchmarks/step_work.py
	$(PYTHON) benchmarks/gpu.py
	$(PYTHON) benchmarks/full_grid_cost.py
