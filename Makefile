# One entry point. `make test` sets up .venv on a bare machine (see
# tools/setup_env.sh) and runs the test suite; CI runs exactly that.
# `make test-fast` leaves out the end-to-end tests (marker e2e: tools run in
# subprocesses, multi-process training) and the full-size models (slow): the
# unit tests, in a minute or two.
# `make demo` trains and evaluates the two GN+WS demo models (tools/demo.py).
PY := .venv/bin/python

.PHONY: setup test test-fast demo
setup:
	bash tools/setup_env.sh

test: setup
	$(PY) -m pytest tests

test-fast: setup
	$(PY) -m pytest tests -m "not e2e and not slow"

demo: setup
	$(PY) tools/demo.py
