# The two commands: `make run` serves the example model, `make test` runs the tests.
# Each creates its own virtual environment in .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# infinity-emb, a third-party embedding server run as a `command` runtime by tests/e2e, lives in a
# virtual environment of its own: its pins (numpy 1, click 8.1, typer 0.12, ...) clash with kgpu's.
INFINITY_VENV ?= .venv-infinity

.PHONY: run test lint venv infinity bench bench-gpu clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

$(INFINITY_VENV)/.installed: requirements/infinity.txt
	$(PYTHON) -m venv $(INFINITY_VENV)
	$(INFINITY_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(INFINITY_VENV)/bin/python -m pip install --quiet -r requirements/infinity.txt
	touch $@

infinity: $(INFINITY_VENV)/.installed

run: venv
	$(BIN)/kgpu up

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

test: venv infinity lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: venv
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.serving

# On a machine with an NVIDIA GPU (and the network, for the bench extras): bench/README.md, "GPU checks".
bench-gpu: venv
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	PYTHON=$(abspath $(BIN)/python) bash bench/gpu.sh

clean:
	rm -rf $(VENV) $(INFINITY_VENV) build src/*.egg-info .pytest_cache .ruff_cache
