//! Who may call the API and `/metrics`, checked before any endpoint runs.
//!
//! - With a token: `Authorization: Bearer TOKEN`, compared in constant time (`401` otherwise).
//! - Without one (the server is on loopback): the request must be addressed to an IP address,
//!   `localhost` or a name under `.localhost` (`403` otherwise). A web page in the operator's browser can make its own
//!   host name resolve to 127.0.0.1 (DNS rebinding) and would then be same-origin with this
//!   server; its requests still carry that host name, and are refused.
//! - Changes (any method but `GET` and `HEAD`) that carry an `Origin` must come from this
//!   server's own origin (`403` otherwise): a browser lets any page send a simple cross-origin
//!   `POST`; it always adds `Origin` to it, while curl and the CLI send none.
//!
//! The checks are pure functions of the token and the request's method and headers; the
//! middleware around them also bounds the requests in progress and the time each takes, and
//! counts answers in `ensemble_admin_requests_total`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::failure::Failure;
use super::routes::AdminState;

/// The middleware: bounds, checks, counts.
pub(crate) async fn guard(
    State(state): State<Arc<AdminState>>,
    request: Request,
    next: Next,
) -> Response {
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(String::new, |p| p.as_str().to_owned());
    let response = match state.in_flight.try_acquire() {
        Err(_) => Failure::unavailable(format!(
            "the admin server is serving {} requests already: try again in a moment",
            super::MAX_IN_FLIGHT
        ))
        .into_response(),
        Ok(_permit) => match check(state.token.as_deref(), request.method(), request.headers()) {
            Err(failure) => failure.into_response(),
            Ok(()) => within(state.request_timeout, request, next).await,
        },
    };
    metrics::counter!(
        "ensemble_admin_requests_total",
        "endpoint" => endpoint,
        "status" => response.status().as_str().to_owned()
    )
    .increment(1);
    response
}

/// Runs the request, answering `408` if it is not answered within `timeout`: one whose body
/// comes too slowly would otherwise hold its connection and its place among the requests in
/// progress for as long as its client liked.
async fn within(timeout: std::time::Duration, request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Failure::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "{method} {path} was not answered within {timeout:?} (admin request timeout): its body came too slowly, or the node took too long (a change may still be applied)"
            ),
        )
        .into_response(),
    }
}

/// Whether a request with this method and these headers may go on.
pub(crate) fn check(
    token: Option<&str>,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(), Failure> {
    match token {
        Some(token) => check_bearer(token, headers)?,
        None => check_host(headers)?,
    }
    if !matches!(*method, Method::GET | Method::HEAD) {
        check_origin(headers)?;
    }
    Ok(())
}

const HOW_TO_PASS: &str = "pass it as `Authorization: Bearer TOKEN` (the ensemble CLI: --token or ENSEMBLE_ADMIN_TOKEN; the dashboard: open it as http://HOST:PORT/#token=TOKEN)";

fn check_bearer(token: &str, headers: &HeaderMap) -> Result<(), Failure> {
    let unauthorized = |message: String| Failure::new(StatusCode::UNAUTHORIZED, message);
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(format!(
            "this admin API needs the node's admin token: {HOW_TO_PASS}"
        )));
    };
    let given = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, given)| given.trim());
    let Some(given) = given else {
        return Err(unauthorized(format!(
            "the Authorization header is not a bearer token: {HOW_TO_PASS}"
        )));
    };
    if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
        return Err(unauthorized(format!(
            "the bearer token is not this node's admin token (admin.token): {HOW_TO_PASS}"
        )));
    }
    Ok(())
}

/// Compares in a time that depends on the lengths only, not on where the bytes differ.
pub(crate) fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for (i, byte) in expected.iter().enumerate() {
        diff |= usize::from(given.get(i).copied().unwrap_or(0) ^ byte);
    }
    std::hint::black_box(diff) == 0
}

fn check_host(headers: &HeaderMap) -> Result<(), Failure> {
    let Some(value) = headers.get(header::HOST) else {
        return Ok(());
    };
    let host = value.to_str().unwrap_or_default();
    if host_is_local(host) {
        return Ok(());
    }
    Err(Failure::forbidden(format!(
        "request for host {host:?} refused: without admin.token this admin server answers only requests addressed to an IP address, localhost or a name under .localhost (a guard against DNS rebinding); use http://127.0.0.1:PORT/, or set admin.token"
    )))
}

