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

LABEXT := jupyter_rapha/labextension/package.json
LABEXT_SRC := $(shell find labextension/src labextension/style -type f 2>/dev/null) labextension/package.json labextension/package-lock.json labextension/tsconfig.json
LABEXT_LINK := $(VENV)/share/jupyter/labextensions/jupyter-rapha
SERVER_CONFIG := jupyter-config/jupyter_server_config.d/jupyter_rapha.json
SERVER_CONFIG_INSTALLED := $(VENV)/etc/jupyter/$(patsubst jupyter-config/%,%,$(SERVER_CONFIG))

.PHONY: setup demo test bench airgap labextension jupyter-config clean

setup: $(STAMP) jupyter-config airgap labextension

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned to the CPU build that ships with this machine image.
	$(PY) -m pip install -q 'torch==2.13.0'
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Enables the jupyter_rapha server extension in the venv. A wheel install puts this file
# there itself (pyproject's data-files); an editable install (pip install -e) does not.
jupyter-config: $(SERVER_CONFIG_INSTALLED)

$(SERVER_CONFIG_INSTALLED): $(SERVER_CONFIG) | $(STAMP)
	install -D -m 644 $(SERVER_CONFIG) $@

airgap: $(AIRGAP)

$(AIRGAP): $(AIRGAP_SRC)
	@if [ -f rust/airgap/Cargo.toml ]; then cd rust/airgap && $(CARGO) build --release --offline -q; fi

# The JupyterLab side panel (TypeScript), built against the JupyterLab in the venv and
# linked where JupyterLab looks for prebuilt extensions.
labextension: $(LABEXT)
	@mkdir -p $(dir $(LABEXT_LINK)) && ln -sfn $(abspath jupyter_rapha/labextension) $(LABEXT_LINK)

$(LABEXT): $(LABEXT_SRC) $(STAMP)
	@command -v npm >/dev/null || { echo "npm (Node.js 18 or newer) is needed to build labextension/"; exit 1; }
	cd labextension && npm ci --no-audit --no-fund --loglevel=error && npx tsc
	cd labextension && PATH=$(abspath $(VENV))/bin:$$PATH jupyter labextension build . \
	  --core-package-file=$$($(abspath $(PY)) -c 'import jupyterlab, os; print(os.path.join(os.path.dirname(jupyterlab.__file__), "staging", "package.json"))') >/dev/null
	touch $(LABEXT)

demo: setup
	$(PY) examples/demo.py

test: setup
	@if [ -f rust/airgap/Cargo.toml ]; then cd rust/airgap && $(CARGO) test --offline -q 2>&1 | tail -3; fi
	cd labextension && npm test --silent 2>&1 | grep -E '^# (tests|pass|fail)'; test $${PIPESTATUS[0]} -eq 0
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) demo-out .demo-edge rust/airgap/target labextension/node_modules labextension/lib \
	  labextension/test-build jupyter_rapha/labextension
