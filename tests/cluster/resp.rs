//! The RESP front end against a real cluster, with a Redis client (the `redis` crate) and, where
//! it is installed, `redis-cli`: `SET` waits for the write quorum, followers serve `GET` and
//! refuse writes with `READONLY`, `WAIT` counts the followers that hold the connection's last
//! write, pipelined commands answer in order, and bytes that are not RESP close the connection.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use redis::aio::MultiplexedConnection;
use reqwest::StatusCode;
use semisync_kv::local::{LocalNode, LocalSettings};
use semisync_kv::settings::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{runs, skip_without_tool};
use crate::helpers::{NodeExt, TestCluster, base, eventually, send, settings};

/// A test cluster whose nodes speak RESP too, with these live settings.
fn speaking_resp(settings_: Settings) -> LocalSettings {
    LocalSettings {
        settings: settings_,
        resp: true,
        ..settings()
    }
}

fn resp_addr(node: &LocalNode) -> SocketAddr {
    node.resp_addr.expect("the node listens for RESP")
}

/// A connection to `node`'s RESP listener, whose answers may take a quorum's wait (the
/// client's default allows 500 ms).
async fn connect(node: &LocalNode) -> MultiplexedConnection {
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    redis::Client::open(format!("redis://{}/", resp_addr(node)))
        .expect("client")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connect over RESP")
}

async fn query<T: redis::FromRedisValue>(
    connection: &mut MultiplexedConnection,
    command: &mut redis::Cmd,
) -> redis::RedisResult<T> {
    command.query_async(connection).await
}

