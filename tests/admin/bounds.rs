//! What the server bounds so that clients cannot take the node's resources: the time to send a
//! request's headers (idle connections included), the time to send a body, and the number of
//! connections open at once.

use std::net::SocketAddr;
use std::time::Duration;

use ensemble::admin::{AdminConfig, AdminServer};
use ensemble::{Node, NodeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a test waits for something the server must do long before.
const PATIENCE: Duration = Duration::from_secs(20);

async fn serve(name: &str, tune: impl FnOnce(&mut AdminConfig)) -> (Node, AdminServer) {
    let node = Node::new(NodeConfig::new(name)).expect("node");
    let mut config = AdminConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        ..AdminConfig::default()
    };
    tune(&mut config);
    let admin = AdminServer::start(&node, config)
        .await
        .expect("admin server");
    (node, admin)
}

/// Reads until the server closes the connection, within [`PATIENCE`]; answers what it sent.
async fn read_until_closed(stream: &mut TcpStream, what: &str) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&answer).into_owned(),
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "{what}: still open after {PATIENCE:?}; it sent {:?}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
}

/// Whether a status request on a new connection is answered `200` (not closed unanswered).
async fn status_ok(addr: SocketAddr) -> bool {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    read_until_closed(&mut stream, "a status request")
        .await
        .starts_with("HTTP/1.1 200 OK")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_no_headers_in_time_is_closed() {
    let (_node, admin) = serve("slow-headers", |c| {
        c.header_timeout = Duration::from_millis(300)
    })
    .await;
    let addr = admin.local_addr();

    // Half a request, then nothing.
    let mut half = TcpStream::connect(addr).await.expect("connect");
    half.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .expect("write");
    let answer = read_until_closed(&mut half, "a connection with half its headers").await;
    assert!(!answer.contains("200 OK"), "{answer}");

    // Nothing at all.
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    read_until_closed(&mut silent, "a connection that sent nothing").await;

    // A whole request is answered, and the connection kept for the next; idle past the
    // timeout, it is closed.
    let mut kept = TcpStream::connect(addr).await.expect("connect");
    kept.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let answer = read_until_closed(&mut kept, "an idle kept-alive connection").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");

    assert!(status_ok(addr).await, "the server still answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_too_slowly_is_answered_408() {
    let (_node, admin) = serve("slow-body", |c| {
        c.request_timeout = Duration::from_millis(500)
    })
    .await;
    let addr = admin.local_addr();
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(
        b"POST /api/v1/apps HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/toml\r\nContent-Length: 1000\r\n\r\nname = ",
    )
    .await
    .expect("write");
    let answer = read_until_closed(&mut slow, "a request whose body stopped").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("POST /api/v1/apps"), "{answer}");
    assert!(answer.contains("admin request timeout"), "{answer}");
    assert!(status_ok(addr).await, "the server still answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_closed_until_one_ends() {
    let (_node, admin) = serve("crowded", |c| {
        c.max_connections = 4;
        c.header_timeout = Duration::from_secs(3600);
    })
    .await;
    let addr = admin.local_addr();

    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(TcpStream::connect(addr).await.expect("connect"));
    }
    // The listener takes connections in the order they came: this is the fifth.
    let mut fifth = TcpStream::connect(addr).await.expect("connect");
    read_until_closed(&mut fifth, "a connection past the limit").await;

    // Once one ends, the server takes connections again.
    drop(open.pop());
    let deadline = Instant::now() + PATIENCE;
    while !status_ok(addr).await {
        assert!(
            Instant::now() < deadline,
            "no request served within {PATIENCE:?} after a connection ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens a connection whose request is in progress: its handler is reading a body that
/// does not come. (The server says `100 Continue` when the handler starts reading it.)
async fn busy_connection(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            b"POST /api/v1/apps HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/toml\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n",
        )
        .await
        .expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("100 Continue") {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("100 Continue in time")
            .expect("read");
        assert!(n > 0, "closed before the handler read the body");
        answer.extend_from_slice(&buf[..n]);
    }
    stream.write_all(b"name = ").await.expect("write");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_closes_the_address_at_once_and_ends_connections_after_the_grace() {
    // A grace longer than the test: the address must be closed while the shutdown waits.
    let (_node, admin) = serve("stopping", |c| {
        c.request_timeout = Duration::from_secs(3600);
        c.shutdown_grace = Duration::from_secs(3600);
    })
    .await;
    let addr = admin.local_addr();
    let busy = busy_connection(addr).await;
    let shutdown = tokio::spawn(admin.shutdown());
    let deadline = Instant::now() + PATIENCE;
    // Until a connection is refused: one accepted, or left waiting in a full backlog, means
    // the address is still open.
    while !matches!(
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await,
        Ok(Err(ref err)) if err.kind() == std::io::ErrorKind::ConnectionRefused
    ) {
        assert!(
            Instant::now() < deadline,
            "still accepting connections {PATIENCE:?} after the shutdown began"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !shutdown.is_finished(),
        "the shutdown ended without waiting for the request in progress"
    );
    drop(busy);
    tokio::time::timeout(PATIENCE, shutdown)
        .await
        .expect("the shutdown ends once its last connection did")
        .expect("shutdown task");

    // A short grace ends the connections still open when it runs out.
    let (_node, admin) = serve("stopping-soon", |c| {
        c.request_timeout = Duration::from_secs(3600);
        c.shutdown_grace = Duration::from_millis(300);
    })
    .await;
    let mut busy = busy_connection(admin.local_addr()).await;
    tokio::time::timeout(PATIENCE, admin.shutdown())
        .await
        .expect("the shutdown ends after its grace");
    read_until_closed(&mut busy, "a connection open past the grace").await;
}

#[tokio::test]
async fn settings_that_cannot_work_are_refused_naming_them() {
    let node = Node::new(NodeConfig::new("unset")).expect("node");
    type Spoil = fn(&mut AdminConfig);
    let cases: [(Spoil, &str); 3] = [
        (|c| c.header_timeout = Duration::ZERO, "header_timeout is 0"),
        (
            |c| c.request_timeout = Duration::ZERO,
            "request_timeout is 0",
        ),
        (|c| c.max_connections = 0, "max_connections is 0"),
    ];
    for (tune, expected) in cases {
        let mut config = AdminConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            ..AdminConfig::default()
        };
        tune(&mut config);
        let err = match AdminServer::start(&node, config).await {
            Ok(_) => panic!("started with {expected}"),
            Err(err) => err.to_string(),
        };
        assert!(err.contains(expected), "{err}");
    }
}
