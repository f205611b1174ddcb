//! Compose tests: the real `docker-compose.yml` and the real image (built by the no-registry path)
//! against this machine's Docker engine, driven the way the lab drives it: `docker stop`,
//! `docker start`, and the leader recreated with another `WRITE_QUORUM`.
//!
//! The scenarios share one stack and run in order inside one test. The stack is torn down
//! (`down -v`) when the test ends, whether it passed or failed.

#[path = "../common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use common::{eventually, runs, send, skip_without_tool};
use reqwest::StatusCode;
use serde_json::json;
use tokio::time::Instant;

/// The compose project the test runs under; the containers keep their lab names (kv-leader, ...).
const PROJECT: &str = "semisync-kv-test";
const LEADER: &str = "http://127.0.0.1:8000";
const CONTAINERS: [&str; 6] = [
    "kv-leader",
    "kv-follower1",
    "kv-follower2",
    "kv-follower3",
    "kv-follower4",
    "kv-follower5",
];
/// Lag settings that keep the test quick; the lab's defaults are 0..1000 ms and 5000 ms.
const MAX_DELAY_MS: u64 = 200;
const REPLICATE_TIMEOUT_MS: u64 = 1500;
/// Time allowed for containers to become healthy.
const HEALTHY_WITHIN: Duration = Duration::from_secs(60);

fn follower_url(i: usize) -> String {
    format!("http://127.0.0.1:{}", 8000 + i)
}

/// Settle time for convergence: the largest lag plus a margin.
fn settle() -> Duration {
    Duration::from_millis(MAX_DELAY_MS) + Duration::from_secs(5)
}

/// The compose stack of this repository, under [`PROJECT`]. Dropping it runs `down -v`.
struct Stack {
    compose: Vec<String>,
    dir: PathBuf,
}

impl Stack {
    /// Checks the tools, builds the image by the no-registry path, and starts the six
    /// containers. `None` when a tool is missing and the test is skipped.
    fn up() -> Option<Self> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let tools = || -> Result<Vec<String>, String> {
            runs("docker", &["info", "--format", "{{.ServerVersion}}"])
                .map_err(|why| format!("no Docker engine answers ({why})"))?;
            let compose = compose_command()?;
            runs("rustup", &["--version"])?;
            runs("musl-gcc", &["--version"])?;
            Ok(compose)
        };
        let compose = match tools() {
            Ok(compose) => compose,
            Err(why) => {
                skip_without_tool(
                    "the compose tests",
                    &why,
                    "install Docker with Compose and start its engine, rustup, and musl-tools \
                     (Debian: apt-get install docker.io docker-compose musl-tools)",
                );
                return None;
            }
        };
        // From here on, dropping it runs `down -v` on the test's own project, never another.
        let stack = Stack { compose, dir };
        // A run killed before its clean-up leaves this project's containers behind, running or
        // stopped (an engine outlives the processes that used it). They are the test's own.
        let filter = format!("label=com.docker.compose.project={PROJECT}");
        if !docker(&["ps", "-aq", "--filter", &filter])
            .trim()
            .is_empty()
        {
            eprintln!("removing the containers an interrupted run of this test left behind");
            run_ok(&mut stack.command(&["down", "-v", "--remove-orphans", "-t", "2"]));
        }
        if let Some(port) = (8000..=8005)
            .chain(6380..=6385)
            .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_err())
        {
            panic!(
                "port {port} on 127.0.0.1 is taken: stop what listens there (the lab cluster? `docker compose down`)"
            );
        }
        let existing = docker(&["ps", "-aq", "--filter", "name=^kv-"]);
        assert!(
            existing.trim().is_empty(),
            "containers named kv-* already exist (is the lab cluster running? `docker compose down`)"
        );

        run_ok(Command::new(stack.dir.join("scripts/build-static.sh")).current_dir(&stack.dir));
        run_ok(&mut stack.command(&["build"]));
        run_ok(&mut stack.command(&["up", "-d"]));
        Some(stack)
    }

    /// `docker compose -p PROJECT ARGS...` in the repository, with the no-registry image path
    /// and the test's lag settings in the environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.compose[0]);
        command
            .args(&self.compose[1..])
            .args(["-p", PROJECT])
            .args(args)
            .current_dir(&self.dir)
            .env("KV_IMAGE_TARGET", "prebuilt")
            .env("MAX_DELAY_MS", MAX_DELAY_MS.to_string())
            .env("REPLICATE_TIMEOUT_MS", REPLICATE_TIMEOUT_MS.to_string())
            .env("CLUSTER_TOKEN", "compose-test-token")
            .env_remove("WRITE_QUORUM")
            .env_remove("MIN_DELAY_MS");
        command
    }

    /// The lab's `WRITE_QUORUM=N docker compose up -d --no-deps --force-recreate leader`.
    async fn recreate_leader(&self, write_quorum: usize) {
        let mut command = self.command(&["up", "-d", "--no-deps", "--force-recreate", "leader"]);
        run_ok(command.env("WRITE_QUORUM", write_quorum.to_string()));
        wait_healthy(&["kv-leader"]).await;
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let out = self
            .command(&["down", "-v", "--remove-orphans", "-t", "2"])
            .output();
        if !out.as_ref().is_ok_and(|out| out.status.success()) {
            eprintln!("compose down failed: {out:?}");
        }
    }
}

