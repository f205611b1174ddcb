//! The command line's client commands (`put`, `get`, `delete`, `dump`, `status`, `settings`,
//! `cut`, `restore`, `partition`, `failover`, `health`): they need no JSON quoting, print a clear line, and exit with a
//! code scripts can test.
//!
//! Exit codes: 0 success; 1 the node answered with an error (its code and message are printed);
//! 2 bad usage; 3 the node could not be reached.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Url;
use serde::Serialize;

use crate::client::{Client, ClientError};
use crate::config::{Role, parse_base_url};
use crate::failover::PeerReport;
use crate::partition::PartitionView;
use crate::replication::FollowerView;
use crate::settings::{SettingsChange, WaitPoint};
use crate::store::Version;

/// Where the CLI finds the cluster unless told otherwise: the compose leader.
pub const DEFAULT_LEADER: &str = "http://localhost:8000";

/// The client commands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Write KEY = VALUE on the leader and wait for the quorum.
    Put {
        /// The key (1 to 1024 bytes; may contain `/`).
        key: String,
        /// The value.
        value: String,
        /// Follower acks to wait for, overriding the leader's WRITE_QUORUM for this write.
        #[arg(long)]
        quorum: Option<usize>,
        /// The leader to ask.
        #[command(flatten)]
        leader: LeaderArg,
        /// The output format.
        #[command(flatten)]
        output: OutputArg,
    },
    /// Read KEY from a node (the leader, or any follower with --node).
    Get {
        /// The key.
        key: String,
        /// Answer only once the node holds this version of the key or a newer one (the version
        /// `put` printed, `term.counter` such as 3.42: read-your-writes on a follower); waits up
        /// to 1 s, then fails with not_yet_replicated. (A leader that just took over under
        /// after_sync also waits, as long, for its followers to hold the state it took over, then
        /// fails with state_not_replicated: retry.)
        #[arg(long)]
        min_version: Option<Version>,
        /// The node to ask.
        #[command(flatten)]
        node: NodeArg,
        /// The output format.
        #[command(flatten)]
        output: OutputArg,
    },
    /// Delete KEY on the leader and wait for the quorum.
    Delete {
        /// The key.
        key: String,
        /// Follower acks to wait for, overriding the leader's WRITE_QUORUM for this write.
        #[arg(long)]
        quorum: Option<usize>,
        /// The leader to ask.
        #[command(flatten)]
        leader: LeaderArg,
        /// The output format.
        #[command(flatten)]
        output: OutputArg,
    },
    /// Print a node's whole state.
    Dump {
        /// The node to ask.
        #[command(flatten)]
        node: NodeArg,
        /// The output format.
        #[command(flatten)]
        output: OutputArg,
    },
    /// Print the leader's replication status (its GET /cluster) as a table.
    Status {
        /// The leader to ask.
        #[command(flatten)]
        leader: LeaderArg,
        /// The output format.
        #[command(flatten)]
        output: OutputArg,
    },
    /// Print the leader's live settings, or change the ones given (PATCH /admin/settings); the
    /// next write uses them.
    Settings {
        /// The settings to change.
        #[command(flatten)]
        change: SettingsChange,
        /// The leader to ask.
        #[command(flatten)]
        leader: LeaderArg,
        /// The output format.
        #[command(flatten)]
        output: OutputArg,
    },
    /// Cut replication to FOLLOWER off, as if the network between it and the leader failed.
    Cut {
        /// The follower's node id (as `status` lists it).
        follower: String,
        /// The leader to ask.
        #[command(flatten)]
        leader: LeaderArg,
        /// The output format.
        #[command(flatten)]
        output: OutputArg,
    },
    /// Restore replication to FOLLOWER after `cut`; it catches up by itself.
    Restore {
        /// The follower's node id (as `status` lists it).
        follower: String,
        /// The leader to ask.
        #[command(flatten)]
        leader: LeaderArg,
        /// The output format.
        #[command(flatten)]
        output: OutputArg,
    },
    /// Cut the nodes given with --node off from the PEERS named, both directions, as a network
    /// partition would (POST /admin/partition on each); with --heal, reconnect them. Clients
    /// still reach every node. For a split into {leader, follower4, follower5} and the rest:
    /// `partition --node http://localhost:8000 --node http://localhost:8004
    /// --node http://localhost:8005 follower1 follower2 follower3`.
    Partition {
        /// The peers to cut the nodes off from, by node id (as `status` lists them), host or
        /// host:port; every other peer is reachable again.
        #[arg(required_unless_present = "heal", conflicts_with = "heal")]
        peers: Vec<String>,
        /// Reconnect the nodes to every peer (DELETE /admin/partition).
        #[arg(long)]
        heal: bool,
        /// Base URL of a node to cut off (leader or follower); give --node once per node.
        #[arg(long = "node", default_value = DEFAULT_LEADER, value_parser = parse_base_url)]
        nodes: Vec<Url>,
        /// The output format.
        #[command(flatten)]
        output: OutputArg,
    },
    /// Promote a follower to leader of a new term (POST /admin/promote), as MHA or orchestrator
    /// do: it fences the nodes it reaches, merges their states, and says which acknowledged
    /// writes that keeps. Refused while the leader still answers, or with too few followers to
    /// keep every acknowledged write, unless --force.
    Failover {
        /// Base URL of the follower to promote [default: the port of LISTEN_ADDR on 127.0.0.1,
        /// the node this runs beside, as with `docker exec kv-follower1 /semisync-kv failover`].
        #[arg(long, value_parser = parse_base_url)]
        to: Option<Url>,
        /// Promote even while the leader answers (it is deposed: its writes that no follower
        /// acknowledged are lost), or when too few followers answer to keep every acknowledged
        /// write.
        #[arg(long)]
        force: bool,
        /// The address the node listens on, used when --to is not given.
        #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8000")]
        listen_addr: SocketAddr,
        /// The output format.
        #[command(flatten)]
        output: OutputArg,
    },
    /// Probe a node's /health and exit 0 if it answers "ok", 1 otherwise (for container
    /// healthchecks: the image has no shell and no curl).
    Health {
        /// Base URL of the node to probe [default: the port of LISTEN_ADDR on 127.0.0.1].
        #[arg(long, value_parser = parse_base_url)]
        url: Option<Url>,
        /// The address the node listens on, used when --url is not given.
        #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8000")]
        listen_addr: SocketAddr,
    },
}

