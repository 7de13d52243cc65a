# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Torch goes in first, on its own: left to resolve deepspeed's dependency pip would pick a multi-GB
# CUDA build. The default is the CPU build pinned with its hash; GPU users override, e.g.
# `make TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126' install`.
# Everything else comes from requirements/lock.txt, every package pinned with its hashes (`make lock`).
TORCH_SPEC ?= --no-deps --require-hashes -r requirements/torch-cpu.txt
DATA ?= data/ml-100k
REPORTS ?= reports
BUNDLE ?= bundles/ml100k
CONFIG ?= train_configs/ml100k-cpu.yaml

.PHONY: install lock check docs demo test test-fast lint bench soak audit clean postgres prometheus

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/lock.txt requirements/torch-cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(TORCH_SPEC)
	$(BIN)/pip install --no-deps --require-hashes -r requirements/lock.txt
	$(BIN)/pip install --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $@

# Re-resolve the locks (needs PyPI; minutes): pip-tools in a throwaway venv, the CPU torch as the resolution's
# torch, the current pins preferred (seeded from the lock: `make lock UPGRADE=--upgrade` moves them), then
# torch split out into requirements/torch-cpu.txt. requirements/lock.txt covers the core and the extras
# `all` and `dev` (what `make install` installs); requirements/lock-serve.txt only the core, `serve` and
# `client` (the serving image: `docker build --build-arg LOCK=requirements/lock-serve.txt`), at the same pins.
UPGRADE ?=
COMPILE = /tmp/longtail-lock/bin/pip-compile --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links -c /tmp/longtail-lock/torch.txt
lock:
	$(PYTHON) -m venv /tmp/longtail-lock && /tmp/longtail-lock/bin/pip install -q 'pip-tools>=7.5'
	echo 'torch==2.13.0+cpu' > /tmp/longtail-lock/torch.txt
	cat requirements/torch-cpu.txt requirements/lock.txt > /tmp/longtail-lock/compiled.txt
	$(COMPILE) --extra all --extra dev $(UPGRADE) --output-file /tmp/longtail-lock/compiled.txt pyproject.toml
	$(PYTHON) requirements/split_lock.py /tmp/longtail-lock/compiled.txt requirements/lock.txt requirements/torch-cpu.txt
	cat requirements/torch-cpu.txt requirements/lock.txt > /tmp/longtail-lock/serve.txt
	$(COMPILE) --extra serve --extra client --output-file /tmp/longtail-lock/serve.txt pyproject.toml
	$(PYTHON) requirements/split_lock.py /tmp/longtail-lock/serve.txt requirements/lock-serve.txt /tmp/longtail-lock/torch-serve.txt

# The main job on the embedded default data: prepare ML-100K, train the whole chain into a bundle,
# evaluate it next to the baselines (table + plots), and show three users' recommendations explained.
demo: install
	$(BIN)/longtail data prepare --dataset ml-100k --out $(DATA)
	$(BIN)/longtail train --config $(CONFIG) --data $(DATA) --out $(BUNDLE)
	$(BIN)/longtail eval --bundle $(BUNDLE) --model mostpop --model itemknn --model bpr --data $(DATA) \
		--config $(CONFIG) --out $(REPORTS)/ml100k-warm.json
	$(BIN)/longtail recommend --bundle $(BUNDLE) --data $(DATA) --users test --k 10 --explain --show 3 \
		--out $(REPORTS)/recs-ml100k.jsonl

# Benchmarks (not part of `make test`): peers on the same split, speed ratios, Serve load and faults.
# Figures and plots land in reports/bench/. `make soak` is the 10-minute Serve soak.
bench: install
	$(BIN)/pip install -q -e '.[bench]'
	# LightFM's setup.py breaks under build isolation, and with some setuptools releases at all: the peers
	# then run without it (benchmarks.peers says so)
	-$(BIN)/pip install -q --no-build-isolation 'lightfm==1.17'
	$(BIN)/longtail data prepare --dataset ml-100k --out $(DATA)
	$(BIN)/python -m benchmarks.language_model --data $(DATA)
	$(BIN)/longtail train --config $(CONFIG) --data $(DATA) --out $(BUNDLE)
	TORCH_SPEC='$(TORCH_SPEC)' $(BIN)/python -m benchmarks.peers --data $(DATA) --bundle $(BUNDLE)
	$(BIN)/python -m benchmarks.serve_load --bundle $(BUNDLE)
	$(BIN)/python -m benchmarks.serve_faults --bundle $(BUNDLE)
	$(BIN)/python -m benchmarks.speed_ratios --data $(DATA) --bundle $(BUNDLE)

soak: install
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m benchmarks.soak --bundle $(BUNDLE)

# The store tests start their own PostgreSQL server (initdb in a temp dir); they need Debian's binaries.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
		{ [ "$$(id -u)" = 0 ] && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; } || \
		{ echo "PostgreSQL binaries missing: run 'sudo apt-get install postgresql'"; exit 1; }

# The Serve test scrapes the live app with a real Prometheus (Debian's package) and runs every Grafana
# dashboard query against it.
prometheus:
	@command -v prometheus >/dev/null || \
		{ [ "$$(id -u)" = 0 ] && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus; } || \
		{ echo "Prometheus missing: run 'sudo apt-get install prometheus'"; exit 1; }

CODE := platform tests benchmarks harness

# Style and types first (ruff's lint and format, mypy over the model core), the docs site built strictly (a
# broken link or a page left out of the nav fails), then every test.
check: install
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy
	site=$$(mktemp -d) && $(BIN)/mkdocs build --strict --quiet --site-dir $$site && rm -rf $$site

# The generated pages (docs/results.md from docs/results/*.json, the configuration reference, the README's
# headline table), then the site into site/.
docs: install
	$(BIN)/python -m harness.docs
	$(BIN)/mkdocs build --strict

test: install postgres prometheus check
	$(BIN)/python -m pytest -q --durations=12 tests

# The inner loop: every test not marked `integration` (no Ray cluster, no Serve app), under 2 minutes.
test-fast: install postgres prometheus check
	$(BIN)/python -m pytest -q -m "not integration and not network" tests/unit tests/e2e  # tests/integration: all integration

# Security: bandit over the package (offline) and pip-audit of the installed environment (needs the
# vulnerability services on the internet). Accepted findings carry a `# nosec` with the reason.
audit: install
	$(BIN)/pip install -q -e '.[audit]'
	$(BIN)/bandit -q -r platform/longtail
	$(BIN)/pip-audit --skip-editable

lint: check

clean:
	rm -rf $(VENV) $(REPORTS) data .pytest_cache
