# Every target that runs HELIOS depends on `venv`, so a fresh checkout needs
# only `make test` or `make run`.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.stamp
PYTEST_ARGS ?=

.PHONY: venv test run lint docs bench

venv: $(STAMP)

# Re-install only when the packaging files change; the stamp records the
# last successful install.
$(STAMP): pyproject.toml setup.cfg
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -e '.[test]'
	touch $@

# Four test processes (pytest-xdist): the tests mostly wait on real servers, so this fits 2 cores.
# TEST_JOBS=0 runs them in one process.
TEST_JOBS ?= 4
test: venv
	$(VENV)/bin/python -m pytest -q -n $(TEST_JOBS) $(PYTEST_ARGS)

# make run PORT=9000 when 8080 is taken (or export HELIOS_GATEWAY__PORT).
PORT ?=
run: venv
	.venv/bin/helios gateway --data ./data $(if $(PORT),--port $(PORT))

# mypy covers every package (the durability path first made it a rule; the rest followed).
MYPY_PATHS := helios_core helios_cli

lint: venv
	$(VENV)/bin/ruff check
	$(VENV)/bin/mypy $(MYPY_PATHS)

# Regenerate the checked-in shell completions (completions/) and man pages (man/).
docs: venv
	$(VENV)/bin/python scripts/gen_docs.py

# make bench: bench/ at a short setting (a few minutes; never part of `make test`), HELIOS against
# redis-server, fakeredis, Dramatiq, RQ, nginx, HAProxy and proxy.py -> bench/results/latest.md,
# latest.json and PNG charts. BENCH_ARGS="--only proxy,jobs" runs some, "--full" the scripts' own
# (long) settings. The bench extra brings the Python peers and matplotlib; BENCH_INSTALL=0 skips
# installing it (a missing peer is then left out with a note).
BENCH_ARGS ?=
BENCH_INSTALL ?= 1
bench: venv
	$(if $(filter 1,$(BENCH_INSTALL)),$(VENV)/bin/python -m pip install -q -e '.[bench]')
	$(VENV)/bin/python bench/report.py $(BENCH_ARGS)
