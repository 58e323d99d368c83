//! TLS configurations for QUIC endpoints.
//!
//! Every connection between nodes is mutual TLS 1.3 over QUIC, with the cluster CA as the only
//! trusted root on both sides:
//!
//! - [`server_config`] makes the accepting side require a client certificate that verifies
//!   against the cluster CA; a peer without one, or with one from another CA, is refused during
//!   the handshake.
//! - [`client_config`] makes the dialing side verify the server's certificate chain against the
//!   cluster CA and present its own certificate.
//!
//! # Server names are not checked
//!
//! Peers are often dialed by address (seed nodes) before their name is known, so the client
//! does not compare the server's certificate with the name it dialed: any certificate from the
//! cluster CA is accepted, and the name passed to `Endpoint::connect` only needs to be a valid
//! DNS name (it is sent as SNI and otherwise ignored). Which node is on the other end is
//! decided afterwards by the protocol layer, from `peer_node_name`, which reads the node name
//! in the peer's certificate on either side of a connection.
//!
//! Both are public so that tools measuring the transport (`benches/write_floor.rs`) speak QUIC
//! with exactly the node's settings.
//!
//! # Crypto provider
//!
//! Configurations name rustls' ring provider explicitly rather than relying on a process-wide
//! default, so they work (and never panic) whether or not a program installed one.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{AckFrequencyConfig, IdleTimeout, TransportConfig, VarInt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::certs::{CertError, NodeCert, node_name_in_der};

/// The ALPN protocol both sides require; a peer speaking anything else is refused.
pub(crate) const ALPN: &[u8] = b"ensemble/1";

/// How often an idle connection sends a QUIC PING. The protocol has its own heartbeats; this
/// keeps NAT and firewall state alive and lets QUIC notice a dead path on its own.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a connection may go without hearing from the peer before QUIC drops it: a backstop
/// behind the protocol's heartbeats, which decide about peer failure.
const MAX_IDLE_TIMEOUT_MS: u32 = 10_000;
/// How many packets that want an acknowledgement a peer may take from this node before it must
/// send one at once (QUIC's acknowledgement frequency extension, which every node speaks).
///
/// QUIC's default is one: every second packet is acknowledged at once, in a packet of its own
/// when the receiver has nothing else to send yet. Ensemble's traffic is mostly requests and
/// their answers, and an answer carries the acknowledgement with it, so those packets were
/// pure overhead: about a quarter of the datagrams of a contended lock hand-over, each a send
/// and a receive on two busy processes. Above the threshold, or after the peer's maximum
/// acknowledgement delay (25 ms by default), the acknowledgement still goes out on its own, so
/// loss detection and one-way streams keep their pace.
const ACK_ELICITING_THRESHOLD: u32 = 4;

/// A QUIC server configuration for `cert`'s node: presents its certificate and requires a
/// client certificate that verifies against the cluster CA.
pub fn server_config(cert: &NodeCert) -> Result<quinn::ServerConfig, CertError> {
    server_config_with_roots(cert, roots(cert)?)
}

/// [`server_config`] with the given trusted roots instead of the node's CA (tests use this to
/// make peers that trust one CA but hold a certificate from another).
fn server_config_with_roots(
    cert: &NodeCert,
    roots: RootCertStore,
) -> Result<quinn::ServerConfig, CertError> {
    let provider = provider();
    let roots = Arc::new(roots);
    let client_verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| tls_error(cert, e))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error(cert, e))?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain(cert)?, key(cert)?)
        .map_err(|e| tls_error(cert, e))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];

    let quic = QuicServerConfig::try_from(tls).map_err(|e| tls_error(cert, e))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(transport()));
    Ok(config)
}

/// A QUIC client configuration for `cert`'s node: presents its certificate and accepts any
/// server whose certificate verifies against the cluster CA, whatever name it was dialed by
/// (see the module docs).
pub fn client_config(cert: &NodeCert) -> Result<quinn::ClientConfig, CertError> {
    client_config_with_roots(cert, roots(cert)?)
}

/// [`client_config`] with the given trusted roots instead of the node's CA (see
/// [`server_config_with_roots`]).
fn client_config_with_roots(
    cert: &NodeCert,
    roots: RootCertStore,
) -> Result<quinn::ClientConfig, CertError> {
    let provider = provider();
    let verifier = Arc::new(ClusterServerVerifier {
        roots: Arc::new(roots),
        algorithms: provider.signature_verification_algorithms,
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error(cert, e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain(cert)?, key(cert)?)
        .map_err(|e| tls_error(cert, e))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];

    let quic = QuicClientConfig::try_from(tls).map_err(|e| tls_error(cert, e))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport()));
    Ok(config)
}

