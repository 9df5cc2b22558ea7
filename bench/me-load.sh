#!/usr/bin/env bash
# Load benchmark of `GET /v1/me` with an access token, on the embedded backend
# (SQLite, in-process cache) and on the scale-out one (PostgreSQL + Redis).
# For each: cold start of `karen serve` on a fresh data dir / database (process
# start until /healthz answers, migrations included), idle RSS after start,
# and throughput/latency from wrk running as a second process on the same
# machine. Results go to stdout; docs/benchmarks.md records a run.
#
#   cargo build --release -p karen && bench/me-load.sh
#
# Needs wrk (apt-get install wrk), curl, python3; PostgreSQL and Redis on
# 127.0.0.1 for the scale-out run (skipped with a note if absent).
set -euo pipefail

BIN=${KAREN_BIN:-$(cargo metadata --format-version 1 --no-deps 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)['target_directory'])" 2>/dev/null || echo target)/release/karen}
DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
PORT=${PORT:-18080}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
PASSWORD="steady state passphrase 123"  # no word of the tenant (the password policy refuses them)

[ -x "$BIN" ] || { echo "build first: cargo build --release -p karen ($BIN missing)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

run() {
  local label=$1; shift
  local dir; dir=$(mktemp -d)
  local start_ns; start_ns=$(date +%s%N)
  env KAREN_DATA_DIR="$dir" KAREN_SERVER__LISTEN="127.0.0.1:$PORT" "$@" "$BIN" serve >"$dir/log.jsonl" 2>"$dir/stderr" &
  local pid=$!
  until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { cat "$dir/stderr"; exit 1; }
    sleep 0.002
  done
  local cold_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
  local op; op=$(grep -o 'krn_op_[A-Za-z0-9_-]*' "$dir/stderr" | head -1)
  curl -sf -XPOST "http://127.0.0.1:$PORT/v1/platform/tenants" -H "authorization: Bearer $op" \
    -H 'content-type: application/json' \
    -d "{\"slug\":\"bench\",\"name\":\"Bench\",\"owner_email\":\"o@bench.test\",\"owner_password\":\"$PASSWORD\"}" >/dev/null
  local token; token=$(curl -sf -XPOST "http://127.0.0.1:$PORT/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"tenant\":\"bench\",\"email\":\"o@bench.test\",\"password\":\"$PASSWORD\"}" | json '["access_token"]')
  sleep 2
  local rss_kib; rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  # Warm up, then measure.
  wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -H "Authorization: Bearer $token" "http://127.0.0.1:$PORT/v1/me" >/dev/null
  echo "== $label: cold start ${cold_ms} ms, idle RSS $((rss_kib / 1024)) MiB"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -H "Authorization: Bearer $token" "http://127.0.0.1:$PORT/v1/me" \
    | grep -E "Requests/sec|Latency|50%|90%|99%|requests in|Non-2xx"
  echo "   RSS after load: $(( $(awk '/VmRSS/ {print $2}' "/proc/$pid/status") / 1024 )) MiB"
  kill -TERM "$pid"; wait "$pid" || true
  rm -rf "$dir"
}

run "SQLite (mode minimal)" KAREN_MODE=minimal

if psql "$PG_ADMIN" -qAtc 'select 1' >/dev/null 2>&1 && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  db="karen_bench_$$"
  psql "$PG_ADMIN" -qc "CREATE DATABASE $db" >/dev/null
  owner_url="${PG_ADMIN%/*}/$db"
  app_url="postgres://karen_app@${owner_url#*@}"
  run "PostgreSQL + Redis (mode standard)" KAREN_MODE=standard \
    KAREN_DATABASE__URL="$app_url" KAREN_DATABASE__MIGRATION_URL="$owner_url" \
    KAREN_REDIS__URL=redis://127.0.0.1:6379 KAREN_REDIS__KEY_PREFIX="karen-bench-$$:"
  psql "$PG_ADMIN" -qc "DROP DATABASE $db WITH (FORCE)" >/dev/null
else
  echo "== PostgreSQL + Redis: skipped (not reachable)"
fi
