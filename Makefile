# Entry points for developers and CI. A fresh clone needs only `make test` or `make demo`:
# both first run `setup` (a virtualenv in .venv with Trireme, its test dependencies,
# kubectl, helm and, where it can be installed, Prometheus). Setup runs again when
# pyproject.toml or scripts/install-tools.sh change.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.trireme-setup
PYTEST_ARGS ?=
# options of `trireme demo`, e.g. DEMO_ARGS=--headless
DEMO_ARGS ?=
# The package as a wheel would lay it out (trireme/operator, trireme/scheduler, ...),
# built from pyproject.toml's package-dir for the import linter; see `lint`.
IMPORT_TREE := build/import-tree

# operator/ would shadow the standard library's `operator` for any `python -m` run from
# the repository root: keep the working directory off sys.path.
export PYTHONSAFEPATH := 1

.PHONY: setup lint test demo

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/install-tools.sh
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -e '.[test]'
	scripts/install-tools.sh
	touch $@

# import-linter looks for packages from the working directory first, and in the
# repository root `trireme/` lacks the folders mapped into it (operator/, scheduler/,
# devcluster/). So the contracts are checked on a copy laid out as installed.
lint: $(STAMP)
	rm -rf $(IMPORT_TREE) && mkdir -p $(IMPORT_TREE)
	$(VENV)/bin/python -c 'import shutil, sys, tomllib; \
	  folders = tomllib.load(open("pyproject.toml", "rb"))["tool"]["setuptools"]["package-dir"]; \
	  [shutil.copytree(folder, sys.argv[1] + "/" + package.replace(".", "/"), \
	                   ignore=shutil.ignore_patterns("__pycache__")) \
	   for package, folder in sorted(folders.items())]' $(IMPORT_TREE)
	cd $(IMPORT_TREE) && $(CURDIR)/$(VENV)/bin/lint-imports --no-logo --no-cache $(CURDIR)/pyproject.toml

# pytest's own exit status decides, so "no tests collected" (5) fails too.
test: lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/trireme demo --profile examples/clusters/dgx-2x8.yaml --kubeconfig ./kubeconfig $(DEMO_ARGS)
