#!/usr/bin/env bash
# Compares semisync-kv with Redis under the same closed-loop write load: a Redis primary with
# five replicas (SET + WAIT <quorum> pipelined in one round trip, and SET then WAIT in two)
# against a local cluster with five followers at zero lag. Writes artifacts/versus_redis.json
# and artifacts/versus_redis.png.
#   scripts/versus-redis.sh                                   # quorum 3, 64 clients, 10 s
#   scripts/versus-redis.sh --throughput-concurrency 10,64    # two loads in one go
# Other flags: --throughput-quorums, --throughput-seconds, --timeout-ms, --out-dir.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null 2>&1; then
    echo "error: redis-server is not on the PATH: install it with" \
        "'apt-get install redis-server' (Debian, Ubuntu) or 'brew install redis' (macOS)" >&2
    exit 2
fi
cargo build --release --quiet
exec "${CARGO_TARGET_DIR:-target}/release/semisync-kv" bench --versus-redis "$@"
