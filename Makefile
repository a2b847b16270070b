# The two commands: `make run` serves the example model, `make test` runs the tests.
# Each creates its own virtual environment in .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: run test lint venv bench bench-gpu clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

run: venv
	$(BIN)/kgpu up

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

test: venv lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: venv
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.serving

# On a machine with an NVIDIA GPU (and the network, for the bench extras): bench/README.md, "GPU checks".
bench-gpu: venv
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	PYTHON=$(abspath $(BIN)/python) bash bench/gpu.sh

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
