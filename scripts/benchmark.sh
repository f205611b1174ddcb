#!/usr/bin/env bash
# Runs the lab's benchmark against the cluster on localhost (docker compose up -d first) and
# writes artifacts/benchmark_results.json and artifacts/quorum_latency.png.
#   scripts/benchmark.sh                      # the lab's defaults: 100 writes, 10 in flight, quorums 1..5
#   scripts/benchmark.sh --local              # a local cluster of its own, lag 0..1000 ms, no Docker
#   scripts/benchmark.sh --local --throughput # also writes/s against concurrency (artifacts/throughput.png)
# Any other `semisync-kv bench` flag works too: scripts/benchmark.sh --help
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --quiet -- bench "$@"
