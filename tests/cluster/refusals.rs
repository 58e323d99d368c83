//! Peers that must not join: another CA's certificate, another cluster's name.

use crate::util::*;

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
