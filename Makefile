# Two-command quick start: `make demo` and `make test` do all set-up themselves.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done

.PHONY: setup lint test test-backend test-blender demo addon addon-local clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup_env.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup_env.sh
	touch $(STAMP)

# the quality gate (.ci/run runs it before the tests; .pre-commit-config.yaml runs the same checks)
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m pytest tests/test_addon_imports.py -q -p no:cacheprovider

test: setup
	$(MAKE) --no-print-directory test-backend
	$(MAKE) --no-print-directory test-blender

test-backend: setup
	$(PY) -m pytest tests --ignore=tests/blender -q -p no:cacheprovider

# bpy tests run in their own process (bpy is imported once per process)
test-blender: setup addon-local
	@if [ -d tests/blender ]; then $(PY) -m pytest tests/blender -q -p no:cacheprovider; \
	else echo "no Blender tests yet"; fi

# the add-on's zips for every platform (dist/): needs only Python 3.11+ with pip, no `make setup`
addon:
	$(PYTHON) build_addon.py

# this platform's zip, built in the developer set-up (the tests and the demo install it)
addon-local: setup
	$(PY) build_addon.py --local

demo: setup addon-local
	$(PY) scripts/demo.py

clean:
	rm -rf $(VENV) dist build demo_out bench_out
