VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# Test processes (pytest-xdist). Most slow tests wait on subprocesses that import torch and mmseg on one
# core, so two workers keep a 2-core machine busy; each test file stays on one worker, so its module
# fixtures are built once. TEST_WORKERS=0 runs the suite in this process (for --pdb, say).
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadfile

.PHONY: install test test-fast demo lint clean check-install-from-source

install:
	VENV=$(VENV) bash tools/install.sh

test: install
	$(PY) -m pytest tests $(XDIST) $(PYTEST_ARGS)

# The edit-test loop: everything but the tests marked slow (training subprocesses, multi-process
# runs, the demo, installs, ONNX deployment, benchmark runs).
test-fast: install
	$(PY) -m pytest tests -m "not slow" $(XDIST) $(PYTEST_ARGS)

demo: install
	$(PY) tools/demo.py

lint: install
	$(VENV)/bin/ruff check tinymim tools tests benchmarks mmseg_configs docs

# The install as a new user meets it: a fresh venv, no TINYMIM_WHEELHOUSE and an empty
# mmcv cache, so mmcv 2.1.0 is built from source (11 min or more); ends with the stack check.
# Both live in a temporary folder that is removed afterwards (torch makes the venv ~5.5 GB).
check-install-from-source:
	@set -eu; dir=$$(mktemp -d); trap 'rm -rf "$$dir"' EXIT; t0=$$(date +%s); \
	echo "[check-install-from-source] venv and mmcv cache in $$dir (removed afterwards)"; \
	env -u TINYMIM_WHEELHOUSE VENV="$$dir/venv" MMCV_CACHE="$$dir/mmcv-cache" bash tools/install.sh; \
	"$$dir/venv/bin/python" tools/check_install.py; \
	echo "[check-install-from-source] passed in $$(( $$(date +%s) - t0 ))s"

clean:
	rm -rf build dist *.egg-info tinymim/.mim .pytest_cache
