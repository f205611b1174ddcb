//! The live dashboard, served by the leader: one self-contained page (`GET /` or `/ui`: HTML,
//! CSS and plain JavaScript embedded in the binary, nothing fetched from elsewhere) and the
//! Server-Sent Events stream it animates (`GET /events`).
//!
//! The stream carries the leader's replication [events](crate::events) as they happen, and a
//! `snapshot` of the cluster (what `GET /cluster` returns) when it opens and every 500 ms. A
//! browser too slow to keep up loses the events it fell behind on and gets a snapshot saying how
//! many it missed, so the stream never breaks and the page resynchronizes from the snapshot.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::extract::Leader;
use super::state::AppState;
use crate::error::Error;
use crate::events::Subscription;
use crate::protocol::ClusterStatus;
use crate::replication::Replicator;

/// The page, embedded at build time.
const PAGE: &str = include_str!("dashboard.html");

/// How often the stream sends a snapshot of the cluster.
const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(500);

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(page))
        .route("/ui", get(page))
        .route("/events", get(events))
}

/// `GET /` and `GET /ui`: the dashboard page (on the leader only).
async fn page(Leader(_): Leader) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}

/// `GET /events`: the Server-Sent Events stream the page animates.
async fn events(
    Leader(replicator): Leader,
    State(state): State<AppState>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Error> {
    // A stream outlives its request, and with it the request's concurrency permit: streams
    // have their own bound.
    let permit = Arc::clone(&state.http().event_streams)
        .try_acquire_owned()
        .map_err(|_| Error::Overloaded)?;
    // Subscribed before the first snapshot is taken, so that no event falls between the two.
    let events = replicator.events().subscribe();
    let mut ticker =
        tokio::time::interval_at(Instant::now() + SNAPSHOT_INTERVAL, SNAPSHOT_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let feed = Feed {
        events,
        ticker,
        state,
        replicator,
        _permit: permit,
    };
    // The stream opens with a snapshot, whatever events are already waiting.
    let first = feed.snapshot(0);
    let rest = futures_util::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        Some((Ok(event), feed))
    });
    let stream = futures_util::stream::once(async { Ok(first) }).chain(rest);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// One browser's stream: replication events, interleaved with snapshots.
struct Feed {
    events: Subscription,
    ticker: Interval,
    state: AppState,
    replicator: Replicator,
    /// Held as long as the stream is open.
    _permit: OwnedSemaphorePermit,
}

/// The `snapshot` message of the stream.
#[derive(Serialize)]
struct Snapshot {
    #[serde(rename = "type")]
    kind: &'static str,
    /// On the events' clock: milliseconds since the leader started.
    at_ms: f64,
    /// Events this browser missed since the last message, because it fell behind.
    missed: u64,
    /// The cluster, as `GET /cluster` shows it.
    cluster: ClusterStatus,
}

impl Feed {
    /// The next message: a snapshot when one is due or events were missed, else the next event.
    /// `None`, the end of the stream, once this leader stepped down: the page then asks where
    /// the leader went.
    async fn next(&mut self) -> Option<Event> {
        tokio::select! {
            // Snapshots first, so that a flood of events cannot hold them back.
            biased;
            () = self.replicator.stepped_down() => None,
            _ = self.ticker.tick() => Some(self.snapshot(0)),
            received = self.events.recv() => match received {
                Ok(stamped) => Some(json(&stamped)),
                Err(RecvError::Lagged(missed)) => {
                    self.ticker.reset();
                    Some(self.snapshot(missed))
                }
                Err(RecvError::Closed) => None,
            },
        }
    }

    fn snapshot(&self, missed: u64) -> Event {
        json(&Snapshot {
            kind: "snapshot",
            at_ms: self.replicator.events().now_ms(),
            missed,
            cluster: self.state.cluster_status(&self.replicator),
        })
    }
}

fn json(message: &impl Serialize) -> Event {
    // Serializing these plain structs cannot fail; if it ever did, a comment keeps the stream.
    Event::default()
        .json_data(message)
        .unwrap_or_else(|_| Event::default().comment("unserializable message"))
}
