# Two commands for a fresh machine: `make demo` and `make test` (both create and use .venv).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test aot-check wheel-test install install-dev lint bench clean

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed examples/plugin-template/pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev,eval,app,text,finetune]' -e examples/plugin-template
	$(PY) -m pip install --quiet --no-deps 'aisfx==0.1.2'
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(VENV)/bin/vssflow demo

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q tests examples/plugin-template/tests

# Every Triton kernel configuration each GPU family may launch, compiled ahead of time for sm_90 and sm_80
# with Triton's bundled ptxas (no GPU, offline); fails on any register spill or shared memory over the limit.
aot-check: $(VENV)/.installed
	$(PY) benchmarks/aot_compile_check.py --quiet

# The wheel in a fresh virtual environment, as users install it: plugins, recipe show, a few training steps.
wheel-test: $(VENV)/.installed
	PYTHON=$(PY) .ci/wheel-smoke

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .

bench: $(VENV)/.installed-dev
	$(PY) -m pytest -q benchmarks --benchmark-only

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
