//! Peers that must not join, each refused while the node goes on serving its members: no
//! client certificate, a certificate from another CA, a certificate for another node's name,
//! another cluster's name, garbled and stalled handshakes, replayed handshake datagrams,
//! noise on the port, and peers that refuse the node's welcome or never answer it.
//!
//! The misbehaving peers that a real node cannot be made into are raw QUIC clients (quinn and
//! rustls, as an attacker would use them) speaking to a real node.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ensemble::NodeId;
use ensemble::cluster::{Cluster, Control, Hello, MemberEvent, PROTOCOL_VERSION};
use ensemble::transport::certs::NodeCert;
use ensemble::transport::frame::{self, DEFAULT_MAX_FRAME, FrameDecoder};
use ensemble::{Node, NodeConfig};
use parking_lot::Mutex;
use quinn::crypto::rustls::QuicClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::UdpSocket;

use crate::util::*;

/// The application protocol nodes speak (a client offering another one is refused by TLS).
const ALPN: &[u8] = b"ensemble/1";
/// The QUIC close code of a failed handshake (`docs/protocol.md`).
const HANDSHAKE_FAILED: u32 = 5;
/// The QUIC close code of a refusal.
const REFUSED: u32 = 1;

/// Accepts any server certificate: these tests are about what the node accepts from its
/// peers, so the client side does not check the node.
#[derive(Debug)]
struct AnyServer(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// A raw QUIC client on loopback presenting `identity`'s certificate, or none.
fn raw_client(identity: Option<&NodeCert>) -> quinn::Endpoint {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(algorithms)));
    let mut tls = match identity {
        Some(cert) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.cert_pem().as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(cert.key_pem().as_bytes()).expect("key"),
            )
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).expect("QUIC TLS config");
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

/// Connects `client` to `addr`; `Err` if the QUIC/TLS handshake fails.
async fn connect(
    client: &quinn::Endpoint,
    addr: SocketAddr,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let connecting = client.connect(addr, "node").expect("connect");
    tokio::time::timeout(DEADLINE, connecting)
        .await
        .expect("QUIC handshake neither done nor refused in time")
}

/// Waits until the node closes `conn` and returns its close code and reason.
async fn closed(conn: &quinn::Connection) -> (u64, String) {
    let err = tokio::time::timeout(DEADLINE, conn.closed())
        .await
        .unwrap_or_else(|_| panic!("the node did not close the connection in {DEADLINE:?}"));
    match err {
        quinn::ConnectionError::ApplicationClosed(close) => (
            close.error_code.into_inner(),
            String::from_utf8_lossy(&close.reason).into_owned(),
        ),
        quinn::ConnectionError::ConnectionClosed(close) => (
            u64::from(close.error_code),
            String::from_utf8_lossy(&close.reason).into_owned(),
        ),
        quinn::ConnectionError::TransportError(e) => (u64::from(e.code), e.reason),
        other => panic!("the connection ended otherwise than closed by the node: {other}"),
    }
}

/// Whether a QUIC close code is a TLS alert (0x100 + alert), as a refused certificate gives.
fn is_tls_alert(code: u64) -> bool {
    (0x100..=0x1ff).contains(&code)
}

/// A hello as node `name` of cluster `test` would send it.
fn hello(name: &str) -> Control {
    Control::Hello(Hello {
        version: PROTOCOL_VERSION,
        cluster: "test".into(),
        node: NodeId::new(name, 1),
        listen: "127.0.0.1:9".parse().unwrap(),
        resources: BTreeMap::new(),
        labels: BTreeMap::new(),
        heartbeat_interval_us: 100_000,
        max_frame_size: 8 << 20,
    })
}

/// A hello as node `name` would send it, with the `Ready` it sends once welcomed: the node
/// reads it after its welcome, and counts the peer a member only then.
fn hello_and_ready(name: &str) -> Vec<u8> {
    let mut bytes = frame::encode_one(&hello(name), DEFAULT_MAX_FRAME)
        .unwrap()
        .to_vec();
    bytes.extend_from_slice(&frame::encode_one(&Control::Ready, DEFAULT_MAX_FRAME).unwrap());
    bytes
}

/// Opens the control stream on `conn`, writes `bytes` on it and reads the node's answer.
async fn say(conn: &quinn::Connection, bytes: &[u8]) -> Control {
    let (mut send, mut recv) = conn.open_bi().await.expect("control stream");
    send.write_all(bytes).await.expect("write");
    read_answer(&mut recv).await
}

