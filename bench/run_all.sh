#!/usr/bin/env bash
# Run every benchmark in turn, each against the peer (redis-server, Dramatiq, RQ) it starts itself.
# Extra arguments go to every ATLAS script: `bench/run_all.sh --keys 100000` for a quick run,
# `bench/run_all.sh --json` for machine-readable results after each table.
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}

for name in recovery memory snapshot_latency snapshot inprocess_ops; do
    echo "=== bench/$name.py $*"
    "$PY" "bench/$name.py" "$@"
    echo
done

# The job queue (HELIOS against Dramatiq and RQ) counts jobs, not keys: it gets only --json from
# the arguments above; JOBS_ARGS passes its own (JOBS_ARGS=--quick for a smoke run).
json=""
for a in "$@"; do [ "$a" = "--json" ] && json="--json"; done
echo "=== bench/jobs.py ${JOBS_ARGS:-} $json"
# shellcheck disable=SC2086
"$PY" bench/jobs.py ${JOBS_ARGS:-} $json

# The reverse proxy (helios proxy against nginx, HAProxy and proxy.py, under wrk) takes only --json
# from the arguments above; PROXY_ARGS passes its own (PROXY_ARGS=--quick for a smoke run).
echo "=== bench/proxy.py ${PROXY_ARGS:-} $json"
# shellcheck disable=SC2086
"$PY" bench/proxy.py ${PROXY_ARGS:-} $json
