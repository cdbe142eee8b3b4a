# Two-command setup: `make dashboard` and `make test` each create ./.venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup test test-e2e dashboard bench clean gpu-wheels

setup: $(STAMP)

# CPU torch first: a bare `torch` requirement would otherwise pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,ray]'
	touch $(STAMP)

# one pytest worker per core (the tests run one torch thread each), a test file per worker at a time
test: setup
	$(BIN)/python -m pytest -n auto --dist loadfile

# The dashboard in a real browser (Playwright driving Debian's Chromium); screenshots in tests/e2e/screenshots/.
test-e2e: setup
	$(BIN)/pip install --quiet -e '.[e2e]'
	command -v chromium || apt-get install -y chromium
	ICL_E2E=1 $(BIN)/python -m pytest tests/e2e

dashboard: setup
	$(BIN)/streamlit run app/dashboard.py --server.headless true

bench: setup
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/patching.py

# The wheels a GPU machine of the device tool lacks (its image has torch, not TransformerLens), for Python 3.12,
# carried as .whl/ (README "Training on a lent GPU").
gpu-wheels: setup
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
	  transformer-lens==3.9.0 better-abc==0.0.3 fancy-einsum==0.0.3 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19

clean:
	rm -rf $(VENV)
