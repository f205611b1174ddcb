//! The node as a process: what stops it from starting, and how it stops.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use semisync_kv::local::LocalSettings;
use semisync_kv::settings::Settings;
use serde_json::json;

use crate::helpers::{NodeExt, TestCluster, base, settings};

/// SIGTERM stops a node promptly, even with a write still waiting for its quorum.
#[tokio::test]
async fn sigterm_stops_a_node_with_a_write_in_flight() {
    let mut cluster = TestCluster::start_up(LocalSettings {
        settings: Settings {
            write_quorum: 1,
            replicate_timeout_ms: 30_000,
            ..base()
        },
        followers: 1,
        ..settings()
    })
    .await;
    cluster.followers[0].kill();
    let url = format!("{}/kv/k", cluster.leader.url());
    let pending = tokio::spawn(cluster.http.put(url).json(&json!({"value": "v"})).send());
    // The leader applies a write before waiting for its quorum: version 1.1 means it is waiting.
    cluster.first_write_applied().await;

    cluster.leader.signal(Signal::SIGTERM);
    // Far less than the 30 s the write would otherwise wait.
    let status = cluster
        .leader
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("leader exited");
    assert!(status.success(), "clean exit: {status:?}");
    assert!(
        pending.await.expect("join").is_err(),
        "the pending write's connection was closed"
    );

    cluster.followers[0].restart().expect("restart");
    cluster.followers[0].signal(Signal::SIGTERM);
    let status = cluster.followers[0]
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("follower exited");
    assert!(status.success(), "clean exit: {status:?}");
}

/// A follower started with `--cluster-token-file path`, on ports the system picks: its exit code
/// and what it printed on stderr, or `None` if it was still running after `within` (then it is
/// killed).
fn start_with_token_file(path: &Path, within: Duration) -> Option<(i32, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_semisync-kv"))
        .args([
            "serve",
            "--role",
            "follower",
            "--listen-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--internal-listen-addr",
            "127.0.0.1:0",
            "--cluster-token-file",
        ])
        .arg(path)
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start semisync-kv");
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if child.try_wait().expect("try_wait").is_some() {
            let output = child.wait_with_output().expect("output");
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            return Some((output.status.code().unwrap_or(-1), stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The cluster token is read once, at start-up: a token file that is missing, empty or
/// unreadable stops the node with exit code 2 and one line naming `CLUSTER_TOKEN_FILE`. A node
/// never starts without the token it was told to use.
#[test]
fn a_node_whose_token_file_cannot_be_used_does_not_start() {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("token-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a folder");
    let empty = dir.join("empty");
    std::fs::write(&empty, " \n").expect("write the empty file");
    // A folder cannot be read as a file, even by root; a file without permissions can only be
    // tried where the test does not run as root.
    let mut cases: Vec<(&str, PathBuf)> = vec![
        ("missing", dir.join("missing")),
        ("empty", empty),
        ("a folder", dir.clone()),
    ];
    let locked = dir.join("locked");
    std::fs::write(&locked, "s3cret").expect("write the locked file");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    if std::fs::read(&locked).is_err() {
        cases.push(("without read permission", locked));
    }
    for (case, path) in cases {
        let (code, stderr) = start_with_token_file(&path, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("a token file that is {case} did not stop the node"));
        assert_eq!(code, 2, "{case}: {stderr}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{case}: one line: {stderr}"
        );
        assert!(stderr.contains("CLUSTER_TOKEN_FILE"), "{case}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);

    // The same follower with a readable token file starts.
    let good = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("token-{}", std::process::id()));
    std::fs::write(&good, "s3cret\n").expect("write the token file");
    assert_eq!(
        start_with_token_file(&good, Duration::from_secs(1)),
        None,
        "a node with a readable token file keeps running"
    );
    let _ = std::fs::remove_file(&good);
}

/// A leader started with another `CLUSTER_TOKEN` than its followers' (the lab's trap: a token set
/// as the prefix of one `docker compose` command, then the leader recreated without it): every
/// follower answers 401, the leader does not lead, and `/health` says why and what to do.
#[tokio::test]
async fn a_leader_whose_followers_refuse_its_token_says_so() {
    let cluster = TestCluster::start(LocalSettings {
        leader_env: vec![("CLUSTER_TOKEN".into(), "another-token".into())],
        ..settings()
    });
    let health = cluster.leader_waiting(Duration::from_secs(15)).await;
    assert_eq!(health["role"], "follower", "{health}");
    let why = health["waiting"].as_str().unwrap_or_default();
    assert!(
        why.contains("5 of its 5 peers answered 401 unauthorized")
            && why.contains("export CLUSTER_TOKEN"),
        "{health}"
    );
}
