# Two commands on a fresh machine: `make lab` runs the whole series on the embedded lab,
# `make test` runs the tests. Everything else here serves those two.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PARAMS ?= parameters/sim.yaml
KERNEL := homelab-notebooks
TOOLS  := .tools

.PHONY: lab test lint check notebooks tools programs kernel stop-lab clean-lab clean jupyter

# The embedded lab stays up afterwards, so the cluster can be explored; `make stop-lab` stops it.
lab: $(VENV)/.installed kernel programs
	$(VENV)/bin/labkit run --params $(PARAMS) --keep-lab
	@echo "The embedded lab is still running: kubectl --kubeconfig .labsim/operator/kubeconfig get nodes"
	@echo "Stop it with: make stop-lab   (its state stays in .labsim/; make clean-lab deletes it)"

# JupyterLab on http://127.0.0.1:8888/lab in notebooks/ (the project's kernel, jupytext pairing),
# with the embedded lab up; Ctrl-C stops JupyterLab, its kernels and the lab.
jupyter: $(VENV)/.installed programs
	$(VENV)/bin/labkit jupyter --params $(PARAMS)

# Two workers: the suite mostly waits on real programs and the labs' clocks. Each test file runs
# whole on one worker; the series lab's files together, in order (tests/conftest.py).
PYTEST_ARGS ?= -n 2 --dist loadfile
test: $(VENV)/.installed-test kernel tools programs
	PATH="$(CURDIR)/$(TOOLS)/bin:$$PATH" $(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check labkit labsim tests benchmarks

check: $(VENV)/.installed
	$(VENV)/bin/labkit check --params $(PARAMS)

# The .ipynb from their jupytext sources (notebooks/NN-name.py), output-free; cell ids are kept.
notebooks: $(VENV)/.installed
	$(VENV)/bin/jupytext --to ipynb --update notebooks/[0-9][0-9]-*.py

# The venv: created once, reinstalled when the project's metadata changes.
$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Python >= 3.11 is needed (found $$($(PYTHON) --version)); set PYTHON=python3.11"; exit 1; }
	@$(PYTHON) -m venv $(VENV) || \
	  { echo "python3 -m venv failed: install the venv module (Debian: apt-get install python3-venv)"; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml
	$(PY) -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/bin/python pyproject.toml
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@ $(VENV)/.installed

# The Jupyter kernel the notebooks name, pointing at this venv.
kernel: $(VENV)/.installed
	@$(PY) -m ipykernel install --user --name $(KERNEL) --display-name "homelab-notebooks" >/dev/null

# System tools the tests use: OpenSSH's client, real kubectl + helm (1.32/helm 3, 1.34/helm 4),
# and headless Chromium + chromedriver for the browser test of `labkit site`.
tools:
	@bash scripts/install-tools.sh $(TOOLS)
	@bash scripts/install-browser.sh

# Real programs the embedded lab's pods run (nginx, Prometheus, Alertmanager and exporters into
# .tools/<package>; PostgreSQL and Traefik come from PyPI).
programs:
	@bash scripts/install-programs.sh $(TOOLS)

stop-lab:
	-$(VENV)/bin/labsim down --state .labsim

clean-lab: stop-lab
	rm -rf .labsim

clean: clean-lab
	rm -rf $(VENV) $(TOOLS)
