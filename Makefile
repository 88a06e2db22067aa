# Two entry points do all the set-up on a fresh machine:
#   make demo   runs a node on a real clip and prints its MQTT messages
#   make test   runs the whole test suite against real Mosquitto and PostgreSQL
# Both create .venv, install the package with its extras, and find the shared
# models and clips through SITLAB_MODELS_DIR and SITLAB_MEDIA_DIR.

PYTHON ?= python3
VENV ?= .venv
SITLAB_MODELS_DIR ?= $(abspath ../shared/models)
SITLAB_MEDIA_DIR ?= $(abspath ../shared/media)
export SITLAB_MODELS_DIR SITLAB_MEDIA_DIR

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench services clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[gateway,models,dev]'
	touch $(STAMP)

services:
	bash scripts/ensure-services.sh

demo: $(STAMP)
	bash scripts/demo.sh

test: $(STAMP) services
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check edge gateway calibration models tests
	$(BIN)/ruff format --check edge gateway calibration models tests

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/pipeline.py --clip $(SITLAB_MEDIA_DIR)/pets09_s2l1_vtest/vtest.avi --model $(SITLAB_MODELS_DIR)/yolov8n_640_fp32.onnx

clean:
	rm -rf $(VENV) var
