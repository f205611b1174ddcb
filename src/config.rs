//! A node's configuration: every setting is a command-line flag and an environment variable, and
//! [`Config::validate`] refuses combinations that cannot work before the node starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::settings::Settings;

/// What a node does in the cluster. `ROLE` is the role a node takes in a new cluster: one that
/// finds a live leader when it starts follows it, and a follower becomes the leader when it is
/// promoted (`POST /admin/promote`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Accepts writes and replicates them to the followers.
    Leader,
    /// Applies the leader's writes and serves reads.
    Follower,
}

impl Role {
    /// The role as it appears in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
        }
    }
}

/// Settings of `semisync-kv serve`.
#[derive(Clone, Debug, Args)]
pub struct Config {
    /// Role of this node in a new cluster: leader or follower. A node that finds a live leader
    /// when it starts follows it, whatever its role says.
    #[arg(long, env = "ROLE", value_enum)]
    pub role: Role,

    /// Name of this node, used in logs, /health, acks and errors [default: the host name].
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,

    /// Address the HTTP API listens on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8000")]
    pub listen_addr: SocketAddr,

    /// Address of the internal listener: replication, heartbeats and state transfers from the
    /// leader, and a candidate's fence. Keep it off the public network (compose does not
    /// publish it).
    #[arg(long, env = "INTERNAL_LISTEN_ADDR", default_value = "0.0.0.0:9000")]
    pub internal_listen_addr: SocketAddr,

    /// Address of the RESP listener (Redis's protocol: redis-cli and every Redis client), for
    /// example 0.0.0.0:6379; unset, the node speaks HTTP only. It takes at most
    /// MAX_CONCURRENT_REQUESTS connections (counted apart from HTTP's requests), and
    /// MAX_VALUE_BYTES and HEADER_READ_TIMEOUT_MS apply to them.
    #[arg(long, env = "RESP_LISTEN_ADDR")]
    pub resp_listen_addr: Option<SocketAddr>,

    /// This node's RESP address as clients reach it, host:port, e.g. 127.0.0.1:6380 in
    /// compose. A leader sends it with its heartbeats, and its followers name it in their
    /// READONLY errors and as master_host and master_port in INFO and ROLE. Unset, it is
    /// RESP_LISTEN_ADDR when that names one interface (not 0.0.0.0 or ::) [default: none].
    #[arg(long, env = "RESP_PUBLIC_ADDR", value_parser = parse_host_port)]
    pub resp_public_addr: Option<String>,

    /// Comma-separated base URLs of every other node's internal listener, e.g.
    /// http://follower1:9000,http://follower2:9000. A leader replicates to them; a follower
    /// needs them to be promoted. Required on a leader.
    #[arg(long, env = "PEERS", value_delimiter = ',', value_parser = parse_base_url)]
    pub peers: Vec<Url>,

    /// The same as PEERS, under its earlier name; both lists count.
    #[arg(long, env = "FOLLOWERS", value_delimiter = ',', value_parser = parse_base_url)]
    pub followers: Vec<Url>,

    /// Base URL of the leader as a follower sees it; named in a follower's "not the leader"
    /// errors until the leader's heartbeat or state transfer names its PUBLIC_URL [default:
    /// none].
    #[arg(long, env = "LEADER_URL", value_parser = parse_base_url)]
    pub leader_url: Option<Url>,

    /// This node's base URL as clients reach it, e.g. http://localhost:8000 in compose. A
    /// leader sends it with its heartbeats and state transfers, and its followers name it in
    /// their `421 not_leader` answers [default: none].
    #[arg(long, env = "PUBLIC_URL", value_parser = parse_base_url)]
    pub public_url: Option<Url>,

    /// The live settings at start: `WRITE_QUORUM`, `MIN_DELAY_MS`, `MAX_DELAY_MS`,
    /// `REPLICATE_TIMEOUT_MS`.
    #[command(flatten)]
    pub settings: Settings,