/// `--leader URL`.
#[derive(Debug, Args)]
pub struct LeaderArg {
    /// Base URL of the leader; a follower's will do too, as it names the leader in its
    /// `421 not_leader` answer and the command goes on there.
    #[arg(long = "leader", default_value = DEFAULT_LEADER, value_parser = parse_base_url)]
    pub url: Url,
    /// The cluster's nodes, comma-separated: when the leader refuses the connection (it is
    /// gone) or no leader is named, the command asks them for the new one, for up to 15 s (an
    /// election, or a person's failover) [default: the compose ports, http://localhost:8000 to
    /// 8005, while --leader is left at its default].
    #[arg(long, value_delimiter = ',', value_parser = parse_base_url)]
    pub nodes: Vec<Url>,
}

impl LeaderArg {
    /// The nodes to ask for the leader: `--nodes`, else the compose ports when `--leader` is
    /// the default.
    pub fn nodes(&self) -> Vec<Url> {
        if !self.nodes.is_empty() {
            return self.nodes.clone();
        }
        if self.url.as_str().trim_end_matches('/') != DEFAULT_LEADER {
            return Vec::new();
        }
        (8000..=8005)
            .filter_map(|port| parse_base_url(&format!("http://localhost:{port}")).ok())
            .collect()
    }
}

/// `--node URL`.
#[derive(Debug, Args)]
pub struct NodeArg {
    /// Base URL of the node to ask (leader or follower).
    #[arg(long = "node", default_value = DEFAULT_LEADER, value_parser = parse_base_url)]
    pub url: Url,
}

/// `--json`.
#[derive(Debug, Args)]
pub struct OutputArg {
    /// Print the node's JSON answer instead of a line for people.
    #[arg(long)]
    pub json: bool,
}

/// Runs a client command and returns the process exit code.
pub async fn run(command: ClientCommand) -> ExitCode {
    match execute(command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            match err {
                ClientError::Unreachable { .. } => ExitCode::from(3),
                ClientError::Api { .. } | ClientError::BadAnswer { .. } => ExitCode::FAILURE,
            }
        }
    }
}

