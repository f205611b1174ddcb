//! Fault injection for the lab: a network partition without iptables (a `scratch` image has
//! none). A node told to isolate some peers (`POST /admin/partition`) drops its traffic with
//! them in both directions: its own requests to them fail at once, as to a host that cannot be
//! reached, and their requests to its internal listener are refused with `503 partitioned`,
//! which their transport treats as the same kind of failure. Clients still reach every node:
//! that is what a partition looks like to them.
//!
//! Every internal request and answer names its node in the [`NODE_HEADER`] header, so a node
//! knows whom a request comes from and learns its peers' node ids from their answers.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError, RwLock};

use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The header that names the node sending an internal request or answering one.
pub const NODE_HEADER: &str = "x-semisync-node";

/// The peers this node is cut off from, and how it names each of its peers.
#[derive(Debug, Default)]
pub struct Partition {
    /// The isolated peers, by their position in `PEERS`.
    isolated: RwLock<BTreeSet<usize>>,
    /// Each peer in `PEERS` order.
    peers: Vec<Peer>,
}

/// A URL's `host:port`, which names a node before it named itself (the whole URL when it has
/// no host or port).
pub fn authority(url: &Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        _ => url.to_string(),
    }
}

/// One peer as a partition names it.
#[derive(Debug)]
struct Peer {
    url: Url,
    /// Its node id, once an answer of it named it.
    node_id: Mutex<Option<String>>,
}

/// The answer of `GET`, `POST` and `DELETE /admin/partition`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionView {
    /// This node's id.
    pub node_id: String,
    /// The peers it is cut off from: their node ids (their `host:port` until they answered).
    pub isolated: Vec<String>,
    /// Every peer: its internal URL, its node id once known, and whether it is isolated.
    pub peers: Vec<PeerView>,
}

/// One peer in a [`PartitionView`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    /// Its internal base URL (`PEERS`).
    pub url: String,
    /// Its node id, once it answered this node.
    pub node_id: Option<String>,
    /// Whether this node drops its traffic with it.
    pub isolated: bool,
}

impl Partition {
    /// No peer isolated among `peers`.
    pub fn new(peers: &[Url]) -> Self {
        Self {
            isolated: RwLock::default(),
            peers: (peers.iter())
                .map(|url| Peer {
                    url: url.clone(),
                    node_id: Mutex::new(None),
                })
                .collect(),
        }
    }

    /// Isolates exactly the peers named in `names` (each by node id, host or `host:port`), or
    /// none when it is empty. A name that fits no peer is refused, and so is a peer that has
    /// not named itself yet (its requests could not be told apart); then nothing changes.
    pub fn isolate(&self, names: &[String]) -> Result<(), Error> {
        let mut isolated = BTreeSet::new();
        for name in names {
            let Some(index) = self.peers.iter().position(|peer| peer.named(name)) else {
                return Err(Error::UnknownPeer {
                    peer: name.clone(),
                    known: self.peers.iter().map(Peer::name).collect(),
                });
            };
            if self.peers[index].node_id().is_none() {
                return Err(Error::UnnamedPeer { peer: name.clone() });
            }
            isolated.insert(index);
        }
        *self
            .isolated
            .write()
            .unwrap_or_else(PoisonError::into_inner) = isolated;
        Ok(())
    }

    /// The peers whose node id is not known yet: a name may not find them.
    pub fn unnamed(&self) -> Vec<usize> {
        (0..self.peers.len())
            .filter(|&index| self.peers[index].node_id().is_none())
            .collect()
    }

    /// Whether peer number `index` is isolated.
    pub fn isolates_peer(&self, index: usize) -> bool {
        let isolated = self.isolated.read().unwrap_or_else(PoisonError::into_inner);
        isolated.contains(&index)
    }

    /// Whether the node `node_id` (as an internal request names its sender) is an isolated
    /// peer.
    pub fn isolates(&self, node_id: &str) -> bool {
        let isolated = self.isolated.read().unwrap_or_else(PoisonError::into_inner);
        isolated
            .iter()
            .any(|&index| self.peers[index].node_id().as_deref() == Some(node_id))
    }

    /// Records that peer number `index` answered as `node_id`.
    pub fn learn(&self, index: usize, node_id: &str) {
        if let Some(peer) = self.peers.get(index) {
            let mut known = peer.node_id.lock().unwrap_or_else(PoisonError::into_inner);
            if known.as_deref() != Some(node_id) {
                *known = Some(node_id.to_owned());
            }
        }
    }

    /// What this node, `node_id`, is cut off from.
    pub fn view(&self, node_id: &str) -> PartitionView {
        let isolated = self.isolated.read().unwrap_or_else(PoisonError::into_inner);
        PartitionView {
            node_id: node_id.to_owned(),
            isolated: isolated.iter().map(|&i| self.peers[i].name()).collect(),
            peers: (self.peers.iter().enumerate())
                .map(|(index, peer)| PeerView {
                    url: peer.url.to_string(),
                    node_id: peer.node_id(),
                    isolated: isolated.contains(&index),
                })
                .collect(),
        }
    }
}

impl Peer {
    fn node_id(&self) -> Option<String> {
        self.node_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Its node id, or its URL's `host:port` until it named itself.
    fn name(&self) -> String {
        self.node_id().unwrap_or_else(|| self.authority())
    }

    fn authority(&self) -> String {
        authority(&self.url)
    }

    /// Whether `name` names this peer: its node id, its host, or its `host:port`.
    fn named(&self, name: &str) -> bool {
        self.node_id().as_deref() == Some(name)
            || self.url.host_str() == Some(name)
            || self.authority() == name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition() -> Partition {
        let urls: Vec<Url> = ["http://kv-follower1:9000", "http://127.0.0.1:9002"]
            .iter()
            .map(|url| url.parse().expect("a URL"))
            .collect();
        Partition::new(&urls)
    }

    #[test]
    fn a_peer_is_named_by_node_id_host_or_host_and_port() {
        let partition = partition();
        partition.learn(0, "follower1");
        partition.learn(1, "follower2");
        partition
            .isolate(&["follower1".into(), "127.0.0.1:9002".into()])
            .expect("both known");
        assert!(partition.isolates_peer(0) && partition.isolates_peer(1));
        assert!(partition.isolates("follower1"));
        assert!(!partition.isolates("follower3"));
        partition
            .isolate(&["kv-follower1".into()])
            .expect("by host");
        assert!(partition.isolates_peer(0) && !partition.isolates_peer(1));
        assert_eq!(partition.view("leader").isolated, vec!["follower1"]);
        partition.isolate(&[]).expect("healed");
        assert!(!partition.isolates_peer(0) && !partition.isolates("follower1"));
    }

    #[test]
    fn an_unknown_name_changes_nothing() {
        let partition = partition();
        partition.learn(0, "follower1");
        partition
            .isolate(&["kv-follower1".into()])
            .expect("by host");
        let error = partition
            .isolate(&["follower9".into()])
            .expect_err("unknown");
        assert!(error.to_string().contains("follower9"), "{error}");
        assert!(partition.isolates_peer(0), "still isolated");
    }

    #[test]
    fn a_peer_that_never_answered_cannot_be_isolated() {
        let partition = partition();
        let error = (partition.isolate(&["kv-follower1".into()])).expect_err("unnamed");
        assert!(matches!(error, Error::UnnamedPeer { .. }), "{error}");
        partition.learn(0, "follower1");
        partition
            .isolate(&["kv-follower1".into()])
            .expect("named now");
        assert!(partition.isolates("follower1") && partition.isolates_peer(0));
    }
}
