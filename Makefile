# Two entry points, each doing all set-up on a fresh machine:
#   make run   -- .venv + pinned dependencies + Fashion-MNIST (+ Chromium for the report tests), then the main job (`fashionssl run`)
#   make test  -- the same set-up, then the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test setup system-packages bench clean

run: setup
	$(BIN)/fashionssl run

# two workers, each test file in one of them (its module fixtures built once): the suite is mostly
# small single-threaded steps, so two processes keep both cores busy where one could not (2-core AMD
# EPYC, clean clone, .ci/run: 3 min 48 s + 4 min 5 s serially, 2 min 8 s + 2 min 42 s with two workers)
test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

setup: $(STAMP) system-packages

# torch first and pinned: pip then takes the CPU wheel that lies on this machine's disk,
# not a multi-GB CUDA build pulled in by a looser requirement.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

# every method at the main job's budget and today's defaults over three seeds, docs/benchmarks.md
# (about 80 minutes a seed on 2 Intel Xeon cores for all eleven, the sum of that file's per-method
# times; resumable: a rerun reads finished runs back and continues an interrupted one)
bench: setup
	$(BIN)/fashionssl bench --config configs/bench-4x4.toml --out runs/bench-4x4-tuned --seeds 0,1,2

system-packages:
	@scripts/ensure-system-packages.sh

clean:
	rm -rf $(VENV) runs .pytest_cache
