# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Torch goes in first, on its own: left to resolve deepspeed's dependency pip would pick a multi-GB
# CUDA build. GPU users override, e.g. `make TORCH_SPEC='torch==2.13.0 --index-url ...' install`.
TORCH_SPEC ?= torch==2.13.0
DATA ?= data/ml-100k
REPORTS ?= reports

.PHONY: install demo test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip setuptools wheel
	$(BIN)/pip install $(TORCH_SPEC)
	$(BIN)/pip install -e '.[dev]'
	touch $@

demo: install
	$(BIN)/longtail data prepare --dataset ml-100k --out $(DATA)
	$(BIN)/longtail eval --model mostpop --model itemknn --model bpr --data $(DATA) --split warm \
		--out $(REPORTS)/baselines-warm.json

test: install
	$(BIN)/ruff check platform tests benchmarks
	$(BIN)/python -m pytest -q tests

lint: install
	$(BIN)/ruff check platform tests benchmarks
	$(BIN)/ruff format --check platform tests benchmarks

clean:
	rm -rf $(VENV) $(REPORTS) data .pytest_cache
