# Every target sets itself up on a fresh clone: the first run creates .venv from PyPI.
# PYTHON may point at any Python >= 3.11 (e.g. `make test PYTHON=python3.12`).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=
# make test runs the suite in this many pytest-xdist workers, whole files to a worker (module
# fixtures are built once); 2 fills a 2-core machine (CI's), whose tests wait on subprocesses.
TEST_WORKERS ?= 2
EX     ?=
# The folder the command was typed in (`make -C DIR` keeps the shell's $PWD; exercises/Makefile
# passes it on) and this repository: the grader grades this repository's exercises/ and prints
# its commands for that folder.
CNNLAB_CWD ?= $(if $(wildcard $(PWD)/.),$(PWD),$(CURDIR))
GRADER := CNNLAB_CWD="$(CNNLAB_CWD)" CNNLAB_ROOT="$(CURDIR)" $(BIN)/python -m grader

.PHONY: help test test-exhaustive grade check lab train bench clean

help:
	@echo "make test    create .venv, install cnnlab with its dev extra, run the whole test suite"
	@echo "make test-exhaustive   the exhaustive variants (marker 'exhaustive'; CI runs them after make test)"
	@echo "make grade   grade your exercises/ and print the scoreboard"
	@echo "make lab     open the labs' notebooks (exercises/notebooks/) in JupyterLab on .venv"
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
	$(BIN)/python -m pytest -m "not exhaustive" -n $(TEST_WORKERS) --dist loadfile $(ARGS)

test-exhaustive: $(STAMP)
	$(BIN)/python -m pytest -m exhaustive $(ARGS)

grade: $(STAMP)
	@$(GRADER) $(ARGS)

# JupyterLab on the project's .venv (installed on first use): its "Python 3" kernel is .venv's
# Python, so `from grader import check` works in every notebook. ARGS: e.g. --no-browser.
LAB_STAMP := $(VENV)/.lab-stamp
$(LAB_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,lab]'
	@touch $@

lab: $(LAB_STAMP)
	$(BIN)/jupyter lab --notebook-dir=exercises/notebooks $(ARGS)

# EX: exercise names (sigmoid), labs (convolution) or lab numbers (2); ARGS=-v also shows passed cases
check: $(STAMP)
	@test -n "$(EX)" || { echo "usage: make check EX=NAME  (an exercise such as sigmoid, a lab such as convolution, or a lab number 1-7)" >&2; exit 2; }
	@$(GRADER) check $(EX) $(ARGS)

train: $(STAMP)
	$(BIN)/cnnlab train $(ARGS)

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