/// Runs a client command; prints its answer, or returns its error.
async fn execute(command: ClientCommand) -> Result<(), ClientError> {
    match command {
        ClientCommand::Put {
            key,
            value,
            quorum,
            leader,
            output,
        } => {
            let put = async |client: &Client| client.put(&key, &value, quorum).await;
            on_leader(&leader, put).await.map(|w| {
                let acked_by = w.acked_by.join(", ");
                let line = format!(
                    "OK {} = {:?} (version {}; {} of {} acks{}{}; {:.1} ms{})",
                    w.key,
                    value,
                    w.version,
                    w.acks,
                    w.quorum,
                    if acked_by.is_empty() { "" } else { ": " },
                    acked_by,
                    w.latency_ms,
                    wait_point_note(w.wait_point)
                );
                print(&output, &w, line)
            })
        }
        ClientCommand::Get {
            key,
            min_version,
            node,
            output,
        } => {
            let client = Client::new(node.url)?;
            client.get_at_least(&key, min_version).await.map(|r| {
                let line = format!("{} = {:?} (version {})", r.key, r.value, r.version);
                print(&output, &r, line)
            })
        }
        ClientCommand::Delete {
            key,
            quorum,
            leader,
            output,
        } => {
            let delete = async |client: &Client| client.delete(&key, quorum).await;
            on_leader(&leader, delete).await.map(|w| {
                let line = format!(
                    "OK deleted {} (version {}; {} of {} acks; {:.1} ms{})",
                    w.key,
                    w.version,
                    w.acks,
                    w.quorum,
                    w.latency_ms,
                    wait_point_note(w.wait_point)
                );
                print(&output, &w, line)
            })
        }
        ClientCommand::Dump { node, output } => {
            let client = Client::new(node.url)?;
            client.dump().await.map(|dump| {
                let lines: Vec<String> = dump
                    .iter()
                    .map(|(key, value)| format!("{key} = {value:?}"))
                    .collect();
                let text = if lines.is_empty() {
                    "(empty)".to_owned()
                } else {
                    lines.join("\n")
                };
                print(&output, &dump, text)
            })
        }
        ClientCommand::Status { leader, output } => {
            let cluster = async |client: &Client| client.cluster().await;
            on_leader(&leader, cluster).await.map(|status| {
                let head = format!(
                    "leader {} (term {}): version {}, {} keys, {}",
                    status.node_id, status.term, status.version, status.keys, status.settings
                );
                print(
                    &output,
                    &status,
                    format!("{head}\n{}", follower_table(&status.followers)),
                )
            })
        }
        ClientCommand::Settings {
            change,
            leader,
            output,
        } => {
            let settings = on_leader(&leader, async |client: &Client| {
                if change.is_empty() {
                    client.settings().await
                } else {
                    client.change_settings(&change).await
                }
            })
            .await;
            settings.map(|settings| print(&output, &settings, settings.to_string()))
        }
        ClientCommand::Cut {
            follower,
            leader,
            output,
        } => cut_off(leader, &follower, true, &output).await,
        ClientCommand::Restore {
            follower,
            leader,
            output,
        } => cut_off(leader, &follower, false, &output).await,
        ClientCommand::Partition {
            peers,
            heal: _,
            nodes,
            output,
        } => {
            let mut views = Vec::new();
            for node in nodes {
                let view = Client::new(node)?.partition(&peers).await?;
                let line = match &view.isolated[..] {
                    [] => format!("{}: connected to every peer", view.node_id),
                    isolated => format!("{}: cut off from {}", view.node_id, isolated.join(", ")),
                };
                views.push((line, view));
            }
            let lines: Vec<&str> = views.iter().map(|(line, _)| line.as_str()).collect();
            let answers: Vec<&PartitionView> = views.iter().map(|(_, view)| view).collect();
            print(&output, &answers, lines.join("\n"));
            Ok(())
        }
        ClientCommand::Failover {
            to,
            force,
            listen_addr,
            output,
        } => {
            let client = Client::new(to.unwrap_or_else(|| local_url(listen_addr)))?;
            let promotion = client.promote(force).await?;
            let line = format!(
                "{} is the leader of term {}{}\n{}\n{}",
                promotion.node_id,
                promotion.term,
                promotion
                    .leader_url
                    .as_ref()
                    .map(|url| format!(", at {url}"))
                    .unwrap_or_default(),
                promotion.guarantee,
                peer_table(&promotion.peers)
            );
            print(&output, &promotion, line);
            Ok(())
        }
        ClientCommand::Health { url, listen_addr } => {
            let client = Client::new(url.unwrap_or_else(|| local_url(listen_addr)))?;
            client.health().await.map(|h| {
                println!("ok: {} {} at version {}", h.role, h.node_id, h.version);
            })
        }
    }
}

