# Bistoury — make install | demo | test | lint | bench | install-system
# Every target that needs the virtual environment creates it first, so each works alone
# on a fresh clone.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench install-system clean help

help:
	@echo "make install         create $(VENV) and install bistoury with its dev tools"
	@echo "make demo            start the daemon against the simulated exchange (LLM=fake: a fake OpenAI server)"
	@echo "make test            run the test suite (unit + integration)"
	@echo "make lint            ruff + mypy"
	@echo "make bench           run the benchmarks, write bench/results/*.json"
	@echo "make install-system  (root) install the systemd service, user and directories"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@LLM=$(LLM) scripts/demo.sh

# pytest exits 5 when it collected nothing: that is a failure, not a pass.
test: $(STAMP)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "ERROR: pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

lint: $(STAMP)
	$(BIN)/ruff check bistouryd bistouryctl tests bench
	$(BIN)/ruff format --check bistouryd bistouryctl tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

install-system:
	@scripts/install-system.sh

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache *.egg-info
