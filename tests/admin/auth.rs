//! Who may call, where the server may listen, and what a node on its own answers.

use std::net::SocketAddr;

use ensemble::admin::api::{MemberEntry, NodeStatus, Trees};
use ensemble::admin::{AdminConfig, AdminError, AdminServer};
use ensemble::{Node, NodeConfig};

use crate::http::{Request, raw};

fn loopback() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

async fn bare(name: &str, token: Option<&str>) -> (Node, AdminServer) {
    let node = Node::new(NodeConfig::new(name)).expect("node");
    let admin = AdminServer::start(
        &node,
        AdminConfig {
            listen: loopback(),
            token: token.map(str::to_owned),
            ..AdminConfig::default()
        },
    )
    .await
    .expect("admin server");
    (node, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_required_when_configured() {
    let (node, admin) = bare("guarded", Some("s3cret")).await;
    let base = format!("http://{}", admin.local_addr());

    for path in ["/api/v1/status", "/api/v1/members", "/metrics"] {
        let answer = Request::get(format!("{base}{path}")).send().await;
        assert_eq!(answer.status, 401, "{path}: {}", answer.body);
        let error = answer.error();
        assert!(error.contains("Authorization: Bearer"), "{error}");
        assert!(error.contains("#token="), "{error}");
        assert!(
            answer
                .www_authenticate
                .is_some_and(|h| h.starts_with("Bearer"))
        );

        let answer = Request::get(format!("{base}{path}"))
            .token("wrong")
            .send()
            .await;
        assert_eq!(answer.status, 401, "{path}: {}", answer.body);
        assert!(answer.error().contains("not this node's admin token"));

        let answer = Request::get(format!("{base}{path}"))
            .token("s3cret")
            .send()
            .await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
    }
    let status: NodeStatus = Request::get(format!("{base}/api/v1/status"))
        .token("s3cret")
        .send()
        .await
        .json();
    assert_eq!(status.node, "guarded");

    // Changes too.
    let answer = Request::delete(format!("{base}/api/v1/apps/any"))
        .send()
        .await;
    assert_eq!(answer.status, 401, "{}", answer.body);

    // The dashboard's files carry no data: no token needed.
    for (path, kind) in [
        ("/", "text/html"),
        ("/dashboard.js", "text/javascript"),
        ("/dashboard.css", "text/css"),
    ] {
        let answer = Request::get(format!("{base}{path}")).send().await;
        assert_eq!(answer.status, 200, "{path}");
        assert!(answer.content_type.starts_with(kind), "{path}: {answer:?}");
    }

    admin.shutdown().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_beyond_loopback_needs_a_token() {
    let node = Node::new(NodeConfig::new("exposed")).expect("node");
    let everywhere: SocketAddr = ([0, 0, 0, 0], 0).into();
    for token in [None, Some(String::new())] {
        let refused = AdminServer::start(
            &node,
            AdminConfig {
                listen: everywhere,
                token,
                ..AdminConfig::default()
            },
        )
        .await;
        match refused {
            Err(e @ AdminError::TokenRequired { addr }) => {
                assert_eq!(addr, everywhere);
                assert!(e.to_string().contains("admin.token"), "{e}");
            }
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(_) => panic!("listened on {everywhere} without a token"),
        }
    }
    let admin = AdminServer::start(
        &node,
        AdminConfig {
            listen: everywhere,
            token: Some("s3cret".into()),
            ..AdminConfig::default()
        },
    )
    .await
    .expect("with a token it listens anywhere");
    assert_ne!(admin.local_addr().port(), 0);
    admin.shutdown().await;

    // Loopback without a token is fine, IPv6 too when the host has it.
    let admin = AdminServer::start(
        &node,
        AdminConfig {
            listen: loopback(),
            token: None,
            ..AdminConfig::default()
        },
    )
    .await
    .expect("loopback without a token");
    admin.shutdown().await;
    node.shutdown().await;
}

/// An admin address in use fails the node's start before the node does anything else (it
/// would otherwise join its cluster, take work, and leave again), saying what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_address_in_use_fails_the_start_before_anything_else() {
    let taken = std::net::TcpListener::bind(loopback()).expect("a port");
    let addr = taken.local_addr().expect("its address");
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = ensemble::transport::certs::ClusterCa::generate("ensemble").expect("ca");
    let cert = ca.issue("late").expect("cert");
    let mut config = ensemble::host::HostConfig::new("late", cert, dir.path().join("data"));
    config.admin = Some(AdminConfig {
        listen: addr,
        token: None,
        ..AdminConfig::default()
    });
    let err = match ensemble::host::Host::start(config, |_| {}).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("started with its admin address taken"),
    };
    assert!(
        err.contains(&addr.to_string()) && err.contains("--admin"),
        "{err}"
    );
    // Failed before the registry opened its data dir.
    assert!(!dir.path().join("data").exists(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_its_own_answers_what_it_can() {
    let (node, admin) = bare("alone", None).await;
    let base = format!("http://{}", admin.local_addr());

    let status: NodeStatus = Request::get(format!("{base}/api/v1/status"))
        .send()
        .await
        .json();
    assert_eq!(status.node, "alone");
    assert_eq!((status.members_up, status.members_suspect), (1, 0));
    assert_eq!(status.cluster, "");
    assert_eq!(status.registry.leader, None);
    assert!(status.registry.voters.is_empty());

    let members: Vec<MemberEntry> = Request::get(format!("{base}/api/v1/members"))
        .send()
        .await
        .json();
    assert_eq!(members.len(), 1);
    assert_eq!(
        (members[0].node.as_str(), members[0].status.as_str()),
        ("alone", "self")
    );
    assert!(!members[0].session);
    assert_eq!(members[0].voter, None, "no registry to name voters");

    let trees: Trees = Request::get(format!("{base}/api/v1/trees"))
        .send()
        .await
        .json();
    assert!(trees.is_empty());
    let answer = Request::get(format!("{base}/api/v1/actors")).send().await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    let id = node.id().to_string();
    for path in ["names", "locks", "leases", "apps"] {
        let answer = Request::get(format!("{base}/api/v1/{path}")).send().await;
        assert_eq!(answer.status, 503, "{path}: {}", answer.body);
        let error = answer.error();
        assert!(
            error.contains(&id) && error.contains("registry"),
            "{path}: {error}"
        );
    }
    let answer = Request::post(
        format!("{base}/api/v1/apps"),
        "name = \"a\"\n[[roles]]\nname = \"r\"\nmodule = \"m\"\n",
    )
    .send()
    .await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    let answer = Request::delete(format!("{base}/api/v1/apps/a"))
        .send()
        .await;
    assert_eq!(answer.status, 503, "{}", answer.body);

    // Unknown endpoints and methods answer JSON errors naming the path.
    let answer = Request::get(format!("{base}/api/v1/nothing")).send().await;
    assert_eq!(answer.status, 404);
    assert!(answer.error().contains("/api/v1/nothing"));
    let answer = Request::delete(format!("{base}/api/v1/status"))
        .send()
        .await;
    assert_eq!(answer.status, 405);
    assert!(answer.error().contains("/api/v1/status"));

    admin.shutdown().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_host_names_are_refused_without_a_token() {
    let (node, admin) = bare("rebound", None).await;
    let addr = admin.local_addr();

    let (status, body) = raw(
        addr,
        "GET /api/v1/status HTTP/1.1\r\nHost: rebound.example:7070".into(),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("rebound.example"), "{body}");

    for host in [addr.to_string(), format!("localhost:{}", addr.port())] {
        let (status, body) =
            raw(addr, format!("GET /api/v1/status HTTP/1.1\r\nHost: {host}")).await;
        assert_eq!(status, 200, "{host}: {body}");
    }

    admin.shutdown().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_serving() {
    let (node, admin) = bare("stopping", None).await;
    let addr = admin.local_addr();
    let answer = Request::get(format!("http://{addr}/api/v1/status"))
        .send()
        .await;
    assert_eq!(answer.status, 200);
    admin.shutdown().await;
    let connect = tokio::net::TcpStream::connect(addr).await;
    assert!(connect.is_err(), "still accepting on {addr}");
    node.shutdown().await;
}
