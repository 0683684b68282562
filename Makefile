# Every target that runs HELIOS depends on `venv`, so a fresh checkout needs
# only `make test` or `make run`.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.stamp
PYTEST_ARGS ?=

.PHONY: venv test run lint docs bench fuzz chaos soak

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

# make fuzz: the long form of tests/fuzz (issue 16 §2; make test runs its short form). Every fuzz test
# with FUZZ_EXAMPLES hypothesis examples (a failure is kept in .hypothesis/ and replayed first next
# time; add it to the test as an @example), then the atheris harness of the RESP and JSON-lines parsers
# for FUZZ_SECONDS (libFuzzer-guided; skipped where atheris is not installed). Its corpus grows in
# .hypothesis/atheris-corpus (ignored by git); a crash leaves crash-<sha1> in the working directory.
FUZZ_EXAMPLES ?= 20000
FUZZ_SECONDS ?= 300
fuzz: venv
	HELIOS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(VENV)/bin/python -m pytest -q -n $(TEST_JOBS) tests/fuzz $(PYTEST_ARGS)
	@if $(VENV)/bin/python -c 'import atheris' 2>/dev/null; then \
		mkdir -p .hypothesis/atheris-corpus && \
		$(VENV)/bin/python tests/fuzz/atheris_resp.py -max_total_time=$(FUZZ_SECONDS) .hypothesis/atheris-corpus; \
	else echo "atheris is not installed (pip install atheris: Linux x86_64 wheels): skipping tests/fuzz/atheris_resp.py"; fi

# make chaos: the long form of tests/chaos (issue 16 §1; make test runs its short form): at least 30
# SIGKILLs per daemon (atlasd, gateway, proxy, backends, workers), disk full, partitions and clock
# steps, then docs/reliability.md from the run (scenarios, iterations, checks, results, date, commit).
# CHAOS_KILLS=N sets every scenario's kill count; HELIOS_CHAOS_SEED varies the random moments.
# docs/reliability.md is written even when a test fails (the failure is in its table); the exit
# status is pytest's.
CHAOS_KILLS ?=
CHAOS_RECORD := .pytest_cache/chaos-record.jsonl
CHAOS_JUNIT := .pytest_cache/chaos-junit.xml
chaos: venv
	mkdir -p .pytest_cache && rm -f $(CHAOS_RECORD) $(CHAOS_JUNIT)
	HELIOS_CHAOS_LONG=1 HELIOS_CHAOS_RECORD=$(CURDIR)/$(CHAOS_RECORD) $(if $(CHAOS_KILLS),HELIOS_CHAOS_KILLS=$(CHAOS_KILLS)) \
		$(VENV)/bin/python -m pytest -q -n $(TEST_JOBS) -o timeout=3600 --junitxml=$(CHAOS_JUNIT) tests/chaos \
		$(PYTEST_ARGS); status=$$?; \
	$(VENV)/bin/python -m tests.chaos.report $(CHAOS_RECORD) $(CHAOS_JUNIT) docs/reliability.md; exit $$status

# make soak: every daemon (atlasd, gateway + worker, proxy + a backend) under steady mixed load for
# SOAK_MINUTES (issue 16 §3): per minute RSS, open fds, p99 per kind and errors; at the end RSS growth
# from minute 1 (goal < 5 %) and total errors (goal 0) -> bench/results/soak.md. Exit 1 if a goal is
# missed. Never part of `make test`. SOAK_ARGS="--rate 100" passes more options.
SOAK_MINUTES ?= 10
SOAK_ARGS ?=
soak: venv
	$(VENV)/bin/python bench/soak.py --minutes $(SOAK_MINUTES) $(SOAK_ARGS)