/// The node name in the peer's certificate: the DNS subject alternative name of its end-entity
/// certificate. Works on both the dialing and the accepting side. `None` if the handshake has
/// not finished or the certificate does not carry exactly one valid node name (which a
/// certificate from [`ClusterCa::issue`](super::certs::ClusterCa::issue) always does).
pub(crate) fn peer_node_name(conn: &quinn::Connection) -> Option<String> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    node_name_in_der(chain.first()?)
}

/// Verifies that `cert` chains to `ca` and is valid now, as a TLS peer would (without a name
/// check). Used when loading a node certificate, to refuse a mismatched CA before any peer does.
pub(crate) fn verify_chain(
    ca: &CertificateDer<'_>,
    cert: &CertificateDer<'_>,
) -> Result<(), rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone().into_owned())?;
    let parsed = ParsedCertificate::try_from(cert)?;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &roots,
        &[],
        UnixTime::now(),
        provider().signature_verification_algorithms.all,
    )
}

/// Checks a server's certificate chain against the cluster CA, but not its name.
///
/// `WebPkiServerVerifier` would also require the certificate to name the server we dialed,
/// which we often do not know yet (see the module docs); everything else it checks (chain,
/// validity period, server-auth usage, handshake signatures) is done the same way here.
#[derive(Debug)]
struct ClusterServerVerifier {
    /// The cluster CA, the only root.
    roots: Arc<RootCertStore>,
    /// The ring provider's algorithms, for chain and handshake signatures.
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ClusterServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The crypto provider every configuration uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// QUIC transport settings shared by both sides: quinn's defaults plus the keep-alive and idle
/// timeout backstops, and fewer acknowledgements of their own ([`ACK_ELICITING_THRESHOLD`]).
fn transport() -> TransportConfig {
    let mut transport = TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE_INTERVAL));
    transport.max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(
        MAX_IDLE_TIMEOUT_MS,
    ))));
    let mut acks = AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(VarInt::from_u32(ACK_ELICITING_THRESHOLD));
    transport.ack_frequency_config(Some(acks));
    transport
}

/// Wraps a rustls or quinn error about `cert`'s configuration into a [`CertError`].
fn tls_error(cert: &NodeCert, source: impl std::error::Error + Send + Sync + 'static) -> CertError {
    CertError::Tls {
        node: cert.node().to_owned(),
        source: Box::new(source),
    }
}

/// A root store holding only the cluster CA.
fn roots(cert: &NodeCert) -> Result<RootCertStore, CertError> {
    let ca =
        CertificateDer::from_pem_slice(cert.ca_pem().as_bytes()).map_err(|e| tls_error(cert, e))?;
    let mut roots = RootCertStore::empty();
    roots.add(ca).map_err(|e| tls_error(cert, e))?;
    Ok(roots)
}

/// The chain a node presents: its own certificate only, since peers hold the CA as a root.
fn chain(cert: &NodeCert) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let leaf = CertificateDer::from_pem_slice(cert.cert_pem().as_bytes())
        .map_err(|e| tls_error(cert, e))?;
    Ok(vec![leaf])
}

