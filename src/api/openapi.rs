//! The OpenAPI description of the public API, generated from the handlers and types by utoipa,
//! and served at `GET /openapi.json`. Each node describes the API it serves: a follower's has no
//! writes and no `/cluster`, the leader's bounds `?quorum` by its number of followers, and each
//! bounds a read's `?wait_ms` by its request timeout.

use axum::extract::State;
use utoipa::OpenApi;
use utoipa::openapi::{Content, ObjectBuilder, Ref, RefOr, ResponseBuilder, Schema};

use super::state::AppState;
use super::{internal, public, stream};
use crate::config::Role;
use crate::error::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "semisync-kv",
        description = "A single-leader, semi-synchronously replicated \
        in-memory key-value store. Errors are JSON objects with `error` and `message`."
    ),
    paths(
        public::health,
        public::read,
        public::put,
        public::delete,
        public::dump,
        public::cluster
    ),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// The internal API of a node: what its leader sends it on its internal listener (a candidate's
/// fence is left out, so that a conformance run cannot start terms under the cluster).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "semisync-kv internal API",
        description = "What a leader sends a follower, and what a starting node reads, on each \
        node's internal listener (`INTERNAL_LISTEN_ADDR`). Every request carries \
        `Authorization: Bearer <CLUSTER_TOKEN>` when a token is set. Errors are JSON objects \
        with `error` and `message`."
    ),
    paths(
        internal::replicate,
        stream::open,
        internal::heartbeat,
        internal::status
    ),
    components(schemas(ErrorBody))
)]
struct InternalApiDoc;

/// The description of a node's internal API, served on its internal listener.
pub fn internal_document() -> utoipa::openapi::OpenApi {
    let mut doc = InternalApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

pub(super) async fn serve_internal() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(internal_document())
}

/// The description of the API a node with this role, number of followers and request timeout
/// serves.
pub fn document(role: Role, followers: usize, request_timeout_ms: u64) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    // A read waits for its min_version less than the request may take.
    let reads = doc
        .paths
        .paths
        .get_mut("/kv/{key}")
        .and_then(|item| item.get.as_mut());
    let parameters = reads
        .into_iter()
        .flat_map(|read| read.parameters.iter_mut().flatten());
    for parameter in parameters.filter(|p| p.name == "wait_ms") {
        let schema = ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .minimum(Some(0))
            .maximum(Some(request_timeout_ms.saturating_sub(1) as f64));
        parameter.schema = Some(RefOr::T(Schema::Object(schema.build())));
    }
    match role {
        Role::Follower => {
            doc.paths.paths.remove("/cluster");
            // A follower answers every write with 421 and the leader's URL, whatever the input.
            let not_leader = ResponseBuilder::new()
                .description("this node is a follower: send writes to the leader it names")
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                )
                .build();
            let item = doc.paths.paths.get_mut("/kv/{key}");
            let writes = item
                .into_iter()
                .flat_map(|item| [&mut item.put, &mut item.delete]);
            for operation in writes.flatten() {
                operation.responses.responses = [("421".to_owned(), RefOr::T(not_leader.clone()))]
                    .into_iter()
                    .collect();
            }
        }
        Role::Leader => {
            let item = doc.paths.paths.get_mut("/kv/{key}");
            let operations = item
                .into_iter()
                .flat_map(|item| [&mut item.put, &mut item.delete]);
            for operation in operations.flatten() {
                let parameters = operation.parameters.iter_mut().flatten();
                for parameter in parameters.filter(|p| p.name == "quorum") {
                    let schema = ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::Integer)
                        .minimum(Some(0))
                        .maximum(Some(followers as f64));
                    parameter.schema = Some(RefOr::T(Schema::Object(schema.build())));
                }
            }
        }
    }
    doc
}

pub(super) async fn serve(State(state): State<AppState>) -> axum::Json<utoipa::openapi::OpenApi> {
    let followers = state.replicator().map_or(0, |r| r.follower_count());
    let request_timeout_ms = state.request_timeout_ms();
    axum::Json(document(state.role(), followers, request_timeout_ms))
}
