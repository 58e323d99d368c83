//! The cluster service: a QUIC endpoint, one connection per peer, heartbeats, and the member
//! table.
//!
//! # Connections
//!
//! Each pair of nodes keeps one connection. A joining node dials its seeds; every node tells
//! its peers whom it is connected to ([`Control::Members`]), and of two nodes that learn of
//! each other, the one with the lower name dials. If both dial at once, both sides keep the
//! connection dialed by the lower name and close the other.
//!
//! # Failure detection and the down decision
//!
//! Member lists go out whenever a peer connects and about once a second.
//!
//! Heartbeats go out every `phi.heartbeat_interval` on each connection's control stream and
//! feed a phi accrual detector per peer, which expects them as often as the peer said it
//! sends them in its hello. Nothing large shares that stream: spawn requests, whose arguments
//! may take up to a frame, go on a data lane. A peer whose phi passes the threshold is
//! `Suspect`; one suspected without a break for the time [`DownDecision::AfterSuspicion`]
//! gives is declared `Down`, which is final for that incarnation. With [`DownDecision::External`], suspicion
//! never downs a node: only [`Cluster::declare_down`] does, which the registry calls when a
//! node's session expires, so that every node takes the same decision.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use crate::actor::ActorRef;
use crate::error::{LookupError, SpawnError};
use crate::hashing::{HashMap, HashSet};
use crate::id::{ActorId, NodeId};
use crate::node::Node;
use crate::remote::{
    Answer, Data, LANE_CAPACITY, LANES, PeerLinks, RemoteMessage, RemoteRef, encode_with,
    frame_limit_to,
};
use crate::transport::certs::NodeCert;
use crate::transport::frame::{self, FrameDecoder};
use crate::transport::simnet::Network;
use crate::transport::tls;

use super::control;
use super::handshake::{self, Refusal};
use super::membership::{Member, MemberEvent, MemberStatus, Membership};
use super::phi::{PhiAccrual, PhiConfig};
use super::wire::{Control, Hello, MemberView, PROTOCOL_VERSION};

/// The close code and reason of a node leaving on purpose.
const LEAVING: quinn::VarInt = quinn::VarInt::from_u32(0);
const LEAVING_REASON: &[u8] = b"leaving";
/// The QUIC close code for a connection whose peer sent no valid hello in time (garbage, a
/// frame over the size limit, another frame first, or nothing).
const HANDSHAKE_FAILED: u32 = 5;
/// The QUIC close code of a connection closed on purpose while both nodes stay members
/// ([`Cluster::disconnect`]).
const DISCONNECTED: u32 = 6;

/// What a spawn request adds to its arguments and module name, at most: the frame's length
/// prefix, the request number and MessagePack's markers.
const SPAWN_ENVELOPE: usize = 128;

/// How long after joining a node waits before it dials the seeds after the one that took it
/// in ([`Cluster::join`]): that one sends its member list as soon as they connect.
const OTHER_SEEDS_AFTER: Duration = Duration::from_millis(500);

/// The smallest `max_frame_size` taken: room for the handshake and the control traffic
/// (member lists of a hundred nodes). The registry asks for more (64 KiB).
pub const MIN_MAX_FRAME: usize = 16 * 1024;

/// The largest `max_frame_size` taken: a frame's length prefix is 4 bytes.
pub const MAX_MAX_FRAME: usize = u32::MAX as usize;

/// How a node takes part in a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The cluster's name; nodes of other clusters are refused.
    pub cluster: String,
    /// Where to accept connections (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Nodes to contact to join; empty to start a new cluster.
    pub seeds: Vec<SocketAddr>,
    /// Resources advertised for placement.
    pub resources: BTreeMap<String, u64>,
    /// Labels advertised for placement.
    pub labels: BTreeMap<String, String>,
    /// Failure detector settings.
    pub phi: PhiConfig,
    /// Who declares a peer down.
    pub down: DownDecision,
    /// Largest frame accepted or sent.
    pub max_frame_size: usize,
    /// How long a connecting peer has to complete the handshake.
    pub handshake_timeout: Duration,
    /// Outgoing control frames queued per peer before heartbeats are skipped (signals wait
    /// for room instead).
    pub control_queue: usize,
    /// How long lookups and remote spawns wait for the other node's answer.
    pub request_timeout: Duration,
    /// Real UDP, or a simulated network for tests.
    pub network: Network,
}

impl ClusterConfig {
    /// Checks the settings that would otherwise fail later, inside a task (a zero interval
    /// panics a timer; a zero queue panics a channel): [`Cluster::start`] calls it first.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Config`] naming the setting, what it holds and what it takes.
    pub fn validate(&self) -> Result<(), ClusterError> {
        let bad = |what: String| Err(ClusterError::Config(what));
        let positive = [
            ("phi.heartbeat_interval", self.phi.heartbeat_interval),
            // Zero lets phi divide zero by zero for a peer whose heartbeats came like
            // clockwork: NaN, taken for "suspect".
            ("phi.min_std_dev", self.phi.min_std_dev),
            ("handshake_timeout", self.handshake_timeout),
            ("request_timeout", self.request_timeout),
        ];
        for (name, value) in positive {
            if value.is_zero() {
                return bad(format!("{name} is 0; it must be longer than that"));
            }
        }
        if self.phi.heartbeat_interval > handshake::MAX_HEARTBEAT_INTERVAL {
            return bad(format!(
                "phi.heartbeat_interval is {:?}; peers take at most {:?} (100 ms by default)",
                self.phi.heartbeat_interval,
                handshake::MAX_HEARTBEAT_INTERVAL
            ));
        }
        if self.control_queue == 0 {
            return bad("control_queue is 0; at least 1 frame must fit in it".into());
        }
        if !(MIN_MAX_FRAME..=MAX_MAX_FRAME).contains(&self.max_frame_size) {
            return bad(format!(
                "max_frame_size is {} bytes; it takes {MIN_MAX_FRAME} to {MAX_MAX_FRAME} (a frame's length is 4 bytes)",
                self.max_frame_size
            ));
        }
        if !(self.phi.threshold.is_finite() && self.phi.threshold > 0.0) {
            return bad(format!(
                "phi.threshold is {}; it must be a positive number (8 by default)",
                self.phi.threshold
            ));
        }
        if self.phi.max_samples == 0 {
            return bad("phi.max_samples is 0; the detector needs at least 1".into());
        }
        Ok(())
    }

    /// Defaults for a cluster of this name, listening on an OS-chosen port of 127.0.0.1.
    pub fn new(cluster: impl Into<String>) -> Self {
        Self {
            cluster: cluster.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seeds: Vec::new(),
            resources: BTreeMap::new(),
            labels: BTreeMap::new(),
            phi: PhiConfig::default(),
            down: DownDecision::AfterSuspicion(Duration::from_millis(200)),
            max_frame_size: frame::DEFAULT_MAX_FRAME,
            handshake_timeout: Duration::from_secs(5),
            control_queue: 1024,
            request_timeout: Duration::from_secs(10),
            network: Network::Udp,
        }
    }
}

