# Two commands do all set-up on a fresh machine (Python 3.11, pip):
#   make default   run the whole workflow on the embedded default (CPU, no downloads)
#   make test      run the test suite
# Both create ./.venv and install the exact tested stack of constraints.txt on first use (pyproject.toml itself only
# declares version ranges).

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: default refresh-default restore report-from-votes test test-fast install clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

CORES ?= 2

default: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" snakemake --cores $(CORES) all

# After a change that legitimately moves the embedded default's numbers: rebuild them from scratch, store the
# numbers the tests compare and the votes they come from (tests/expected/default), then commit.
refresh-default: $(STAMP)
	rm -rf work/default results/default paper_figures/default logs/default
	$(MAKE) default
	rm -rf tests/expected/default
	mkdir -p tests/expected/default/tables tests/expected/default/figures
	cp results/default/tables/*.csv tests/expected/default/tables/
	cp paper_figures/default/*_data.csv tests/expected/default/figures/
	cp -r work/default/votes work/default/shards tests/expected/default/

# After `dvc pull`: DVC writes files in no particular order, so Snakemake would see inputs newer than outputs and
# redo work. This marks the pulled outputs up to date in the DAG's order (the contents are those in dvc.lock).
# CONFIG=config/paper.yaml for the paper's run.
CONFIG ?= config/config.yaml
restore:
	PATH="$(CURDIR)/$(BIN):$$PATH" snakemake --cores 1 --touch all --configfile $(CONFIG)

# Every table and figure from pulled votes (`dvc pull votes`), on the CPU: only the aggregation, table, figure and
# theory rules may run, so the shard TSVs count as given and no checkpoint or GPU job is needed.
report-from-votes:
	PATH="$(CURDIR)/$(BIN):$$PATH" snakemake --cores all all --configfile $(CONFIG) \
	    --allowed-rules aggregate table figure compare theory_thm31 theory_fig2 theory_radius theory all

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The tests not marked slow (unit tests and a few dry runs, no training or certification): a few minutes on 2 cores.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

clean-venv:
	rm -rf $(VENV)
