# Two entry points for a newcomer: `make demo` (the main job on the phantom) and `make test`.
# Both create .venv with torch first (sam2/nnunetv2/torchvision need the matched pair), then the package.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.14.1 torchvision==0.29.1
DEMO   ?= data/demo
DEMO_FLAGS ?=          # e.g. make demo DEMO_FLAGS=--overwrite to replace an earlier demo
GRID_FLAGS ?=          # e.g. make grid GRID_FLAGS="--seeds 0 1 2"
LAB_FLAGS ?=           # e.g. make lab LAB_FLAGS="--no-browser --ip 0.0.0.0" on a remote GPU box

.PHONY: install demo test test-all grid grid-smoke gates readme docs docs-check clean-nbs export lab
install: $(VENV)/.installed

# nbdev-export rewrites pyproject.toml (same text, new time): reinstall only when its content changed
$(VENV)/.installed: pyproject.toml
	@if [ -f $(VENV)/pyproject.installed ] && cmp -s pyproject.toml $(VENV)/pyproject.installed; then touch $@; else \
	  set -e; echo "installing into $(VENV)"; $(PYTHON) -m venv $(VENV); \
	  $(BIN)/python -m pip install -q --upgrade pip; \
	  $(BIN)/python -m pip install -q $(TORCH); \
	  $(BIN)/python -m pip install -q -e ".[dev]"; \
	  cp pyproject.toml $(VENV)/pyproject.installed; touch $@; fi

demo: install            ## phantom -> fix -> slice -> ... -> report, on 2 CPU cores
	$(BIN)/segthor-demo --dest $(DEMO) $(DEMO_FLAGS)

test: install            ## every notebook (nbdev-test) + pytest, ends with "N passed, N failed"
	$(BIN)/python tools/run_tests.py

test-all: install        ## also the `slow` cells and tests
	$(BIN)/python tools/run_tests.py --flags slow

grid: install            ## the study's complete grid on the phantom (cpu preset, about an hour on 2 cores; runs/README.md), then runs/report
	$(BIN)/python runs/grid.py run --all --preset cpu --runner fork $(GRID_FLAGS); $(BIN)/python runs/grid.py aggregate --preset cpu --overwrite $(GRID_FLAGS)

grid-smoke: install      ## the same plumbing in minutes (tiny phantom, a few epochs: near-zero Dice by design)
	$(BIN)/python runs/grid.py run --all --preset smoke --runner fork $(GRID_FLAGS); $(BIN)/python runs/grid.py aggregate --preset smoke --overwrite $(GRID_FLAGS)

gates: install           ## what CI checks before testing: clean notebooks, package and README in sync
	bash tools/gates.sh

lab: install             ## JupyterLab on nbs/ (the notebooks, live widgets included); --allow-root only as root
	$(BIN)/jupyter lab --ServerApp.root_dir=nbs $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_FLAGS)

readme: install
	$(BIN)/python tools/readme.py

docs: install            ## offline docs site in _site/: nbdev's processors + smalldocs (Quarto cannot be installed here)
	$(BIN)/python tools/docs.py --dest _site --strict

docs-check: docs         ## the site in headless Chromium (apt: chromium chromium-driver); screenshots in _site_shots/
	$(BIN)/python tools/check_docs.py --site _site --shots _site_shots