/// Whether a `Host` header names an IP address, `localhost` or a name under `.localhost`
/// (which browsers resolve to loopback themselves, never through DNS: RFC 6761).
pub(crate) fn host_is_local(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6] or [v6]:port
        match rest.split_once(']') {
            Some((v6, _)) => v6,
            None => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    let name = name.to_ascii_lowercase();
    name.parse::<IpAddr>().is_ok() || name == "localhost" || name.ends_with(".localhost")
}

fn check_origin(headers: &HeaderMap) -> Result<(), Failure> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if origin_matches(origin, host) {
        return Ok(());
    }
    Err(Failure::forbidden(format!(
        "change from origin {origin:?} refused: the admin API takes changes only from its own origin or from clients that send no Origin header (curl, the ensemble CLI)"
    )))
}

/// Whether `origin` (`scheme://host[:port]`) is the origin of a page served as `host`.
pub(crate) fn origin_matches(origin: &str, host: &str) -> bool {
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    match authority {
        Some(authority) => !host.is_empty() && authority.eq_ignore_ascii_case(host),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn equal_tokens_and_only_those() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret!", b"secret"));
        assert!(!constant_time_eq(b"secre", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
        assert!(!constant_time_eq(b"secret\0", b"secret"));
    }

    #[test]
    fn bearer_tokens() {
        let get = Method::GET;
        let ok = headers(&[(header::AUTHORIZATION, "Bearer s3cret")]);
        assert!(check(Some("s3cret"), &get, &ok).is_ok());
        let lower = headers(&[(header::AUTHORIZATION, "bearer s3cret")]);
        assert!(check(Some("s3cret"), &get, &lower).is_ok());
        for bad in ["Bearer wrong", "Basic czNjcmV0", "s3cret", "Bearer"] {
            let h = headers(&[(header::AUTHORIZATION, bad)]);
            let failure = check(Some("s3cret"), &get, &h).unwrap_err();
            assert_eq!(failure.status(), StatusCode::UNAUTHORIZED, "{bad}");
        }
        let failure = check(Some("s3cret"), &get, &HeaderMap::new()).unwrap_err();
        assert_eq!(failure.status(), StatusCode::UNAUTHORIZED);
        // With a token, any host name will do: the token is what protects.
        let named = headers(&[
            (header::AUTHORIZATION, "Bearer s3cret"),
            (header::HOST, "admin.example.com"),
        ]);
        assert!(check(Some("s3cret"), &get, &named).is_ok());
    }

    #[test]
    fn hosts_without_a_token() {
        for host in [
            "127.0.0.1:7070",
            "127.0.0.1",
            "[::1]:7070",
            "[::1]",
            "localhost:7070",
            "LOCALHOST",
            "dash.localhost:80",
            "10.1.2.3:7070",
        ] {
            assert!(host_is_local(host), "{host}");
        }
        for host in [
            "evil.example:7070",
            "evil.example",
            "localhost.evil.example",
            "[::1",
            "",
        ] {
            assert!(!host_is_local(host), "{host}");
        }
        let named = headers(&[(header::HOST, "rebound.example:7070")]);
        let failure = check(None, &Method::GET, &named).unwrap_err();
        assert_eq!(failure.status(), StatusCode::FORBIDDEN);
        assert!(check(None, &Method::GET, &HeaderMap::new()).is_ok());
    }

    #[test]
    fn changes_from_other_origins() {
        let host = "127.0.0.1:7070";
        assert!(origin_matches("http://127.0.0.1:7070", host));
        assert!(!origin_matches("http://evil.example", host));
        assert!(!origin_matches("null", host));
        assert!(!origin_matches("http://127.0.0.1:7071", host));
        let cross = headers(&[
            (header::HOST, host),
            (header::ORIGIN, "http://evil.example"),
        ]);
        assert!(check(None, &Method::GET, &cross).is_ok());
        let failure = check(None, &Method::POST, &cross).unwrap_err();
        assert_eq!(failure.status(), StatusCode::FORBIDDEN);
        let same = headers(&[
            (header::HOST, host),
            (header::ORIGIN, "http://127.0.0.1:7070"),
        ]);
        assert!(check(None, &Method::DELETE, &same).is_ok());
        let none = headers(&[(header::HOST, host)]);
        assert!(check(None, &Method::POST, &none).is_ok());
    }
}