/// Who declares a peer down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownDecision {
    /// This node, once the peer was suspect without a break for this long. Each node decides
    /// for itself, so two nodes may disagree for a while: fit for clusters without a registry.
    AfterSuspicion(Duration),
    /// Only [`Cluster::declare_down`]: the registry's session expiry decides, the same for
    /// every node.
    External,
}

/// Why the cluster service could not start or a peer could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The TLS configuration could not be built from the certificates.
    #[error(transparent)]
    Certificates(#[from] crate::transport::certs::CertError),
    /// The certificate is for another node than this one.
    #[error(
        "the certificate is for node {certified:?}, but this node is {node:?}; issue one with `ensemble cert issue {node}`"
    )]
    WrongCertificate {
        /// The node the certificate names.
        certified: String,
        /// This node's name.
        node: String,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// None of the seeds could be joined.
    #[error("could not join through any seed ({tried}): {last}")]
    Join {
        /// The seeds tried.
        tried: String,
        /// The last error.
        last: String,
    },
    /// A connection to a peer failed.
    #[error("{0}")]
    Connect(String),
    /// A setting of the [`ClusterConfig`] cannot work.
    #[error("bad cluster setting: {0}")]
    Config(String),
}

/// A handle to this node's cluster service.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    node: Node,
    config: ClusterConfig,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    hello: Hello,
    state: Mutex<State>,
    events: broadcast::Sender<MemberEvent>,
    origin: Instant,
}

#[derive(Default)]
struct State {
    membership: Membership,
    peers: HashMap<NodeId, Peer>,
    dialing: HashSet<SocketAddr>,
    /// The node began to leave: it dials no one and takes no connection.
    left: bool,
    /// It told its peers it leaves: its heartbeats stop (until then they go on, so that a
    /// leave that takes a while is not taken for a death).
    said_leaving: bool,
    /// A peer refused this node as declared down.
    downed_elsewhere: bool,
}

struct Peer {
    /// The live connection, if any (it may be lost while the peer is not yet down).
    link: Option<Link>,
    detector: PhiAccrual,
    suspect_since: Option<Instant>,
}

#[derive(Clone)]
struct Link {
    conn: quinn::Connection,
    control: mpsc::Sender<Control>,
    /// A heartbeat found the control queue full: the writer sends it first in its next batch.
    heartbeat_due: Arc<AtomicBool>,
    /// This node's data lanes on the connection: how many streams they opened, and their
    /// writers, which a node that leaves waits for.
    lanes_opened: Arc<AtomicU32>,
    lane_writers: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// The peer's data lanes on the connection, as read here.
    lanes_read: Arc<LanesRead>,
    dialer: NodeId,
    /// Counts the connections this node made or took, from 1: unlike quinn's `stable_id`, a
    /// memory address, never taken again by a later one.
    serial: u64,
}

/// The data lanes a peer opened on a connection, as read: a peer that leaves says how many it
/// opened, and the connection is closed once each was read to its end.
#[derive(Default)]
struct LanesRead {
    accepted: AtomicU32,
    ended: AtomicU32,
    changed: tokio::sync::Notify,
}

impl LanesRead {
    /// Waits until `lanes` lanes were accepted and every lane accepted was read to its end.
    async fn all_read(&self, lanes: u32) {
        loop {
            let changed = self.changed.notified();
            let accepted = self.accepted.load(Ordering::Acquire);
            if accepted >= lanes && self.ended.load(Ordering::Acquire) >= accepted {
                return;
            }
            changed.await;
        }
    }
}

/// The serial of the next [`Link`].
static NEXT_LINK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// How a request to another node leaves.
enum Outgoing {
    /// On the control stream: small requests (name lookups).
    Control(Control),
    /// On a data lane, as an encoded frame: requests that may take up to a frame (spawns,
    /// with their arguments), which on the control stream would hold heartbeats and signals
    /// back while they are sent.
    Lane(bytes::Bytes),
}

impl Cluster {
    /// Starts the service for `node`: binds the endpoint, then joins through the seeds (if
    /// any; the first seed that answers is enough).
    pub async fn start(
        node: &Node,
        config: ClusterConfig,
        cert: &NodeCert,
    ) -> Result<Cluster, ClusterError> {
        config.validate()?;
        if cert.node() != node.id().name() {
            return Err(ClusterError::WrongCertificate {
                certified: cert.node().to_owned(),
                node: node.id().name().to_owned(),
            });
        }
        let server = tls::server_config(cert)?;
        let client = tls::client_config(cert)?;
        let bind_error = |source| ClusterError::Bind {
            addr: config.listen,
            source,
        };
        let endpoint = match &config.network {
            Network::Udp => quinn::Endpoint::server(server, config.listen).map_err(bind_error)?,
            Network::Simulated(net) => {
                let socket = net.bind(config.listen).map_err(bind_error)?;
                let mut endpoint = quinn::EndpointConfig::default();
                endpoint.rng_seed(Some(net.endpoint_seed(config.listen)));
                quinn::Endpoint::new_with_abstract_socket(
                    endpoint,
                    Some(server),
                    socket,
                    Arc::new(quinn::TokioRuntime),
                )
                .map_err(bind_error)?
            }
        };
        let listen = endpoint.local_addr().map_err(|source| ClusterError::Bind {
            addr: config.listen,
            source,
        })?;
        let hello = Hello {
            version: PROTOCOL_VERSION,
            cluster: config.cluster.clone(),
            node: node.id().clone(),
            listen,
            resources: config.resources.clone(),
            labels: config.labels.clone(),
            heartbeat_interval_us: u64::try_from(config.phi.heartbeat_interval.as_micros())
                .unwrap_or(u64::MAX),
            max_frame_size: config.max_frame_size as u64,
        };
        let (events, _) = broadcast::channel(1024);
        node.inner.remote.set_max_frame(config.max_frame_size);
        let cluster = Cluster {
            inner: Arc::new(Inner {
                node: node.clone(),
                config,
                endpoint,
                client,
                hello,
                state: Mutex::new(State::default()),
                events,
                origin: Instant::now(),
            }),
        };
        node.set_extension(cluster.clone());
        tracing::info!(node = %node.id(), %listen, cluster = %cluster.inner.config.cluster, "cluster endpoint listening");
        tokio::spawn(cluster.clone().accept_loop());
        tokio::spawn(cluster.clone().heartbeat_loop());
        let seeds = cluster.inner.config.seeds.clone();
        if !seeds.is_empty()
            && let Err(err) = cluster.join(&seeds).await
        {
            // Undo the start: without this the endpoint would stay bound, listening and
            // accepting peers, with its loops running, held by the node for as long as it lives
            // (leaving detaches the service from the node).
            cluster.leave().await;
            return Err(err);
        }
        Ok(cluster)
    }