/// `docker compose` where the plugin exists, else the older `docker-compose`, else why neither.
fn compose_command() -> Result<Vec<String>, String> {
    if runs("docker", &["compose", "version"]).is_ok() {
        Ok(vec!["docker".into(), "compose".into()])
    } else {
        runs("docker-compose", &["version"])
            .map(|()| vec!["docker-compose".into()])
            .map_err(|why| format!("neither `docker compose` nor `docker-compose` runs ({why})"))
    }
}

/// Runs a command, panics with its output unless it succeeds, returns its stdout.
fn run_ok(command: &mut Command) -> String {
    let Output {
        status,
        stdout,
        stderr,
    } = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    assert!(
        status.success(),
        "{command:?} failed: {status}\n{stdout}\n{}",
        String::from_utf8_lossy(&stderr)
    );
    stdout
}

fn docker(args: &[&str]) -> String {
    run_ok(Command::new("docker").args(args))
}

/// Polls until every container in `names` reports healthy.
async fn wait_healthy(names: &[&str]) {
    eventually(HEALTHY_WITHIN, || async {
        for name in names {
            let health = docker(&["inspect", "-f", "{{.State.Health.Status}}", name]);
            if health.trim() != "healthy" {
                return Err(format!("{name} is {}", health.trim()));
            }
        }
        Ok(())
    })
    .await
    .expect("containers healthy");
}

/// Polls until every follower's `/dump` equals the leader's.
async fn converged(http: &reqwest::Client) -> BTreeMap<String, String> {
    let followers: Vec<String> = (1..=5).map(follower_url).collect();
    converged_on(http, LEADER, &followers).await
}

/// Polls until the `/dump` of every node in `nodes` equals that of the leader at `leader`.
async fn converged_on(
    http: &reqwest::Client,
    leader: &str,
    nodes: &[String],
) -> BTreeMap<String, String> {
    let nodes: Vec<(String, String)> = nodes.iter().map(|url| (url.clone(), url.clone())).collect();
    common::converged(http, leader, &nodes, settle())
        .await
        .expect("every node converges on the leader's state")
}

/// The leader's view of the follower `node_id`.
async fn follower(http: &reqwest::Client, node_id: &str) -> serde_json::Value {
    common::follower_status(http, LEADER, node_id).await
}

/// Polls the leader's `/cluster` until the follower `node_id` is `up` after more than
/// `transfers` state transfers: it was caught up since the moment `transfers` was read.
async fn wait_caught_up(http: &reqwest::Client, node_id: &str, transfers: u64) {
    eventually(settle(), || async {
        let f = follower(http, node_id).await;
        if f["state"] == "up" && f["transfers"].as_u64() > Some(transfers) {
            Ok(())
        } else {
            Err(format!(
                "{node_id} not caught up since {transfers} transfers: {f}"
            ))
        }
    })
    .await
    .expect("follower caught up");
}

/// The number of state transfers the leader has sent to `node_id`.
async fn transfers(http: &reqwest::Client, node_id: &str) -> u64 {
    follower(http, node_id).await["transfers"]
        .as_u64()
        .unwrap_or(0)
}