    /// Most writes that may be pending (in flight or retrying) for one follower; past it the
    /// leader drops them and sends that follower a full state transfer instead. Also the most
    /// writes the leader hides under `after_sync` (past it a write is refused).
    #[arg(long, env = "REPLICATION_BACKLOG", default_value_t = 10_000)]
    pub replication_backlog: usize,

    /// Shared secret every internal request must carry (Authorization: Bearer ...). Without
    /// one, internal routes accept any request and only the internal listener's address
    /// protects them [default: none].
    #[arg(long, env = "CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,

    /// File holding the shared secret, instead of CLUSTER_TOKEN (e.g. a Docker secret).
    #[arg(long, env = "CLUSTER_TOKEN_FILE")]
    pub cluster_token_file: Option<PathBuf>,

    /// How long a client may take to send a request's headers, in milliseconds (against
    /// connections that trickle their headers to hold a connection forever).
    #[arg(long, env = "HEADER_READ_TIMEOUT_MS", default_value_t = 5000)]
    pub header_read_timeout_ms: u64,

    /// How long a request may take in all before it is answered 408, in milliseconds; must be
    /// above REPLICATE_TIMEOUT_MS [default: REPLICATE_TIMEOUT_MS + 10000].
    #[arg(long, env = "REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,

    /// Requests served at once per listener; more are answered 503 at once instead of queueing.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = 1024)]
    pub max_concurrent_requests: usize,

    /// Largest accepted value, in bytes.
    #[arg(long, env = "MAX_VALUE_BYTES", default_value_t = 1_048_576)]
    pub max_value_bytes: usize,

    /// With AUTO_FAILOVER on: how long a follower hears nothing of its leader before it asks
    /// for votes (after a random extra delay of up to half this), in milliseconds, 1000 to
    /// 60000. The leader's heartbeats come every 500 ms.
    #[arg(long, env = "FAILOVER_AFTER_MS", default_value_t = 1500)]
    pub failover_after_ms: u64,
}

