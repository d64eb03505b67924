# One entry point. `make test` sets up .venv on a bare machine (see
# tools/setup_env.sh) and runs the test suite; CI runs exactly that.
# `make demo` trains and evaluates the two GN+WS demo models (tools/demo.py).
PY := .venv/bin/python

.PHONY: setup test demo
setup:
	bash tools/setup_env.sh

test: setup
	$(PY) -m pytest tests

demo: setup
	$(PY) tools/demo.py