async fn put(http: &reqwest::Client, key: &str, value: &str) -> (StatusCode, serde_json::Value) {
    common::put(http, LEADER, key, value, None).await
}

#[tokio::test]
async fn lab_scenarios_against_the_compose_cluster() {
    let Some(stack) = Stack::up() else { return };
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");

    // All six containers become healthy.
    wait_healthy(&CONTAINERS).await;

    // Only the public API is published; the internal listener (replication) is not.
    for name in CONTAINERS {
        let ports = docker(&["port", name]);
        assert!(
            ports.contains("8000/tcp") && !ports.contains("9000"),
            "{name}: {ports}"
        );
    }

    // The leader serves the dashboard through the published port; a follower sends you to it.
    let page = http
        .get(format!("{LEADER}/"))
        .send()
        .await
        .expect("dashboard");
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let (status, _) = send(http.get(format!("{}/", follower_url(1)))).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);

    // A write on the leader is readable on every follower.
    let (status, body) = put(&http, "greeting", "hello").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["quorum"], 3);
    for i in 1..=5 {
        eventually(settle(), || async {
            let (status, body) = send(http.get(format!("{}/kv/greeting", follower_url(i)))).await;
            if body["value"] == "hello" {
                Ok(())
            } else {
                Err(format!("follower{i}: {status} {body}"))
            }
        })
        .await
        .expect("replicated to every follower");
    }

    // Redis's protocol on the published ports, as the README shows it: a SET on the leader
    // (6380), answered once the quorum has it, and a GET on follower3 (6383).
    match runs("redis-cli", &["--version"]) {
        Ok(()) => {
            let cli = |args: &[&str]| run_ok(Command::new("redis-cli").args(args));
            assert_eq!(cli(&["-p", "6380", "set", "color", "blue"]).trim(), "OK");
            eventually(settle(), || async {
                match cli(&["-p", "6383", "get", "color"]).trim() {
                    "blue" => Ok(()),
                    other => Err(other.to_owned()),
                }
            })
            .await
            .expect("follower3 serves the write over RESP");
            // The README's line: READONLY names the leader's published RESP address.
            let refused = cli(&["-p", "6383", "set", "color", "red"]);
            assert!(
                refused.starts_with("READONLY")
                    && refused.contains("The leader is at 127.0.0.1:6380 (HTTP: "),
                "{refused}"
            );
            let (_, body) = send(http.get(format!("{LEADER}/kv/color"))).await;
            assert_eq!(body["value"], "blue", "the same store over HTTP");
            let (status, _) = send(http.delete(format!("{LEADER}/kv/color"))).await;
            assert_eq!(status, StatusCode::OK);
        }
        Err(why) => skip_without_tool(
            "the compose test's redis-cli lines",
            &why,
            "install redis-cli (Debian: apt-get install redis-tools)",
        ),
    }

    // A write to a follower is refused and changes nothing.
    let (status, body) = send(
        http.put(format!("{}/kv/greeting", follower_url(2)))
            .json(&json!({"value": "evil"})),
    )
    .await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{body}");
    assert_eq!(body["error"], "not_leader");
    assert_eq!(body["leader"], "http://localhost:8000/");

    // More writes; every follower's /dump equals the leader's after the settle time.
    for i in 0..20 {
        let (status, body) = put(&http, &format!("k{}", i % 5), &format!("v{i}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let state = converged(&http).await;
    assert_eq!(state.len(), 6);

    // Case A: one follower stopped, leader recreated with WRITE_QUORUM=3: writes succeed.
    docker(&["stop", "kv-follower5"]);
    stack.recreate_leader(3).await;
    let (status, body) = put(&http, "case", "A").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["quorum"], 3);

    // Case B: WRITE_QUORUM=5 with one follower stopped: 503 after the timeout, 4 acks.
    stack.recreate_leader(5).await;
    let (status, body) = put(&http, "case", "B").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "quorum_timeout");
    assert_eq!(
        (body["quorum"].clone(), body["acks"].clone()),
        (json!(5), json!(4)),
        "{body}"
    );

    // The follower back: it comes back empty, the leader catches it up, and a quorum-5 write
    // succeeds again.
    let before = transfers(&http, "follower5").await;
    docker(&["start", "kv-follower5"]);
    wait_healthy(&["kv-follower5"]).await;
    wait_caught_up(&http, "follower5", before).await;
    let (status, body) = put(&http, "case", "B again").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["acks"], 5);

    // Recreating the leader kept the data written before, and versions went on growing.
    let (status, body) = send(http.get(format!("{LEADER}/kv/greeting"))).await;
    assert_eq!(
        (status, body["value"].clone()),
        (StatusCode::OK, json!("hello"))
    );
    let state = converged(&http).await;
    assert_eq!(state.len(), 7, "{state:?}");
    assert_eq!(state["case"], "B again");

    // `docker restart` of a follower: it converges by itself. (The leader runs with
    // WRITE_QUORUM=5 since case B, so these writes ask for 3.)
    let before = transfers(&http, "follower3").await;
    docker(&["restart", "-t", "2", "kv-follower3"]);
    for i in 0..10 {
        let (status, body) = put(&http, &format!("restart{i}?quorum=3"), "x").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    wait_caught_up(&http, "follower3", before).await;
    converged(&http).await;

    // A follower cut off from the network while writes go on gets them once reconnected.
    let network = format!("{}_default", PROJECT);
    docker(&["network", "disconnect", &network, "kv-follower2"]);
    for i in 0..10 {
        let (status, body) = put(&http, &format!("cut{i}?quorum=3"), "y").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    docker(&["network", "connect", &network, "kv-follower2"]);
    // Its missed writes arrive by retries (or a transfer, had it been away longer).
    eventually(settle(), || async {
        let f = follower(&http, "follower2").await;
        if f["state"] == "up" && f["pending"] == 0 {
            Ok(())
        } else {
            Err(f.to_string())
        }
    })
    .await
    .expect("nothing pending for follower2");
    let state = converged(&http).await;
    assert_eq!(state.len(), 27, "{state:?}");

    // Failover: the leader stopped, follower1 promoted from inside its container. Every write
    // acknowledged so far is on the new leader, which takes writes on its own port; the old
    // leader, started again, follows it.
    docker(&["stop", "-t", "2", "kv-leader"]);
    let promoted = docker(&["exec", "kv-follower1", "/semisync-kv", "failover"]);
    assert!(
        promoted.contains("follower1 is the leader of term")
            && promoted.contains("http://localhost:8001/")
            && promoted.contains("merged 5 of 5 followers"),
        "{promoted}"
    );
    let new_leader = follower_url(1);
    // The new leader goes on with the old one's live settings: quorum 5 since case B, which
    // the four followers left cannot reach, so this write asks for 3.
    let (_, settings) = send(http.get(format!("{new_leader}/admin/settings"))).await;
    assert_eq!(settings["write_quorum"], 5, "{settings}");
    let (status, body) = send(
        http.put(format!("{new_leader}/kv/x?quorum=3"))
            .json(&json!({"value": "after failover"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = send(
        http.put(format!("{}/kv/x", follower_url(3)))
            .json(&json!({"value": "v"})),
    )
    .await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{body}");
    assert_eq!(body["leader"], "http://localhost:8001/");
    docker(&["start", "kv-leader"]);
    wait_healthy(&["kv-leader"]).await;
    let (_, health) = send(http.get(format!("{LEADER}/health"))).await;
    assert_eq!(health["role"], "follower", "{health}");
    assert_eq!(health["leader"], "http://localhost:8001/", "{health}");
    let others: Vec<String> = [0, 2, 3, 4, 5].into_iter().map(follower_url).collect();
    let after = converged_on(&http, &new_leader, &others).await;
    assert_eq!(after.len(), 28, "{after:?}");
    assert_eq!(after["x"], "after failover");
    assert_eq!(after["greeting"], "hello");

    // `docker stop` is answered by the binary itself (PID 1 handles SIGTERM): exit code 0, not
    // the 137 of the SIGKILL that Docker sends when the grace period runs out.
    for name in ["kv-follower3", "kv-leader"] {
        let started = Instant::now();
        docker(&["stop", "-t", "10", name]);
        let took = started.elapsed();
        let code = docker(&["inspect", "-f", "{{.State.ExitCode}}", name]);
        assert_eq!(
            code.trim(),
            "0",
            "{name} did not stop on SIGTERM (took {took:?})"
        );
        eprintln!("docker stop {name}: {took:?}");
    }
    // Every bash block of the presentation guide, in order, on a fresh stack; then again with
    // every cut on its lists applied, on another fresh stack: no cut breaks a later step.
    for talk in [Talk::Whole, Talk::Cut] {
        run_ok(&mut stack.command(&["down", "-v", "-t", "2"]));
        run_guide(&stack, talk);
    }

    drop(stack);
    assert!(
        docker(&["ps", "-aq", "--filter", "name=^kv-"])
            .trim()
            .is_empty(),
        "compose down left containers behind"
    );
}

/// A ```bash block of the guide, where it stands, and what the guide says its output shows.
#[derive(Debug, Default)]
struct GuideBlock {
    script: String,
    expected: Vec<Expected>,
    /// The `## ` heading it is under, such as "3. A read from a lagging follower (2 minutes)".
    step: String,
    /// Its `## ` or `### ` heading says "Optional": an extra, outside the 15 minutes.
    extra: bool,
    /// The cut it belongs to: inside `<!-- cut: NAME -->` .. `<!-- /cut -->`, a part of the talk
    /// the guide's cut list (or its list of optional extras) lets a presenter leave out.
    cut: Option<String>,
}

impl GuideBlock {
    /// Run before or after the talk, not on stage: the set-up, the benchmark, the clean-up.
    fn off_stage(&self) -> bool {
        !self.step.starts_with(|c: char| c.is_ascii_digit())
    }

    /// Its commands: the lines that are neither blank nor comments.
    fn commands(&self) -> usize {
        (self.script.lines())
            .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
            .count()
    }
}

/// One `<!-- expect: TEXT -->` (the output contains TEXT) or `<!-- expect N: TEXT -->` (it
/// contains TEXT exactly N times) that follows a bash block in the guide, before the next one.
/// An HTML comment: the rendered guide does not show it.
#[derive(Debug, PartialEq)]
struct Expected {
    text: String,
    times: Option<usize>,
}

impl Expected {
    fn parse(line: &str) -> Option<Self> {
        let rest = line
            .trim()
            .strip_prefix("<!-- expect")?
            .strip_suffix("-->")?;
        let (count, text) = rest.split_once(':')?;
        let times = match count.trim() {
            "" => None,
            n => Some(n.parse().ok()?),
        };
        Some(Self {
            text: text.trim().to_owned(),
            times,
        })
    }

    /// Why `output` does not show it, if it does not.
    fn check(&self, output: &str) -> Result<(), String> {
        let found = output.matches(&self.text).count();
        match self.times {
            None if found > 0 => Ok(()),
            Some(times) if found == times => Ok(()),
            None => Err(format!("{:?} is not in the output", self.text)),
            Some(times) => Err(format!(
                "{:?} is in the output {found} times, not {times}",
                self.text
            )),
        }
    }
}

/// The ```bash blocks of a Markdown file, in order, each with the expectations that follow it,
/// its step, and its cut.
fn bash_blocks(markdown: &str) -> Vec<GuideBlock> {
    let mut blocks: Vec<GuideBlock> = Vec::new();
    let mut current: Option<String> = None;
    let (mut step, mut extra_step, mut extra_part) = (String::new(), false, false);
    let mut cut: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```bash") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(GuideBlock {
                    script: std::mem::take(block),
                    expected: Vec::new(),
                    step: step.clone(),
                    extra: extra_step || extra_part,
                    cut: cut.clone(),
                });
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, line) => {
                if let Some(heading) = line.strip_prefix("## ") {
                    step = heading.to_owned();
                    (extra_step, extra_part) = (heading.contains("Optional"), false);
                } else if let Some(heading) = line.strip_prefix("### ") {
                    extra_part = heading.contains("Optional");
                } else if let Some(name) = line
                    .strip_prefix("<!-- cut:")
                    .and_then(|rest| rest.strip_suffix("-->"))
                {
                    assert!(cut.is_none(), "a cut inside the cut {cut:?}: {line}");
                    cut = Some(name.trim().to_owned());
                } else if line == "<!-- /cut -->" {
                    assert!(cut.take().is_some(), "a cut's end without its start");
                } else if let (Some(expected), Some(block)) =
                    (Expected::parse(line), blocks.last_mut())
                {
                    block.expected.push(expected);
                }
            }
        }
    }
    assert!(cut.is_none(), "the cut {cut:?} does not end");
    blocks
}

#[test]
fn the_guide_s_expectations_are_read_and_checked() {
    let markdown = "```bash\necho hi\n```\n\n<!-- expect: \"acks\":3 -->\ntext\n\
                    <!-- expect 2: up -->\n```bash\nls\n```\n";
    let blocks = bash_blocks(markdown);
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0].script, "echo hi\n");
    let expected = &blocks[0].expected;
    assert_eq!(expected.len(), 2);
    assert!(expected[0].check(r#"{"acks":3}"#).is_ok());
    assert!(expected[0].check(r#"{"acks":4}"#).is_err());
    assert!(expected[1].check("up, up").is_ok());
    assert!(expected[1].check("up").is_err(), "exactly twice");
    assert!(blocks[1].expected.is_empty());
}

#[test]
fn the_guide_s_steps_extras_and_cuts_are_read() {
    let markdown = "## Before the talk\n```bash\nup\n```\n\
                    ## 2. Writes (1 minute)\n<!-- cut: step 2 -->\n```bash\n# a comment\nput\n\nget\n```\n\
                    <!-- expect: ok -->\n<!-- /cut -->\n```bash\nkept\n```\n\
                    ### Optional: more\n```bash\nmore\n```\n### Back\n```bash\nback\n```\n\
                    ## 9. Optional: a partition\n```bash\nsplit\n```\n";
    let blocks = bash_blocks(markdown);
    let seen: Vec<(&str, bool, bool, Option<&str>)> = (blocks.iter())
        .map(|b| (b.script.trim(), b.off_stage(), b.extra, b.cut.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            ("up", true, false, None),
            ("# a comment\nput\n\nget", false, false, Some("step 2")),
            ("kept", false, false, None),
            ("more", false, true, None),
            ("back", false, false, None),
            ("split", false, true, None),
        ]
    );
    assert_eq!(blocks[1].commands(), 2, "neither blank lines nor comments");
    assert_eq!(blocks[1].expected.len(), 1);
}

/// The cells of each row of the Markdown table whose header line is `header`.
fn table_rows<'a>(markdown: &'a str, header: &str) -> Vec<Vec<&'a str>> {
    (markdown.lines())
        .skip_while(|line| !line.starts_with(header))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| line.trim_matches('|').split('|').map(str::trim).collect())
        .collect()
}

/// The guide's timing table adds up: its steps and the slack make 15 minutes, with at least 2
/// to spare, and each step of the talk takes there what its heading says; an optional step is
/// not in it.
#[test]
fn the_guide_s_talk_fits_fifteen_minutes_with_slack() {
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/PRESENTATION_GUIDE.md"
    ))
    .expect("guide");
    let table = table_rows(&guide, "| step | on stage | minutes |");
    let minutes = |row: &Vec<&str>| -> u32 {
        row[2]
            .trim_matches('*')
            .parse()
            .unwrap_or_else(|_| panic!("{row:?}"))
    };
    let find = |name: &str| table.iter().find(|row| row[1].contains(name)).map(minutes);
    let steps: Vec<(&str, u32)> = (table.iter())
        .filter(|row| !row[0].is_empty())
        .map(|row| (row[0], minutes(row)))
        .collect();
    let (slack, total) = (find("slack").expect("slack"), find("total").expect("total"));
    assert_eq!(total, 15, "{table:?}");
    assert!(slack >= 2, "{table:?}");
    assert_eq!(steps.iter().map(|(_, m)| m).sum::<u32>() + slack, total);
    let minutes_said = |m: u32| format!("({m} minute{})", if m == 1 { "" } else { "s" });
    let headings: Vec<(&str, &str)> = (guide.lines())
        .filter_map(|line| line.strip_prefix("## ")?.split_once(". "))
        .collect();
    for (number, title) in &headings {
        let in_table = steps.iter().find(|(step, _)| step == number);
        if title.starts_with("Optional") {
            assert!(in_table.is_none(), "an optional step in the talk: {title}");
        } else if let Some((_, m)) = in_table {
            assert!(
                title.ends_with(&minutes_said(*m)),
                "{title}: the table says {m}"
            );
        } else {
            panic!("a step of the talk missing from the table: {number}. {title}");
        }
    }
    for (step, _) in &steps {
        assert!(
            headings.iter().any(|(number, _)| number == step),
            "the table's step {step} has no heading"
        );
    }
    // The extras' table: each names a step whose heading, or a `### Optional` part of it,
    // takes what the table says.
    let extras = table_rows(&guide, "| extra | for | minutes |");
    assert!(extras.len() >= 4, "{extras:?}");
    for extra in &extras {
        let number = extra[0].split(',').next().unwrap_or_default();
        let said = minutes_said(minutes(extra));
        let heading = format!("## {number}. ");
        let mut in_step = (guide.lines())
            .skip_while(|line| !line.starts_with(&heading))
            .enumerate()
            .take_while(|(i, line)| *i == 0 || !line.starts_with("## "))
            .map(|(_, line)| line);
        assert!(
            in_step.any(|line| line.contains("Optional") && line.ends_with(&said)),
            "the extra {extra:?}: no optional heading of step {number} says {said}"
        );
    }
}

