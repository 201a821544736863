# mmkit — two commands on a fresh machine: `make reproduce` and `make test`.
# Both bootstrap a local virtual environment (.venv) and are idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# one intra-op thread by default: the machines are shared and small ops slow down with two
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: test reproduce bench venv clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

reproduce: $(STAMP)
	$(PY) -m mmkit reproduce

bench: $(STAMP)
	cd benchmarks && ../$(PY) bench_ssw.py && ../$(PY) bench_vmf.py

clean-venv:
	rm -rf $(VENV)
