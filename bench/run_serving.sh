#!/usr/bin/env bash
# Model-serving benchmark: HTTP inference of the taxi trip-duration wide&deep model, one record
# per request, in mlbox, `mlflow models serve` and kserve's Python ModelServer (OIP v2), one
# server at a time, same run, same machine. wrk drives each endpoint at -c1 -t1, -c8 -t2 and
# -c64 -t2 (a WARMUP-second unmeasured run, then DURATION seconds with --latency).
#
# Rerun (from the repo root):
#   bash bench/run_serving.sh                                   # peers only
#   MLBOX_BIN=target/release/mlbox MLBOX_DATA=DIR bash bench/run_serving.sh
#     MLBOX_DATA must hold a registered model `taxi-duration` with a `production` alias.
#   env DURATION (15), WARMUP (3), SERVE_TORCH_THREADS (1, torch intra-op threads in the peers)
# Peers: bench/peers/serving_model.py builds the same-sized model (random weights, real
# per-request preprocessing) as an MLflow pyfunc dir and a dir for bench/peers/serve_kserve.py.
# Every server runs with its defaults: one worker process, its own access logging.
# The peers' venv lives outside the repo at $VENV, installed once with the pins below and
# bench/peers/constraints-serving.txt; wrk comes from Debian (apt-get install wrk).
# Output: machine, versions, then a markdown table; raw wrk output and server logs in $LOGS.
# A row with any non-2xx response, socket error or failed first request is flagged. wrk shares
# the cores with the server under test; "other CPU" is what the rest of the machine used during
# the measured run (cores; ~0.1 of unattributed kernel work is normal), and a row where it exceeds
# 0.3 is flagged: run on an idle machine.
set -uo pipefail
cd "$(dirname "$0")/.."
HERE="$PWD/bench"
ROOT=/work/.cache/bench-venvs
VENV=$ROOT/serving
LOGS=$ROOT/logs/serving
DURATION=${DURATION:-15}
WARMUP=${WARMUP:-3}
TORCH=torch==2.15.0
PINS=(mlflow==3.17.2 kserve==0.21.0 pandas==2.3.3)
CONNS=("1 1" "8 2" "64 2")              # "connections threads" per wrk run
export SERVE_TORCH_THREADS=${SERVE_TORCH_THREADS:-1}
mkdir -p "$LOGS"
TMP=$(mktemp -d /tmp/mlbox-serving-bench.XXXXXX)
RESULTS=$TMP/results.tsv
SERVER_PID=""
trap 'stop_server; rm -rf "$TMP"' EXIT

