# Every target sets itself up on a fresh clone: the first run creates .venv from PyPI.
# PYTHON may point at any Python >= 3.11 (e.g. `make test PYTHON=python3.12`).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=
EX     ?=

.PHONY: help test test-exhaustive grade check train bench clean

help:
	@echo "make test    create .venv, install cnnlab with its dev extra, run the whole test suite"
	@echo "make test-exhaustive   the exhaustive variants (marker 'exhaustive'; CI runs them after make test)"
	@echo "make grade   grade your exercises/ and print the scoreboard"
	@echo "make check EX=sigmoid   grade one exercise (or EX=convolution, EX=2: a lab) and show every case"
	@echo "make train   train the workshop CNN on Fashion-MNIST and print the test accuracy"
	@echo "make bench   run the benchmarks in benchmarks/ (minutes; prints figures)"

# setuptools notes, for every editable install of a package-dir layout, that folders named like
# the packages may shadow them; here those folders are the packages: the note is silenced.
$(STAMP): export PYTHONWARNINGS = ignore:Editable installation
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "cnnlab needs Python >= 3.11; run: make $(MAKECMDGOALS) PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

test: $(STAMP)
	$(BIN)/python -m pytest -m "not exhaustive" $(ARGS)

test-exhaustive: $(STAMP)
	$(BIN)/python -m pytest -m exhaustive $(ARGS)

grade: $(STAMP)
	@$(BIN)/python -m grader $(ARGS)

# EX: exercise names (sigmoid), labs (convolution) or lab numbers (2); ARGS=-v also shows passed cases
check: $(STAMP)
	@test -n "$(EX)" || { echo "usage: make check EX=NAME  (an exercise such as sigmoid, a lab such as convolution, or a lab number 1-7)" >&2; exit 2; }
	@$(BIN)/python -m grader check $(EX) $(ARGS)

train: $(STAMP)
	$(BIN)/cnnlab train $(ARGS)

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
