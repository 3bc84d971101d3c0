# Two commands on a fresh machine (README):  `make all`  and  `make test`.
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export RAY_USAGE_STATS_ENABLED := 0
export PATH := $(BIN):$(PATH)

.PHONY: all setup setup-gpu repro test lint clean

all: setup repro

setup: $(VENV)/.installed

# Every install is constrained (constraints.txt) so no dependency can swap torch.
# insightface and facexlib go in with --no-deps: they declare the GUI opencv build.
$(VENV)/.installed: pyproject.toml constraints.txt requirements-nodeps.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/pip install -q --no-deps -c constraints.txt -r requirements-nodeps.txt
	touch $@

# GPU machines: the same venv with onnxruntime-gpu (the `gpu` extra) in place of the CPU
# wheel; both install the `onnxruntime` package, so the CPU one is removed and the GPU one
# reinstalled over what that removal deleted. torch 2.14.1 is already the CUDA 13 build.
setup-gpu: setup
	$(BIN)/pip install -q -c constraints.txt -e '.[gpu]'
	$(BIN)/pip uninstall -q -y onnxruntime
	$(BIN)/pip install -q --force-reinstall --no-deps -c constraints.txt onnxruntime-gpu==1.31.1

repro: setup
	dvc repro

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf outputs .dvc/cache .dvc/tmp dvc.lock
