#!/usr/bin/env bash
# Starts Milvus Lite (Milvus's gRPC API in one local process) for the Milvus
# vector-index tests and the vector benchmark, unless something already
# listens on its port.
#
# Idempotent: the Python venv lives outside the repository (default
# /var/tmp/karen-milvus-venv) and is created only once; the server is started
# in the background with a fresh temporary data directory and left running
# after this script exits. Waits until the server answers gRPC calls.
#
# Environment:
#   KAREN_MILVUS_VENV   venv directory   (default /var/tmp/karen-milvus-venv)
#   KAREN_MILVUS_HOST   listen address   (default 127.0.0.1)
#   KAREN_MILVUS_PORT   listen port      (default 19530)
#   KAREN_MILVUS_WAIT   seconds to wait for the server (default 120)
set -euo pipefail

VENV="${KAREN_MILVUS_VENV:-/var/tmp/karen-milvus-venv}"
HOST="${KAREN_MILVUS_HOST:-127.0.0.1}"
PORT="${KAREN_MILVUS_PORT:-19530}"
WAIT_SECS="${KAREN_MILVUS_WAIT:-120}"
MILVUS_LITE_VERSION="3.2.2"

log() {
    echo "milvus-lite: $*"
}

fail() {
    echo "milvus-lite: error: $*" >&2
    exit 1
}

# A gRPC round trip, not just an open port: the server accepts TCP before it
# can serve requests.
answers_grpc() {
    "$VENV/bin/python" - "$HOST" "$PORT" <<'PY' >/dev/null 2>&1
import sys
from pymilvus import MilvusClient
client = MilvusClient(uri=f"http://{sys.argv[1]}:{sys.argv[2]}", timeout=5)
client.has_collection("karen_probe")
client.close()
PY
}

port_open() {
    (exec 3<>"/dev/tcp/$HOST/$PORT") >/dev/null 2>&1
}

ensure_venv() {
    if [ -x "$VENV/bin/milvus-lite" ] && "$VENV/bin/python" -c 'import pymilvus' >/dev/null 2>&1 \
        && [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("milvus-lite"))' 2>/dev/null)" = "$MILVUS_LITE_VERSION" ]; then
        return
    fi
    log "creating venv in $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "milvus-lite==$MILVUS_LITE_VERSION" pymilvus
    [ -x "$VENV/bin/milvus-lite" ] || fail "milvus-lite did not install an executable in $VENV/bin"
}

ensure_venv

if port_open; then
    log "something already listens on $HOST:$PORT; not starting another server"
else
    data_dir="$(mktemp -d /var/tmp/karen-milvus-data.XXXXXX)"
    log_file="$data_dir/server.log"
    log "starting server on $HOST:$PORT (data in $data_dir, log in $log_file)"
    # setsid + nohup: the server outlives this script (and its caller's shell).
    setsid nohup "$VENV/bin/milvus-lite" server --data-dir "$data_dir" --host "$HOST" --port "$PORT" \
        >"$log_file" 2>&1 </dev/null &
    echo $! >"$data_dir/server.pid"
fi

waited=0
until answers_grpc; do
    if [ "$waited" -ge "$WAIT_SECS" ]; then
        [ -n "${log_file:-}" ] && tail -n 40 "$log_file" >&2
        fail "Milvus is not answering gRPC on $HOST:$PORT after ${WAIT_SECS}s"
    fi
    sleep 1
    waited=$((waited + 1))
done
log "up on $HOST:$PORT"
