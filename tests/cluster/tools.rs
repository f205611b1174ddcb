//! The command-line client and the benchmark, run as a user runs them.

use std::time::Duration;

use reqwest::StatusCode;
use semisync_kv::local::LocalSettings;
use semisync_kv::settings::Settings;
use serde_json::json;

use crate::helpers::{TestCluster, base, semisync_kv, settings};

/// The command-line client: no JSON quoting, clear output, exit codes scripts can use.
#[tokio::test]
async fn command_line_client() {
    let cluster = TestCluster::start_up(settings()).await;
    let leader = cluster.leader.url();
    let follower = cluster.followers[0].url();

    let (code, out, err) = semisync_kv(&["put", "greeting", "hello world", "--leader", &leader]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with(r#"OK greeting = "hello world" (version 1.1; 3 of 3 acks"#),
        "{out}"
    );

    let (code, out, _) = semisync_kv(&[
        "put", "a/b", "x", "--quorum", "5", "--leader", &leader, "--json",
    ]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON output");
    assert_eq!(
        (json["key"].clone(), json["acks"].clone()),
        (json!("a/b"), json!(5))
    );

    let (code, out, _) = semisync_kv(&["get", "greeting", "--node", &follower]);
    assert_eq!(
        (code, out.trim()),
        (0, r#"greeting = "hello world" (version 1.1)"#)
    );
    let (code, out, _) = semisync_kv(&["get", "a/b", "--node", &follower]);
    assert_eq!(
        (code, out.trim()),
        (0, r#"a/b = "x" (version 1.2)"#),
        "slashes survive the URL"
    );

    let (code, _, err) = semisync_kv(&["get", "nope", "--node", &leader]);
    assert_eq!(code, 1, "an error answer exits 1");
    assert!(err.contains("not_found"), "{err}");
    // Read-your-writes: a follower answers version 1.2 of a/b, and fails for a version no write
    // has reached yet, after waiting for it.
    let (code, out, _) = semisync_kv(&["get", "a/b", "--min-version", "1.2", "--node", &follower]);
    assert_eq!((code, out.trim()), (0, r#"a/b = "x" (version 1.2)"#));
    let (code, _, err) = semisync_kv(&["get", "a/b", "--min-version", "1.99", "--node", &follower]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("not_yet_replicated") && err.contains("holds version 1.2"),
        "{err}"
    );
    // A follower named as the leader answers 421 with the leader's URL: the write goes there.
    let (code, out, err) = semisync_kv(&["put", "k", "v", "--leader", &follower]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with(r#"OK k = "v" (version 1.3;"#), "{out}");
    assert!(
        err.contains(&format!(
            "does not lead; the command went to the leader, {leader}/"
        )),
        "{err}"
    );
    let (code, out, _) = semisync_kv(&["status", "--leader", &follower]);
    assert_eq!(code, 0);
    assert!(out.starts_with("leader leader"), "{out}");
    let (code, _, err) = semisync_kv(&["get", "k", "--node", "http://127.0.0.1:1"]);
    assert_eq!(code, 3, "an unreachable node exits 3: {err}");
    let (code, _, err) = semisync_kv(&["put", "k"]);
    assert_eq!(code, 2, "bad usage exits 2: {err}");

    let (code, out, _) = semisync_kv(&["delete", "greeting", "--leader", &leader]);
    assert_eq!(code, 0);
    assert!(out.starts_with("OK deleted greeting (version 1.4"), "{out}");
    let (code, out, _) = semisync_kv(&["dump", "--node", &leader]);
    assert_eq!((code, out.trim()), (0, "a/b = \"x\"\nk = \"v\""));
    let (_, out, _) = semisync_kv(&["dump", "--node", &leader, "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).expect("JSON"),
        json!({"a/b": "x", "k": "v"})
    );

    cluster.wait_follower(4, "up", Duration::from_secs(5)).await;
    let (code, out, _) = semisync_kv(&["status", "--leader", &leader]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("leader leader (term 1): version 1.4, 2 keys, write quorum 3"),
        "{out}"
    );
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("FOLLOWER")),
        "{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("follower")).count(),
        5,
        "{out}"
    );

    let (code, out, _) = semisync_kv(&["health", "--url", &follower]);
    assert_eq!(
        (code, out.trim()),
        (0, "ok: follower follower1 at version 1.4")
    );
    let (code, _, _) = semisync_kv(&["health", "--url", "http://127.0.0.1:1"]);
    assert_ne!(code, 0);
}

/// The benchmark against a local cluster of its own writes a JSON file with every field and
/// PNG charts of the stated size. (Its figures are measurements, not asserted.)
#[tokio::test]
async fn benchmark_writes_results_and_charts() {
    let out_dir = std::env::temp_dir().join(format!("semisync-bench-test-{}", std::process::id()));
    let out = out_dir.to_str().expect("UTF-8 path");
    let (code, stdout, stderr) = semisync_kv(&[
        "bench",
        "--local",
        "--writes",
        "12",
        "--concurrency",
        "3",
        "--quorums",
        "1,3,5",
        "--max-delay-ms",
        "50",
        "--settle-ms",
        "1000",
        "--stale-writes",
        "6",
        "--throughput",
        "--throughput-seconds",
        "0.5",
        "--throughput-concurrency",
        "1,2",
        "--throughput-quorums",
        "1,2",
        "--out-dir",
        out,
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("theory ms"), "a table at the end: {stdout}");

    let text = std::fs::read_to_string(out_dir.join("benchmark_results.json")).expect("JSON file");
    let results: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let config = &results["config"];
    for field in [
        "min_delay_ms",
        "max_delay_ms",
        "replicate_timeout_ms",
        "writes",
        "concurrency",
    ] {
        assert!(config[field].is_u64(), "config.{field}: {config}");
    }
    assert_eq!(config["followers"].as_array().map(Vec::len), Some(5));
    assert_eq!(config["max_delay_ms"], 50);
    let quorums = results["quorums"].as_array().expect("quorums");
    assert_eq!(
        quorums
            .iter()
            .map(|q| q["quorum"].as_u64())
            .collect::<Vec<_>>(),
        [Some(1), Some(3), Some(5)]
    );
    for q in quorums {
        assert_eq!(q["sent"], 12, "{q}");
        assert_eq!(
            q["succeeded"]
                .as_u64()
                .zip(q["failed"].as_u64())
                .map(|(s, f)| s + f),
            Some(12)
        );
        for stat in ["mean", "p50", "p90", "p99", "max"] {
            assert!(q["latency_ms"][stat].is_number(), "latency_ms.{stat}: {q}");
        }
        let k = q["quorum"].as_f64().expect("quorum");
        assert_eq!(q["theoretical_mean_ms"].as_f64(), Some(k * 50.0 / 6.0));
        assert!(q["immediate_mismatching_followers"].is_u64(), "{q}");
        // Over the ideal: the leader's clock runs inside the client's exchange, so its share
        // of the overhead is at most the whole.
        let overhead = &q["overhead_ms"];
        let (whole, leader) = (overhead["mean"].as_f64(), overhead["leader_mean"].as_f64());
        assert!(
            matches!((whole, leader), (Some(whole), Some(leader)) if leader <= whole),
            "the leader's share of the overhead: {q}"
        );
        assert_eq!(
            q["settled_mismatching_followers"], 0,
            "replicas converged after settling: {q}"
        );
    }
    let runs = results["throughput"]["runs"]
        .as_array()
        .expect("throughput runs");
    assert_eq!(runs.len(), 4);
    for run in runs {
        assert!(
            run["writes_per_sec"].is_number() && run["latency_ms"]["p99"].is_number(),
            "{run}"
        );
    }

    // The stale-read lesson: both wait points, each quorum, without and with min_version; a
    // read with min_version is never stale.
    let stale = &results["stale_reads"];
    assert_eq!(stale["followers"], 5, "{stale}");
    let passes = stale["passes"].as_array().expect("stale-read passes");
    assert_eq!(passes.len(), 2 * 3 * 2, "{stale}");
    for pass in passes {
        let count = |field: &str| {
            pass[field]
                .as_u64()
                .unwrap_or_else(|| panic!("{field}: {pass}"))
        };
        assert_eq!(count("writes") + count("failed_writes"), 6, "{pass}");
        assert!(count("leader_showed_in_flight") <= count("leader_reads_in_flight"));
        if pass["min_version"] == true {
            assert_eq!(
                count("stale"),
                0,
                "read-your-writes with min_version: {pass}"
            );
        }
    }
    let wait_points: std::collections::BTreeSet<&str> = passes
        .iter()
        .filter_map(|p| p["wait_point"].as_str())
        .collect();
    assert_eq!(wait_points, ["after_commit", "after_sync"].into());
    assert!(stdout.contains("stale plain"), "{stdout}");

    for chart in ["quorum_latency.png", "throughput.png", "stale_reads.png"] {
        let file = std::fs::File::open(out_dir.join(chart)).expect("chart file");
        let mut decoder = png::Decoder::new(std::io::BufReader::new(file))
            .read_info()
            .expect("a PNG");
        let mut pixels = vec![0; decoder.output_buffer_size().expect("size")];
        let frame = decoder.next_frame(&mut pixels).expect("decodes");
        assert_eq!((frame.width, frame.height), (1600, 1000), "{chart}");
    }
    std::fs::remove_dir_all(&out_dir).expect("clean up");
}

/// Cutting a follower off from the CLI: the leader sees it down, writes that need it time out,
/// it misses writes, and once restored it catches up by itself. Settings change live.
#[tokio::test]
async fn a_follower_cut_off_from_the_cli_misses_writes_and_catches_up_when_restored() {
    let cluster = TestCluster::start_up(LocalSettings {
        settings: Settings {
            replicate_timeout_ms: 5000,
            ..base()
        },
        ..settings()
    })
    .await;
    let leader = cluster.leader.url();

    let (code, out, err) = semisync_kv(&[
        "settings",
        "--leader",
        &leader,
        "--write-quorum",
        "5",
        "--replicate-timeout-ms",
        "2000",
        "--wait-point",
        "after_sync",
        "--auto-failover",
        "on",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.trim(),
        "write quorum 5, lag 0..20 ms, timeout 2000 ms, wait point after_sync, automatic \
         failover on"
    );
    let (code, _, err) = semisync_kv(&["settings", "--leader", &leader, "--wait-point", "later"]);
    assert_eq!(code, 2, "clap refuses an unknown wait point: {err}");
    let (code, out, err) = semisync_kv(&["put", "synced", "1", "--leader", &leader]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("after_sync: visible on the leader"), "{out}");
    let (code, _, err) = semisync_kv(&["settings", "--leader", &leader, "--min-delay-ms", "99"]);
    assert_eq!(code, 1, "min above max is refused");
    assert!(err.contains("invalid_settings"), "{err}");

    let (code, out, err) = semisync_kv(&["cut", "follower2", "--leader", &leader]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("follower2 cut off"), "{out}");
    let follower = cluster
        .wait_follower(1, "down", Duration::from_secs(5))
        .await;
    assert_eq!(follower["cut_off"], true);
    let (_, out, _) = semisync_kv(&["status", "--leader", &leader]);
    assert!(out.contains("cut_off"), "{out}");

    // The new default quorum (5) cannot be reached without follower2: 503 after 2 s.
    let (status, body) = cluster.put("missed", "1", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        (&body["quorum"], &body["timeout_ms"]),
        (&json!(5), &json!(2000))
    );
    let acked_by = body["acked_by"].as_array().expect("list");
    assert!(!acked_by.contains(&json!("follower2")), "{body}");
    let (status, body) = cluster.put("also-missed", "2", Some(4)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let cut = cluster.followers[1].url();
    let dump = cluster
        .dump(&cut)
        .await
        .expect("follower2 still answers clients");
    assert!(!dump.contains_key("missed"), "{dump:?}");

    let (code, out, err) = semisync_kv(&["restore", "follower2", "--leader", &leader]);
    assert_eq!(code, 0, "{out}{err}");
    cluster
        .wait_follower(1, "up", Duration::from_secs(10))
        .await;
    let state = cluster
        .converged(Duration::from_secs(15))
        .await
        .expect("follower2 catches up");
    assert_eq!(state.len(), 3, "synced, missed and also-missed: {state:?}");
}

/// `semisync-kv simulate`: a seed replays its run (same schedule, same history, same digest)
/// from a separate process, and a range of seeds ends with a summary and exit code 0.
#[test]
fn the_simulator_replays_a_seed_and_runs_a_range() {
    let (code, first, err) = semisync_kv(&["simulate", "--seed", "7"]);
    assert_eq!(code, 0, "{first}{err}");
    assert!(first.contains("schedule of seed 7:"), "{first}");
    assert!(first.contains("seed 7: passed ("), "{first}");
    let (_, again, _) = semisync_kv(&["simulate", "--seed", "7"]);
    assert_eq!(
        first, again,
        "the same seed ran differently in another process"
    );

    let (code, out, err) = semisync_kv(&["simulate", "--seeds", "20", "--seed", "100"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("20 seeds (100..120) on ") && out.contains(": 0 failed;"),
        "{out}"
    );
}
