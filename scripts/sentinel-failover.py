#!/usr/bin/env python3
"""How long Redis Sentinel takes to fail over, measured as examples/failover_time.rs measures
semisync-kv: from the primary's SIGKILL to the first write the new primary acknowledges.

Each round starts, on loopback, a primary and five replicas (redis-server) and three Sentinels
(redis-sentinel, quorum 2) with `down-after-milliseconds` as given (default 1500, semisync-kv's
FAILOVER_AFTER_MS) and `failover-timeout` 10000; waits until every Sentinel sees the five
replicas and the two other Sentinels; kills the primary; then asks a Sentinel for the primary's
address every 10 ms, and once it names another one, sends `SET` and `WAIT 3 1000` there until
`SET` answers OK (first figure) and `WAIT` counts 3 replicas (second figure: semisync-kv's
quorum-3 writes wait for three followers). Needs redis-server, redis-sentinel and redis-cli
(Debian: apt-get install redis-server redis-sentinel).

    python3 scripts/sentinel-failover.py 20 1500
"""

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

PRIMARY = 7379
REPLICAS = range(7380, 7385)
SENTINELS = range(27379, 27382)


def cli(port, *args, timeout=2.0):
    """One redis-cli command; its stripped output, or None when it failed."""
    try:
        out = subprocess.run(
            ["redis-cli", "-p", str(port), *args],
            capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def start(directory, name, args, sentinel=False):
    path = os.path.join(directory, f"{name}.conf")
    with open(path, "w") as conf:
        conf.write("\n".join(args) + "\n")
    command = ["redis-sentinel" if sentinel else "redis-server", path]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def until(check, within, what):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def round_once(down_after_ms):
    processes = []
    with tempfile.TemporaryDirectory() as directory:
        try:
            common = ["save ''", "appendonly no", "bind 127.0.0.1", f"dir {directory}"]
            processes.append(start(directory, "primary", [f"port {PRIMARY}", *common]))
            for port in REPLICAS:
                processes.append(start(directory, f"r{port}", [
                    f"port {port}", *common, f"replicaof 127.0.0.1 {PRIMARY}",
                ]))
            until(lambda: cli(PRIMARY, "ping") == "PONG", 10, "the primary")
            for port in SENTINELS:
                processes.append(start(directory, f"s{port}", [
                    f"port {port}", "bind 127.0.0.1", f"dir {directory}",
                    f"sentinel monitor m 127.0.0.1 {PRIMARY} 2",
                    f"sentinel down-after-milliseconds m {down_after_ms}",
                    "sentinel failover-timeout m 10000",
                    "sentinel parallel-syncs m 5",
                ], sentinel=True))

            def ready():
                for port in SENTINELS:
                    info = cli(port, "sentinel", "master", "m") or ""
                    fields = info.split("\n")
                    values = dict(zip(fields[0::2], fields[1::2]))
                    if values.get("num-slaves") != "5" or values.get("num-other-sentinels") != "2":
                        return False
                return True

            until(ready, 60, "the Sentinels to see every replica and each other")
            # The primary's process is the first one started.
            killed = time.monotonic()
            processes[0].send_signal(signal.SIGKILL)
            processes[0].wait()
            first_set = first_wait = None
            while time.monotonic() - killed < 60 and first_wait is None:
                address = (cli(SENTINELS[0], "sentinel", "get-master-addr-by-name", "m") or "").split()
                if len(address) == 2 and address[1] != str(PRIMARY):
                    port = int(address[1])
                    if cli(port, "set", "k", "v", timeout=1) == "OK":
                        first_set = first_set or time.monotonic() - killed
                        acks = cli(port, "wait", "3", "1000", timeout=2)
                        if acks is not None and acks.isdigit() and int(acks) >= 3:
                            first_wait = time.monotonic() - killed
                time.sleep(0.01)
            return first_set, first_wait
        finally:
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGKILL)
                    process.wait()


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    down_after_ms = int(sys.argv[2]) if len(sys.argv) > 2 else 1500
    sets, waits = [], []
    for n in range(rounds):
        first_set, first_wait = round_once(down_after_ms)
        line = lambda t: "none within 60 s" if t is None else f"{t * 1000:.0f} ms"
        print(f"round {n}: first SET {line(first_set)}, first SET + WAIT 3 {line(first_wait)}",
              flush=True)
        if first_set is not None:
            sets.append(first_set * 1000)
        if first_wait is not None:
            waits.append(first_wait * 1000)
    for name, times in [("SET", sets), ("SET + WAIT 3", waits)]:
        if times:
            print(f"down-after-milliseconds={down_after_ms}, {name}: {len(times)} of {rounds} rounds, "
                  f"median {statistics.median(times):.0f} ms, max {max(times):.0f} ms, "
                  f"min {min(times):.0f} ms")


if __name__ == "__main__":
    main()
