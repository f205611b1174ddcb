//! Swarm test: the real `deploy/swarm-stack.yml` and the real image (built by the no-registry
//! path) on a one-node Docker swarm that the test creates, driven the way the classroom recipe
//! drives it: writes and reads over HTTP and over RESP (redis-cli), a follower scaled to 0 and
//! back (cases A and B), a follower's task killed (Swarm starts a new one, which the recovery
//! catches up), and a failover with the leader scaled to 0.
//!
//! It runs only on an engine that is in no swarm, and never touches one it did not create. It
//! removes the stack, the secret and the swarm, and the network the swarm made, when it ends,
//! whether it passed or failed. A swarm that a killed run left (marked with a node label when it
//! was made) it removes before it starts.

#[path = "../common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{eventually, runs, send, skip_without_tool};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The stack's name: its services are `semisync-test_leader`, `semisync-test_follower1`, ...
const STACK: &str = "semisync-test";
/// The secret the stack file names.
const SECRET: &str = "semisync_cluster_token";
/// The image the test builds and deploys, apart from the lab's `semisync-kv:latest`.
const IMAGE: &str = "semisync-kv:swarm-test";
/// The node label that marks a swarm as this test's own (`semisync-kv-test=swarm`).
const MARK: &str = "semisync-kv-test";
const LEADER: &str = "http://127.0.0.1:8000";
/// A short quorum timeout, so that case B answers quickly.
const REPLICATE_TIMEOUT_MS: u64 = 1500;
/// Time allowed for a task to start, or to be caught up.
const WITHIN: Duration = Duration::from_secs(60);

fn node_url(i: usize) -> String {
    format!("http://127.0.0.1:{}", 8000 + i)
}

/// The one-node swarm this test made, with the stack deployed on it. Dropping it removes the
/// stack, the secret, the swarm and the bridge network the swarm created.
struct Swarm {
    dir: PathBuf,
    /// Whether `docker_gwbridge` was there before the swarm (then it is left alone).
    had_gwbridge: bool,
}

