#!/usr/bin/env bash
# The orchestration-overhead benchmark, mlbox and its peers in one run on one machine:
#   bash bench/run_all.sh [--runs N]
# mlbox runs first (release build of benches/orchestration.rs), then Dagster, Prefect and Airflow
# from bench/peers/run_peers.sh (virtualenvs outside the repo). Prints one JSON line per
# (tool, shape); compare medians within one run, as ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=5
[ "${1:-}" = "--runs" ] && RUNS="$2"
cargo bench --bench orchestration -- --runs "$RUNS" 2>/dev/null | grep '^{'
bash bench/peers/run_peers.sh --runs "$RUNS"