    /// Joins through the first of `seeds` that accepts this node, then dials the seeds after it
    /// that are not members by then, from a task. This node's own address is skipped.
    ///
    /// The member lists of the first seed bring the rest of the cluster, but not a seed that
    /// seed does not count as a member: one cut off from it, or declared down while it was.
    /// Such a node may know no address of the cluster any more (every peer it knew started
    /// again on another address) and so never hear that it was declared down, which it learns
    /// from a refusal when it connects: it would neither rejoin nor be restarted. Dialed as a
    /// seed, it joins, or is refused and learns it.
    pub async fn join(&self, seeds: &[SocketAddr]) -> Result<(), ClusterError> {
        let mut last = String::from("no seed given");
        let me = self.local_addr();
        for (at, &seed) in seeds.iter().enumerate() {
            if seed == me {
                // Every node may be given the same list: dialed, it would refuse itself.
                last = format!("{seed} is this node's own address");
                continue;
            }
            match self.dial(seed).await {
                Ok(_) => {
                    let rest = seeds[at + 1..].to_vec();
                    if !rest.is_empty() {
                        tokio::spawn(self.clone().dial_other_seeds(rest));
                    }
                    return Ok(());
                }
                Err(err) => last = err.to_string(),
            }
        }
        Err(ClusterError::Join {
            tried: seeds
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            last,
        })
    }

    /// Dials each of `seeds` that is not this node and on which no member it knows of listens
    /// (see [`join`](Self::join)), once the first seed's member list has had time to come
    /// ([`OTHER_SEEDS_AFTER`]): a member it names is dialed by one side of the pair anyway,
    /// and a second dial would only race that one.
    async fn dial_other_seeds(self, seeds: Vec<SocketAddr>) {
        tokio::time::sleep(OTHER_SEEDS_AFTER).await;
        let me = self.local_addr();
        for seed in seeds {
            let known = {
                let state = self.inner.state.lock();
                state.left
                    || seed == me
                    || state.membership.members().iter().any(|m| m.listen == seed)
            };
            if !known {
                let _ = self.dial(seed).await;
            }
        }
    }

    /// The name of the cluster this node belongs to.
    pub fn cluster_name(&self) -> &str {
        &self.inner.config.cluster
    }