/// The guide's figures of its own length: the commands it counts for the talk, the talk with
/// every cut, and the extras are those of its blocks (the seconds are the compose test's to
/// measure and print).
#[test]
fn the_guide_counts_its_commands_right() {
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/PRESENTATION_GUIDE.md"
    ))
    .expect("guide");
    let blocks = bash_blocks(&guide);
    let count = |keep: &dyn Fn(&GuideBlock) -> bool| -> usize {
        (blocks.iter())
            .filter(|b| !b.off_stage() && keep(b))
            .map(GuideBlock::commands)
            .sum()
    };
    let talk = count(&|b| !b.extra);
    let cut = count(&|b| !b.extra && b.cut.is_none());
    let extras = count(&|b| b.extra);
    let said = |row: &str| -> usize {
        let line = (guide.lines())
            .find(|line| line.starts_with(&format!("| {row} |")))
            .unwrap_or_else(|| panic!("the guide's row {row:?}"));
        (line.split('|').nth(2))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{line}"))
    };
    let rows = [
        "the 15-minute talk, without its optional extras",
        "the same with every cut applied",
        "the optional extras, all four",
    ];
    assert_eq!(rows.map(said), [talk, cut, extras]);
}

/// Which parts of the guide a run takes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Talk {
    /// Every block, the optional extras included.
    Whole,
    /// Every cut on the guide's lists applied: the shortest talk, then the optional steps at
    /// the end (9 and 10), which must hold after it too. The benchmark, run before the talk,
    /// is not run again: step 7 only shows its charts.
    Cut,
}

