#!/usr/bin/env bash
# What Karen's caches save: the same gateway calls with caches on and with
# `[cache] enabled = false` (every API-key, route, model-list and rate-limit
# lookup then reads the store, and every embedding is computed by the
# upstream again), on SQLite and on PostgreSQL + Redis, against the instant
# fake upstream. Closed loop, 32 connections: the highest rate and its
# p50/p99. Afterwards the hit ratio of each cache from /metrics.
# Results go to stdout; docs/benchmarks.md records a run.
#
#   cargo build --release -p karen -p karen-bench && bench/caching.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"

SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
CHAT_BODY='{"model":"fake-echo","messages":[{"role":"user","content":"hello there"}]}'
EMBED_BODY='{"model":"fake-embed","input":["hello there","general kenobi"]}'

start_fake_upstream

load() { "$BIN/loadgen" --seconds "$SECONDS_PER_RUN" --connections 32 "$@"; }

hit_ratios() {
  curl -sf "$BASE/metrics" | python3 -c '
import re, sys
counts = {}
for line in sys.stdin:
    m = re.match(r"karen_cache_requests_total\{(.*)\} (\S+)", line)
    if not m:
        continue
    labels = dict(re.findall(r"(\w+)=\"([^\"]*)\"", m.group(1)))
    hit, miss = counts.get(labels["cache"], (0.0, 0.0))
    if labels["result"] == "hit":
        hit += float(m.group(2))
    else:
        miss += float(m.group(2))
    counts[labels["cache"]] = (hit, miss)
for cache, (hit, miss) in sorted(counts.items()):
    print(f"   cache {cache}: {hit:.0f} hits, {miss:.0f} misses, hit ratio {hit / max(hit + miss, 1):.1%}")
'
}

run_once() {
  local label=$1 enabled=$2; shift 2
  local dir; dir=$(mktemp -d)
  fake_upstream_config > "$dir/karen.toml"
  start_karen "$dir" KAREN_CACHE__ENABLED="$enabled" "$@"
  # A tenant per run: on PostgreSQL both runs share one database.
  bench_tenant '["chat:write","embeddings:create"]' "bench-caches-$enabled"
  echo "== $label, caches $( [ "$enabled" = true ] && echo on || echo off )"
  load --token "$KEY" --label "models      " "$BASE/v1/models"
  load --token "$KEY" --body "$EMBED_BODY" --label "embeddings  " "$BASE/v1/embeddings"
  load --token "$KEY" --body "$CHAT_BODY" --label "chat        " "$BASE/v1/chat/completions"
  hit_ratios
  stop_karen
  rm -rf "$dir"
}

run() {
  local label=$1; shift
  run_once "$label" true "$@"
  run_once "$label" false "$@"
}

each_backend run
