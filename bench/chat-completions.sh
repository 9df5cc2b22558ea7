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
#
# RATES, SECONDS_PER_RUN and HARD_BUDGET (1: a tenant budget that never binds,
# so every call reserves; 0: none) change what runs.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
RATES=${RATES:-"500 1000 2000"}
HARD_BUDGET=${HARD_BUDGET:-1}
BODY='{"model":"fake-echo","messages":[{"role":"user","content":"hello there"}]}'
STREAM_BODY='{"model":"fake-echo","messages":[{"role":"user","content":"hello there"}],"stream":true}'
EMBED_BODY='{"model":"fake-embed","input":["hello there","general kenobi"]}'

start_fake_upstream

load() { "$BIN/loadgen" --seconds "$SECONDS_PER_RUN" "$@"; }

run() {
  local label=$1; shift
  local dir; dir=$(mktemp -d)
  fake_upstream_config > "$dir/karen.toml"
  start_karen "$dir" "$@"
  bench_tenant '["chat:write","embeddings:create"]'
  # A budget that never binds: it is checked (and reserved against) on every call.
  # HARD_BUDGET=0 leaves it out (no hard budget applies: nothing is reserved).
  if [ "$HARD_BUDGET" = 1 ]; then
    curl -sf -XPOST "$BASE/v1/budgets" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
      -d '{"scope":"tenant","metric":"tokens","period":"month","limit":1000000000000,"enforcement":"hard"}' >/dev/null
  fi
  echo "== $label (hard budget: $HARD_BUDGET)"
  for rate in $RATES; do
    load --rate "$rate" --connections 256 --body "$BODY" --token sk-bench --label "direct  rate $rate" "$UPSTREAM/chat/completions"
    load --rate "$rate" --connections 256 --body "$BODY" --token "$KEY" --label "karen   rate $rate" "$BASE/v1/chat/completions"
  done
  load --connections 32 --body "$BODY" --token sk-bench --label "direct  max" "$UPSTREAM/chat/completions"
  load --connections 32 --body "$BODY" --token "$KEY" --label "karen   max" "$BASE/v1/chat/completions"
  load --rate 500 --connections 256 --body "$STREAM_BODY" --token sk-bench --label "direct  stream rate 500" "$UPSTREAM/chat/completions"
  load --rate 500 --connections 256 --body "$STREAM_BODY" --token "$KEY" --label "karen   stream rate 500" "$BASE/v1/chat/completions"
  load --rate 500 --connections 256 --body "$EMBED_BODY" --token sk-bench --label "direct  embeddings rate 500" "$UPSTREAM/embeddings"
  load --rate 500 --connections 256 --body "$EMBED_BODY" --token "$KEY" --label "karen   embeddings (cached) rate 500" "$BASE/v1/embeddings"
  stop_karen
  rm -rf "$dir"
}

each_backend run
