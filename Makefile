# Two commands on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint docs bench clean

$(BIN)/medtransfer: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,dicom,weights]'
	touch $@

setup: $(BIN)/medtransfer

demo: setup
	$(BIN)/medtransfer demo --out runs/demo

# one test process per core (at most 4), whole files per process: module fixtures are built once
test: setup
	$(BIN)/pytest -q -n auto --maxprocesses 4 --dist loadfile

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

# the documentation site (mkdocs.yml) into site/, warnings as errors
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: setup
	$(BIN)/python benchmarks/bench_alexnet.py

clean:
	rm -rf runs site .pytest_cache .mypy_cache .ruff_cache
