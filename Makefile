# One entry point. `make test` sets up .venv on a bare machine (see
# tools/setup_env.sh) and runs the test suite there, then `make test-oldest`;
# CI runs exactly that.
# `make test-oldest` sets up .venv-oldest (torch 2.0, the oldest supported)
# and runs there what must work on every supported torch: the layers, the
# registry, every config, the install, 2-process runs of both demo models,
# and ending a process group (which torch 2.0 itself can deadlock on); and
# the classification part (mmpretrain runs there only).
# `make test-fast` leaves out the end-to-end tests (marker e2e: tools run in
# subprocesses, multi-process training) and the full-size models (slow): the
# unit tests, in a few minutes.
# `make demo` trains and evaluates the two GN+WS demo models (tools/demo.py).
# `make demo-pretrain` (in .venv-oldest, where mmpretrain runs) pretrains the
# demo GN+WS classifier, tests it, and trains the demo Mask R-CNN from its
# backbone and from scratch.
# `make demo-video` trains and tests the GN+WS and BCN+WS demo TSMs
# (mmaction2).
# `make test-gpu` runs the tests marked gpu and writes
# work_dirs/gpu/report.json (docs/gpu.md); .venv has torch's CPU build, so
# on a GPU machine give an environment with CUDA torch: PY=/path/to/python.
PY := .venv/bin/python
OLDEST_TESTS := tests/test_architecture.py tests/test_validate.py \
	tests/test_weight_standardization.py \
	tests/test_conv_ws_functional.py tests/test_batch_channel_norm.py \
	tests/test_registry.py tests/test_configs.py tests/test_stack.py \
	tests/test_classification.py tests/test_table2_configs.py \
	tests/test_demo.py::test_reduced_demo_pretrain_run \
	tests/test_tools.py::test_two_process_train_resume_and_test \
	tests/test_tools.py::test_ending_a_process_group_never_deadlocks

.PHONY: setup setup-oldest test test-oldest test-fast test-gpu demo \
	demo-pretrain demo-video
setup:
	bash tools/setup_env.sh

setup-oldest:
	bash tools/setup_env.sh oldest

test: setup
	$(PY) -m pytest tests
	$(MAKE) test-oldest

test-oldest: setup-oldest
	.venv-oldest/bin/python -m pytest $(OLDEST_TESTS)

test-fast: setup
	$(PY) -m pytest tests -m "not e2e and not slow"

# set up .venv only when it is the Python asked for
test-gpu: $(if $(filter .venv/bin/python,$(PY)),setup)
	$(PY) -m pytest tests -m gpu --speed-rounds 21 --speed-min-seconds 0.2 \
		--report work_dirs/gpu/report.json

demo: setup
	$(PY) tools/demo.py

demo-video: setup
	$(PY) tools/demo.py --tasks video --work-dir work_dirs/demo_video

demo-pretrain: setup-oldest
	PYTHON=$(CURDIR)/.venv-oldest/bin/python .venv-oldest/bin/python \
		tools/demo.py --tasks cls det-pretrained det \
		--work-dir work_dirs/demo_pretrain
