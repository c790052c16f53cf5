# Set-up and checks. `make demo` and `make test` each create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch that lies on this machine's disk; users keep their own build (pyproject: torch>=2.1).
TORCH ?= torch==2.13.0
SAMPLE := Speckle2SelfSlicer/Resources/SampleData/BkCurvilinearScanConvertedData.nrrd
DEMO_OUT := demo-output
SHARED_DATA ?= ../shared/data

# Debian packages: Mesa's EGL renders the page's slice views without a display or GPU (`speckle2self view`);
# the browser tests drive Debian's Chromium (Playwright's own browser download is not used).
VIEW_PACKAGES := libegl1 libegl-mesa0 libgl1-mesa-dri
TEST_PACKAGES := $(VIEW_PACKAGES) chromium

.PHONY: demo test view screenshots install install-test install-view install-bench bench-speed bench train-default clean debian-packages

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

$(VENV)/.installed-view: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install -q -e '.[viewer]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install -q -e '.[bench]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
	@$(MAKE) --no-print-directory debian-packages PACKAGES="$(TEST_PACKAGES)"
install-view: $(VENV)/.installed-view
	@$(MAKE) --no-print-directory debian-packages PACKAGES="$(VIEW_PACKAGES)"
install-bench: $(VENV)/.installed-bench

demo: install
	@mkdir -p $(DEMO_OUT)
	$(BIN)/speckle2self despeckle $(SAMPLE) -o $(DEMO_OUT)/despeckled.nrrd \
		--preview $(DEMO_OUT)/before_after.png --force
	@echo "Despeckled volume: $(DEMO_OUT)/despeckled.nrrd"
	@echo "Before/after figure: $(DEMO_OUT)/before_after.png"

test: install-test
	$(BIN)/python -m pytest -q

# The review page on the bundled sample: http://127.0.0.1:8080/ (Ctrl+C stops it).
view: install-view
	$(BIN)/speckle2self view $(SAMPLE)

# The page before and after despeckling the sample, for the README: docs/viewer_before.png, docs/viewer_after.png.
screenshots: install-test
	SPECKLE2SELF_SCREENSHOTS=docs $(BIN)/python -m pytest -q Testing/test_viewer_browser.py -k smoother

