# Two commands do all the set-up: `make test` (its quick tier: `make check`) and `make demo`; both create .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install test check demo bench lint clean-demo

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

# the whole suite (CI runs it); `check` is the edit loop's quick tier: the tests that train nothing
test: $(STAMP)
	$(BIN)/python -m pytest

check: $(STAMP)
	$(BIN)/python -m pytest -m "not trains and not slow"

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/bench.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts notebooks
	$(BIN)/ruff format --check src tests bench scripts notebooks

# report.pdf stays: the demo's report is committed (rebuilding it gives the same bytes).
clean-demo:
	rm -rf demo report_figures report_tables submission.zip
