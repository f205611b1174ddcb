//! Cluster tests: a leader and five followers as real processes on loopback, one file per
//! topic; `helpers.rs` starts and drives the cluster.

#[path = "../common/mod.rs"]
mod common;
mod consistency;
mod dashboard;
mod election;
mod failover;
mod helpers;
mod input;
mod linearizability;
mod observability;
mod partition;
mod process;
mod recovery;
mod replication;
mod resp;
mod tools;