# Installs the Debian PACKAGES that are missing (as root; quick when none is).
debian-packages:
	@missing=""; for package in $(PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q "ok installed" || missing="$$missing $$package"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then echo "Install$$missing (or your system's equivalents) first"; exit 1; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "Install$$missing first: sudo apt-get install$$missing"; exit 1; fi; \
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends$$missing

# Speed of each execution path on this machine (about 10 minutes): writes docs/performance.md.
bench-speed: install
	$(BIN)/speckle2self bench-speed $(if $(wildcard $(SHARED_DATA)),--data $(SHARED_DATA)) --out docs/performance.md

# Quality benchmark, every method on S-I/S-II/S-III, the shared real images and the carotid scans of
# ../shared/reference (71 minutes in all on two quiet cores of an AVX512-BF16 Xeon, 2026-12-07): writes
# docs/benchmark.md, .png and .json.
# `speckle2self bench --quick --out DIR`: 1 minute.
bench: install-bench
	$(BIN)/speckle2self bench $(if $(wildcard $(SHARED_DATA)),--data $(SHARED_DATA))

# The shipped models' recipe (MODEL_CARD.md), about 5.5 hours on two CPU cores: the real training scans of
# $(SHARED_DATA)/training cropped into TRAIN_DIR, the previous default (commit 3e86dad: never trained on a carotid
# clip of the published reference) trained on them at speckle grain 6 for 110 minutes (stage 2), then 3,000 more
# steps resuming its Adam state (stage 3); 120 simulated images join the scans and the consistency terms weigh 4
# for 1,700 steps (stage 4) and 2,667 more on a cosine rate with averaged weights (stage 5, the default); its
# width-16 student distilled for 3,200 steps and then 2,000 more at a lower rate (about 70 minutes).
# Writes into TRAIN_DIR; to ship, copy both (with their cards) into
# Speckle2SelfSlicer/speckle2self/models/ and remake the int8 twins: `python -m speckle2self.bench.int8_twins`.
TRAIN_DIR ?= train-default
train-default: install-test
	@mkdir -p $(TRAIN_DIR)
	$(BIN)/python -m speckle2self.bench.trainingset $(TRAIN_DIR)/trainset --data $(SHARED_DATA)
	git show 3e86dad:Speckle2SelfSlicer/speckle2self/models/speckle2self_default.pt > $(TRAIN_DIR)/prev_default.pt
	git show 3e86dad:Speckle2SelfSlicer/speckle2self/models/speckle2self_default.json > $(TRAIN_DIR)/prev_default.json
	OMP_NUM_THREADS=1 $(BIN)/speckle2self train $(TRAIN_DIR)/trainset/*.npy --init $(TRAIN_DIR)/prev_default.pt \
		--out $(TRAIN_DIR)/stage2.pt --minutes 110 --lr 3e-4 --size 256 --batch 4 --grain 6 --checkpoint-minutes 10
	OMP_NUM_THREADS=1 $(BIN)/speckle2self train $(TRAIN_DIR)/trainset/*.npy --init $(TRAIN_DIR)/stage2.pt --resume \
		--out $(TRAIN_DIR)/stage3.pt --steps 3000 --lr 3e-4 --size 256 --batch 4 --grain 6 --checkpoint-minutes 10
	@mkdir -p $(TRAIN_DIR)/simset
	for s in S-I S-II S-III; do $(BIN)/speckle2self simulate --setting $$s --count 40 --seed 50000 --size 256 \
		-o $(TRAIN_DIR)/sim_$$s.npy; done
	$(BIN)/python -c "import numpy, sys; numpy.save(sys.argv[1], numpy.concatenate([numpy.load(f) for f in sys.argv[2:]]))" \
		$(TRAIN_DIR)/simset/simulations.npy $(TRAIN_DIR)/sim_S-I.npy $(TRAIN_DIR)/sim_S-II.npy $(TRAIN_DIR)/sim_S-III.npy
	OMP_NUM_THREADS=1 $(BIN)/speckle2self train $(TRAIN_DIR)/trainset/*.npy $(TRAIN_DIR)/simset/simulations.npy \
		--init $(TRAIN_DIR)/stage3.pt --out $(TRAIN_DIR)/stage4.pt --steps 1700 --lr 3e-4 --size 256 --batch 4 --grain 6 \
		--warmup 200 --consistency 4 --checkpoint-minutes 10
	OMP_NUM_THREADS=1 $(BIN)/speckle2self train $(TRAIN_DIR)/trainset/*.npy $(TRAIN_DIR)/simset/simulations.npy \
		--init $(TRAIN_DIR)/stage4.pt --resume --out $(TRAIN_DIR)/speckle2self_default.pt --steps 2667 --lr 3e-4 \
		--schedule cosine --ema 0.999 --size 256 --batch 4 --grain 6 --consistency 4 --checkpoint-minutes 10
	OMP_NUM_THREADS=1 $(BIN)/speckle2self distil $(TRAIN_DIR)/trainset/*.npy --teacher $(TRAIN_DIR)/speckle2self_default.pt \
		--out $(TRAIN_DIR)/fast_first.pt --steps 3200 --checkpoint-minutes 10
	OMP_NUM_THREADS=1 $(BIN)/speckle2self distil $(TRAIN_DIR)/trainset/*.npy --teacher $(TRAIN_DIR)/speckle2self_default.pt \
		--init $(TRAIN_DIR)/fast_first.pt --out $(TRAIN_DIR)/speckle2self_fast.pt --steps 2000 --lr 5e-4 --checkpoint-minutes 10

clean:
	rm -rf $(VENV) $(DEMO_OUT)