/// Sends `request` to the leader `--leader` names. When that node is a follower, the request
/// follows its `421 not_leader` to the leader, and a note on stderr says so.
async fn on_leader<T>(
    leader: &LeaderArg,
    request: impl AsyncFnOnce(&Client) -> Result<T, ClientError>,
) -> Result<T, ClientError> {
    let client = Client::new(leader.url.clone())?.with_nodes(leader.nodes());
    let answer = request(&client).await;
    let reached = client.base();
    if reached != leader.url {
        eprintln!(
            "note: {} does not lead; the command went to the leader, {reached}",
            leader.url
        );
    }
    answer
}

/// `cut` and `restore`.
async fn cut_off(
    leader: LeaderArg,
    follower: &str,
    cut: bool,
    output: &OutputArg,
) -> Result<(), ClientError> {
    let view = on_leader(&leader, async |client: &Client| {
        client.cut_off(follower, cut).await
    })
    .await?;
    let line = if cut {
        format!(
            "{} cut off: the leader sends it nothing until `semisync-kv restore {}`",
            view.node_id, view.node_id
        )
    } else {
        format!("{} restored: it catches up by itself", view.node_id)
    };
    print(output, &view, line);
    Ok(())
}

/// Prints the JSON answer with `--json`, else the line for people.
/// What a write's line says of the wait point: nothing for the default, `after_commit`.
fn wait_point_note(wait_point: WaitPoint) -> &'static str {
    match wait_point {
        WaitPoint::AfterCommit => "",
        WaitPoint::AfterSync => "; after_sync: visible on the leader since its quorum",
    }
}

fn print(output: &OutputArg, answer: &impl Serialize, line: String) {
    if output.json {
        match serde_json::to_string_pretty(answer) {
            Ok(json) => println!("{json}"),
            Err(err) => eprintln!("error: cannot print JSON: {err}"),
        }
    } else {
        println!("{line}");
    }
}

/// What each peer answered a promotion, as an aligned text table.
fn peer_table(peers: &[PeerReport]) -> String {
    let header = ["PEER", "WAS", "VERSION", "MERGED", "NOTE"];
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|peer| {
            vec![
                peer.node_id.clone().unwrap_or_else(|| peer.url.clone()),
                peer.role.map_or("-", Role::as_str).to_owned(),
                peer.version.map_or("-".into(), |v| v.to_string()),
                if peer.merged { "yes" } else { "no" }.to_owned(),
                peer.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(&header, &rows)
}

/// The followers as an aligned text table.
pub fn follower_table(followers: &[FollowerView]) -> String {
    let header = [
        "FOLLOWER",
        "STATE",
        "ACKED",
        "LAG",
        "CONTACT",
        "LAST ACK",
        "PENDING",
        "RETRYING",
        "TRANSFERS",
    ];
    let rows: Vec<Vec<String>> = followers
        .iter()
        .map(|f| {
            vec![
                f.node_id.clone(),
                if f.cut_off {
                    "cut_off".to_owned()
                } else {
                    serde_json::to_value(f.state)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default()
                },
                f.acked_version.to_string(),
                f.lag_versions.to_string(),
                f.last_contact_ms_ago
                    .map_or("never".into(), |ms| format!("{ms} ms ago")),
                f.last_ack_latency_ms
                    .map_or("-".into(), |ms| format!("{ms:.1} ms")),
                f.pending.to_string(),
                f.retrying.to_string(),
                f.transfers.to_string(),
            ]
        })
        .collect();
    table(&header, &rows)
}

/// `rows` under `header`, each column as wide as its widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|row| row[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    std::iter::once(line(header.to_vec()))
        .chain(
            rows.iter()
                .map(|row| line(row.iter().map(String::as_str).collect())),
        )
        .collect::<Vec<_>>()
        .join("\n")
}

/// The URL of a node listening on `addr`, reached from the same host.
fn local_url(addr: SocketAddr) -> Url {
    let ip = if addr.ip().is_unspecified() {
        [127, 0, 0, 1].into()
    } else {
        addr.ip()
    };
    let text = format!("http://{}", SocketAddr::new(ip, addr.port()));
    Url::parse(&text).unwrap_or_else(|_| unreachable!("an IP address and a port form a URL"))
}
