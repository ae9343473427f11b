# Two commands do all set-up on a fresh machine (Python 3.11, pip):
#   make default   run the whole workflow on the embedded default (CPU, no downloads)
#   make test      run the test suite
# Both create ./.venv and install the pinned stack on first use.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: default refresh-default test install clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

CORES ?= 2

default: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" snakemake --cores $(CORES) all

# After a change that legitimately moves the embedded default's numbers: rebuild them from scratch, then commit.
refresh-default: $(STAMP)
	rm -rf work/default results/default paper_figures/default logs/default
	$(MAKE) default

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