impl Swarm {
    /// Checks the tools and that the engine is in no swarm, builds the image by the no-registry
    /// path and creates the swarm. `None` when the test is skipped.
    fn create() -> Option<Self> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let tools = || -> Result<(), String> {
            let state = output("docker", &["info", "--format", "{{.Swarm.LocalNodeState}}"])
                .map_err(|why| format!("no Docker engine answers ({why})"))?;
            if state.trim() == "active" && own_swarm_left_behind() {
                eprintln!("leaving the swarm an interrupted run of this test left behind");
                // Whether docker_gwbridge was there before that run is not known: it stays.
                drop(Self {
                    dir: dir.clone(),
                    had_gwbridge: true,
                });
            } else if state.trim() != "inactive" {
                return Err(format!(
                    "this Docker engine is in a swarm already ({}), which the test leaves alone",
                    state.trim()
                ));
            }
            runs("rustup", &["--version"])?;
            runs("musl-gcc", &["--version"])
        };
        if let Err(why) = tools() {
            skip_without_tool(
                "the swarm test",
                &why,
                "install Docker and start its engine outside any swarm, rustup, and musl-tools \
                 (Debian: apt-get install docker.io musl-tools)",
            );
            return None;
        }
        if let Some(port) = (8000..=8005)
            .chain(6380..=6385)
            .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_err())
        {
            panic!("port {port} on 127.0.0.1 is taken: stop what listens there (the lab cluster?)");
        }
        let had_gwbridge = output(
            "docker",
            &["network", "ls", "-q", "-f", "name=^docker_gwbridge$"],
        )
        .is_ok_and(|ids| !ids.trim().is_empty());
        docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
        // From here on, dropping it cleans up, also when what follows fails.
        let swarm = Self { dir, had_gwbridge };
        // The mark by which a later run knows this swarm as the test's own.
        let node = docker(&["info", "--format", "{{.Swarm.NodeID}}"]);
        docker(&[
            "node",
            "update",
            "--label-add",
            &format!("{MARK}=swarm"),
            node.trim(),
        ]);
        run_ok(Command::new(swarm.dir.join("scripts/build-static.sh")).current_dir(&swarm.dir));
        run_ok(
            Command::new("docker")
                .args(["build", "--target", "prebuilt", "-t", IMAGE, "."])
                .current_dir(&swarm.dir),
        );
        Some(swarm)
    }

    /// `docker stack deploy` of the repository's stack file, with the test's image and timeout.
    fn deploy(&self) -> Output {
        Command::new("docker")
            .args(["stack", "deploy", "-c", "deploy/swarm-stack.yml", STACK])
            .current_dir(&self.dir)
            .env("KV_IMAGE", IMAGE)
            .env("REPLICATE_TIMEOUT_MS", REPLICATE_TIMEOUT_MS.to_string())
            .env_remove("WRITE_QUORUM")
            .env_remove("MIN_DELAY_MS")
            .env_remove("MAX_DELAY_MS")
            .output()
            .expect("run docker stack deploy")
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let _ = output("docker", &["stack", "rm", STACK]);
        // The stack's containers and network go in the background; the swarm is left after.
        let gone = (0..60).any(|_| {
            let left = output(
                "docker",
                &[
                    "ps",
                    "-aq",
                    "--filter",
                    &format!("label=com.docker.stack.namespace={STACK}"),
                ],
            );
            let networks = output(
                "docker",
                &["network", "ls", "-q", "-f", &format!("name={STACK}_")],
            );
            if left.is_ok_and(|ids| ids.trim().is_empty())
                && networks.is_ok_and(|ids| ids.trim().is_empty())
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
            false
        });
        if !gone {
            eprintln!("the stack's containers or network did not go within 30 s");
        }
        let _ = output("docker", &["secret", "rm", SECRET]);
        if let Err(why) = output("docker", &["swarm", "leave", "--force"]) {
            eprintln!("could not leave the test's swarm: {why}");
        }
        // Its last endpoint goes a moment after the swarm.
        let removed = self.had_gwbridge
            || (0..20).any(|_| {
                let removed = output("docker", &["network", "rm", "docker_gwbridge"]).is_ok();
                if !removed {
                    std::thread::sleep(Duration::from_millis(500));
                }
                removed
            });
        if !removed {
            eprintln!("could not remove the network docker_gwbridge that the swarm made");
        }
        let image = output("docker", &["image", "ls", "-q", IMAGE]);
        if image.is_ok_and(|ids| !ids.trim().is_empty()) {
            if let Err(why) = output("docker", &["image", "rm", IMAGE]) {
                eprintln!("could not remove the test's image: {why}");
            }
        }
    }
}

/// Whether the engine's swarm is one this test made and did not remove (a run killed before its
/// clean-up): a single node that carries [`MARK`].
fn own_swarm_left_behind() -> bool {
    let nodes = output("docker", &["node", "ls", "-q"]).unwrap_or_default();
    let label = format!("{{{{index .Spec.Labels \"{MARK}\"}}}}");
    nodes.lines().count() == 1
        && output("docker", &["node", "inspect", "self", "--format", &label])
            .is_ok_and(|value| value.trim() == "swarm")
}

