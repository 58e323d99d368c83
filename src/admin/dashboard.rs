//! The web dashboard: one page, its style sheet and its script, compiled into the binary.
//!
//! The page carries no data, so it is served without a token; its script polls the JSON API
//! about once a second (sending the token it reads from the page's address,
//! `/#token=TOKEN`) and draws the node, its members, supervision trees, apps, names and
//! locks. Nothing is loaded from elsewhere: the content security policy allows this server's
//! own script, style and API only.
//!
//! Elements carry stable ids and data attributes for tests and scripts: `#members` rows with
//! `data-node` and `data-status`, `#trees` with `data-supervisor` per tree and `data-child`
//! and `data-state` per child, `#apps` with `data-app` and `data-role`, `#names` rows with
//! `data-name`, `#locks` rows with `data-lock`; `body` gets `data-refreshes` (successful
//! refreshes so far) and `#notice` says what is wrong when the API cannot be read.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

/// Only this server's own files and API; no inline code, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CONTENT_SECURITY_POLICY, CSP),
        ],
        body,
    )
        .into_response()
}

/// `GET /`.
pub(crate) async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

/// `GET /dashboard.js`.
pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /dashboard.css`.
pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}
