#!/usr/bin/env bash
# Measures how long a follower restarted empty takes to catch up with a large data set, and the
# leader's memory for it: starts a leader and five followers on loopback (zero lag), loads
# KEYS keys of VALUE_BYTES bytes (default 1,000,000 of 100), kills follower1 with SIGKILL,
# restarts it empty and times until it holds every key. Stops every node it started.
# Usage: scripts/catch-up.sh [KEYS [VALUE_BYTES]]
set -euo pipefail
cd "$(dirname "$0")/.."
keys=${1:-1000000}
value_bytes=${2:-100}
bin=${SEMISYNC_KV_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --locked --quiet --bin semisync-kv
  bin=target/release/semisync-kv
fi
logs=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
export RUST_LOG=warn
follower() {
  ROLE=follower NODE_ID=follower$1 LISTEN_ADDR=127.0.0.1:1740$1 INTERNAL_LISTEN_ADDR=127.0.0.1:1750$1 \
    "$bin" serve 2>>"$logs/follower$1.log" &
  pids[$1]=$!
}
for i in 1 2 3 4 5; do follower "$i"; done
followers=http://127.0.0.1:17501,http://127.0.0.1:17502,http://127.0.0.1:17503,http://127.0.0.1:17504,http://127.0.0.1:17505
ROLE=leader NODE_ID=leader LISTEN_ADDR=127.0.0.1:17400 INTERNAL_LISTEN_ADDR=127.0.0.1:17500 WRITE_QUORUM=1 MIN_DELAY_MS=0 MAX_DELAY_MS=0 \
  FOLLOWERS=$followers "$bin" serve 2>"$logs/leader.log" &
pids[0]=$!
health_keys() { curl -sf "http://127.0.0.1:$1/health" | grep -o '"keys":[0-9]*' | cut -d: -f2; }
wait_keys() { # port, keys, tries of 10 ms
  for _ in $(seq "$3"); do [ "$(health_keys "$1" || echo 0)" = "$2" ] && return 0; sleep 0.01; done
  return 1
}
for port in 17400 17401 17402 17403 17404 17405; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
done

"$bin" bench --fill "$keys" --value-bytes "$value_bytes" --leader http://127.0.0.1:17400
for port in 17401 17402 17403 17404 17405; do
  wait_keys "$port" "$keys" 3000 || { echo "follower on $port did not get every key"; exit 1; }
done
# Keys k0..k(N-1) and their values, in bytes.
raw=$(( $(seq 0 $((keys - 1)) | awk '{ n += length($0) + 1 } END { print n }') + keys * value_bytes ))
rss_kib=$(awk '/VmRSS/ { print $2 }' "/proc/${pids[0]}/status")
echo "leader RSS $((rss_kib / 1024)) MiB for $((raw / 1048576)) MiB of keys and values: $(awk -v r="$rss_kib" -v b="$raw" 'BEGIN { printf "%.2f", r * 1024 / b }')x"

{ kill -9 "${pids[1]}" && wait "${pids[1]}"; } 2>/dev/null || true
start=$(date +%s.%N)
follower 1
if ! wait_keys 17401 "$keys" 6000; then
  echo "follower1 did not catch up within 60 s"
  exit 1
fi
end=$(date +%s.%N)
echo "follower1, restarted empty, held all $keys keys $(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }') s after its restart"