#[tokio::test]
async fn redis_commands_read_write_and_wait_through_the_same_write_path() {
    let cluster = TestCluster::start_up(speaking_resp(base())).await;
    let mut leader = connect(&cluster.leader).await;

    let pong: String = query(&mut leader, &mut redis::cmd("PING"))
        .await
        .expect("answered");
    assert_eq!(pong, "PONG");
    // SET answers once the write quorum (3) acknowledged, and the HTTP API sees the write.
    let ok: String = query(&mut leader, redis::cmd("SET").arg("color").arg("blue"))
        .await
        .expect("answered");
    assert_eq!(ok, "OK");
    let (status, body) = cluster.get(&cluster.leader.url(), "/kv/color").await;
    assert_eq!(
        (status, body["value"].as_str()),
        (StatusCode::OK, Some("blue"))
    );
    let got: Option<String> = query(&mut leader, redis::cmd("GET").arg("color"))
        .await
        .expect("answered");
    assert_eq!(got.as_deref(), Some("blue"));
    // WAIT: every follower comes to hold the connection's last write.
    let held: i64 = query(&mut leader, redis::cmd("WAIT").arg(5).arg(10_000))
        .await
        .expect("answered");
    assert_eq!(held, 5);

    // A follower serves reads, and refuses writes the Redis way, naming the leader.
    let mut follower = connect(&cluster.followers[2]).await;
    let got: Option<String> = query(&mut follower, redis::cmd("GET").arg("color"))
        .await
        .expect("answered");
    assert_eq!(got.as_deref(), Some("blue"));
    // The leader's RESP address (its RESP_LISTEN_ADDR here, bound on 127.0.0.1) comes with
    // its heartbeats; its URL with its state transfer.
    let leader_resp = resp_addr(&cluster.leader);
    let readonly = format!(
        "The leader is at {leader_resp} (HTTP: {}",
        cluster.leader.url()
    );
    let refused = eventually(Duration::from_secs(5), || {
        let mut follower = follower.clone();
        let readonly = readonly.clone();
        async move {
            let refused = query::<String>(&mut follower, redis::cmd("SET").arg("color").arg("red"))
                .await
                .expect_err("refused");
            match refused.to_string().contains(&readonly) {
                true => Ok(refused),
                false => Err(refused.to_string()),
            }
        }
    })
    .await
    .expect("READONLY names the leader's RESP address and URL");
    assert_eq!(refused.code(), Some("READONLY"), "{refused}");
    let role: Vec<redis::Value> = query(&mut follower, &mut redis::cmd("ROLE"))
        .await
        .expect("answered");
    assert_eq!(
        role[..3],
        [
            redis::Value::BulkString(b"slave".to_vec()),
            redis::Value::BulkString(leader_resp.ip().to_string().into_bytes()),
            redis::Value::Int(leader_resp.port().into()),
        ]
    );
    let info: String = query(&mut follower, redis::cmd("INFO").arg("replication"))
        .await
        .expect("answered");
    for line in [
        "role:slave".to_owned(),
        format!("master_host:{}\r\n", leader_resp.ip()),
        format!("master_port:{}\r\n", leader_resp.port()),
        format!("master_url:{}", cluster.leader.url()),
    ] {
        assert!(info.contains(&line), "{line} in {info}");
    }

    // The leader's INFO tells the truth about its followers and its quorum.
    let info: String = query(&mut leader, redis::cmd("INFO").arg("replication"))
        .await
        .expect("answered");
    for line in [
        "role:master",
        "connected_slaves:5",
        "write_quorum:3",
        "term:1",
    ] {
        assert!(info.contains(line), "{line} in {info}");
    }
    // Each follower's line names where Redis clients reach it, as its heartbeat answers said.
    for follower in &cluster.followers {
        let addr = resp_addr(follower);
        let named = format!("ip={},port={},state=online", addr.ip(), addr.port());
        assert!(info.contains(&named), "{named} in {info}");
    }

    // Pipelined: the answers come in order, and a read sees the writes sent before it.
    let mut pipe = redis::pipe();
    for i in 0..50 {
        pipe.cmd("SET")
            .arg(format!("k{}", i % 5))
            .arg(format!("v{i}"));
    }
    pipe.cmd("GET").arg("k4").cmd("DBSIZE");
    let answers: Vec<redis::Value> = pipe.query_async(&mut leader).await.expect("answered");
    assert_eq!(answers.len(), 52);
    assert!(
        answers[..50].iter().all(|a| *a == redis::Value::Okay),
        "{answers:?}"
    );
    assert_eq!(answers[50], redis::Value::BulkString(b"v49".to_vec()));
    assert_eq!(answers[51], redis::Value::Int(6));

    // A WAIT pipelined behind its SET: the SET's own quorum wait and the WAIT both wake, so
    // the SET answers at its quorum and the WAIT once all five hold the write (0: no limit).
    let answers: Vec<redis::Value> = redis::pipe()
        .cmd("SET")
        .arg("shade")
        .arg("green")
        .cmd("WAIT")
        .arg(5)
        .arg(0)
        .cmd("WAIT")
        .arg(4)
        .arg(0)
        .query_async(&mut leader)
        .await
        .expect("answered");
    assert_eq!(
        answers,
        [
            redis::Value::Okay,
            redis::Value::Int(5),
            redis::Value::Int(5)
        ]
    );

    // DEL counts the keys it deleted; EXISTS and GET agree.
    let deleted: i64 = query(&mut leader, redis::cmd("DEL").arg("color").arg("nothing"))
        .await
        .expect("answered");
    assert_eq!(deleted, 1);
    let exists: i64 = query(&mut leader, redis::cmd("EXISTS").arg("color").arg("k1"))
        .await
        .expect("answered");
    assert_eq!(exists, 1);
    let got: Option<String> = query(&mut leader, redis::cmd("GET").arg("color"))
        .await
        .expect("answered");
    assert_eq!(got, None);

    // What it does not do, it says by name.
    let refused = query::<String>(
        &mut leader,
        redis::cmd("SET").arg("k").arg("v").arg("EX").arg(10),
    )
    .await
    .expect_err("refused");
    assert!(refused.to_string().contains("'EX'"), "{refused}");
    let refused = query::<String>(&mut leader, &mut redis::cmd("FLUSHALL"))
        .await
        .expect_err("refused");
    assert!(
        refused.to_string().contains("unknown command 'flushall'"),
        "{refused}"
    );
    let refused = query::<String>(&mut leader, redis::cmd("HELLO").arg(3))
        .await
        .expect_err("refused");
    assert!(refused.to_string().contains("RESP2"), "{refused}");

    // The metrics count them as RESP writes: two SETs, 50 pipelined SETs and the DEL.
    let metrics = cluster
        .http
        .get(format!("{}/metrics", cluster.leader.url()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let resp_writes = r#"semisync_writes_total{outcome="quorum_reached",protocol="resp"} 53"#;
    assert!(metrics.contains(resp_writes), "{metrics}");

    // Every answer went through the node's write path: the followers converge on it.
    let state = cluster
        .converged(Duration::from_secs(10))
        .await
        .expect("converged");
    assert_eq!(state.len(), 6, "{state:?}");
    assert_eq!(state["k4"], "v49");
}

/// A quorum the followers cannot give: `-NOQUORUM` with the facts of the HTTP 503, and the
/// write still applied on the leader. With `WRITE_QUORUM=0`, `SET` answers at once and `WAIT`
/// does the waiting, as in Redis.
#[tokio::test]
async fn noquorum_and_wait_after_an_asynchronous_set() {
    let cluster = TestCluster::start_up(speaking_resp(Settings {
        write_quorum: 5,
        replicate_timeout_ms: 1000,
        ..base()
    }))
    .await;
    let mut leader = connect(&cluster.leader).await;
    let (status, _) = send(cluster.http.post(format!(
        "{}/admin/followers/follower5/cut",
        cluster.leader.url()
    )))
    .await;
    assert_eq!(status, StatusCode::OK);
    let refused = query::<String>(&mut leader, redis::cmd("SET").arg("x").arg("1"))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Some("NOQUORUM"), "{refused}");
    assert!(refused.to_string().contains("4 of 5 acks"), "{refused}");
    let got: Option<String> = query(&mut leader, redis::cmd("GET").arg("x"))
        .await
        .expect("answered");
    assert_eq!(got.as_deref(), Some("1"), "applied on the leader");
    // WAIT 5 cannot be met by four: it answers 4 when its timeout passes.
    let held: i64 = query(&mut leader, redis::cmd("WAIT").arg(5).arg(300))
        .await
        .expect("answered");
    assert_eq!(held, 4);

    let (status, _) = send(
        cluster
            .http
            .patch(format!("{}/admin/settings", cluster.leader.url()))
            .body(r#"{"write_quorum":0}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let ok: String = query(&mut leader, redis::cmd("SET").arg("y").arg("2"))
        .await
        .expect("answered");
    assert_eq!(ok, "OK");
    let held: i64 = query(&mut leader, redis::cmd("WAIT").arg(3).arg(10_000))
        .await
        .expect("answered");
    assert!((3..=4).contains(&held), "{held}");
}

/// Bytes that are not RESP get an error, then the connection closes; nothing is allocated
/// for a length that was only announced, and the node goes on serving.
#[tokio::test]
async fn malformed_resp_is_answered_and_the_connection_closed() {
    let cluster = TestCluster::start_up(speaking_resp(base())).await;
    let addr = resp_addr(&cluster.leader);
    for junk in [
        &b"*1\r\n$1000000000000\r\n"[..],
        b"*1\r\n*1\r\n$4\r\nPING\r\n",
        b"*99999999\r\n",
        b"*x\r\n",
    ] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(junk).await.expect("send");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
            .await
            .expect("the node closes the connection")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("-ERR Protocol error"),
            "{:?}: {answer}",
            String::from_utf8_lossy(junk)
        );
    }
    // An inline command, as typed into telnet, works; the node is healthy.
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"PING\r\nQUIT\r\n").await.expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    assert_eq!(answer, b"+PONG\r\n+OK\r\n");
    let (status, _) = cluster.get(&cluster.leader.url(), "/health").await;
    assert_eq!(status, StatusCode::OK);
}

