# make demo  : set everything up, then run the whole product end to end
# make test  : set everything up, then run the tests
# make bench : set everything up, then run the benchmarks (medians and ratios)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
AIRGAP := rust/airgap/target/release/rapha-airgap
AIRGAP_SRC := $(shell find rust/airgap/src rust/airgap/Cargo.toml -type f 2>/dev/null)
CARGO ?= $(shell command -v cargo 2>/dev/null || echo $(HOME)/.cargo/bin/cargo)

.PHONY: setup demo test bench airgap clean

setup: $(STAMP) airgap

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned to the CPU build that ships with this machine image.
	$(PY) -m pip install -q 'torch==2.13.0'
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

airgap: $(AIRGAP)

$(AIRGAP): $(AIRGAP_SRC)
	@if [ -f rust/airgap/Cargo.toml ]; then cd rust/airgap && $(CARGO) build --release --offline -q; fi

demo: setup
	$(PY) examples/demo.py

test: setup
	@if [ -f rust/airgap/Cargo.toml ]; then cd rust/airgap && $(CARGO) test --offline -q 2>&1 | tail -3; fi
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) demo-out .demo-edge rust/airgap/target