    /// Where this node accepts connections.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.hello.listen
    }

    /// The largest frame this node sends or accepts (`max_frame_size`): no message between
    /// nodes may encode larger.
    pub fn max_frame_size(&self) -> usize {
        self.inner.config.max_frame_size
    }

    /// The resources this node advertises for placement.
    pub fn resources(&self) -> &BTreeMap<String, u64> {
        &self.inner.hello.resources
    }

    /// The labels this node advertises for placement.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.inner.hello.labels
    }

    /// This node.
    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    /// The other members, with their status.
    pub fn members(&self) -> Vec<Member> {
        self.inner.state.lock().membership.members()
    }

    /// Sends a request to `node` (the frame `make` builds for its number) and waits for the
    /// answer, which comes on the control stream.
    async fn request(
        &self,
        node: &NodeId,
        make: impl FnOnce(u64) -> Result<Outgoing, String>,
    ) -> Result<Answer, String> {
        let remote = &self.inner.node.inner.remote;
        // The request and the connection it goes out on, from one look-up: that
        // connection's end answers it at once.
        let links = remote
            .links(node)
            .ok_or_else(|| "the node is not connected".to_owned())?;
        let (request, answer) = remote
            .start_request(node, links.connection)
            .ok_or_else(|| "the connection to the node ended".to_owned())?;
        let timeout = self.inner.config.request_timeout;
        // One deadline for both: a full queue is waited on within it too.
        // A timeout too long to add (`Duration::MAX`) waits as long as a timer can.
        let now = tokio::time::Instant::now();
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365));
        let queued = match make(request) {
            Err(err) => Err(err),
            Ok(Outgoing::Control(frame)) => {
                match tokio::time::timeout_at(deadline, links.control.send(frame)).await {
                    Ok(sent) => sent.map_err(|_| "the connection closed".to_owned()),
                    Err(_) => Err(format!(
                        "its control queue stayed full for {timeout:?}; the node is not keeping up"
                    )),
                }
            }
            Ok(Outgoing::Lane(frame)) => {
                let lane = &links.lanes[(request as usize) % LANES];
                match tokio::time::timeout_at(deadline, lane.send(frame)).await {
                    Ok(sent) => sent.map_err(|_| "the connection closed".to_owned()),
                    Err(_) => Err(format!(
                        "its data lane stayed full for {timeout:?}; the node is not keeping up"
                    )),
                }
            }
        };
        // Not held while the answer is awaited: a node that leaves waits for its lanes'
        // writers, which end once nothing holds their queues.
        drop(links);
        if let Err(err) = queued {
            remote.forget_request(request);
            return Err(err);
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err("the node went down before it answered".into()),
            Err(_) => {
                remote.forget_request(request);
                Err(format!("no answer within {timeout:?}"))
            }
        }
    }

    /// The actor registered under `name` on `node` with [`Node::register_remote`], as a
    /// reference for messages of type `M`.
    pub async fn whereis<M: RemoteMessage>(
        &self,
        node: &NodeId,
        name: &str,
    ) -> Result<ActorRef<M>, LookupError> {
        let found = self
            .request(node, |request| {
                Ok(Outgoing::Control(Control::WhereIs {
                    request,
                    name: name.to_owned(),
                }))
            })
            .await
            .and_then(|answer| answer)
            .map_err(|reason| LookupError::Unreachable {
                name: name.to_owned(),
                node: node.clone(),
                reason,
            })?;
        let wire = found.ok_or_else(|| LookupError::NotFound {
            name: name.to_owned(),
        })?;
        let expected = std::any::type_name::<M>();
        if wire.msg_type != expected {
            return Err(LookupError::WrongType {
                name: name.to_owned(),
                actor: wire.id,
                type_name: "a remote actor",
                expected,
            });
        }
        Ok(ActorRef::from_remote(RemoteRef::new(
            wire.id,
            self.inner.node.clone(),
        )))
    }

    /// Starts an actor of the module registered as `module` on `node` (see
    /// [`Node::register_module`]) with these arguments, waiting until its `started` hook has
    /// run. Unknown modules, arguments that do not decode as the module's argument type, and
    /// actors that fail to start are errors naming the node and module.
    pub async fn spawn_remote<M: RemoteMessage>(
        &self,
        node: &NodeId,
        module: &str,
        args: &impl serde::Serialize,
    ) -> Result<ActorRef<M>, SpawnError> {
        let failed = |reason: String| SpawnError::Remote {
            node: node.clone(),
            module: module.to_owned(),
            reason,
        };
        let target = ActorId::new(node.clone(), 0);
        let (args, _) = encode_with(&self.inner.node, &target, args)
            .map_err(|err| failed(format!("cannot encode the arguments: {err}")))?;
        // Refused here, not dropped by the control stream's writer (the caller would wait
        // for the request timeout and learn nothing). The frame adds the module's name and a
        // few dozen bytes of envelope.
        let remote = &self.inner.node.inner.remote;
        let max = remote.max_frame_to(node);
        if args.len() + module.len() + SPAWN_ENVELOPE > max {
            return Err(failed(format!(
                "the arguments take {} bytes encoded, and with the request they exceed the \
                 frame limit of {max} bytes (max_frame_size, the smaller of this node's and \
                 {node}'s); pass large data another way, \
                 such as a reference to it",
                args.len()
            )));
        }
        let wire = self
            .request(node, |request| {
                remote
                    .frame_to(
                        node,
                        &Data::Spawn {
                            request,
                            module,
                            args: &args,
                        },
                    )
                    .map(Outgoing::Lane)
                    .map_err(|err| format!("cannot frame the request: {err}"))
            })
            .await
            .and_then(|answer| answer)
            .map_err(failed)?
            .ok_or_else(|| failed("no actor was started".into()))?;
        let expected = std::any::type_name::<M>();
        if wire.msg_type != expected {
            // Not the protocol the caller will speak: do not leave it running.
            self.inner.node.inner.remote.stop(&wire.id, None);
            return Err(failed(format!(
                "the module's actors take messages of type {}, not {expected}",
                wire.msg_type
            )));
        }
        Ok(ActorRef::from_remote(RemoteRef::new(
            wire.id,
            self.inner.node.clone(),
        )))
    }

    /// Membership changes from now on. A subscriber that falls more than 1024 events behind
    /// gets `RecvError::Lagged` and should re-read [`members`](Self::members).
    pub fn subscribe(&self) -> broadcast::Receiver<MemberEvent> {
        self.inner.events.subscribe()
    }

    /// Leaves the cluster on purpose: peers see `Left` rather than `Down`. The endpoint closes.
    pub async fn leave(&self) {
        let (peers, links): (Vec<NodeId>, Vec<Link>) = {
            let mut state = self.inner.state.lock();
            state.left = true;
            state
                .peers
                .iter()
                .filter_map(|(node, p)| Some((node.clone(), p.link.clone()?)))
                .unzip()
        };
        // Nothing more goes out on the data lanes: their writers send what is queued and end
        // their streams (a second at most). Then each peer hears how many lanes to read to
        // their end before it closes the connection (closing first could discard what they
        // carry, and the `Leaving` frame). Waited for a second at most, a full control queue
        // (a peer not reading) included; connections still open are then closed with the
        // `leaving` code, which peers also take as leaving.
        let remote = &self.inner.node.inner.remote;
        for peer in &peers {
            remote.stop_sending(peer);
        }
        let flushed = async {
            for link in &links {
                let writers = std::mem::take(&mut *link.lane_writers.lock());
                for writer in writers {
                    let _ = writer.await;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), flushed).await;
        let acknowledged = async {
            for link in &links {
                let lanes = link.lanes_opened.load(Ordering::Acquire);
                let _ = link.control.send(Control::Leaving { lanes }).await;
            }
            self.inner.state.lock().said_leaving = true;
            for link in &links {
                link.conn.closed().await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), acknowledged).await;
        self.inner.endpoint.close(LEAVING, LEAVING_REASON);
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.endpoint.wait_idle()).await;
        // The node holds the service and the service the node: without this, neither would be
        // freed, and the endpoint would keep its address bound for as long as the process runs.
        self.inner.node.remove_extension::<Cluster>();
        tracing::info!(node = %self.inner.node.id(), "left the cluster");
    }

    fn now(&self) -> Duration {
        self.inner.origin.elapsed()
    }

    fn emit(&self, events: impl IntoIterator<Item = MemberEvent>) {
        for event in events {
            tracing::info!(node = %self.inner.node.id(), ?event, "membership");
            let _ = self.inner.events.send(event);
        }
    }

    async fn accept_loop(self) {
        while let Some(incoming) = self.inner.endpoint.accept().await {
            let cluster = self.clone();
            tokio::spawn(async move {
                let from = incoming.remote_address();
                if let Err(err) = cluster.accept(incoming).await {
                    tracing::warn!(node = %cluster.inner.node.id(), %from, "refused a connection: {err}");
                    metrics::counter!("ensemble_transport_refused_total", "side" => "accept")
                        .increment(1);
                }
            });
        }
    }

    async fn accept(&self, incoming: quinn::Incoming) -> Result<(), ClusterError> {
        let timeout = self.inner.config.handshake_timeout;
        let from = incoming.remote_address();
        let conn = incoming.await.map_err(|err| {
            ClusterError::Connect(format!("TLS handshake with {from} failed: {err}"))
        })?;
        let result = self.handshake(&conn, from, timeout).await;
        if let Err(err) = &result {
            // Whatever went wrong, the peer hears why before the connection goes (a refusal
            // has closed it already, with its own reason).
            conn.close(
                quinn::VarInt::from_u32(HANDSHAKE_FAILED),
                err.to_string().as_bytes(),
            );
        }
        result
    }

    /// The accepting side of the handshake on an established connection: reads the peer's
    /// hello, refuses or welcomes it.
    async fn handshake(
        &self,
        conn: &quinn::Connection,
        from: SocketAddr,
        timeout: Duration,
    ) -> Result<(), ClusterError> {
        let (mut send, mut recv) = tokio::time::timeout(timeout, conn.accept_bi())
            .await
            .map_err(|_| {
                ClusterError::Connect(format!(
                    "{from} opened no control stream within {timeout:?}"
                ))
            })?
            .map_err(|err| {
                ClusterError::Connect(format!("{from} closed before the handshake: {err}"))
            })?;
        let mut decoder = FrameDecoder::new(self.inner.config.max_frame_size);
        let hello = match read_handshake(&mut recv, &mut decoder, timeout, from).await? {
            Control::Hello(hello) => hello,
            other => {
                return Err(ClusterError::Connect(format!(
                    "{from} sent {other:?} instead of a hello"
                )));
            }
        };
        let certified = tls::peer_node_name(conn);
        if let Err(refusal) = self.admit(&hello, certified.as_deref()) {
            let reason = self.refuse(conn, &mut send, &refusal).await;
            return Err(ClusterError::Connect(format!(
                "node {} at {from}: {reason}",
                hello.node
            )));
        }
        write_control(
            &mut send,
            &Control::Welcome(self.inner.hello.clone()),
            self.inner.config.max_frame_size,
        )
        .await
        .map_err(|err| ClusterError::Connect(format!("cannot welcome {from}: {err}")))?;
        // The dialer checks the welcome in turn: the peer is a member only once it says so.
        match read_handshake(&mut recv, &mut decoder, timeout, from).await {
            Ok(Control::Ready) => {}
            Ok(Control::Refused { reason, downed }) => {
                if downed {
                    self.declared_down_elsewhere(from);
                }
                return Err(ClusterError::Connect(format!(
                    "node {} at {from} refused this node's welcome: {reason}",
                    hello.node
                )));
            }
            Ok(other) => {
                return Err(ClusterError::Connect(format!(
                    "{from} answered {other:?} to the welcome"
                )));
            }
            Err(_) if is_duplicate(conn) => {
                // Both dialed at once and the dialer kept the other connection: not a fault.
                tracing::debug!(node = %self.inner.node.id(), peer = %hello.node, "a duplicate connection closed by its dialer");
                return Ok(());
            }
            Err(err) => return Err(err),
        }
        let dialer = hello.node.clone();
        self.register(hello, conn.clone(), send, recv, decoder, dialer);
        Ok(())
    }

    /// Tells the peer why it is refused (and whether it was declared down, which it must
    /// learn to restart), lets that reach it (a second at most), and closes the connection.
    /// Answers the reason.
    async fn refuse(
        &self,
        conn: &quinn::Connection,
        send: &mut quinn::SendStream,
        refusal: &Refusal,
    ) -> String {
        let reason = refusal.to_string();
        let downed = matches!(refusal, Refusal::Downed { .. });
        let _ = write_control(
            send,
            &Control::Refused {
                reason: reason.clone(),
                downed,
            },
            self.inner.config.max_frame_size,
        )
        .await;
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
        conn.close(quinn::VarInt::from_u32(1), reason.as_bytes());
        reason
    }

    fn admit(&self, hello: &Hello, certified: Option<&str>) -> Result<(), Refusal> {
        handshake::check(
            &self.inner.config.cluster,
            self.inner.node.id(),
            hello,
            certified,
        )?;
        self.inner.state.lock().membership.admissible(&hello.node)
    }

    /// Connects to the node at `addr` and completes the handshake.
    async fn dial(&self, addr: SocketAddr) -> Result<NodeId, ClusterError> {
        if !self.inner.state.lock().dialing.insert(addr) {
            return Err(ClusterError::Connect(format!(
                "already connecting to {addr}"
            )));
        }
        // Removed however the dial ends, dropped unfinished too (a caller's timeout around
        // `join`): left behind, it would refuse every later dial of the address.
        struct Dialing<'a>(&'a Cluster, SocketAddr);
        impl Drop for Dialing<'_> {
            fn drop(&mut self) {
                self.0.inner.state.lock().dialing.remove(&self.1);
            }
        }
        let dialing = Dialing(self, addr);
        let result = self.dial_inner(addr).await;
        drop(dialing);
        if let Err(err) = &result {
            tracing::warn!(node = %self.inner.node.id(), %addr, "cannot connect: {err}");
            metrics::counter!("ensemble_transport_refused_total", "side" => "dial").increment(1);
        }
        result
    }

    async fn dial_inner(&self, addr: SocketAddr) -> Result<NodeId, ClusterError> {
        let timeout = self.inner.config.handshake_timeout;
        let connecting = self
            .inner
            .endpoint
            .connect_with(self.inner.client.clone(), addr, "ensemble")
            .map_err(|err| ClusterError::Connect(format!("cannot connect to {addr}: {err}")))?;
        let conn = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| {
                ClusterError::Connect(format!("no answer from {addr} within {timeout:?}"))
            })?
            .map_err(|err| {
                ClusterError::Connect(format!("TLS handshake with {addr} failed: {err}"))
            })?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|err| {
            ClusterError::Connect(format!("cannot open a control stream to {addr}: {err}"))
        })?;
        let max = self.inner.config.max_frame_size;
        write_control(&mut send, &Control::Hello(self.inner.hello.clone()), max)
            .await
            .map_err(|err| {
                ClusterError::Connect(format!("cannot send the hello to {addr}: {err}"))
            })?;
        let mut decoder = FrameDecoder::new(max);
        let welcome = match read_handshake(&mut recv, &mut decoder, timeout, addr).await? {
            Control::Welcome(hello) => hello,
            Control::Refused { reason, downed } => {
                if downed {
                    self.declared_down_elsewhere(addr);
                }
                return Err(ClusterError::Connect(format!(
                    "the node at {addr} refused this node: {reason}"
                )));
            }
            other => {
                return Err(ClusterError::Connect(format!(
                    "{addr} answered {other:?} to the hello"
                )));
            }
        };
        let certified = tls::peer_node_name(&conn);
        if let Err(refusal) = self.admit(&welcome, certified.as_deref()) {
            let reason = self.refuse(&conn, &mut send, &refusal).await;
            return Err(ClusterError::Connect(format!(
                "refused node {} at {addr}: {reason}",
                welcome.node
            )));
        }
        let peer = welcome.node.clone();
        self.register(
            welcome,
            conn,
            send,
            recv,
            decoder,
            self.inner.node.id().clone(),
        );
        Ok(peer)
    }

    /// Adds a connected, admitted peer: starts its reader and writer, updates membership, and
    /// tells every peer the new member list.
    fn register(
        &self,
        hello: Hello,
        conn: quinn::Connection,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        decoder: FrameDecoder,
        dialer: NodeId,
    ) {
        let (control, queue) = mpsc::channel(self.inner.config.control_queue);
        if dialer == *self.inner.node.id() {
            // The dialer's answer to the welcome, ahead of anything else it sends. Not sent if
            // this connection is dropped below: the acceptor then never counts this node in.
            let _ = control.try_send(Control::Ready);
        }
        // The peer's detector expects heartbeats as often as the peer sends them.
        let mut phi = self.inner.config.phi;
        if hello.heartbeat_interval_us > 0 {
            phi.heartbeat_interval = Duration::from_micros(hello.heartbeat_interval_us);
        }
        // User traffic: lanes of unidirectional streams, apart from the control stream. Their
        // writers end with their queues if the connection is not kept.
        let mut lanes = Vec::with_capacity(LANES);
        let lanes_opened = Arc::<AtomicU32>::default();
        let mut lane_writers = Vec::with_capacity(LANES);
        for _ in 0..LANES {
            let (lane, queue) = mpsc::channel(LANE_CAPACITY);
            lane_writers.push(tokio::spawn(super::lane::write(
                conn.clone(),
                queue,
                self.inner.node.clone(),
                hello.node.clone(),
                Arc::clone(&lanes_opened),
            )));
            lanes.push(lane);
        }
        let lanes_read = Arc::<LanesRead>::default();
        let serial = NEXT_LINK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let links = PeerLinks {
            control: control.clone(),
            overflow: Arc::default(),
            lanes: lanes.into(),
            connection: serial,
            runtime: tokio::runtime::Handle::current(),
            max_frame: frame_limit_to(self.inner.config.max_frame_size, &hello),
        };
        let heartbeat_due = Arc::<AtomicBool>::default();
        let link = Link {
            conn: conn.clone(),
            control,
            heartbeat_due: Arc::clone(&heartbeat_due),
            lanes_opened,
            lane_writers: Arc::new(Mutex::new(lane_writers)),
            lanes_read: Arc::clone(&lanes_read),
            dialer: dialer.clone(),
            serial,
        };
        let events = {
            let mut state = self.inner.state.lock();
            // Checked again under the lock that declaring a node down takes: the node may have
            // been declared down while its handshake was answered, and must not come back
            // with its monitors and links fired already.
            if let Err(refusal) = state.membership.admissible(&hello.node) {
                drop(state);
                tracing::warn!(node = %self.inner.node.id(), peer = %hello.node, "connection dropped after the handshake: {refusal}");
                conn.close(quinn::VarInt::from_u32(1), refusal.to_string().as_bytes());
                return;
            }
            if state.left {
                // Taken in mid-leave, it would undo it: tells to the peer would go out again,
                // on a connection that hears no `Leaving`.
                drop(state);
                conn.close(LEAVING, LEAVING_REASON);
                return;
            }
            if let Some(existing) = state.peers.get(&hello.node).and_then(|p| p.link.as_ref())
                && existing.conn.close_reason().is_none()
            {
                // Both dialed: keep the connection dialed by the lower name.
                let keep_new = dialer.name() < existing.dialer.name();
                if !keep_new {
                    drop(state);
                    conn.close(quinn::VarInt::from_u32(2), b"duplicate connection");
                    return;
                }
                existing
                    .conn
                    .close(quinn::VarInt::from_u32(2), b"duplicate connection");
            }
            let now = self.inner.origin.elapsed();
            let peer = state
                .peers
                .entry(hello.node.clone())
                .or_insert_with(|| Peer {
                    link: None,
                    detector: PhiAccrual::new(phi),
                    suspect_since: None,
                });
            peer.link = Some(link);
            peer.detector.reconnected(now);
            // Under the lock that picked this connection and checked the node is not down: a
            // connection that lost the pick, or a node declared down meanwhile, must not take
            // the router's place for the peer after this one.
            self.inner
                .node
                .inner
                .remote
                .connect(hello.node.clone(), links);
            let events = state.membership.up(Member {
                node: hello.node.clone(),
                listen: hello.listen,
                status: MemberStatus::Up,
                resources: hello.resources.clone(),
                labels: hello.labels.clone(),
            });
            // A new incarnation replaces an older one, which can only have restarted: it is
            // down now, not when its heartbeats are missed.
            for event in &events {
                if let MemberEvent::Down(old) = event
                    && let Some(old_peer) = state.peers.remove(old)
                    && let Some(old_link) = old_peer.link
                {
                    old_link
                        .conn
                        .close(quinn::VarInt::from_u32(4), b"replaced by a new incarnation");
                }
            }
            events
        };
        for event in &events {
            if let MemberEvent::Down(old) = event {
                self.inner
                    .node
                    .inner
                    .remote
                    .node_down(&self.inner.node, old);
            }
        }
        tracing::debug!(node = %self.inner.node.id(), peer = %hello.node, addr = %conn.remote_address(), "connected");
        // The peer's limit too: it closes the connection over a larger frame.
        let max = frame_limit_to(self.inner.config.max_frame_size, &hello);
        tokio::spawn(control::write(
            send,
            queue,
            max,
            hello.node.clone(),
            heartbeat_due,
        ));
        tokio::spawn(
            self.clone()
                .accept_data(hello.node.clone(), conn.clone(), lanes_read),
        );
        tokio::spawn(self.clone().reader(hello.node.clone(), conn, recv, decoder));
        self.emit(events);
        self.broadcast_members();
    }

    /// Tells every peer which members this node is connected to.
    fn broadcast_members(&self) {
        let (views, links) = {
            let state = self.inner.state.lock();
            let mut views: Vec<MemberView> = state
                .membership
                .members()
                .into_iter()
                .map(|m| MemberView {
                    node: m.node,
                    listen: m.listen,
                })
                .collect();
            views.push(MemberView {
                node: self.inner.node.id().clone(),
                listen: self.inner.hello.listen,
            });
            let links: Vec<Link> = state
                .peers
                .values()
                .filter_map(|p| p.link.clone())
                .collect();
            (views, links)
        };
        for link in links {
            let _ = link.control.try_send(Control::Members(views.clone()));
        }
    }

    async fn reader(
        self,
        peer: NodeId,
        conn: quinn::Connection,
        mut recv: quinn::RecvStream,
        mut decoder: FrameDecoder,
    ) {
        let outcome: Result<(), String> = async {
            loop {
                // Frames already buffered (e.g. sent right behind the welcome) come first.
                while let Some(payload) = decoder.next_frame().map_err(|e| e.to_string())? {
                    let control: Control = frame::decode(&payload).map_err(|e| e.to_string())?;
                    self.on_control(&peer, control);
                }
                match recv.read_chunk(64 * 1024, true).await {
                    Ok(Some(chunk)) => decoder.extend(&chunk.bytes),
                    Ok(None) => return Ok(()),
                    Err(quinn::ReadError::ConnectionLost(
                        quinn::ConnectionError::ApplicationClosed(close),
                    )) if close.error_code == LEAVING
                        && close.reason.as_ref() == LEAVING_REASON =>
                    {
                        // The peer closed before its `Leaving` frame was read: same meaning.
                        self.on_control(&peer, Control::Leaving { lanes: 0 });
                        return Ok(());
                    }
                    Err(err) => return Err(format!("connection lost: {err}")),
                }
            }
        }
        .await;
        if let Err(err) = &outcome
            && !err.starts_with("connection lost")
        {
            tracing::warn!(node = %self.inner.node.id(), %peer, "closing the connection after a bad frame: {err}");
            metrics::counter!("ensemble_transport_frame_errors_total").increment(1);
            conn.close(quinn::VarInt::from_u32(3), b"bad frame");
        }
        self.lost(&peer, &conn);
    }

    fn on_control(&self, peer: &NodeId, control: Control) {
        match control {
            Control::Heartbeat => {
                let now = self.now();
                if let Some(p) = self.inner.state.lock().peers.get_mut(peer) {
                    p.detector.heartbeat(now);
                }
            }
            Control::Members(views) => {
                let me = self.inner.node.id();
                let to_dial: Vec<SocketAddr> = {
                    let state = self.inner.state.lock();
                    views
                        .into_iter()
                        // Of two nodes, the one with the lower name dials.
                        .filter(|v| me.name() < v.node.name())
                        .filter(|v| {
                            !state.peers.contains_key(&v.node)
                                && state.membership.admissible(&v.node).is_ok()
                        })
                        .map(|v| v.listen)
                        .collect()
                };
                for addr in to_dial {
                    let cluster = self.clone();
                    tokio::spawn(async move {
                        let _ = cluster.dial(addr).await;
                    });
                }
            }
            Control::Leaving { lanes } => {
                let Some(left) = self.inner.state.lock().peers.remove(peer) else {
                    // Taken already (its `Leaving`, then its connection's close).
                    return;
                };
                // Nothing more goes to it. What it told before it left is read first (a
                // second at most; closed at once, the connection would take it along), and
                // only then do its actors go: the replies and messages it sent arrive before
                // the monitors and links of their senders fire.
                self.inner.node.inner.remote.forget_links(peer);
                let (cluster, peer) = (self.clone(), peer.clone());
                tokio::spawn(async move {
                    if let Some(link) = &left.link {
                        let all_read = link.lanes_read.all_read(lanes);
                        let _ = tokio::time::timeout(Duration::from_secs(1), all_read).await;
                    }
                    let event = cluster.inner.state.lock().membership.left(&peer);
                    let node = &cluster.inner.node;
                    node.inner.remote.node_down(node, &peer);
                    cluster.emit(event);
                    if let Some(link) = left.link {
                        link.conn.close(quinn::VarInt::from_u32(0), b"left");
                    }
                });
            }
            Control::Signal { seq, signal } => {
                self.inner
                    .node
                    .inner
                    .remote
                    .on_signal(&self.inner.node, peer, seq, signal);
            }
            Control::SignalsApplied { through } => {
                self.inner.node.inner.remote.signals_applied(peer, through);
            }
            Control::WhereIs { request, name } => {
                let actor = self
                    .inner
                    .node
                    .inner
                    .remote
                    .lookup_local(&self.inner.node, &name);
                let answer = Control::Found { request, actor };
                self.inner.node.inner.remote.answer_on_control(peer, answer);
            }
            Control::Found { request, actor } => {
                let _ = self.inner.node.inner.remote.end_request(request, Ok(actor));
            }
            other => {
                tracing::warn!(node = %self.inner.node.id(), %peer, "unexpected control frame after the handshake: {other:?}");
            }
        }
    }

    /// A peer refused this node because the cluster declared it down (its registry session
    /// expired while it was cut off). Tells this node's subscribers with a `Down` event for
    /// this node itself, once: the registry marks its session expired, and whoever runs the
    /// node restarts it as a new incarnation.
    fn declared_down_elsewhere(&self, by: SocketAddr) {
        let me = self.inner.node.id().clone();
        {
            let mut state = self.inner.state.lock();
            if state.downed_elsewhere {
                return;
            }
            state.downed_elsewhere = true;
        }
        tracing::error!(node = %me, %by, "the cluster declared this node down; restart it to rejoin as a new incarnation");
        let _ = self.inner.events.send(MemberEvent::Down(me));
    }

    /// Whether a peer told this node that the cluster declared it down.
    pub fn is_declared_down(&self) -> bool {
        self.inner.state.lock().downed_elsewhere
    }

    /// A connection ended. The peer stays a member until the failure detector decides; the
    /// lower-named side of the pair tries to reconnect at once, the other after a while (so
    /// that a node cut off while the cluster declared it down hears so from either side).
    fn lost(&self, peer: &NodeId, conn: &quinn::Connection) {
        let redial = {
            let mut state = self.inner.state.lock();
            let Some(p) = state.peers.get_mut(peer) else {
                return;
            };
            // Compared by quinn's id, an address: the ended connection is still held here,
            // so no later one can have taken it.
            let serial = match &p.link {
                Some(l) if l.conn.stable_id() == conn.stable_id() => l.serial,
                _ => return,
            };
            p.link = None;
            self.inner.node.inner.remote.disconnect(peer, serial);
            let listen = state.membership.get(peer).map(|m| m.listen);
            let first = if self.inner.node.id().name() < peer.name() {
                Duration::from_millis(50)
            } else {
                Duration::from_secs(1)
            };
            (!state.left)
                .then_some(listen)
                .flatten()
                .map(|addr| (addr, first))
        };
        tracing::debug!(node = %self.inner.node.id(), %peer, "connection lost");
        if let Some((addr, first)) = redial {
            let cluster = self.clone();
            let peer = peer.clone();
            tokio::spawn(async move { cluster.redial(peer, addr, first).await });
        }
    }

    /// Reconnects with exponential backoff (starting at `first`) until connected, or the peer
    /// is down or gone.
    async fn redial(self, peer: NodeId, addr: SocketAddr, first: Duration) {
        let mut delay = first;
        loop {
            tokio::time::sleep(delay).await;
            {
                let state = self.inner.state.lock();
                match state.peers.get(&peer) {
                    None => return,
                    Some(p) if p.link.is_some() => return,
                    Some(_) if state.left || state.downed_elsewhere => return,
                    Some(_) => {}
                }
            }
            if self.dial(addr).await.is_ok() {
                return;
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn heartbeat_loop(self) {
        let interval = self.inner.config.phi.heartbeat_interval;
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Member lists also go out about once a second, so that a dial that failed is tried
        // again and the mesh heals.
        let gossip_every =
            (Duration::from_secs(1).as_millis() / interval.as_millis().max(1)).max(1) as u64;
        let mut tick = 0u64;
        loop {
            ticks.tick().await;
            tick += 1;
            if tick % gossip_every == 0 {
                self.broadcast_members();
            }
            if self.inner.state.lock().said_leaving {
                return;
            }
            let links: Vec<(NodeId, Link)> = self
                .inner
                .state
                .lock()
                .peers
                .iter()
                .filter_map(|(node, p)| Some((node.clone(), p.link.clone()?)))
                .collect();
            let remote = &self.inner.node.inner.remote;
            for (peer, link) in links {
                control::send_heartbeat(&link.control, &link.heartbeat_due);
                // The peer keeps the signals it sent until told they applied.
                if let Some(through) = remote.acknowledgement_due(&peer)
                    && link
                        .control
                        .try_send(Control::SignalsApplied { through })
                        .is_ok()
                {
                    remote.acknowledgement_sent(&peer, through);
                }
            }
            self.check_peers();
            self.inner.node.inner.remote.sweep();
        }
    }

    /// The one place where peers are suspected, cleared and declared down.
    fn check_peers(&self) {
        let now = self.now();
        let instant = Instant::now();
        let down_after = match self.inner.config.down {
            DownDecision::AfterSuspicion(after) => Some(after),
            DownDecision::External => None,
        };
        let mut events = Vec::new();
        let mut downed = Vec::new();
        {
            let mut state = self.inner.state.lock();
            let State {
                peers, membership, ..
            } = &mut *state;
            for (node, peer) in peers.iter_mut() {
                if peer.detector.is_available(now) {
                    if peer.suspect_since.take().is_some() {
                        events.extend(membership.reachable(node));
                    }
                    continue;
                }
                let since = *peer.suspect_since.get_or_insert_with(|| {
                    events.extend(membership.suspect(node));
                    instant
                });
                if down_after.is_some_and(|after| instant.duration_since(since) >= after) {
                    downed.push(node.clone());
                }
            }
        }
        self.emit(events);
        if !downed.is_empty() {
            tracing::warn!(node = %self.inner.node.id(), ?downed, "declared down: heartbeats stopped");
            self.down(&downed);
        }
    }

    /// The connection to member `node` now, by an id that no later connection between the
    /// two nodes takes again; `None` while there is none. What one node sends another arrives
    /// in order unless the connection it went out on ends: a subscription made over a
    /// connection that was since replaced may have lost messages, and one that sees this id
    /// change knows it at once rather than by silence.
    pub fn connection(&self, node: &NodeId) -> Option<u64> {
        let state = self.inner.state.lock();
        Some(state.peers.get(node)?.link.as_ref()?.serial)
    }

    /// Closes the connection to member `node`, which stays a member, as Erlang's
    /// `erlang:disconnect_node/1` does: the nodes connect again at once (the dialer of the
    /// closed connection dials again). What was in flight goes as with any connection that
    /// ends: messages queued on it are counted as dead letters, signals are sent again on
    /// the next connection. For an operator who wants a fresh connection, and for tests of
    /// what a lost connection does. False if no connection to `node` was up.
    pub fn disconnect(&self, node: &NodeId) -> bool {
        let link = {
            let state = self.inner.state.lock();
            state.peers.get(node).and_then(|peer| peer.link.clone())
        };
        let Some(link) = link else {
            return false;
        };
        tracing::info!(node = %self.inner.node.id(), peer = %node, "closing the connection on purpose");
        link.conn.close(
            quinn::VarInt::from_u32(DISCONNECTED),
            b"disconnected on purpose",
        );
        true
    }

    /// Declares `node` down: its connection closes, monitors and links to its actors fire with
    /// `NodeDown`, asks waiting on it fail, and subscribers see [`MemberEvent::Down`]. Final for
    /// that incarnation: it is refused if it connects again. The registry calls this when the
    /// node's session expires (see [`DownDecision::External`]).
    pub fn declare_down(&self, node: &NodeId) {
        if node == self.inner.node.id() {
            return;
        }
        tracing::warn!(node = %self.inner.node.id(), down = %node, "declared down by the registry");
        self.down(std::slice::from_ref(node));
    }

    fn down(&self, downed: &[NodeId]) {
        let mut events = Vec::new();
        let downed: Vec<NodeId> = {
            let mut state = self.inner.state.lock();
            let State {
                peers, membership, ..
            } = &mut *state;
            // Each incarnation goes down once: its monitors fire exactly once.
            let downed: Vec<NodeId> = downed
                .iter()
                .filter(|node| !membership.is_gone(node))
                .cloned()
                .collect();
            for node in &downed {
                if let Some(peer) = peers.remove(node)
                    && let Some(link) = peer.link
                {
                    link.conn
                        .close(quinn::VarInt::from_u32(4), b"declared down");
                }
                events.extend(membership.down(node));
            }
            downed
        };
        for node in &downed {
            self.inner
                .node
                .inner
                .remote
                .node_down(&self.inner.node, node);
        }
        self.emit(events);
    }
}

/// Whether `conn` was closed as the duplicate of a connection both nodes dialed at once.
fn is_duplicate(conn: &quinn::Connection) -> bool {
    matches!(
        conn.close_reason(),
        Some(quinn::ConnectionError::ApplicationClosed(close))
            if close.error_code == quinn::VarInt::from_u32(2)
    )
}

async fn write_control(
    send: &mut quinn::SendStream,
    control: &Control,
    max: usize,
) -> Result<(), String> {
    let bytes = frame::encode_one(control, max).map_err(|e| e.to_string())?;
    send.write_all(&bytes).await.map_err(|e| e.to_string())
}

/// Reads one handshake frame within `timeout`.
async fn read_handshake(
    recv: &mut quinn::RecvStream,
    decoder: &mut FrameDecoder,
    timeout: Duration,
    peer: SocketAddr,
) -> Result<Control, ClusterError> {
    match tokio::time::timeout(timeout, read_control(recv, decoder)).await {
        Ok(Ok(control)) => Ok(control),
        Ok(Err(err)) => Err(ClusterError::Connect(format!(
            "bad handshake with {peer}: {err}"
        ))),
        Err(_) => Err(ClusterError::Connect(format!(
            "no handshake frame from {peer} within {timeout:?}"
        ))),
    }
}

async fn read_control(
    recv: &mut quinn::RecvStream,
    decoder: &mut FrameDecoder,
) -> Result<Control, String> {
    loop {
        if let Some(payload) = decoder.next_frame().map_err(|e| e.to_string())? {
            return frame::decode(&payload).map_err(|e| e.to_string());
        }
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => decoder.extend(&chunk.bytes),
            Ok(None) => return Err("the stream ended".into()),
            Err(err) => return Err(err.to_string()),
        }
    }
}

impl Cluster {
    /// Accepts the peer's data lanes (unidirectional streams) on a connection.
    async fn accept_data(self, peer: NodeId, conn: quinn::Connection, read: Arc<LanesRead>) {
        while let Ok(recv) = conn.accept_uni().await {
            read.accepted.fetch_add(1, Ordering::AcqRel);
            let (cluster, peer, conn, read) =
                (self.clone(), peer.clone(), conn.clone(), Arc::clone(&read));
            tokio::spawn(async move {
                cluster.read_data(peer, conn, recv).await;
                read.ended.fetch_add(1, Ordering::AcqRel);
                read.changed.notify_waiters();
            });
        }
    }

    /// Reads one data lane and hands its frames to the router.
    async fn read_data(self, peer: NodeId, conn: quinn::Connection, mut recv: quinn::RecvStream) {
        let node = &self.inner.node;
        let mut decoder = FrameDecoder::new(self.inner.config.max_frame_size);
        loop {
            match recv.read_chunk(64 * 1024, true).await {
                Ok(Some(chunk)) => decoder.extend(&chunk.bytes),
                Ok(None) | Err(_) => return,
            }
            loop {
                let decoded = match decoder.next_frame() {
                    Ok(Some(payload)) => match frame::decode_borrowed::<Data<'_>>(&payload) {
                        Ok(data) => {
                            node.inner.remote.on_data(node, &peer, data);
                            continue;
                        }
                        Err(err) => err,
                    },
                    Ok(None) => break,
                    Err(err) => err,
                };
                // The stream cannot be resynchronised: drop the connection; the peer reconnects
                // (or is declared down) and this node keeps running.
                tracing::warn!(node = %node.id(), %peer, "closing the connection after a bad data frame: {decoded}");
                metrics::counter!("ensemble_transport_frame_errors_total").increment(1);
                conn.close(quinn::VarInt::from_u32(3), b"bad frame");
                return;
            }
        }
    }
}