/// A client that sends a long pipeline before it reads a reply, as many clients do: the node
/// reads on while it writes, so neither side waits for the other forever (here 12.8 MB of
/// commands, and as much of replies, far more than the sockets' buffers hold).
#[tokio::test]
async fn a_long_pipeline_sent_before_any_reply_is_read_is_answered_whole() {
    let cluster = TestCluster::start_up(speaking_resp(base())).await;
    let mut stream = tokio::net::TcpStream::connect(resp_addr(&cluster.leader))
        .await
        .expect("connect");
    let value = vec![b'x'; 64 * 1024];
    let mut commands = Vec::new();
    for _ in 0..200 {
        semisync_kv::resp::wire::encode_command(&[b"ECHO", &value], &mut commands);
    }
    let mut expected = Vec::new();
    for _ in 0..200 {
        semisync_kv::resp::wire::Reply::bulk(value.clone()).encode(&mut expected);
    }
    let exchange = async {
        stream
            .write_all(&commands)
            .await
            .expect("send every command");
        let mut answer = vec![0; expected.len()];
        stream
            .read_exact(&mut answer)
            .await
            .expect("read every reply");
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("the node reads while it writes");
    assert!(answer == expected, "200 echoes, in order");
}

/// `redis-cli`, as a user types it: SET on the leader, GET on a follower, WAIT, INFO and a
/// follower's READONLY.
#[tokio::test]
async fn redis_cli_works_against_the_cluster() {
    if let Err(why) = runs("redis-cli", &["--version"]) {
        skip_without_tool(
            "the redis-cli interop test",
            &why,
            "install redis-cli (Debian: apt-get install redis-tools)",
        );
        return;
    }
    let cluster = TestCluster::start_up(speaking_resp(base())).await;
    let cli = |node: &LocalNode, args: &[&str]| -> String {
        let addr = resp_addr(node);
        let out = Command::new("redis-cli")
            .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(cli(&cluster.leader, &["set", "color", "blue"]), "OK");
    let follower = &cluster.followers[2];
    eventually(Duration::from_secs(5), || async {
        match cli(follower, &["get", "color"]) {
            value if value == "blue" => Ok(()),
            other => Err(other),
        }
    })
    .await
    .expect("the follower serves the write");
    let refused = cli(follower, &["set", "color", "red"]);
    assert!(refused.starts_with("READONLY"), "{refused}");
    let info = cli(&cluster.leader, &["info", "replication"]);
    assert!(info.contains("connected_slaves:5"), "{info}");
    // One connection for both, as WAIT counts that connection's last write: redis-cli reads
    // commands from standard input.
    let addr = resp_addr(&cluster.leader);
    let mut child = Command::new("redis-cli")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run redis-cli");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(b"set shade green\nwait 5 10000\n")
            .expect("write");
    }
    let out = child.wait_with_output().expect("redis-cli ends");
    // Without a terminal, redis-cli prints an integer reply bare.
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK\n5");
}

/// A node told to stop answers the RESP commands it already read, within the short grace the
/// HTTP listener gives its requests: a `SET` waiting for its quorum when `SIGTERM` comes gets its
/// `+OK` once the quorum arrives. Its one follower is stopped (`SIGSTOP`) so that the `SET`
/// waits, and resumed once the leader stopped accepting connections.
#[tokio::test]
async fn a_set_waiting_for_its_quorum_is_answered_when_the_node_stops() {
    let mut cluster = TestCluster::start_up(LocalSettings {
        followers: 1,
        ..speaking_resp(Settings {
            write_quorum: 1,
            replicate_timeout_ms: 30_000,
            ..base()
        })
    })
    .await;
    cluster.followers[0].signal(Signal::SIGSTOP);
    let mut stream = tokio::net::TcpStream::connect(resp_addr(&cluster.leader))
        .await
        .expect("connect over RESP");
    stream
        .write_all(b"*3\r\n$3\r\nSET\r\n$4\r\ngone\r\n$4\r\nsoon\r\n")
        .await
        .expect("send SET");
    // Applied on the leader, waiting for the stopped follower.
    cluster.first_write_applied().await;

    cluster.leader.signal(Signal::SIGTERM);
    // The follower goes on only once the leader stopped taking connections, so that the
    // quorum comes during the grace, not before the stop.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(resp_addr(&cluster.leader))
        .await
        .is_ok()
    {
        assert!(tokio::time::Instant::now() < deadline, "still accepting");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    cluster.followers[0].signal(Signal::SIGCONT);
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply)).await;
    assert!(read.is_ok(), "the connection closes after the reply");
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "+OK\r\n",
        "{}",
        cluster.leader.log_text()
    );
    let status = (cluster.leader)
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("the leader exited");
    assert!(status.success(), "clean exit: {status:?}");
}

