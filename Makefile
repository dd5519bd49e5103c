# Two commands do all the set-up: `make test` and `make demo`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install test demo bench lint clean-demo

# setup.py builds cityseg's one C extension (label PNG decoding); it is optional: without a C compiler the
# install goes on and evaluations decode with libpng (same values, slower), which the note below says.
$(STAMP): requirements.txt pyproject.toml setup.py src/cityseg/data/_pngrows.c
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@$(BIN)/python -c "import cityseg.data._pngrows" 2>/dev/null || echo "note: cityseg.data._pngrows was not built \
	(no C compiler?): label PNGs will be decoded by libpng, same values, ~3x slower; see README, Troubleshooting"
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/bench.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts notebooks
	$(BIN)/ruff format --check src tests bench scripts notebooks

# report.pdf stays: the demo's report is committed (rebuilding it gives the same bytes).
clean-demo:
	rm -rf demo report_figures submission.zip