/// The node's private key.
fn key(cert: &NodeCert) -> Result<PrivateKeyDer<'static>, CertError> {
    PrivateKeyDer::from_pem_slice(cert.key_pem().as_bytes()).map_err(|e| tls_error(cert, e))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use quinn::{ConnectionError, Endpoint};
    use tokio::time::timeout;

    use super::*;
    use crate::transport::certs::ClusterCa;

    /// Bound on every wait, so a broken handshake fails the test instead of hanging it.
    const WAIT: Duration = Duration::from_secs(10);

    /// A root store holding only `ca`.
    fn roots_of(ca: &ClusterCa) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
            .unwrap();
        roots
    }

    fn localhost() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    }

    fn server(cert: &NodeCert) -> Endpoint {
        Endpoint::server(server_config(cert).unwrap(), localhost()).unwrap()
    }

    fn client(config: quinn::ClientConfig) -> Endpoint {
        let mut endpoint = Endpoint::client(localhost()).unwrap();
        endpoint.set_default_client_config(config);
        endpoint
    }

    /// Whether `err` is a handshake refused by TLS: a CRYPTO_ERROR (0x100..=0x1ff, a TLS alert)
    /// raised locally or received from the peer.
    fn is_tls_refusal(err: &ConnectionError) -> bool {
        let code = match err {
            ConnectionError::TransportError(e) => e.code,
            ConnectionError::ConnectionClosed(close) => close.error_code,
            _ => return false,
        };
        (0x100..=0x1ff).contains(&u64::from(code))
    }

    /// Dials `server` with `config` and expects the handshake to be refused on both sides.
    async fn assert_refused(server: &Endpoint, config: quinn::ClientConfig) {
        let client = client(config);
        let addr = server.local_addr().unwrap();
        let accept = async {
            let incoming = server.accept().await.expect("server endpoint closed");
            incoming.await
        };
        let dial = async {
            match client.connect(addr, "seed").unwrap().await {
                // In TLS 1.3 the client may finish its side of the handshake before the server
                // has checked the client certificate; the refusal then closes the connection.
                Ok(conn) => conn.closed().await,
                Err(err) => err,
            }
        };
        let (accepted, client_err) = timeout(WAIT, async { tokio::join!(accept, dial) })
            .await
            .expect("handshake neither refused nor completed in time");
        let server_err = accepted.expect_err("server accepted the connection");
        assert!(is_tls_refusal(&client_err), "client side: {client_err}");
        assert!(is_tls_refusal(&server_err), "server side: {server_err}");
    }

    #[tokio::test]
    async fn nodes_of_one_cluster_connect_and_learn_each_others_names() {
        let ca = ClusterCa::generate("test").unwrap();
        let a = ca.issue("node-a").unwrap();
        let b = ca.issue("node_b.example").unwrap();
        let server = server(&a);
        let client = client(client_config(&b).unwrap());
        let addr = server.local_addr().unwrap();

        let serve = async {
            let conn = server
                .accept()
                .await
                .expect("server endpoint closed")
                .await?;
            let peer = peer_node_name(&conn);
            let (mut send, mut recv) = conn.accept_bi().await?;
            let request = recv.read_to_end(64).await.unwrap();
            send.write_all(b"pong").await?;
            send.finish()?;
            // Stay connected until the client has read the reply and hung up.
            conn.closed().await;
            Ok::<_, Box<dyn std::error::Error>>((peer, request, conn.handshake_data()))
        };
        let dial = async {
            // Dialed by a name that is not the server's node name, as seed nodes are.
            let conn = client.connect(addr, "seed").unwrap().await?;
            let peer = peer_node_name(&conn);
            let (mut send, mut recv) = conn.open_bi().await?;
            send.write_all(b"ping").await?;
            send.finish()?;
            let reply = recv.read_to_end(64).await.unwrap();
            conn.close(VarInt::from_u32(0), b"done");
            Ok::<_, Box<dyn std::error::Error>>((peer, reply))
        };
        let (served, dialed) = timeout(WAIT, async { tokio::join!(serve, dial) })
            .await
            .expect("exchange did not finish in time");
        let (server_saw, request, handshake) = served.unwrap();
        let (client_saw, reply) = dialed.unwrap();

        assert_eq!(server_saw.as_deref(), Some("node_b.example"));
        assert_eq!(client_saw.as_deref(), Some("node-a"));
        assert_eq!(request, b"ping");
        assert_eq!(reply, b"pong");
        let handshake = handshake
            .unwrap()
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .unwrap();
        assert_eq!(handshake.protocol.as_deref(), Some(ALPN));
    }

    /// Three requests, each in a packet of its own, then one answer: the answer carries the
    /// acknowledgement of all three. With QUIC's default threshold the server would also send an
    /// acknowledgement of its own after the second request, two datagrams a round.
    #[tokio::test]
    async fn an_answer_acknowledges_several_requests_without_a_datagram_of_its_own() {
        const ROUNDS: u64 = 50;
        const REQUESTS: u8 = 3;
        let ca = ClusterCa::generate("test").unwrap();
        let server = server(&ca.issue("node-a").unwrap());
        let client = client(client_config(&ca.issue("node-b").unwrap()).unwrap());
        let addr = server.local_addr().unwrap();
        // The server says when it has read each request, so the client sends the next one in a
        // packet of its own.
        let (read_tx, mut read_rx) = tokio::sync::mpsc::unbounded_channel();

        let serve = async {
            let conn = server.accept().await.unwrap().await.unwrap();
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let mut request = [0u8; 1];
            // A first round lets the acknowledgement settings reach both sides.
            let mut before = None;
            for round in 0..=ROUNDS {
                if round == 1 {
                    before = Some(conn.stats().udp_tx.datagrams);
                }
                for _ in 0..REQUESTS {
                    recv.read_exact(&mut request).await.unwrap();
                    read_tx.send(()).unwrap();
                }
                send.write_all(b"a").await.unwrap();
            }
            let sent = conn.stats().udp_tx.datagrams - before.unwrap();
            conn.closed().await;
            sent
        };
        let dial = async {
            let conn = client.connect(addr, "seed").unwrap().await.unwrap();
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            let mut answer = [0u8; 1];
            for _ in 0..=ROUNDS {
                for _ in 0..REQUESTS {
                    send.write_all(b"r").await.unwrap();
                    read_rx.recv().await.unwrap();
                }
                recv.read_exact(&mut answer).await.unwrap();
            }
            conn.close(VarInt::from_u32(0), b"done");
        };
        let (sent, ()) = timeout(WAIT, async { tokio::join!(serve, dial) })
            .await
            .expect("exchange did not finish in time");
        // One answer a round; the slack covers an acknowledgement sent after its maximum delay
        // when a round stalls, and the odd flow-control update.
        assert!(
            sent < ROUNDS * 3 / 2,
            "the server sent {sent} datagrams in {ROUNDS} rounds of one answer each"
        );
    }

    #[tokio::test]
    async fn an_ecdsa_node_of_an_earlier_version_and_an_ed25519_node_connect() {
        let ca = crate::transport::certs::ecdsa::generate("test");
        let old = crate::transport::certs::ecdsa::issue(&ca, "old");
        let new = ca.issue("new").unwrap();
        for (server_cert, client_cert) in [(&old, &new), (&new, &old)] {
            let server = server(server_cert);
            let client = client(client_config(client_cert).unwrap());
            let addr = server.local_addr().unwrap();
            let accept = async { server.accept().await.expect("endpoint closed").await };
            let dial = async { client.connect(addr, "seed").unwrap().await };
            let (accepted, dialed) = timeout(WAIT, async { tokio::join!(accept, dial) })
                .await
                .expect("handshake did not finish in time");
            let (accepted, dialed) = (accepted.unwrap(), dialed.unwrap());
            assert_eq!(
                peer_node_name(&accepted),
                Some(client_cert.node().to_owned())
            );
            assert_eq!(peer_node_name(&dialed), Some(server_cert.node().to_owned()));
        }
    }

    #[tokio::test]
    async fn client_with_a_certificate_from_another_ca_is_refused() {
        let ours = ClusterCa::generate("ours").unwrap();
        let theirs = ClusterCa::generate("theirs").unwrap();
        let server = server(&ours.issue("node-a").unwrap());
        // The intruder trusts our CA (so it would accept our server) but its own certificate
        // comes from another CA.
        let intruder = theirs.issue("node-b").unwrap();
        let config = client_config_with_roots(&intruder, roots_of(&ours)).unwrap();
        assert_refused(&server, config).await;
    }

    #[tokio::test]
    async fn client_without_a_certificate_is_refused() {
        let ca = ClusterCa::generate("test").unwrap();
        let a = ca.issue("node-a").unwrap();
        let server = server(&a);
        let provider = provider();
        let verifier = Arc::new(ClusterServerVerifier {
            roots: Arc::new(roots(&a).unwrap()),
            algorithms: provider.signature_verification_algorithms,
        });
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
        assert_refused(&server, config).await;
    }

    #[tokio::test]
    async fn server_with_a_certificate_from_another_ca_is_refused() {
        let ours = ClusterCa::generate("ours").unwrap();
        let theirs = ClusterCa::generate("theirs").unwrap();
        // The impostor server trusts our CA (so it would accept our client) but its own
        // certificate comes from another CA.
        let impostor = theirs.issue("node-a").unwrap();
        let server = Endpoint::server(
            server_config_with_roots(&impostor, roots_of(&ours)).unwrap(),
            localhost(),
        )
        .unwrap();
        let client = client(client_config(&ours.issue("node-b").unwrap()).unwrap());
        let addr = server.local_addr().unwrap();

        let accept = async {
            let incoming = server.accept().await.expect("server endpoint closed");
            incoming.await
        };
        let dial = async { client.connect(addr, "node-a").unwrap().await };
        let (accepted, dialed) = timeout(WAIT, async { tokio::join!(accept, dial) })
            .await
            .expect("handshake neither refused nor completed in time");
        let client_err = dialed.expect_err("client accepted the impostor");
        assert!(
            matches!(&client_err, ConnectionError::TransportError(e)
                if e.reason.contains("UnknownIssuer")),
            "client side: {client_err}"
        );
        let server_err = accepted.expect_err("server completed the handshake");
        assert!(is_tls_refusal(&server_err), "server side: {server_err}");
    }
}