/// How long one part of a run of the guide kept the audience waiting.
#[derive(Debug, Default)]
struct Waiting {
    commands: usize,
    seconds: f64,
}

impl Waiting {
    fn add(&mut self, commands: usize, seconds: f64) {
        self.commands += commands;
        self.seconds += seconds;
    }
}

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} commands, {:.1} s of waiting",
            self.commands, self.seconds
        )
    }
}

/// Runs the bash blocks of PRESENTATION_GUIDE.md as a presenter would, against this test's
/// compose project: `docker compose` is the compose command of this machine with the test's
/// project name, `semisync-kv` is the binary under test, and `scripts/benchmark.sh` runs that
/// binary's `bench` (what the script runs through cargo) with its output in a temporary folder.
/// The cluster runs with the lab's settings, so the time each block takes is the time it keeps
/// an audience waiting (typing and talking aside); the run prints it, step by step.
fn run_guide(stack: &Stack, talk: Talk) {
    let guide = std::fs::read_to_string(stack.dir.join("PRESENTATION_GUIDE.md")).expect("guide");
    let blocks = bash_blocks(&guide);
    assert!(blocks.len() >= 10, "the guide's bash blocks: {blocks:?}");
    let mut cuts: Vec<&str> = blocks.iter().filter_map(|b| b.cut.as_deref()).collect();
    cuts.dedup();
    assert!(cuts.len() >= 2, "the guide's cuts are marked: {cuts:?}");
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_semisync-kv"));
    let bin_dir = binary.parent().expect("binary folder");
    let out_dir = std::env::temp_dir().join(format!("semisync-guide-{}", std::process::id()));
    let prelude = format!(
        r#"set -euo pipefail
docker() {{ if [ "$1" = compose ]; then shift; command {compose} -p {PROJECT} "$@"; else command docker "$@"; fi; }}
function scripts/benchmark.sh {{ semisync-kv bench --out-dir '{out}' "$@"; }}
"#,
        compose = stack.compose.join(" "),
        out = out_dir.display(),
    );
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let expectations: usize = blocks.iter().map(|b| b.expected.len()).sum();
    assert!(
        expectations >= 20,
        "the guide states its results: {expectations}"
    );
    let benchmark = |block: &GuideBlock| block.script.contains("scripts/benchmark.sh");
    let started = std::time::Instant::now();
    let (mut talk_waiting, mut extras) = (Waiting::default(), Waiting::default());
    let mut steps: Vec<(String, Waiting)> = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        if talk == Talk::Cut && (block.cut.is_some() || benchmark(block)) {
            continue;
        }
        let GuideBlock {
            script, expected, ..
        } = block;
        let ran = std::time::Instant::now();
        let output = Command::new("bash")
            .arg("-c")
            .arg(format!("{prelude}{script}"))
            .current_dir(&stack.dir)
            .env("PATH", &path)
            .env("KV_IMAGE_TARGET", "prebuilt")
            // The lab's settings, not the test's shorter lag and timeout: the guide's step 4
            // waits for the 3rd of five lags drawn in 500..3000 ms, which 1500 ms would often
            // cut off, and its waiting is measured as an audience would sit through it.
            .env_remove("MAX_DELAY_MS")
            .env_remove("REPLICATE_TIMEOUT_MS")
            .env_remove("WRITE_QUORUM")
            .env_remove("MIN_DELAY_MS")
            .env_remove("WAIT_POINT")
            .output()
            .expect("run bash");
        let seconds = ran.elapsed().as_secs_f64();
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        assert!(
            output.status.success(),
            "guide block {i} ({talk:?}) failed ({}):\n{script}\n--- stdout\n{}\n--- stderr\n{}",
            output.status,
            text(&output.stdout),
            text(&output.stderr)
        );
        let stdout = text(&output.stdout);
        for expectation in expected {
            if let Err(why) = expectation.check(&stdout) {
                panic!(
                    "guide block {i} ({talk:?}) does not show what the guide says: {why}\n{script}\n--- stdout\n{stdout}"
                );
            }
        }
        eprintln!(
            "guide block {i} ({talk:?}, {seconds:.1} s) ok:\n{script}{stdout}--- stderr\n{}",
            text(&output.stderr)
        );
        if block.off_stage() {
            continue;
        }
        let part = if block.extra {
            &mut extras
        } else {
            &mut talk_waiting
        };
        part.add(block.commands(), seconds);
        // A step's optional part (not a whole optional step) on a line of its own.
        let step = if block.extra && !block.step.contains("Optional") {
            format!("{}, its optional part", block.step)
        } else {
            block.step.clone()
        };
        let at = match steps.iter().position(|(known, _)| *known == step) {
            Some(at) => at,
            None => {
                steps.push((step, Waiting::default()));
                steps.len() - 1
            }
        };
        steps[at].1.add(block.commands(), seconds);
    }
    let mut report = format!("the guide on stage ({talk:?}):\n");
    for (step, waiting) in &steps {
        report.push_str(&format!("  {step}: {waiting}\n"));
    }
    report.push_str(&format!(
        "  the talk without its optional extras: {talk_waiting}\n  \
         its optional extras: {extras}\n  \
         the whole run, set-up{} included: {:.0} s of wall time\n",
        match talk {
            Talk::Whole => " and benchmark",
            Talk::Cut => "",
        },
        started.elapsed().as_secs_f64()
    ));
    if talk == Talk::Cut {
        report.push_str(&format!("  cuts applied: {}\n", cuts.join("; ")));
    }
    eprintln!("{report}");
    if talk == Talk::Whole {
        assert!(
            out_dir.join("quorum_latency.png").exists(),
            "the guide's benchmark ran"
        );
    }
    let _ = std::fs::remove_dir_all(&out_dir);
}
