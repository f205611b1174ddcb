//! How long automatic failover takes on a local cluster: from the leader's `SIGKILL` to the first
//! write acknowledged by the elected leader, measured from the client's side.
//!
//! A leader and five followers run as processes on loopback with `AUTO_FAILOVER=true`,
//! the default `FAILOVER_AFTER_MS` (1500) and the lab's quorum 3 with a 0..20 ms lag. In
//! each round a client writes to the leader, the leader is killed, and the client writes to
//! every node in turn (a follower answers 421 until one leads) until a write is answered 200;
//! the killed node is restarted (as a follower) before the next round. Prints each round, then
//! the median and the largest time.
//!
//! ```text
//! cargo build --release && cargo run --release --example failover_time -- 20 target/release/semisync-kv
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use semisync_kv::local::{LocalCluster, LocalNode, LocalSettings};
use semisync_kv::settings::Settings;

#[tokio::main]
async fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(20);
    let binary = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "target/release/semisync-kv".into()),
    );
    let settings = LocalSettings {
        settings: Settings {
            max_delay_ms: 20,
            auto_failover: true,
            ..Settings::DEFAULT
        },
        log_filter: "warn".into(),
        ..LocalSettings::default()
    };
    let cluster = LocalCluster::start(&binary, &settings)
        .map_err(|err| format!("cannot start the cluster: {err}"))?;
    let mut nodes: Vec<LocalNode> = std::iter::once(cluster.leader)
        .chain(cluster.followers)
        .collect();
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|err| err.to_string())?;
    let put = async |url: &str, key: &str| -> bool {
        let request = http
            .put(format!("{url}/kv/{key}"))
            .json(&serde_json::json!({ "value": key }));
        matches!(request.send().await, Ok(response) if response.status().is_success())
    };

    let mut times = Vec::new();
    for round in 0..rounds {
        // The leader now, once every node is up and one leads with its followers caught up.
        let leader = loop {
            let mut found = None;
            for (i, node) in nodes.iter().enumerate() {
                if put(&node.url(), &format!("warm-{round}-{i}")).await {
                    found = Some(i);
                    break;
                }
            }
            if let Some(i) = found {
                break i;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // Let the restarted node of the last round catch up, as a steady cluster would have.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let killed = Instant::now();
        nodes[leader].kill();
        let mut attempt = 0;
        let took = loop {
            attempt += 1;
            let node = &nodes[attempt % nodes.len()];
            if node.is_running() && put(&node.url(), &format!("after-{round}")).await {
                break killed.elapsed();
            }
            if killed.elapsed() > Duration::from_secs(60) {
                return Err(format!("round {round}: no leader 60 s after the kill"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        println!(
            "round {round}: {} killed, first acknowledged write {:.0} ms later",
            nodes[leader].id,
            took.as_secs_f64() * 1000.0
        );
        times.push(took);
        nodes[leader]
            .restart()
            .map_err(|err| format!("cannot restart {}: {err}", nodes[leader].id))?;
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "FAILOVER_AFTER_MS=1500 (the default): {} rounds, median {:.0} ms, max {:.0} ms, min {:.0} ms",
        times.len(),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        ms(times[0])
    );
    Ok(())
}