install_venv() {  # venv + pinned packages, skipped when the stamp for these pins exists
  local stamp="$VENV/.installed-$(echo "$TORCH ${PINS[*]}" | md5sum | cut -c1-12)"
  [ -f "$stamp" ] && return 0
  echo "installing $TORCH ${PINS[*]} into $VENV (log: $LOGS/install.log)" >&2
  rm -rf "$VENV" && python3 -m venv "$VENV" || return 1
  local pip=("$VENV/bin/pip" install --disable-pip-version-check -c "$HERE/peers/constraints-serving.txt")
  # CPU-only torch (2.15.0+cpu, its deps from PyPI) when that index is reachable; otherwise
  # PyPI's CUDA wheel, which runs on CPU. Either satisfies the torch==2.15.0 pin below.
  if curl -fsS --max-time 5 -o /dev/null https://download.pytorch.org/whl/cpu/torch/ 2>/dev/null; then
    "${pip[@]}" --extra-index-url https://download.pytorch.org/whl/cpu "$TORCH+cpu" >>"$LOGS/install.log" 2>&1 || return 1
  fi
  "${pip[@]}" "$TORCH" "${PINS[@]}" >>"$LOGS/install.log" 2>&1 && touch "$stamp"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_server() {  # start_server NAME CMD...: own process group, log in $LOGS/NAME.log
  local name=$1; shift
  setsid "$@" >"$LOGS/$name.log" 2>&1 &
  SERVER_PID=$!
}

stop_server() {  # TERM the server's process group, KILL it after 10 s
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM -- "-$SERVER_PID" 2>/dev/null
  for _ in $(seq 20); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.5; done
  kill -KILL -- "-$SERVER_PID" 2>/dev/null
  wait "$SERVER_PID" 2>/dev/null
  SERVER_PID=""
}

wait_ready() {  # wait_ready URL SECONDS: GET URL until 200 while the server lives
  for _ in $(seq $(($2 * 2))); do
    curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}

row() { printf '%s\n' "$*" >>"$RESULTS"; }  # server|endpoint|c|t|rps|p50|p99|non2xx|sockerr|other|status

# CPU ticks: busy ticks of all CPUs (user+nice+system in /proc/stat), of the server's process
# group, and of this shell's reaped children (wrk). What is left over was used by other programs.
ticks() {
  awk '/^cpu /{printf "%d ", $2+$3+$4}' /proc/stat
  cat /proc/[0-9]*/stat 2>/dev/null |
    awk -v g="$SERVER_PID" '{sub(/^.*\) /, ""); if ($3 == g) s += $12+$13+$14+$15} END {printf "%d ", s}'
  awk '{sub(/^.*\) /, ""); print $14+$15}' /proc/$$/stat
}

bench() {  # bench SERVER ENDPOINT URL BODY_FILE
  local server=$1 ep=$2 url=$3 body=$4 code
  code=$(curl -sS -o "$TMP/first.out" -w '%{http_code}' --max-time 30 -H 'Content-Type: application/json' \
    --data-binary "@$body" "$url")
  echo "$server $ep first response ($code): $(head -c 300 "$TMP/first.out")" >&2
  if [ "$code" != 200 ]; then
    for ct in "${CONNS[@]}"; do row "$server|$ep|${ct% *}|${ct#* }|-|-|-|-|-|-|**ERROR: first request HTTP $code**"; done
    return
  fi
  for ct in "${CONNS[@]}"; do
    local c=${ct% *} t=${ct#* } log="$LOGS/wrk-$server-${ep//\//_}-c${ct% *}.txt"
    WRK_BODY_FILE=$body wrk -t"$t" -c"$c" -d"${WARMUP}s" --timeout 10s -s "$TMP/post.lua" "$url" >/dev/null 2>&1
    local t0 t1 other; t0=$(ticks)
    WRK_BODY_FILE=$body wrk -t"$t" -c"$c" -d"${DURATION}s" --timeout 10s --latency -s "$TMP/post.lua" "$url" >"$log" 2>&1
    t1=$(ticks)
    other=$(echo "$t0 $t1 $(getconf CLK_TCK) $DURATION" | awk '{v = (($4-$1)-($5-$2)-($6-$3))/$7/$8; printf "%.2f", v < 0 ? 0 : v}')
    local r; r=$(grep '^RESULT' "$log")
    if [ -z "$r" ]; then row "$server|$ep|$c|$t|-|-|-|-|-|-|**ERROR: wrk failed, see $log**"; continue; fi
    read -r _ rps p50 p99 non2xx sockerr <<<"$r"
    local status=ok
    [ "$non2xx" != 0 ] || [ "$sockerr" != 0 ] && status="**ERRORS: $non2xx non-2xx, $sockerr socket errors**"
    awk "BEGIN {exit !($other > 0.3)}" && status="$status; **busy machine: others used $other cores**"
    row "$server|$ep|$c|$t|$rps|$p50|$p99|$non2xx|$sockerr|$other|$status"
    echo "  $server $ep c=$c: $rps req/s, p50 $p50 ms, p99 $p99 ms, non-2xx $non2xx" >&2
  done
}

# wrk script: POST the body file; count non-2xx in the response hook (per thread, summed in done).
cat >"$TMP/post.lua" <<'LUA'
local f = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
wrk.method, wrk.body = "POST", f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) non2xx = 0 end
function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + t:get("non2xx") end
  local e = summary.errors
  io.write(string.format("RESULT %.0f %.2f %.2f %d %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, bad, e.connect + e.read + e.write + e.timeout))
end
LUA

# Request bodies (one record).
REC='{"pickup_datetime":"2019-03-14 08:30:00","pickup_location_id":132,"dropoff_location_id":236,"passenger_count":1}'
echo "[$REC]" >"$TMP/records.json"
echo "{\"dataframe_records\":[$REC]}" >"$TMP/mlflow.json"
cat >"$TMP/v2.json" <<'JSON'
{"inputs":[{"name":"pickup_datetime","datatype":"BYTES","shape":[1],"data":["2019-03-14 08:30:00"]},{"name":"pickup_location_id","datatype":"INT64","shape":[1],"data":[132]},{"name":"dropoff_location_id","datatype":"INT64","shape":[1],"data":[236]},{"name":"passenger_count","datatype":"FP64","shape":[1],"data":[1]}]}
JSON

command -v wrk >/dev/null || { apt-get update && apt-get install -y wrk; } >"$LOGS/apt.log" 2>&1 ||
  { echo "cannot install wrk (log: $LOGS/apt.log)" >&2; exit 1; }
install_venv || { echo "venv install failed: $(tail -n 3 "$LOGS/install.log")" >&2; exit 1; }

echo "## Machine"
echo "- cpus: $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"
echo "- load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "## Versions"
echo "- $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), $("$VENV/bin/python" --version)"
"$VENV/bin/python" - <<'PY'
import os
from importlib.metadata import version
import torch
print("- " + ", ".join(f"{p} {version(p)}" for p in ("mlflow", "kserve", "torch", "pandas", "numpy", "uvicorn", "fastapi"))
      + f"; torch threads in the peers: {os.environ['SERVE_TORCH_THREADS']} (torch default here: {torch.get_num_threads()})")
PY
[ -n "${MLBOX_BIN:-}" ] && echo "- mlbox: $("$MLBOX_BIN" --version 2>&1 | head -1)"
echo "- wrk: ${WARMUP}s warm-up + ${DURATION}s measured per row; all servers 1 worker"

# mlbox
if [ -z "${MLBOX_BIN:-}" ] || [ -z "${MLBOX_DATA:-}" ]; then
  echo "MLBOX_BIN / MLBOX_DATA not set: skipping mlbox" >&2
  row "mlbox|-|-|-|-|-|-|-|-|-|skipped (MLBOX_BIN/MLBOX_DATA unset)"
else
  port=$(free_port); mkdir -p "$TMP/no-pipelines"
  start_server mlbox "$MLBOX_BIN" serve --data-dir "$MLBOX_DATA" --addr "127.0.0.1:$port" --pipelines "$TMP/no-pipelines"
  if wait_ready "http://127.0.0.1:$port/readyz" 60; then
    bench mlbox /v2/models/taxi-duration/infer "http://127.0.0.1:$port/v2/models/taxi-duration/infer" "$TMP/v2.json"
    bench mlbox /api/v1/models/taxi-duration/predict "http://127.0.0.1:$port/api/v1/models/taxi-duration/predict" "$TMP/records.json"
  else
    row "mlbox|-|-|-|-|-|-|-|-|-|**ERROR: not ready, see $LOGS/mlbox.log**"
  fi
  stop_server
fi

# Peer model artifacts (rebuilt each run, ~10 s).
if ! "$VENV/bin/python" "$HERE/peers/serving_model.py" "$TMP/model" >"$LOGS/build.log" 2>&1; then
  echo "building the peer model failed: $(tail -n 3 "$LOGS/build.log")" >&2; exit 1
fi

# MLflow: `mlflow models serve` (uvicorn, 1 worker), POST /invocations.
port=$(free_port)
start_server mlflow env PATH="$VENV/bin:$PATH" "$VENV/bin/mlflow" models serve -m "$TMP/model/mlflow" \
  --env-manager local -h 127.0.0.1 -p "$port" -w 1
if wait_ready "http://127.0.0.1:$port/ping" 120; then
  bench mlflow /invocations "http://127.0.0.1:$port/invocations" "$TMP/mlflow.json"
else
  row "mlflow|-|-|-|-|-|-|-|-|-|**ERROR: not ready, see $LOGS/mlflow.log**"
fi
stop_server

# kserve: ModelServer (uvicorn, 1 worker, gRPC off), OIP v2 infer.
port=$(free_port)
start_server kserve "$VENV/bin/python" "$HERE/peers/serve_kserve.py" --model_dir "$TMP/model/model" --http_port "$port" --workers 1
if wait_ready "http://127.0.0.1:$port/v2/models/taxi/ready" 120; then
  bench kserve /v2/models/taxi/infer "http://127.0.0.1:$port/v2/models/taxi/infer" "$TMP/v2.json"
else
  row "kserve|-|-|-|-|-|-|-|-|-|**ERROR: not ready, see $LOGS/kserve.log**"
fi
stop_server

echo "## Results"
echo "| server | endpoint | conns | wrk threads | req/s | p50 ms | p99 ms | non-2xx | socket errors | other CPU (cores) | status |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
sed 's/|/ | /g; s/^/| /; s/$/ |/' "$RESULTS"