impl Config {
    /// Checks the rules that involve more than one setting; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        let peers = self.peers();
        if self.role == Role::Leader && peers.is_empty() {
            return Err(
                "PEERS (--peers) is empty: a leader needs at least one follower's internal \
                 URL, e.g. PEERS=http://follower1:9000"
                    .into(),
            );
        }
        let followers = (!peers.is_empty()).then_some(peers.len());
        self.settings.validate(followers, self.request_timeout_ms)?;
        if self.replication_backlog == 0 {
            return Err("REPLICATION_BACKLOG (--replication-backlog) must be at least 1".into());
        }
        if self.header_read_timeout_ms == 0 || self.max_concurrent_requests == 0 {
            return Err(
                "HEADER_READ_TIMEOUT_MS and MAX_CONCURRENT_REQUESTS must be at least 1".into(),
            );
        }
        if !(1000..=60_000).contains(&self.failover_after_ms) {
            return Err(format!(
                "FAILOVER_AFTER_MS (--failover-after-ms) is {}: it must be between 1000 (two \
                 heartbeats) and 60000",
                self.failover_after_ms
            ));
        }
        if self.resp_public_addr.is_some() && self.resp_listen_addr.is_none() {
            return Err(
                "RESP_PUBLIC_ADDR (--resp-public-addr) is set, but RESP_LISTEN_ADDR is not: \
                 this node speaks no RESP to be reached at"
                    .into(),
            );
        }
        if self.cluster_token.is_some() && self.cluster_token_file.is_some() {
            return Err("set CLUSTER_TOKEN or CLUSTER_TOKEN_FILE, not both".into());
        }
        if let Some(token) = self
            .cluster_token
            .as_deref()
            .filter(|token| !token.is_empty())
        {
            check_token(token, "CLUSTER_TOKEN")?;
        }
        if self.max_value_bytes == 0 {
            return Err("MAX_VALUE_BYTES (--max-value-bytes) must be at least 1".into());
        }
        if matches!(&self.node_id, Some(id) if id.trim().is_empty()) {
            return Err("NODE_ID (--node-id) must not be empty".into());
        }
        Ok(())
    }

    /// Reads the shared cluster secret of a validated configuration: `CLUSTER_TOKEN`, or the
    /// file `CLUSTER_TOKEN_FILE` names; `None` when neither is set (Compose passes an unset
    /// variable as an empty one). [`AppState::new`](crate::api::AppState::new) calls it once, at
    /// start-up, and keeps the token: a file that becomes unreadable later changes nothing. A
    /// missing, unreadable or empty file is an error that names the setting.
    pub(crate) fn read_cluster_token(&self) -> Result<Option<String>, String> {
        let Some(path) = &self.cluster_token_file else {
            return Ok(self.cluster_token.clone().filter(|token| !token.is_empty()));
        };
        let setting = format!("CLUSTER_TOKEN_FILE {}", path.display());
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("{setting} cannot be read: {err}"))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(format!("{setting} is empty; put the cluster token in it"));
        }
        check_token(token, &setting)?;
        Ok(Some(token.to_owned()))
    }

    /// The other nodes' internal base URLs: `PEERS` then `FOLLOWERS`, each once.
    pub fn peers(&self) -> Vec<Url> {
        let mut peers: Vec<Url> = Vec::new();
        for url in self.peers.iter().chain(&self.followers) {
            if !peers.contains(url) {
                peers.push(url.clone());
            }
        }
        peers
    }

    /// How long a client may take to send a request's headers.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// How long a follower hears nothing of its leader before an election, with AUTO_FAILOVER.
    pub fn failover_after(&self) -> Duration {
        Duration::from_millis(self.failover_after_ms)
    }

    /// How long a request may take in all.
    pub fn request_timeout(&self) -> Duration {
        let default = self.settings.replicate_timeout_ms.saturating_add(10_000);
        Duration::from_millis(self.request_timeout_ms.unwrap_or(default))
    }

    /// The node's name: `NODE_ID`, else the host name, else "node".
    pub fn node_id(&self) -> String {
        if let Some(id) = &self.node_id {
            return id.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "node".to_owned())
    }
}

/// Refuses a token that cannot go in an `Authorization` header as it is.
fn check_token(token: &str, setting: &str) -> Result<(), String> {
    if token.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(format!(
            "{setting}: the cluster token must be printable ASCII without spaces"
        ))
    }
}

/// Parses an `http://` or `https://` base URL with a host, for `FOLLOWERS` and `LEADER_URL`.
pub fn parse_base_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|err| format!("{text:?} is not a URL ({err})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{text:?} is not an http:// URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{text:?} must be a base URL without query or fragment"
        ));
    }
    Ok(url)
}

/// Checks a `host:port` address as clients would dial it: a name or an IPv4 address (labels of
/// letters, digits, `-` and `_`, joined by dots) or a bracketed IPv6 address, and a port from 1
/// to 65535 written in plain digits. Returns it without the spaces around it.
pub fn parse_host_port(text: &str) -> Result<String, String> {
    let text = text.trim();
    let wrong = || format!("{text:?} is not host:port (e.g. 127.0.0.1:6380 or kv-leader:6379)");
    let (host, port) = text.rsplit_once(':').ok_or_else(wrong)?;
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => host.split('.').all(|label| {
            !label.is_empty()
                && (label.chars()).all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        }),
    };
    let port_ok = !port.starts_with('0')
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|port| port > 0);
    if host_ok && port_ok {
        Ok(text.to_owned())
    } else {
        Err(wrong())
    }
}

