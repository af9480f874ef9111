#!/usr/bin/env bash
# Peer side of the orchestration-overhead benchmark: 100 no-op tasks as a chain and as a
# 1 -> 98 -> 1 fan-out, timed trigger -> run finished in Dagster, Prefect 3 and Airflow 3.
#
# Rerun (from the repo root):   bash bench/peers/run_peers.sh [--runs N] [--only PEER] [--pause S]
#   --runs N    timed runs per (peer, shape), default 5 (plus 1 untimed warm-up run)
#   --only P    dagster | prefect | airflow (default: all three)
#   --pause S   seconds of idle before each timed run (default 0 = back-to-back runs)
# Each peer gets its own virtualenv under ${BENCH_VENV_ROOT:-/work/.cache/bench-venvs}
# (outside the repo), installed once from PyPI with the exact versions below and the
# constraints-<peer>.txt lock files. stdout: one JSON line per (peer, shape) with runs_ms and
# median_ms, or an "error" field; the tools' own logs go to $BENCH_VENV_ROOT/logs/.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="${BENCH_VENV_ROOT:-/work/.cache/bench-venvs}"
LOGS="$ROOT/logs"
RUNS=5 ONLY="" PAUSE=0
declare -A PKG=([dagster]="dagster==1.13.29" [prefect]="prefect==3.9.1" [airflow]="apache-airflow==3.3.2")

while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --pause) PAUSE="$2"; shift 2 ;;
    *) echo "usage: $0 [--runs N] [--only dagster|prefect|airflow] [--pause S]" >&2; exit 2 ;;
  esac
done
case "$ONLY" in ""|dagster|prefect|airflow) ;; *) echo "unknown peer: $ONLY" >&2; exit 2 ;; esac
mkdir -p "$LOGS"

err() {  # err PEER MESSAGE -> one JSON line with an "error" field
  python3 -c 'import json,sys; print(json.dumps({"peer": sys.argv[1], "error": sys.argv[2]}))' "$1" "$2"
}

install() {  # install PEER: venv + pinned package, skipped when already done
  local peer="$1" venv="$ROOT/$1" stamp="$ROOT/$1/.installed-${PKG[$1]}"
  [ -f "$stamp" ] && return 0
  echo "installing ${PKG[$peer]} into $venv (log: $LOGS/$peer-install.log)" >&2
  rm -rf "$venv" && python3 -m venv "$venv" &&
    timeout -k 30 900 "$venv/bin/pip" install --disable-pip-version-check \
      -c "$HERE/constraints-$peer.txt" "${PKG[$peer]}" >"$LOGS/$peer-install.log" 2>&1 &&
    touch "$stamp"
}

for peer in dagster prefect airflow; do
  [ -n "$ONLY" ] && [ "$ONLY" != "$peer" ] && continue
  if ! install "$peer"; then
    err "$peer" "install of ${PKG[$peer]} failed or took >15 min: $(tail -n 3 "$LOGS/$peer-install.log" 2>/dev/null | tr '\n' ' ')"
    continue
  fi
  echo "running $peer (log: $LOGS/$peer-run.log)" >&2
  out="$(timeout -k 30 "${BENCH_PEER_TIMEOUT:-3600}" "$ROOT/$peer/bin/python" "$HERE/${peer}_bench.py" \
           --runs "$RUNS" --pause "$PAUSE" 2>"$LOGS/$peer-run.log" | tee "$LOGS/$peer-stdout.log" | grep '^{"peer"')"
  rc=$?
  [ -n "$out" ] && echo "$out"
  [ -z "$out" ] && err "$peer" "run failed (exit $rc): $(tail -n 3 "$LOGS/$peer-run.log" | tr '\n' ' ')"
done
exit 0
