# Shared by the load benchmarks in bench/: start `karen serve` on a fresh data
# dir, give it a tenant, an owner token and an API key, and run a function on
# each backend (SQLite, then PostgreSQL + Redis when reachable). Source it.

TARGET=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}
BIN=$TARGET/release
PORT=${PORT:-18181}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
PASSWORD="steady state passphrase 123"  # no word of the tenant (the password policy refuses them)
BASE="http://127.0.0.1:$PORT"

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

# start_fake_upstream: the test kit's instant OpenAI-compatible upstream;
# sets UPSTREAM (its /v1 URL) and UPSTREAM_HOST, and stops it on exit.
start_fake_upstream() {
  "$BIN/fake-upstream" > /tmp/karen-bench-fake.url &
  FAKE_PID=$!
  trap 'kill $FAKE_PID 2>/dev/null || true' EXIT
  until grep -q "/v1$" /tmp/karen-bench-fake.url 2>/dev/null; do sleep 0.05; done
  UPSTREAM=$(cat /tmp/karen-bench-fake.url)
  UPSTREAM_HOST=${UPSTREAM#http://}; UPSTREAM_HOST=${UPSTREAM_HOST%%/*}
}

# fake_upstream_config: a karen.toml routing fake-echo (chat) and fake-embed
# (embeddings) to the fake upstream, with rate limits far above what the
# machine can send (they are still checked on every call).
fake_upstream_config() {
  cat <<TOML
[rate_limits.defaults]
tenant = { requests = 1000000, window_secs = 1 }
user = { requests = 1000000, window_secs = 1 }
api_key = { requests = 1000000, window_secs = 1 }
[rate_limits.plans.free]
tenant = { requests = 1000000, window_secs = 1 }
user = { requests = 1000000, window_secs = 1 }
api_key = { requests = 1000000, window_secs = 1 }
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
}

# start_karen DIR [VAR=value ...]: `karen serve` with DIR/karen.toml (when
# present) and its data in DIR/data; waits until ready. Sets KAREN_PID and OP
# (the operator key).
start_karen() {
  local dir=$1; shift
  local config=()
  [ -f "$dir/karen.toml" ] && config=(--config "$dir/karen.toml")
  env KAREN_DATA_DIR="$dir/data" KAREN_SERVER__LISTEN="127.0.0.1:$PORT" "$@" \
    "$BIN/karen" "${config[@]}" serve >"$dir/log.jsonl" 2>"$dir/stderr" &
  KAREN_PID=$!
  until curl -sf "$BASE/readyz" >/dev/null 2>&1; do
    kill -0 "$KAREN_PID" 2>/dev/null || { cat "$dir/stderr"; exit 1; }
    sleep 0.02
  done
  # Printed on a database's first start only: a later start on the same
  # database keeps the key of the first.
  local printed; printed=$(grep -o 'krn_op_[A-Za-z0-9_-]*' "$dir/stderr" | head -1 || true)
  OP=${printed:-${OP:-}}
}

stop_karen() {
  kill -TERM "$KAREN_PID"; wait "$KAREN_PID" || true
}

# bench_tenant SCOPES [SLUG]: creates tenant SLUG (default "bench") and sets
# TOKEN (its owner's access token) and KEY (an API key with SCOPES, a JSON list).
bench_tenant() {
  local slug=${2:-bench}
  curl -sf -XPOST "$BASE/v1/platform/tenants" -H "authorization: Bearer $OP" -H 'content-type: application/json' \
    -d "{\"slug\":\"$slug\",\"name\":\"Bench\",\"owner_email\":\"o@bench.test\",\"owner_password\":\"$PASSWORD\"}" >/dev/null
  TOKEN=$(curl -sf -XPOST "$BASE/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"tenant\":\"$slug\",\"email\":\"o@bench.test\",\"password\":\"$PASSWORD\"}" | json '["access_token"]')
  KEY=$(curl -sf -XPOST "$BASE/v1/api-keys" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d "{\"name\":\"bench\",\"scopes\":$1}" | json '["key"]')
}

# each_backend FUNCTION: FUNCTION LABEL VAR=value... on SQLite (mode minimal),
# then on PostgreSQL + Redis (mode standard, a scratch database) when reachable.
each_backend() {
  local run=$1
  "$run" "SQLite (mode minimal)" KAREN_MODE=minimal
  if psql "$PG_ADMIN" -qAtc 'select 1' >/dev/null 2>&1 && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
    local db="karen_bench_$$"
    psql "$PG_ADMIN" -qc "CREATE DATABASE $db" >/dev/null
    local owner_url="${PG_ADMIN%/*}/$db"
    local app_url="postgres://karen_app@${owner_url#*@}"
    "$run" "PostgreSQL + Redis (mode standard)" KAREN_MODE=standard \
      KAREN_MASTER_KEY="$(head -c 32 /dev/urandom | base64)" \
      KAREN_DATABASE__URL="$app_url" KAREN_DATABASE__MIGRATION_URL="$owner_url" \
      KAREN_REDIS__URL=redis://127.0.0.1:6379 KAREN_REDIS__KEY_PREFIX="karen-bench-$$:"
    psql "$PG_ADMIN" -qc "DROP DATABASE $db WITH (FORCE)" >/dev/null
  else
    echo "== PostgreSQL + Redis: skipped (not reachable)"
  fi
}
