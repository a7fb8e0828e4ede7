# Two commands on a fresh machine: `make run` (a local log) and `make test` (the whole suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck unit bench bench-verifier bench-mirror clean postgres softhsm pgbouncer nginx deploy-tools chromium

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "tlog needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

postgres:
	@deploy/ensure-postgres.sh

softhsm:
	@deploy/ensure-softhsm.sh

pgbouncer:
	@deploy/ensure-pgbouncer.sh

nginx:
	@deploy/ensure-nginx.sh

# What the deploy/ tests check with: promtool, docker-compose (no engine), hadolint, systemd-analyze.
deploy-tools: $(STAMP)
	@deploy/ensure-prometheus.sh
	@deploy/ensure-compose.sh
	@deploy/ensure-hadolint.sh $(VENV)
	@deploy/ensure-systemd.sh

chromium:
	@deploy/ensure-chromium.sh

run: $(STAMP) postgres
	$(BIN)/tlog dev

lint: $(STAMP)
	$(BIN)/ruff check verifier tlog tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) postgres softhsm pgbouncer nginx deploy-tools chromium
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(STAMP) postgres
	$(BIN)/python bench/concurrent_appends.py

bench-verifier: $(STAMP) postgres
	$(BIN)/python bench/build_log.py
	$(BIN)/python bench/verifier_bench.py --skip-build

bench-mirror: $(STAMP) postgres
	@deploy/ensure-nginx.sh --with-wrk
	$(BIN)/python bench/mirror_bench.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
