#!/usr/bin/env bash
# Overhead Karen adds to POST /v1/chat/completions (non-streaming and
# streaming), with a tenant API key, metering and budgets on, against an
# instant fake upstream, compared in the same run with calling the fake
# directly: p50/p99 at fixed rates and the highest rate each sustains, on
# SQLite and on PostgreSQL + Redis. Also POST /v1/embeddings against the
# fake's /embeddings: the same input every time, so after the first call
# Karen answers from the tenant's embedding cache (the cache-hit path).
# Results go to stdout; docs/benchmarks.md records a run.
#
#   cargo build --release -p karen -p karen-bench && bench/chat-completions.sh
set -euo pipefail

TARGET=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}
BIN=$TARGET/release
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
RATES=${RATES:-"500 1000 2000"}
PORT=${PORT:-18181}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
PASSWORD="benchmark passphrase 123"
BODY='{"model":"fake-echo","messages":[{"role":"user","content":"hello there"}]}'
STREAM_BODY='{"model":"fake-echo","messages":[{"role":"user","content":"hello there"}],"stream":true}'
EMBED_BODY='{"model":"fake-embed","input":["hello there","general kenobi"]}'

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

"$BIN/fake-upstream" > /tmp/karen-bench-fake.url &
FAKE_PID=$!
trap 'kill $FAKE_PID 2>/dev/null || true' EXIT
until grep -q "/v1$" /tmp/karen-bench-fake.url 2>/dev/null; do sleep 0.05; done
UPSTREAM=$(cat /tmp/karen-bench-fake.url)
UPSTREAM_HOST=${UPSTREAM#http://}; UPSTREAM_HOST=${UPSTREAM_HOST%%/*}

load() { "$BIN/loadgen" --seconds "$SECONDS_PER_RUN" "$@"; }

run() {
  local label=$1; shift
  local dir; dir=$(mktemp -d)
  cat > "$dir/karen.toml" <<TOML
[llm]
default_model = "fake-echo"
allow_private_addresses = ["$UPSTREAM_HOST"]
[[llm.providers]]
name = "fake"
kind = "openai"
base_url = "$UPSTREAM"
api_key = "sk-bench"
models = ["fake-echo"]
[[memory.embedders]]
kind = "openai"
model = "fake-embed"
base_url = "$UPSTREAM"
TOML
  env KAREN_DATA_DIR="$dir/data" KAREN_SERVER__LISTEN="127.0.0.1:$PORT" "$@" \
    "$BIN/karen" --config "$dir/karen.toml" serve >"$dir/log.jsonl" 2>"$dir/stderr" &
  local pid=$!
  until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { cat "$dir/stderr"; exit 1; }
    sleep 0.05
  done
  local op token key base="http://127.0.0.1:$PORT"
  op=$(grep -o 'krn_op_[A-Za-z0-9_-]*' "$dir/stderr" | head -1)
  curl -sf -XPOST "$base/v1/platform/tenants" -H "authorization: Bearer $op" -H 'content-type: application/json' \
    -d "{\"slug\":\"bench\",\"name\":\"Bench\",\"owner_email\":\"o@bench.test\",\"owner_password\":\"$PASSWORD\"}" >/dev/null
  token=$(curl -sf -XPOST "$base/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"tenant\":\"bench\",\"email\":\"o@bench.test\",\"password\":\"$PASSWORD\"}" | json '["access_token"]')
  key=$(curl -sf -XPOST "$base/v1/api-keys" -H "authorization: Bearer $token" -H 'content-type: application/json' \
    -d '{"name":"bench","scopes":["chat:write","embeddings:create"]}' | json '["key"]')
  # A budget that never binds: it is checked (and reserved against) on every call.
  curl -sf -XPOST "$base/v1/budgets" -H "authorization: Bearer $token" -H 'content-type: application/json' \
    -d '{"scope":"tenant","metric":"tokens","period":"month","limit":1000000000000,"enforcement":"hard"}' >/dev/null
  echo "== $label"
  for rate in $RATES; do
    load --rate "$rate" --connections 256 --body "$BODY" --token sk-bench --label "direct  rate $rate" "$UPSTREAM/chat/completions"
    load --rate "$rate" --connections 256 --body "$BODY" --token "$key" --label "karen   rate $rate" "$base/v1/chat/completions"
  done
  load --connections 32 --body "$BODY" --token sk-bench --label "direct  max" "$UPSTREAM/chat/completions"
  load --connections 32 --body "$BODY" --token "$key" --label "karen   max" "$base/v1/chat/completions"
  load --rate 500 --connections 256 --body "$STREAM_BODY" --token sk-bench --label "direct  stream rate 500" "$UPSTREAM/chat/completions"
  load --rate 500 --connections 256 --body "$STREAM_BODY" --token "$key" --label "karen   stream rate 500" "$base/v1/chat/completions"
  load --rate 500 --connections 256 --body "$EMBED_BODY" --token sk-bench --label "direct  embeddings rate 500" "$UPSTREAM/embeddings"
  load --rate 500 --connections 256 --body "$EMBED_BODY" --token "$key" --label "karen   embeddings (cached) rate 500" "$base/v1/embeddings"
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
