# The README's two commands: `make demo` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: demo test test-pythons venv browser lint bench bench-pythons clean

# pip's output goes to a log, shown only when it fails (the machines' pip config is chatty).
$(STAMP): pyproject.toml
	bash scripts/install_node.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip > $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	$(PIP) install -e ".[test,dev,s3]" >> $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	$(BIN)/python -c "import nbcheckpoint, dill, IPython, numpy, pandas, nbclient, playwright"
	touch $(STAMP)

venv: $(STAMP)

# Debian's Chromium for the browser tests (Playwright's own download cannot work here).
# Outside CI a failed install only means the browser tests skip, and say why.
browser:
	bash scripts/install_chromium.sh || [ "$$CI" != "true" ]

demo: $(STAMP)
	$(BIN)/python scripts/demo.py
	$(BIN)/python scripts/resume_demo.py

test: $(STAMP) browser
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

# The non-browser suite on the other supported Pythons (3.10, 3.12, 3.13 through pyenv; a
# missing one is skipped with the reason), each in its own .venv-3.X. NBC_PYTHONS picks others.
test-pythons: $(STAMP)
	bash .ci/pythons

lint: $(STAMP)
	$(BIN)/ruff check nbcheckpoint tests benchmarks scripts
	$(BIN)/ruff format --check nbcheckpoint tests benchmarks scripts
	$(BIN)/mypy nbcheckpoint/store nbcheckpoint/capture
	cd labextension && $(abspath $(BIN))/jlpm prettier:check

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_store.py
	$(BIN)/python benchmarks/bench_capture.py
	$(BIN)/python benchmarks/bench_snapshot.py
	$(BIN)/python benchmarks/bench_panels.py

# Safe-point overhead (nothing due) under each Python: .venv (3.11) and the .venv-3.X that
# `make test-pythons` made, side by side.
bench-pythons: $(STAMP)
	$(BIN)/python benchmarks/bench_capture.py --skip-kernel --pythons "$$(ls -d $(abspath $(BIN))/python $(abspath .)/.venv-3.*/bin/python 2> /dev/null | paste -sd,)"

clean:
	rm -rf $(VENV) .venv-3.* build dist *.egg-info nbcheckpoint/labextension labextension/lib labextension/lib-test labextension/node_modules
