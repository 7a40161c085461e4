# One entry point for people and CI. Every target creates the virtual environment it needs.
PY      ?= $(shell command -v python3.11 || command -v python3)
VENV    ?= .venv
BIN     := $(VENV)/bin
SHARED  ?= $(abspath ../shared)
# netguard refuses any non-loopback connect from Python (and children) when the shared tools
# exist; it guards what runs (tests, demo), not the package install.
GUARD   := $(if $(wildcard $(SHARED)/tools/netguard/sitecustomize.py),$(SHARED)/tools/netguard,)

.PHONY: venv demo test lint bench mutate clean k8s-tools

venv: $(VENV)/.installed

# checkov (the manifests' and Dockerfile's security checks in tests/k8s/test_hardening.py) pins old
# versions of packages the project uses, so it gets a virtual environment of its own
CHECKOV := .venv-checkov/bin/checkov
k8s-tools: $(CHECKOV)
$(CHECKOV):
	$(PY) -m venv .venv-checkov
	.venv-checkov/bin/pip install -q checkov==3.3.30

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,service,s3]'
	touch $@

demo: venv
	PYTHONPATH=$(GUARD) bash scripts/demo.sh

# the browser and PostgreSQL tests fail rather than skip here (tests/required.py)
test: venv $(CHECKOV) lint
	bash scripts/system_deps.sh
	GEO_HIRES_REQUIRE=browser,postgres PYTHONPATH=$(GUARD) $(BIN)/python -m pytest -q

bench: venv
	$(BIN)/pip install -q -e '.[bench]'
	PATH=$(abspath $(BIN)):$$PATH PYTHONPATH=$(GUARD) bash bench/run_all.sh

# Mutation testing of the core stages (slow, ~30-60 min on 2 cores; not part of CI).
# Survivors: `$(BIN)/mutmut results`, `$(BIN)/mutmut show NAME`; triage in docs/mutation.md.
mutate: venv
	GEO_HIRES_SHARED_DATA=$(SHARED)/data PYTHONPATH=$(GUARD) $(BIN)/mutmut run --max-children 2
	$(BIN)/python scripts/mutation_score.py

lint: venv
	$(BIN)/ruff check geo_hires services tests bench scripts
	$(BIN)/ruff format --check geo_hires services tests bench scripts
	$(BIN)/mypy geo_hires services bench

clean:
	rm -rf $(VENV) .venv-checkov out mutants .pytest_cache .mypy_cache .ruff_cache
