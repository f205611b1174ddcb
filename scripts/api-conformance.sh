#!/usr/bin/env bash
# Runs schemathesis (every check) against a live leader, a live follower, and that follower's
# internal listener (the batch route, with the cluster token), each checked against the OpenAPI
# description it serves at /openapi.json. Exits non-zero on any failure.
# Needs python3 (schemathesis is installed from PyPI into a virtualenv) and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${SCHEMATHESIS_VENV:-target/schemathesis-venv}
# Exit code 75 (EX_TEMPFAIL): schemathesis could not be installed (no python3 venv, or no
# package index); the last line of stderr says so.
if [ ! -x "$venv/bin/st" ]; then
  if ! python3 -m venv "$venv" || ! "$venv/bin/pip" install --quiet schemathesis; then
    rm -rf "$venv"
    echo "cannot install schemathesis: python3 with venv and pip, and the package index, are needed" >&2
    exit 75
  fi
fi
"$venv/bin/st" --version

# The binary under test: SEMISYNC_KV_BIN (the conformance test passes its own), else a debug build.
bin=${SEMISYNC_KV_BIN:-}
if [ -z "$bin" ]; then
  cargo build --locked --quiet --bin semisync-kv
  bin=target/debug/semisync-kv
fi
logs=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
# A read with min_version may wait up to the request timeout: keep it short.
export CLUSTER_TOKEN=api-conformance RUST_LOG=warn REPLICATE_TIMEOUT_MS=1000 REQUEST_TIMEOUT_MS=2000
for i in 1 2; do
  ROLE=follower NODE_ID=follower$i LISTEN_ADDR=127.0.0.1:1710$i INTERNAL_LISTEN_ADDR=127.0.0.1:1720$i \
    LEADER_URL=http://127.0.0.1:17100 "$bin" serve 2>"$logs/follower$i.log" &
  pids+=($!)
done
ROLE=leader NODE_ID=leader LISTEN_ADDR=127.0.0.1:17100 INTERNAL_LISTEN_ADDR=127.0.0.1:17200 WRITE_QUORUM=1 MIN_DELAY_MS=0 MAX_DELAY_MS=0 \
  FOLLOWERS=http://127.0.0.1:17201,http://127.0.0.1:17202 "$bin" serve 2>"$logs/leader.log" &
pids+=($!)
for port in 17100 17101; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
done

status=0
for node in leader:17100 follower:17101 internal:17201; do
  role=${node%:*} port=${node#*:}
  echo "== schemathesis against the $role"
  timeout 600 "$venv/bin/st" --config-file ".ci/schemathesis/$role.toml" run \
    "http://127.0.0.1:$port/openapi.json" --url "http://127.0.0.1:$port" \
    --header "Authorization: Bearer $CLUSTER_TOKEN" \
    --checks all --max-examples 100 --seed 42 --request-timeout 10 \
    --generation-database none --workers 1 --no-color || status=1
done
exit $status
