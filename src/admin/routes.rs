//! The router: the dashboard's files for anyone, the API and `/metrics` behind the guard,
//! JSON errors for everything else.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, StatusCode, Uri};
use axum::routing::{delete, get, post};
use ensemble_runtime::Node;
use tokio::sync::Semaphore;

use super::failure::Failure;
use super::{dashboard, guard, handlers};

/// What every request handler shares.
pub(crate) struct AdminState {
    /// The node served.
    pub(crate) node: Node,
    /// When the server started, for `uptime_secs`.
    pub(crate) started: Instant,
    /// The bearer token required, if any.
    pub(crate) token: Option<String>,
    /// Bounds the API requests served at once.
    pub(crate) in_flight: Semaphore,
    /// The longest an API request may take, body included.
    pub(crate) request_timeout: Duration,
}

/// The whole admin router for `node`.
pub(crate) fn router(node: Node, token: Option<String>, request_timeout: Duration) -> Router {
    let state = Arc::new(AdminState {
        node,
        started: Instant::now(),
        token,
        in_flight: Semaphore::new(super::MAX_IN_FLIGHT),
        request_timeout,
    });
    let guarded = Router::new()
        .route("/metrics", get(handlers::metrics))
        .route("/api/v1/status", get(handlers::status))
        .route("/api/v1/members", get(handlers::members))
        .route("/api/v1/actors", get(handlers::actors))
        .route("/api/v1/trees", get(handlers::trees))
        .route("/api/v1/names", get(handlers::names))
        .route("/api/v1/locks", get(handlers::locks))
        .route("/api/v1/leases", get(handlers::leases))
        .route(
            "/api/v1/apps",
            get(handlers::apps).post(handlers::deploy_app),
        )
        .route("/api/v1/apps/{name}", delete(handlers::remove_app))
        .route("/api/v1/voters/move", post(handlers::move_vote))
        .route("/api/v1/voters/count", post(handlers::set_voter_count))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .layer(DefaultBodyLimit::max(super::MAX_BODY));
    Router::new()
        .route("/", get(dashboard::page))
        .route("/dashboard.js", get(dashboard::script))
        .route("/dashboard.css", get(dashboard::style))
        .merge(guarded)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> Failure {
    Failure::not_found(format!(
        "no endpoint {method} {}: the API is under /api/v1/ (status, members, actors, trees, names, locks, leases, apps, voters/move, voters/count), metrics on /metrics, the dashboard on /",
        uri.path()
    ))
}

async fn method_not_allowed(method: Method, uri: Uri) -> Failure {
    Failure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} does not take {method}: GET reads every endpoint; POST /api/v1/apps deploys an app, DELETE /api/v1/apps/NAME removes one, POST /api/v1/voters/move moves a registry vote and POST /api/v1/voters/count sets how many voters the registry keeps",
            uri.path()
        ),
    )
}