/// Reads the node's next control frame (of a stream that had no frame from it before).
async fn read_answer(recv: &mut quinn::RecvStream) -> Control {
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let answer = async {
        loop {
            if let Some(payload) = decoder.next_frame().expect("a frame from the node") {
                return frame::decode::<Control>(&payload).expect("a control frame");
            }
            let chunk = recv
                .read_chunk(64 * 1024, true)
                .await
                .expect("read")
                .expect("the node answers before ending the stream");
            decoder.extend(&chunk.bytes);
        }
    };
    tokio::time::timeout(DEADLINE, answer)
        .await
        .expect("an answer from the node")
}

/// Checks that a real node still joins `cluster`: the node kept serving.
async fn still_serving(cluster: &Cluster, certs: &std::path::Path, expected: &[&str]) {
    let mut child = ChildNode::spawn("n9", certs, "test", &[cluster.local_addr()]);
    child.expect_line("JOINED");
    wait_members(cluster, expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_a_client_certificate_is_refused() {
    let certs = certificates(&["n0", "n9"]);
    let (_node, cluster) = local_node("n0", certs.path()).await;
    let client = raw_client(None);
    // In TLS 1.3 the client may finish its side before the node has seen that no certificate
    // came; the node's refusal then closes the connection.
    let code = match connect(&client, cluster.local_addr()).await {
        Ok(conn) => closed(&conn).await.0,
        Err(quinn::ConnectionError::ConnectionClosed(close)) => u64::from(close.error_code),
        Err(quinn::ConnectionError::TransportError(e)) => u64::from(e.code),
        Err(other) => panic!("refused otherwise than by TLS: {other}"),
    };
    assert!(
        is_tls_alert(code),
        "close code {code:#x} is not a TLS alert"
    );
    assert!(cluster.members().is_empty());
    still_serving(&cluster, certs.path(), &["n9"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_node_s_name_is_refused() {
    let certs = certificates(&["n0", "n1", "n9"]);
    let (_node, cluster) = local_node("n0", certs.path()).await;
    let n1 = NodeCert::load(certs.path(), "n1").expect("n1's certificate");
    let client = raw_client(Some(&n1));

    // n1's certificate, claiming to be n2.
    let conn = connect(&client, cluster.local_addr()).await.expect("TLS");
    let bytes = frame::encode_one(&hello("n2"), DEFAULT_MAX_FRAME).unwrap();
    match say(&conn, &bytes).await {
        Control::Refused { reason, downed } => {
            assert!(reason.contains("claims to be node n2"), "{reason}");
            assert!(
                reason.contains("certificate is for Some(\"n1\")"),
                "{reason}"
            );
            assert!(!downed);
        }
        other => panic!("n2 with n1's certificate was answered {other:?}"),
    }
    assert_eq!(closed(&conn).await.0, u64::from(REFUSED));
    assert!(cluster.members().is_empty());

    // The same certificate, claiming its own name, is welcome: the name was the reason.
    let conn = connect(&client, cluster.local_addr()).await.expect("TLS");
    let bytes = hello_and_ready("n1");
    match say(&conn, &bytes).await {
        Control::Welcome(node) => assert_eq!(node.node.name(), "n0"),
        other => panic!("n1 with its own certificate was answered {other:?}"),
    }
    wait_members(&cluster, &["n1"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_certificate_from_another_ca_is_refused() {
    let certs = certificates(&["n0"]);
    let foreign = certificates(&["intruder"]);
    let (_node, cluster) = local_node("n0", certs.path()).await;
    let mut intruder =
        ChildNode::spawn("intruder", foreign.path(), "test", &[cluster.local_addr()]);
    let line = intruder.expect_line("JOIN-FAILED ");
    assert!(line.contains("TLS handshake"), "{line}");
    assert!(cluster.members().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_is_refused_with_the_reason() {
    let certs = certificates(&["n0", "n1"]);
    let (_node, cluster) = local_node("n0", certs.path()).await;
    let mut stranger = ChildNode::spawn("n1", certs.path(), "other", &[cluster.local_addr()]);
    let line = stranger.expect_line("JOIN-FAILED ");
    assert!(line.contains("refused this node"), "{line}");
    assert!(
        line.contains("belongs to cluster \"other\", not \"test\""),
        "{line}"
    );
    assert!(cluster.members().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_on_the_port_leave_the_node_running() {
    let certs = certificates(&["n0", "n1"]);
    let (_node, cluster) = local_node("n0", certs.path()).await;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut seed = 7u64;
    for size in [0usize, 1, 5, 40, 1200, 1500] {
        for _ in 0..50 {
            let datagram: Vec<u8> = (0..size)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 56) as u8
                })
                .collect();
            let _ = socket.send_to(&datagram, cluster.local_addr());
        }
    }
    // Still accepting members after the noise.
    let mut child = ChildNode::spawn("n1", certs.path(), "test", &[cluster.local_addr()]);
    child.expect_line("JOINED");
    wait_members(&cluster, &["n1"]).await;
}

/// A node whose handshake timeout is one second, so that stalled peers are dropped quickly.
async fn impatient_node(name: &str, certs: &std::path::Path) -> (Node, Cluster) {
    let node = Node::new(NodeConfig::new(name)).expect("node");
    let cert = NodeCert::load(certs, name).expect("certificate");
    let mut config = test_config("test");
    config.handshake_timeout = Duration::from_secs(1);
    let cluster = Cluster::start(&node, config, &cert).await.expect("cluster");
    (node, cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbled_and_stalled_handshakes_are_closed_with_the_reason() {
    let certs = certificates(&["n0", "n1", "n9"]);
    let (_node, cluster) = impatient_node("n0", certs.path()).await;
    let n1 = NodeCert::load(certs.path(), "n1").expect("n1's certificate");
    let client = raw_client(Some(&n1));
    let heartbeat = frame::encode_one(&Control::Heartbeat, DEFAULT_MAX_FRAME)
        .unwrap()
        .to_vec();
    // What the peer writes on its control stream (`None`: it opens none), and what the
    // node's reason must say. 0xc1 is a byte MessagePack never uses.
    let cases: [(&str, Option<Vec<u8>>, &str); 6] = [
        (
            "bytes that are not MessagePack",
            Some(vec![0, 0, 0, 4, 0xc1, 0xc1, 0xc1, 0xc1]),
            "malformed frame",
        ),
        (
            "a length prefix of 4 GiB",
            Some(vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3]),
            "over the maximum",
        ),
        (
            "a heartbeat before any hello",
            Some(heartbeat),
            "instead of a hello",
        ),
        (
            "half a frame, then nothing",
            Some(vec![0, 0, 0, 100, 1, 2, 3]),
            "no handshake frame",
        ),
        (
            "an empty, finished stream",
            Some(Vec::new()),
            "the stream ended",
        ),
        ("no control stream", None, "opened no control stream"),
    ];
    for (what, bytes, expected) in cases {
        let conn = connect(&client, cluster.local_addr()).await.expect("TLS");
        // Kept open until the node closes the connection.
        let _stream = match bytes {
            Some(bytes) => {
                let (mut send, recv) = conn.open_bi().await.expect("control stream");
                if bytes.is_empty() {
                    send.finish().expect("finish");
                } else {
                    send.write_all(&bytes).await.expect("write");
                }
                Some((send, recv))
            }
            None => None,
        };
        let (code, reason) = closed(&conn).await;
        assert_eq!(code, u64::from(HANDSHAKE_FAILED), "{what}: {reason}");
        assert!(reason.contains(expected), "{what}: {reason:?}");
    }
    assert!(cluster.members().is_empty());
    still_serving(&cluster, certs.path(), &["n9"]).await;
}

/// A UDP relay between one client and a node that records the client's datagrams.
struct Relay {
    addr: SocketAddr,
    recorded: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Relay {
    async fn start(node: SocketAddr) -> Relay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        back.connect(node).await.unwrap();
        let addr = front.local_addr().unwrap();
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        {
            let (front, back, recorded, client) = (
                front.clone(),
                back.clone(),
                recorded.clone(),
                client.clone(),
            );
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok((n, from)) = front.recv_from(&mut buf).await {
                    *client.lock() = Some(from);
                    recorded.lock().push(buf[..n].to_vec());
                    let _ = back.send(&buf[..n]).await;
                }
            });
        }
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = back.recv(&mut buf).await {
                let to = *client.lock();
                if let Some(to) = to {
                    let _ = front.send_to(&buf[..n], to).await;
                }
            }
        });
        Relay { addr, recorded }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_handshake_datagrams_admit_no_one() {
    let certs = certificates(&["n0", "n1", "n9"]);
    let (_node, cluster) = impatient_node("n0", certs.path()).await;
    let relay = Relay::start(cluster.local_addr()).await;
    let n1 = NodeCert::load(certs.path(), "n1").expect("n1's certificate");
    let client = raw_client(Some(&n1));

    // n1 joins through the relay, which records every datagram it sends.
    let conn = connect(&client, relay.addr).await.expect("TLS");
    let bytes = hello_and_ready("n1");
    let (mut send, mut recv) = conn.open_bi().await.expect("control stream");
    send.write_all(&bytes).await.expect("hello");
    let welcome = read_answer(&mut recv).await;
    assert!(matches!(welcome, Control::Welcome(_)), "{welcome:?}");
    // n1 keeps sending heartbeats, as a node does, so that the failure detector never takes
    // it for dead while the test runs.
    let heartbeats = tokio::spawn(async move {
        let beat = frame::encode_one(&Control::Heartbeat, DEFAULT_MAX_FRAME).unwrap();
        while send.write_all(&beat).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    wait_members(&cluster, &["n1"]).await;
    let n1_id = member_id(&cluster, "n1");

    // Someone who captured them sends them all again, twice, from another address, while
    // n1's connection is still open: the handshake's Initial packets start a TLS handshake
    // the replayer cannot finish (it has no keys), and the rest are packets the node has
    // seen already.
    let recorded = relay.recorded.lock().clone();
    assert!(
        recorded.len() >= 3,
        "only {} datagrams recorded",
        recorded.len()
    );
    let replayer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for _ in 0..2 {
        for datagram in &recorded {
            replayer
                .send_to(datagram, cluster.local_addr())
                .await
                .unwrap();
        }
    }

    // A real node joins after them: by then the node has handled the replay, and no one
    // joined through it.
    still_serving(&cluster, certs.path(), &["n1", "n9"]).await;
    assert_eq!(member_id(&cluster, "n1"), n1_id);
    assert!(
        conn.close_reason().is_none(),
        "the replay closed n1's connection: {:?}",
        conn.close_reason()
    );
    heartbeats.abort();
}

/// A peer welcomed by the node may still refuse the node (it knows a newer incarnation of
/// it, or the node's certificate names another node): the node counts the peer a member only
/// once it answers the welcome with `Ready`. One that refuses is never counted, and one that
/// says the node was declared down tells it so; one that answers nothing is closed after the
/// handshake timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_refuses_the_welcome_is_never_counted_a_member() {
    let certs = certificates(&["n0", "n1", "n9"]);
    let (_node, cluster) = impatient_node("n0", certs.path()).await;
    let mut events = cluster.subscribe();
    let n1 = NodeCert::load(certs.path(), "n1").expect("n1's certificate");
    let client = raw_client(Some(&n1));
    let hello = frame::encode_one(&hello("n1"), DEFAULT_MAX_FRAME).unwrap();

    // Welcomed, n1 answers with a refusal, then nothing.
    let answers: [Option<Control>; 3] = [
        Some(Control::Refused {
            reason: "node n0 is older than the incarnation already in the cluster".into(),
            downed: false,
        }),
        None,
        Some(Control::Refused {
            reason: "node n0 was declared down".into(),
            downed: true,
        }),
    ];
    for answer in answers {
        let conn = connect(&client, cluster.local_addr()).await.expect("TLS");
        let (mut send, mut recv) = conn.open_bi().await.expect("control stream");
        send.write_all(&hello).await.expect("hello");
        let welcome = read_answer(&mut recv).await;
        assert!(matches!(welcome, Control::Welcome(_)), "{welcome:?}");
        let stalled = answer.is_none();
        if let Some(answer) = answer {
            let bytes = frame::encode_one(&answer, DEFAULT_MAX_FRAME).unwrap();
            send.write_all(&bytes)
                .await
                .expect("the answer to the welcome");
        }
        let (code, reason) = closed(&conn).await;
        assert_eq!(code, 5, "{reason}");
        if stalled {
            assert!(reason.contains("no handshake frame"), "{reason}");
        } else {
            assert!(reason.contains("refused this node's welcome"), "{reason}");
        }
        assert!(cluster.members().is_empty(), "{:?}", cluster.members());
    }
    while let Ok(event) = events.try_recv() {
        assert!(
            matches!(&event, MemberEvent::Down(me) if me.name() == "n0"),
            "n0 reported {event:?} of a peer it never admitted"
        );
    }
    assert!(
        cluster.is_declared_down(),
        "n0 did not learn that it was declared down from the refusal saying so"
    );
}
