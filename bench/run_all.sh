#!/usr/bin/env bash
# Run every ATLAS benchmark in turn, each against a redis-server it starts itself.
# Extra arguments go to every script: `bench/run_all.sh --keys 100000` for a quick run,
# `bench/run_all.sh --json` for machine-readable results after each table.
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}

for name in recovery memory snapshot_latency inprocess_ops; do
    echo "=== bench/$name.py $*"
    "$PY" "bench/$name.py" "$@"
    echo
done