/// A RESP address a peer sent, kept only when it is host:port as [`parse_host_port`] accepts
/// it: `READONLY`, `INFO` and `ROLE` show it as it came.
pub fn dialable(addr: Option<String>) -> Option<String> {
    addr.filter(|addr| parse_host_port(addr).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::WaitPoint;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
            .map_err(|err| err.to_string())?;
        cli.config.validate()?;
        Ok(cli.config)
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = parse(&["--role", "follower"]).expect("valid");
        assert_eq!(config.listen_addr.to_string(), "0.0.0.0:8000");
        assert_eq!(
            config.settings,
            Settings {
                write_quorum: 3,
                min_delay_ms: 0,
                max_delay_ms: 1000,
                replicate_timeout_ms: 5000,
                wait_point: WaitPoint::AfterCommit,
                auto_failover: false,
            }
        );
        assert_eq!(config.max_value_bytes, 1_048_576);
    }

    #[test]
    fn a_resp_public_address_is_host_and_port() {
        for good in [
            "127.0.0.1:6380",
            "kv-leader:6379",
            "[::1]:6380",
            "a.example_1-b:1",
        ] {
            let config = parse(&[
                "--role",
                "follower",
                "--resp-listen-addr",
                "0.0.0.0:6379",
                "--resp-public-addr",
                good,
            ]);
            assert_eq!(config.expect(good).resp_public_addr.as_deref(), Some(good));
        }
        for bad in [
            "",
            "6380",
            "host",
            "host:0",
            "host:06380",
            "host:+6380",
            "host:65536",
            ":6380",
            "a..b:1",
            "::1:6380",
            "a b:1",
            "[zz]:1",
        ] {
            let refused = parse(&["--role", "follower", "--resp-public-addr", bad]);
            assert!(
                refused
                    .as_ref()
                    .is_err_and(|err| err.contains("is not host:port")),
                "{bad:?}: {refused:?}"
            );
        }
        // An address for a listener the node does not have.
        let refused = parse(&["--role", "follower", "--resp-public-addr", "127.0.0.1:6380"]);
        assert!(
            refused
                .as_ref()
                .is_err_and(|err| err.contains("RESP_LISTEN_ADDR is not")),
            "{refused:?}"
        );
    }

    #[test]
    fn leader_takes_a_comma_separated_follower_list() {
        let config = parse(&[
            "--role",
            "leader",
            "--followers",
            "http://a:8000,http://b:8000,http://c:8000",
        ])
        .expect("valid");
        assert_eq!(config.peers().len(), 3);
        assert_eq!(config.peers()[1].as_str(), "http://b:8000/");
    }

    #[test]
    fn peers_and_followers_name_the_same_nodes_once() {
        let config = parse(&[
            "--role",
            "follower",
            "--peers",
            "http://a:9000,http://b:9000",
            "--followers",
            "http://b:9000,http://c:9000",
        ])
        .expect("valid");
        let peers: Vec<String> = config.peers().iter().map(|url| url.to_string()).collect();
        assert_eq!(
            peers,
            ["http://a:9000/", "http://b:9000/", "http://c:9000/"]
        );
    }

    #[test]
    fn bad_configurations_name_the_setting() {
        let cases: [(&[&str], &str); 7] = [
            (&["--role", "boss"], "--role"),
            (&["--role", "leader"], "PEERS"),
            (
                &[
                    "--role",
                    "leader",
                    "--followers",
                    "http://a:1",
                    "--write-quorum",
                    "2",
                ],
                "WRITE_QUORUM",
            ),
            (
                &["--role", "leader", "--followers", "not a url"],
                "not a URL",
            ),
            (&["--role", "leader", "--followers", "ftp://a:1"], "http://"),
            (
                &[
                    "--role",
                    "follower",
                    "--min-delay-ms",
                    "5",
                    "--max-delay-ms",
                    "4",
                ],
                "MIN_DELAY_MS",
            ),
            (
                &["--role", "follower", "--replicate-timeout-ms", "0"],
                "REPLICATE_TIMEOUT_MS",
            ),
        ];
        for (args, expected) in cases {
            let err = parse(args).expect_err(&format!("{args:?} must be refused"));
            assert!(err.contains(expected), "{args:?}: {err}");
        }
    }
}