/// `WAIT` counts a follower that got the connection's last write by a state transfer, as Redis
/// counts a replica that resynchronized. With a backlog of one write per follower, a write made
/// while follower5 is down (one write already pending for it) is not sent to it at all: its
/// delivery gives up, and the transfer that catches follower5 up once restarted carries it.
#[tokio::test]
async fn wait_counts_a_follower_that_a_state_transfer_gave_the_write() {
    let mut cluster = TestCluster::start_up(LocalSettings {
        leader_env: vec![("REPLICATION_BACKLOG".into(), "1".into())],
        ..speaking_resp(Settings {
            write_quorum: 0,
            ..base()
        })
    })
    .await;
    cluster.followers[4].kill();
    cluster
        .wait_follower(4, "down", Duration::from_secs(10))
        .await;
    let mut leader = connect(&cluster.leader).await;
    let mut set_then_wait = async |key: &str, wanted: usize| -> i64 {
        let () = query(&mut leader, redis::cmd("SET").arg(key).arg("v"))
            .await
            .expect("SET at quorum 0");
        query(&mut leader, redis::cmd("WAIT").arg(wanted).arg(10_000))
            .await
            .expect("WAIT")
    };
    assert_eq!(
        set_then_wait("pending", 4).await,
        4,
        "four followers are up"
    );
    // follower5's backlog is full: this write is not sent to it.
    assert_eq!(set_then_wait("caught", 4).await, 4);

    cluster.followers[4].restart().expect("restart follower5");
    cluster
        .wait_follower(4, "up", Duration::from_secs(10))
        .await;
    let held: i64 = query(&mut leader, redis::cmd("WAIT").arg(5).arg(10_000))
        .await
        .expect("WAIT");
    assert_eq!(
        held, 5,
        "follower5 holds the write since its state transfer"
    );
}
