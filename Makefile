# The two commands a new user types: `make demo` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# Headless plotting and a fixed thread count keep runs quiet and comparable.
export MPLBACKEND := Agg

# Cockpit and BackPACK declare torchvision (a second torch build) yet run without it;
# their real dependencies come with the dev extra ("cockpit" in pyproject.toml).
COCKPIT := "cockpit-for-pytorch==1.0.2" "backpack-for-pytorch==1.7.1"

.PHONY: setup test demo bench lint clean

setup: $(STAMP)

# torch is pinned first: 2.13.0 is the CPU build on these machines, while a looser pin
# would pull a multi-GB CUDA build. A second `make setup` finds the stamp and does nothing.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps $(COCKPIT)
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check src tests benchmarks examples

test: setup lint
	$(BIN)/python -m pytest -n 2 --dist loadfile -q --doctest-modules src/optiscope tests

demo: setup
	$(BIN)/optiscope demo --out runs

bench: setup
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .hypothesis
