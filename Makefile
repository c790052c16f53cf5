# Set-up and checks. `make demo` and `make test` each create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch that lies on this machine's disk; users keep their own build (pyproject: torch>=2.1).
TORCH ?= torch==2.13.0
SAMPLE := Speckle2SelfSlicer/Resources/SampleData/BkCurvilinearScanConvertedData.nrrd
DEMO_OUT := demo-output
SHARED_DATA ?= ../shared/data

.PHONY: demo test install install-test install-bench bench-speed bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install -q -e '.[bench]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
install-bench: $(VENV)/.installed-bench

demo: install
	@mkdir -p $(DEMO_OUT)
	$(BIN)/speckle2self despeckle $(SAMPLE) -o $(DEMO_OUT)/despeckled.nrrd \
		--preview $(DEMO_OUT)/before_after.png --force
	@echo "Despeckled volume: $(DEMO_OUT)/despeckled.nrrd"
	@echo "Before/after figure: $(DEMO_OUT)/before_after.png"

test: install-test
	$(BIN)/python -m pytest -q

# Speed of each execution path on this machine (about 10 minutes): writes docs/performance.md.
bench-speed: install
	$(BIN)/speckle2self bench-speed $(if $(wildcard $(SHARED_DATA)),--data $(SHARED_DATA)) --out docs/performance.md

# Quality benchmark, every method on S-I/S-II/S-III, the shared real images and the carotid scans of
# ../shared/reference (66 minutes on two CPU cores without the carotid set; its 15 frames add roughly 25,
# most of them ZS-N2N's per-frame fits): writes docs/benchmark.md, .png and .json.
# `speckle2self bench --quick --out DIR`: 1 minute.
bench: install-bench
	$(BIN)/speckle2self bench $(if $(wildcard $(SHARED_DATA)),--data $(SHARED_DATA))

clean:
	rm -rf $(VENV) $(DEMO_OUT)
