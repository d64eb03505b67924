# One entry point. `make test` sets up .venv on a bare machine (see
# tools/setup_env.sh) and runs the test suite; CI runs exactly that.
PY := .venv/bin/python

.PHONY: setup test
setup:
	bash tools/setup_env.sh

test: setup
	$(PY) -m pytest tests
