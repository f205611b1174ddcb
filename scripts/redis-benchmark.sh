#!/usr/bin/env bash
# redis-benchmark (-t set,get -c 64 -n 200000, without and with -P 16) against a Redis primary
# with five replicas (ports 7000..7005), then against a local semisync-kv cluster speaking RESP
# (WRITE_QUORUM=3, zero lag; RESP on 6380..6385, HTTP on 8100..8105, internal on 9100..9105),
# alternated twice. Needs redis-server and redis-benchmark (Debian: redis-server, redis-tools).
# Redis's SET does not wait for its replicas; semisync-kv's waits for 3 of its 5 followers.
#   scripts/redis-benchmark.sh            # N=50000 scripts/redis-benchmark.sh for a shorter run
set -u
cd "$(dirname "$0")/.."
cargo build --release --quiet
BIN=target/release/semisync-kv
N=${N:-200000}
redis_up() {
  for i in 0 1 2 3 4 5; do
    extra=(); [ "$i" = 0 ] || extra=(--replicaof 127.0.0.1 7000)
    redis-server --port 700$i --save '' --appendonly no --daemonize yes --dir /tmp --logfile /tmp/redis-700$i.log --dbfilename dump700$i.rdb "${extra[@]}" >/dev/null
  done
  for _ in $(seq 100); do [ "$(redis-cli -p 7000 info replication | grep -c 'state=online')" = 5 ] && break; sleep 0.1; done
}
redis_down() { for i in 0 1 2 3 4 5; do redis-cli -p 700$i shutdown nosave >/dev/null 2>&1; done; sleep 0.5; }
ours_up() {
  peers() { local j urls=(); for j in 0 1 2 3 4 5; do [ "$j" = "$1" ] || urls+=("http://127.0.0.1:910$j"); done; (IFS=,; echo "${urls[*]}"); }
  for i in 1 2 3 4 5; do
    RUST_LOG=warn $BIN serve --role follower --node-id follower$i --listen-addr 127.0.0.1:810$i \
      --internal-listen-addr 127.0.0.1:910$i --public-url http://127.0.0.1:810$i --resp-listen-addr 127.0.0.1:638$i \
      --peers "$(peers $i)" --leader-url http://127.0.0.1:8100 2>/dev/null &
    PIDS+=($!)
  done
  RUST_LOG=warn $BIN serve --role leader --node-id leader --listen-addr 127.0.0.1:8100 \
    --internal-listen-addr 127.0.0.1:9100 --public-url http://127.0.0.1:8100 --resp-listen-addr 127.0.0.1:6380 \
    --peers "$(peers 0)" --write-quorum 3 --min-delay-ms 0 --max-delay-ms 0 2>/dev/null &
  PIDS+=($!)
  for _ in $(seq 100); do [ "$(redis-cli -p 6380 info replication 2>/dev/null | grep -c 'state=online')" = 5 ] && break; sleep 0.1; done
}
PIDS=()
ours_down() { [ ${#PIDS[@]} = 0 ] || kill "${PIDS[@]}" 2>/dev/null; wait "${PIDS[@]}" 2>/dev/null; PIDS=(); }
# The final line of each test: "SET: 61519.54 requests per second, p50=0.679 msec".
summary() {
  redis-benchmark -p "$1" -t set,get -c 64 -n "$N" -P "$2" -q 2>/dev/null | tr '\r' '\n' \
    | grep -E '^(SET|GET): [0-9.]+ requests per second' | tr '\n' ' '
}
trap 'redis_down; ours_down' EXIT
for round in 1 2; do
  redis_up
  for P in 1 16; do echo "round $round Redis -P $P: $(summary 7000 "$P")"; done
  redis_down
  ours_up
  for P in 1 16; do echo "round $round semisync-kv -P $P: $(summary 6380 "$P")"; done
  ours_down
done