/// Runs `program args...`; its stdout when it exits 0, else why not.
fn output(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|err| format!("cannot run {program}: {err}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs a command, panics with its output unless it succeeds, returns its stdout.
fn run_ok(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{command:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn docker(args: &[&str]) -> String {
    run_ok(Command::new("docker").args(args))
}

/// The id of the running container of `service` (e.g. `follower1`), once there is one.
async fn container(service: &str) -> String {
    let filter = format!("label=com.docker.swarm.service.name={STACK}_{service}");
    eventually(WITHIN, || async {
        let ids = docker(&["ps", "-q", "--filter", &filter]);
        match ids.split_whitespace().collect::<Vec<_>>()[..] {
            [id] => Ok(id.to_owned()),
            ref ids => Err(format!("{service} runs {} containers", ids.len())),
        }
    })
    .await
    .expect("the service's task runs")
}

/// The JSON of `GET {base}{path}`, or why there is none (the node's task is not up yet).
async fn answer(http: &reqwest::Client, base: &str, path: &str) -> Result<Value, String> {
    let response = http
        .get(format!("{base}{path}"))
        .send()
        .await
        .map_err(|err| format!("{base} does not answer yet: {err}"))?;
    response.json().await.map_err(|err| err.to_string())
}

/// Polls until `service` (scaled to 0) runs no container.
async fn wait_gone(service: &str) {
    let filter = format!("label=com.docker.swarm.service.name={STACK}_{service}");
    eventually(WITHIN, || async {
        let ids = docker(&["ps", "-q", "--filter", &filter]);
        if ids.trim().is_empty() {
            Ok(())
        } else {
            Err(format!("{service} still runs {}", ids.trim()))
        }
    })
    .await
    .expect("the service's task stopped");
}

/// `docker service scale` of one of the stack's services, without waiting for it.
fn scale(service: &str, replicas: usize) {
    docker(&[
        "service",
        "scale",
        "--detach",
        &format!("{STACK}_{service}={replicas}"),
    ]);
}

/// Polls the leader at `leader` until its view of every follower in `nodes` is `state`, with
/// more than `transfers` state transfers when given.
async fn wait_state(
    http: &reqwest::Client,
    leader: &str,
    nodes: &[&str],
    state: &str,
    transfers: Option<u64>,
) {
    eventually(WITHIN, || async {
        for node in nodes {
            let f = common::follower_status(http, leader, node).await;
            let caught_up = transfers.is_none_or(|t| f["transfers"].as_u64() > Some(t));
            if f["state"] != state || !caught_up {
                return Err(format!("{node}: {f}"));
            }
        }
        Ok(())
    })
    .await
    .expect("followers as expected");
}

/// Polls until every node in `nodes` holds the same state as the leader at `leader`.
async fn converged(
    http: &reqwest::Client,
    leader: &str,
    nodes: &[usize],
) -> BTreeMap<String, String> {
    let nodes: Vec<(String, String)> = nodes.iter().map(|&i| (node_url(i), node_url(i))).collect();
    common::converged(http, leader, &nodes, WITHIN)
        .await
        .expect("every node converges on the leader's state")
}

async fn put(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    quorum: Option<usize>,
) -> (StatusCode, Value) {
    common::put(http, base, key, &format!("{key}-value"), quorum).await
}

#[tokio::test]
async fn the_stack_on_a_one_node_swarm() {
    let Some(swarm) = Swarm::create() else {
        return;
    };
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let followers = [
        "follower1",
        "follower2",
        "follower3",
        "follower4",
        "follower5",
    ];

    // The classroom's placement file pins each node to the machine labelled for it.
    let config = run_ok(
        Command::new("docker")
            .args(["stack", "config", "-c", "deploy/swarm-stack.yml"])
            .args(["-c", "deploy/swarm-placement.yml"])
            .current_dir(&swarm.dir),
    );
    for service in std::iter::once("leader").chain(followers) {
        let constraint = format!("node.labels.semisync == {service}");
        assert!(config.contains(&constraint), "{constraint}: {config}");
    }

    // Without its secret the stack does not deploy, and says which secret is missing.
    let refused = swarm.deploy();
    assert!(!refused.status.success(), "deployed without the secret");
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("secret not found") && why.contains(SECRET),
        "{why}"
    );
    let mut create = Command::new("docker")
        .args(["secret", "create", SECRET, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("docker secret create");
    std::io::Write::write_all(
        create.stdin.as_mut().expect("stdin"),
        b"swarm-test-cluster-token",
    )
    .expect("write the secret");
    assert!(create.wait().expect("docker secret create").success());
    let deployed = swarm.deploy();
    assert!(
        deployed.status.success(),
        "{}",
        String::from_utf8_lossy(&deployed.stderr)
    );

    // Writes, reads on every follower, convergence.
    eventually(WITHIN, || answer(&http, LEADER, "/health"))
        .await
        .expect("the leader's task answers");
    wait_state(&http, LEADER, &followers, "up", None).await;
    let (status, body) = put(&http, LEADER, "greeting", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let state = converged(&http, LEADER, &[1, 2, 3, 4, 5]).await;
    assert_eq!(state["greeting"], "greeting-value");
    for i in 1..=5 {
        let (status, read) = send(http.get(format!("{}/kv/greeting", node_url(i)))).await;
        assert_eq!(
            (status, &read["value"]),
            (StatusCode::OK, &json!("greeting-value"))
        );
    }

    // Redis's protocol on the published ports, as in compose: a SET on the leader (6380) and a
    // GET on follower3 (6383).
    match runs("redis-cli", &["--version"]) {
        Ok(()) => {
            let cli = |args: &[&str]| run_ok(Command::new("redis-cli").args(args));
            assert_eq!(cli(&["-p", "6380", "set", "swarm", "resp"]).trim(), "OK");
            eventually(WITHIN, || async {
                match cli(&["-p", "6383", "get", "swarm"]).trim() {
                    "resp" => Ok(()),
                    other => Err(other.to_owned()),
                }
            })
            .await
            .expect("follower3 serves the write over RESP");
        }
        Err(why) => skip_without_tool(
            "the swarm test's redis-cli lines",
            &why,
            "install redis-cli (Debian: apt-get install redis-tools)",
        ),
    }

    // Case A and B with follower5 scaled to 0: quorum 3 still reached, quorum 5 a 503; scaled
    // back, its new task is caught up by a state transfer.
    scale("follower5", 0);
    wait_state(&http, LEADER, &["follower5"], "down", None).await;
    let (status, body) = put(&http, LEADER, "case-a", Some(3)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = put(&http, LEADER, "case-b", Some(5)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        (body["acks"].clone(), body["timeout_ms"].clone()),
        (json!(4), json!(REPLICATE_TIMEOUT_MS))
    );
    let transfers = common::follower_status(&http, LEADER, "follower5").await["transfers"]
        .as_u64()
        .unwrap_or(0);
    scale("follower5", 1);
    wait_state(&http, LEADER, &["follower5"], "up", Some(transfers)).await;
    let state = converged(&http, LEADER, &[1, 2, 3, 4, 5]).await;
    assert!(state.contains_key("case-b"), "{state:?}");

    // A follower's task killed: Swarm starts a new one, which the recovery catches up.
    let transfers = common::follower_status(&http, LEADER, "follower3").await["transfers"]
        .as_u64()
        .unwrap_or(0);
    let killed = container("follower3").await;
    docker(&["kill", &killed]);
    let (status, body) = put(&http, LEADER, "while-down", Some(3)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_state(&http, LEADER, &["follower3"], "up", Some(transfers)).await;
    assert_ne!(container("follower3").await, killed, "a new task");
    converged(&http, LEADER, &[1, 2, 3, 4, 5]).await;

    // Failover: the leader scaled to 0, follower1 promoted from inside its container, a write
    // on it; the leader scaled back comes back as a follower of the new term.
    scale("leader", 0);
    wait_gone("leader").await;
    let promoted = run_ok(Command::new("docker").args([
        "exec",
        &container("follower1").await,
        "/semisync-kv",
        "failover",
    ]));
    assert!(
        promoted.contains("follower1 is the leader of term") && promoted.contains("merged 5 of 5"),
        "{promoted}"
    );
    let new_leader = node_url(1);
    let (status, body) = put(&http, &new_leader, "after", Some(3)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    scale("leader", 1);
    eventually(WITHIN, || async {
        let health = answer(&http, LEADER, "/health").await?;
        if health["role"] == "follower" && health["leader"] == "http://localhost:8001/" {
            Ok(())
        } else {
            Err(format!("the old leader: {health}"))
        }
    })
    .await
    .expect("the old leader follows the new one");
    let state = converged(&http, &new_leader, &[0, 2, 3, 4, 5]).await;
    for key in ["greeting", "case-a", "case-b", "while-down", "after"] {
        assert!(state.contains_key(key), "{key}: {state:?}");
    }
    drop(swarm);
}
