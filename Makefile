# conveyor's entry points. `make demo` and `make test` each set up what they need first
# (scripts/setup.sh: a cached Python environment with the torch wheel and cmake).

SHELL := /bin/bash
VENV := $(shell scripts/setup.sh)
PY_SITE := $(shell $(VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
export LIBTORCH := $(PY_SITE)/torch
export LIBTORCH_CXX11_ABI := 1
export PATH := $(VENV)/bin:$(PATH)
export CONVEYOR_PYTHON := $(VENV)/bin/python
# transformers 5 for the Hugging Face parity tests (scripts/setup.sh).
export CONVEYOR_TRANSFORMERS5 := $(VENV)/transformers5
# CI runs in a fresh clone each time: share one target directory across clones.
ifdef CI
export CARGO_TARGET_DIR ?= $(HOME)/.cache/conveyor/target
endif
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
BIN := $(TARGET_DIR)/release/conveyor
DEMO_OUT ?= out/demo

.PHONY: demo test build release bench bench-python lint fixtures python

build:
	cargo build --workspace

# The whole workspace (the Python package's crate too), so that dependencies' features resolve
# as in the test build and `make test` after `make demo` compiles only the tests.
release:
	cargo build --release --workspace

demo: release
	$(BIN) demo --out $(DEMO_OUT)

# The README's test command: every test, in the release profile, so that after `make demo`
# it reuses the demo's build (a debug build of every dependency took ~20 minutes here).
test: python
	cargo test --release --workspace --no-fail-fast
	CONVEYOR_BIN=$(BIN) python -m pytest -q -p no:warnings python/tests

# The Python package (python/: PyO3, built by maturin) installed into the project's
# environment, from the same target directory as everything else.
python:
	python -m pip install --quiet --disable-pip-version-check --no-build-isolation ./python

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

bench: release
	$(BIN) bench ingest --mb $(or $(MB),64) --vocab ../shared/data/spiece/t5-spiece.model

# The Python package against sentencepiece and Hugging Face datasets (docs/python.md).
bench-python: release python
	[ -d out/bench-python/corpus ] || ../shared/tools/make-bench-corpus out/bench-python/corpus --mb $(or $(MB),64)
	python scripts/bench_python.py --corpus out/bench-python/corpus --vocab ../shared/data/spiece/t5-spiece.model \
	    --unique ../shared/data/c4/c4-train.00000-of-01024.first600.json.gz --conveyor $(BIN) --work out/bench-python/work

# Rewrites the fixture vocabulary (tests/vocab.rs checks the committed one is what this makes).
fixtures: release
	$(BIN) vocab train fixtures/corpus --out fixtures/vocab/fixture --vocab-size 400 --overwrite
