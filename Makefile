VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install test demo lint clean

install:
	VENV=$(VENV) bash tools/install.sh

test: install
	$(PY) -m pytest tests $(PYTEST_ARGS)

demo: install
	$(PY) tools/demo.py

lint: install
	$(VENV)/bin/ruff check tinymim tools tests benchmarks mmseg_configs docs

clean:
	rm -rf build dist *.egg-info tinymim/.mim .pytest_cache
