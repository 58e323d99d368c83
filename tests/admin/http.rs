//! A small HTTP client for the tests: ureq (blocking) on the blocking pool, and raw requests
//! for headers ureq would set itself.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ensemble::admin::api::ApiError;
use serde::de::DeserializeOwned;

/// An answer: status, content type, body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) www_authenticate: Option<String>,
    pub(crate) body: String,
}

impl Answer {
    /// The body as a JSON document of type `T`.
    pub(crate) fn json<T: DeserializeOwned>(&self) -> T {
        assert!(
            self.content_type.starts_with("application/json"),
            "expected JSON, got {:?}: {}",
            self.content_type,
            self.body
        );
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not the document expected ({e}): {}", self.body))
    }

    /// The message of an error answer.
    pub(crate) fn error(&self) -> String {
        self.json::<ApiError>().error
    }
}

/// One request.
#[derive(Default)]
pub(crate) struct Request {
    pub(crate) method: &'static str,
    pub(crate) url: String,
    pub(crate) token: Option<String>,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Option<Vec<u8>>,
}

impl Request {
    pub(crate) fn get(url: impl Into<String>) -> Self {
        Request {
            method: "GET",
            url: url.into(),
            ..Request::default()
        }
    }

    pub(crate) fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Request {
            method: "POST",
            url: url.into(),
            body: Some(body.into()),
            headers: vec![("Content-Type", "application/toml".into())],
            ..Request::default()
        }
    }

    pub(crate) fn delete(url: impl Into<String>) -> Self {
        Request {
            method: "DELETE",
            url: url.into(),
            ..Request::default()
        }
    }

    pub(crate) fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Sends it (on the blocking pool) and reads the answer.
    pub(crate) async fn send(self) -> Answer {
        tokio::task::spawn_blocking(move || self.send_blocking())
            .await
            .expect("request task")
    }

    fn send_blocking(self) -> Answer {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut headers = self.headers;
        if let Some(token) = &self.token {
            headers.push(("Authorization", format!("Bearer {token}")));
        }
        let url = self.url;
        let result = match (self.method, self.body) {
            ("POST", body) => {
                let mut request = agent.post(&url);
                for (name, value) in &headers {
                    request = request.header(*name, value);
                }
                request.send(body.unwrap_or_default())
            }
            (method, _) => {
                let mut request = match method {
                    "DELETE" => agent.delete(&url),
                    "GET" => agent.get(&url),
                    other => panic!("no helper for {other}"),
                };
                for (name, value) in &headers {
                    request = request.header(*name, value);
                }
                request.call()
            }
        };
        let mut response =
            result.unwrap_or_else(|e| panic!("{} {url}: no answer: {e}", self.method));
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header("content-type").unwrap_or_default();
        let www_authenticate = header("www-authenticate");
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().expect("a text answer");
        Answer {
            status,
            content_type,
            www_authenticate,
            body,
        }
    }
}

/// Sends `head` (request line and headers, without the blank line) as-is and answers the
/// status code and body: for headers a client library sets itself (`Host`).
pub(crate) async fn raw(addr: SocketAddr, head: String) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        write!(stream, "{head}\r\nConnection: close\r\n\r\n").expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {answer}"));
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        (status, body)
    })
    .await
    .expect("request task")
}
