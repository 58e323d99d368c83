//! The per-node router of remote traffic: connections' lanes, exported actors, pending asks,
//! remote monitors and links, and the encode/decode contexts.

use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

use crate::actor::{Cell, CellHandle, Down, MonitorRef, Signal};
use crate::cluster::Control;
use crate::error::AskError;
use crate::exit::ExitReason;
use crate::hashing::{self, DashMap, HashMap, HashSet};
use crate::id::{ActorId, NodeId};
use crate::node::Node;
use crate::transport::frame;

use super::delivery::PeerSignals;
use super::wire::{Data, Outcome, RemoteSignal, WireRef};
use super::{LANES, RemoteMessage, node_down_reason, unreachable_reason};

thread_local! {
    static ENCODING: RefCell<Option<EncodeContext>> = const { RefCell::new(None) };
    static DECODING: RefCell<Option<DecodeContext>> = const { RefCell::new(None) };
}

pub(crate) struct EncodeContext {
    pub(crate) node: Node,
    /// The actor the message is for (named in the errors of asks it carries).
    pub(crate) target: ActorId,
    /// The asks whose reply handles the message carries, in order.
    pub(crate) asks: Vec<u64>,
}

pub(crate) struct DecodeContext {
    pub(crate) node: Node,
}

thread_local! {
    /// A buffer for encoding payloads, reused so that a send does not allocate one.
    static PAYLOAD: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Hands a payload buffer back for reuse (buffers that grew very large are dropped).
pub(crate) fn recycle(mut buf: Vec<u8>) {
    if buf.capacity() <= 64 * 1024 {
        buf.clear();
        PAYLOAD.with(|p| {
            let mut p = p.borrow_mut();
            if p.capacity() < buf.capacity() {
                *p = buf;
            }
        });
    }
}

/// Encodes `value` for `target`, with this node as the context for the references and reply
/// handles inside it; returns the encoding and the asks whose reply handles it carries. The
/// buffer comes from a per-thread pool: give it back with [`recycle`].
pub(crate) fn encode_with<T: Serialize>(
    node: &Node,
    target: &ActorId,
    value: &T,
) -> Result<(Vec<u8>, Vec<u64>), String> {
    let context = EncodeContext {
        node: node.clone(),
        target: target.clone(),
        asks: Vec::new(),
    };
    let previous = ENCODING.with(|c| c.replace(Some(context)));
    let mut buf = PAYLOAD.with(|p| std::mem::take(&mut *p.borrow_mut()));
    let encoded = unless_it_panics("encoding", || {
        rmp_serde::encode::write_named(&mut buf, value).map_err(|e| e.to_string())
    })
    .map(|()| buf);
    let context = ENCODING.with(|c| c.replace(previous));
    let asks = context.map(|c| c.asks).unwrap_or_default();
    match encoded {
        Ok(bytes) => Ok((bytes, asks)),
        Err(err) => {
            node.inner
                .remote
                .fail_pending(&asks, &format!("the request cannot be encoded: {err}"));
            Err(err)
        }
    }
}

/// Decodes `bytes` on `node`.
pub(crate) fn decode_with<T: DeserializeOwned>(node: &Node, bytes: &[u8]) -> Result<T, String> {
    let previous = DECODING.with(|c| c.replace(Some(DecodeContext { node: node.clone() })));
    let decoded = unless_it_panics("decoding", || {
        rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
    });
    DECODING.with(|c| c.replace(previous));
    decoded
}

/// `value` in a frame of at most `max` bytes.
pub(crate) fn frame_within<T: Serialize>(value: &T, max: usize) -> Result<Bytes, String> {
    frame::encode_one(value, max).map_err(|e| e.to_string())
}

/// Runs a message type's own `Serialize` or `Deserialize` (`what` it does), taking a panic in
/// it for an error: one faulty type must not end the task that reads a connection's lane,
/// nor leave this thread's encoding or decoding context set.
fn unless_it_panics<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        Err(format!("{what} panicked: {message}"))
    })
}

pub(crate) fn with_encoding<R>(f: impl FnOnce(Option<&mut EncodeContext>) -> R) -> R {
    ENCODING.with(|c| f(c.borrow_mut().as_mut()))
}

pub(crate) fn decoding_node() -> Option<Node> {
    DECODING.with(|c| c.borrow().as_ref().map(|c| c.node.clone()))
}

/// A local actor reachable from other nodes.
pub(crate) trait Inbox: Send + Sync {
    /// The Rust type name of its messages.
    fn msg_type(&self) -> &'static str;
    /// Decodes and delivers a message; on failure, tells the asker (if any) why.
    fn deliver(&self, node: &Node, from: &NodeId, payload: &[u8], asks: CarriedAsks<'_>);
}

/// The asks whose reply handles a received message carries, as its frame names them: a
/// message refused unread is refused to each of them, so none waits out its timeout.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CarriedAsks<'a> {
    /// The first.
    pub(crate) first: Option<u64>,
    /// The others, in order.
    pub(crate) more: &'a [u64],
}

impl CarriedAsks<'_> {
    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.first.into_iter().chain(self.more.iter().copied())
    }
}

impl<M: RemoteMessage> Inbox for Cell<M> {
    fn msg_type(&self) -> &'static str {
        std::any::type_name::<M>()
    }

    fn deliver(&self, node: &Node, from: &NodeId, payload: &[u8], asks: CarriedAsks<'_>) {
        let remote = &node.inner.remote;
        let msg: M = match decode_with(node, payload) {
            Ok(msg) => msg,
            Err(err) => {
                let reason = format!(
                    "actor {} could not decode a {}: {err}",
                    self.id,
                    self.msg_type()
                );
                tracing::warn!(%from, %reason, "refused a remote message");
                metrics::counter!("ensemble_remote_refused_total", "why" => "malformed")
                    .increment(1);
                node.inner.dead_letters.record(
                    1,
                    &self.id,
                    "a remote message could not be decoded",
                );
                remote.answer(from, asks, Outcome::Refused(reason.into()));
                return;
            }
        };
        match self.mailbox.try_push(msg) {
            crate::actor::Push::Accepted => {}
            crate::actor::Push::Full(msg) => {
                // Tell the asker first: dropping the message also drops its reply handle.
                remote.answer(
                    from,
                    asks,
                    Outcome::Refused(format!("the mailbox of actor {} is full", self.id).into()),
                );
                node.inner.dead_letters.record(
                    1,
                    &self.id,
                    "a remote message found the mailbox full",
                );
                drop(msg);
            }
            crate::actor::Push::Closed(msg) => {
                remote.answer(from, asks, Outcome::NoActor);
                node.inner
                    .dead_letters
                    .record(1, &self.id, "the receiver is stopped");
                drop(msg);
            }
        }
    }
}

/// The asking side of a remote ask.
trait PendingReply: Send {
    fn complete(self: Box<Self>, outcome: Outcome<'_>, target: &ActorId, node: &Node);
    fn fail(self: Box<Self>, error: AskError);
    fn is_closed(&self) -> bool;
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

impl<T: RemoteMessage> PendingReply for oneshot::Sender<Result<T, AskError>> {
    fn complete(self: Box<Self>, outcome: Outcome<'_>, target: &ActorId, node: &Node) {
        let actor = target.clone();
        let result = match outcome {
            Outcome::Value(bytes) => {
                decode_with::<T>(node, bytes).map_err(|err| AskError::Refused {
                    actor,
                    reason: format!("the reply could not be decoded: {err}"),
                })
            }
            Outcome::Dropped => Err(AskError::Dropped { actor }),
            Outcome::Refused(reason) => Err(AskError::Refused {
                actor,
                reason: reason.into_owned(),
            }),
            Outcome::NoActor => Err(AskError::Dead { actor }),
        };
        let _ = self.send(result);
    }

    fn fail(self: Box<Self>, error: AskError) {
        let _ = self.send(Err(error));
    }

    fn is_closed(&self) -> bool {
        oneshot::Sender::is_closed(self)
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

struct Pending {
    target: ActorId,
    reply: Box<dyn PendingReply>,
    /// The connection (its [`PeerLinks::connection`]) the request went out on, once it has:
    /// the ask fails with `ConnectionLost` when that connection ends before the reply came.
    via: Option<u64>,
}

/// Who waits for a remote actor's end.
enum Watch {
    /// A local actor's monitor.
    Actor {
        watcher: CellHandle,
        target: ActorId,
    },
    /// `wait_for_exit`.
    Waiter {
        target: ActorId,
        tx: oneshot::Sender<ExitReason>,
    },
}

impl Watch {
    fn target(&self) -> &ActorId {
        match self {
            Watch::Actor { target, .. } | Watch::Waiter { target, .. } => target,
        }
    }

    fn fire(self, monitor: u64, reason: ExitReason) {
        match self {
            Watch::Actor { watcher, target } => {
                watcher.push_signal(Signal::Down(Down {
                    monitor: MonitorRef::from_raw(monitor),
                    actor: target,
                    reason,
                }));
            }
            Watch::Waiter { tx, .. } => {
                let _ = tx.send(reason);
            }
        }
    }
}

/// The answer to a request to another node: an actor (or none), or why there is none.
pub(crate) type Answer = Result<Option<WireRef>, String>;

/// A request to another node (a name lookup, a spawn) waiting for its answer.
struct Request {
    /// The node asked: its going down ends the request.
    to: NodeId,
    /// The connection the request went out on: its end ends the request.
    via: u64,
    answer: oneshot::Sender<Answer>,
}

/// Takes the entries of `map` that `take` picks out.
fn take_where<V>(map: &mut HashMap<u64, V>, take: impl Fn(&V) -> bool) -> Vec<(u64, V)> {
    let ids: Vec<u64> = map
        .iter()
        .filter(|(_, value)| take(value))
        .map(|(id, _)| *id)
        .collect();
    ids.into_iter()
        .filter_map(|id| map.remove(&id).map(|value| (id, value)))
        .collect()
}

/// Why a request whose connection ended gets no answer.
fn connection_lost(peer: &NodeId) -> String {
    format!(
        "the connection to node {peer} ended before it answered; the request may or may not \
         have been handled there"
    )
}

/// How this node reaches one peer.
#[derive(Clone)]
pub(crate) struct PeerLinks {
    pub(crate) control: mpsc::Sender<Control>,
    /// Signals that found the control queue full, in order, until a task moves them into it
    /// ([`PeerLinks::signal`]).
    pub(crate) overflow: Arc<Mutex<VecDeque<Control>>>,
    pub(crate) lanes: Arc<[mpsc::Sender<Bytes>]>,
    /// The connection's serial: no later connection of this node takes it again.
    pub(crate) connection: u64,
    /// Runs the task that moves overflowing signals into the queue, whatever thread sends
    /// them (a signal left out would leave a hole in the peer's numbers).
    pub(crate) runtime: tokio::runtime::Handle,
    /// The largest frame sent on this connection: the smaller of this node's limit and the
    /// peer's ([`frame_limit_to`]).
    pub(crate) max_frame: usize,
}

/// The largest frame to send a peer that said `hello`: the smaller of `own` and the peer's
/// limit, so that the peer never closes the connection over a frame this node sent. A peer
/// that did not say (0) takes `own`.
pub(crate) fn frame_limit_to(own: usize, hello: &crate::cluster::Hello) -> usize {
    match usize::try_from(hello.max_frame_size) {
        Ok(0) => own,
        Ok(peer) => own.min(peer),
        Err(_) => own,
    }
}

impl PeerLinks {
    /// Queues signal number `seq` on the control stream, after every signal queued before it.
    /// One that finds the queue full waits for room (heartbeats are skipped instead), so the
    /// connection carries every signal in order; one that the connection's end takes is sent
    /// again on the next (`delivery`).
    fn signal(&self, seq: u64, signal: RemoteSignal) {
        self.in_order(Control::Signal { seq, signal });
    }

    /// Queues `frame` on the control stream after every frame queued in order before it;
    /// one that finds the queue full waits for room, in order, rather than be dropped.
    fn in_order(&self, frame: Control) {
        let mut overflow = self.overflow.lock();
        if !overflow.is_empty() {
            overflow.push_back(frame);
            return;
        }
        match self.control.try_send(frame) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(waiting)) => {
                overflow.push_back(waiting);
                self.runtime.spawn(drain_overflow(
                    self.control.clone(),
                    Arc::clone(&self.overflow),
                ));
            }
        }
    }
}

/// Moves the signals that found a peer's control queue full into it, in order, as room comes.
/// One task at a time: it starts when the first signal waits and ends when none does. A
/// signal stays first in line until it is in the queue, so that no later one overtakes it.
async fn drain_overflow(control: mpsc::Sender<Control>, overflow: Arc<Mutex<VecDeque<Control>>>) {
    loop {
        let Some(next) = overflow.lock().front().cloned() else {
            return;
        };
        if control.send(next).await.is_err() {
            // The connection ended.
            overflow.lock().clear();
            return;
        }
        let mut overflow = overflow.lock();
        overflow.pop_front();
        if overflow.is_empty() {
            return;
        }
    }
}

/// The router of one node's remote traffic.
pub(crate) struct Remote {
    peers: DashMap<NodeId, PeerLinks>,
    /// The signals sent to and applied from each peer this node connected to, until the peer
    /// is declared down or leaves (a connection's end keeps them: `delivery`).
    signals: DashMap<NodeId, Arc<PeerSignals>>,
    exports: DashMap<u64, Arc<dyn Inbox>>,
    pending: Mutex<HashMap<u64, Pending>>,
    watches: Mutex<HashMap<u64, Watch>>,
    /// Links between local actors and actors of other nodes: (local seq, remote actor).
    links: Mutex<HashMap<NodeId, HashSet<(u64, ActorId)>>>,
    /// Monitors other nodes set on local actors, by watching node: (local seq, monitor). The
    /// actors' cells hold them; this finds them when the watching node goes down, which
    /// sends no demonitor (its watchers are gone with it).
    watched_from: Mutex<HashMap<NodeId, HashSet<(u64, u64)>>>,
    /// Requests to other nodes (name lookups, spawns) waiting for their answer, with the node
    /// asked: failed at once when it goes down.
    requests: Mutex<HashMap<u64, Request>>,
    pub(crate) modules: DashMap<String, Arc<dyn super::Module>>,
    next_id: AtomicU64,
    /// The number of the next monitor set on this node (per node, not per process, so that
    /// one node's numbers, which cross the wire, do not depend on other nodes in the process).
    next_monitor: AtomicU64,
    max_frame: AtomicUsize,
}

impl Remote {
    pub(crate) fn new() -> Self {
        Self {
            peers: hashing::dash_map(),
            signals: hashing::dash_map(),
            exports: hashing::dash_map(),
            pending: Mutex::new(HashMap::default()),
            watches: Mutex::new(HashMap::default()),
            links: Mutex::new(HashMap::default()),
            watched_from: Mutex::new(HashMap::default()),
            requests: Mutex::new(HashMap::default()),
            modules: hashing::dash_map(),
            next_id: AtomicU64::new(1),
            next_monitor: AtomicU64::new(1),
            max_frame: AtomicUsize::new(frame::DEFAULT_MAX_FRAME),
        }
    }

    pub(crate) fn set_max_frame(&self, max: usize) {
        self.max_frame.store(max, Ordering::Relaxed);
    }

    /// The largest frame to send `peer`: the smaller of this node's limit and the peer's,
    /// while it is connected.
    pub(crate) fn max_frame_to(&self, peer: &NodeId) -> usize {
        let own = self.max_frame.load(Ordering::Relaxed);
        self.peers
            .get(peer)
            .map_or(own, |links| links.max_frame.min(own))
    }

    /// `value` in a frame for `peer`, within [`max_frame_to`](Self::max_frame_to).
    pub(crate) fn frame_to<T: Serialize>(&self, peer: &NodeId, value: &T) -> Result<Bytes, String> {
        frame_within(value, self.max_frame_to(peer))
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A new monitor reference, unique on this node.
    pub(crate) fn next_monitor(&self) -> MonitorRef {
        MonitorRef::from_raw(self.next_monitor.fetch_add(1, Ordering::Relaxed))
    }

    // ---- connections

    /// A connection to `peer` is up. The signals the peer has not acknowledged (sent on an
    /// earlier connection that ended while both nodes lived, or while none was up) go out on
    /// it first, in order; signals sent from now on follow them. A connection it replaces has
    /// ended (or is being closed as a duplicate): what went out on it is lost with it.
    pub(crate) fn connect(&self, peer: NodeId, links: PeerLinks) {
        let signals = Arc::clone(self.signals.entry(peer.clone()).or_default().value());
        let outbox = signals.outbox.lock();
        for (seq, signal) in outbox.unacknowledged() {
            links.signal(*seq, signal.clone());
        }
        let connection = links.connection;
        // Under the outbox's lock, as `signal` sends: a signal numbered after the ones sent
        // again above goes out on this connection.
        let replaced = self.peers.insert(peer.clone(), links);
        drop(outbox);
        if let Some(old) = replaced.filter(|old| old.connection != connection) {
            self.lost_with(&peer, old.connection);
        }
    }

    /// Sends nothing more to `peer` on its data lanes: their writers send what is queued and
    /// end their streams. What waits for an answer from it still gets one while the
    /// connection lasts. For a node that leaves.
    pub(crate) fn stop_sending(&self, peer: &NodeId) {
        if let Some(mut links) = self.peers.get_mut(peer) {
            // Queues nothing reads: a tell fails at once. The writers' queues are held by
            // nothing else then, so they send what is queued and end their streams. Signals
            // and answers go on, on the control stream.
            links.lanes = (0..LANES).map(|_| mpsc::channel(1).0).collect();
        }
    }

    /// Sends nothing more to `peer`, which leaves: what is sent to it fails at once.
    pub(crate) fn forget_links(&self, peer: &NodeId) {
        self.peers.remove(peer);
    }

    /// A connection ended; the peer stays a member until declared down. The asks and requests
    /// that went out on it and had no answer yet fail now: whatever of them or of their
    /// answers was still on its way is lost with the connection, so waiting out their
    /// timeouts would tell their askers nothing more.
    pub(crate) fn disconnect(&self, peer: &NodeId, connection: u64) {
        self.peers
            .remove_if(peer, |_, links| links.connection == connection);
        self.lost_with(peer, connection);
    }

    /// Fails the asks and requests that went out to `peer` on `connection`, which ended.
    fn lost_with(&self, peer: &NodeId, connection: u64) {
        let lost = take_where(&mut self.pending.lock(), |p| {
            p.via == Some(connection) && p.target.node() == peer
        });
        for (_, p) in lost {
            p.reply.fail(AskError::ConnectionLost { actor: p.target });
        }
        let ended = take_where(&mut self.requests.lock(), |r| {
            r.via == connection && &r.to == peer
        });
        for (_, request) in ended {
            let _ = request.answer.send(Err(connection_lost(peer)));
        }
    }

    /// The message carrying these asks goes out to `peer` on `connection`: from now on that
    /// connection's end fails them. False if it is no longer the connection to `peer` (its
    /// end may have come before this mark, and not seen it): then the message must not go
    /// out on it, and the caller fails the asks as not sent.
    pub(crate) fn carried_by(&self, asks: &[u64], peer: &NodeId, connection: u64) -> bool {
        if asks.is_empty() {
            return true;
        }
        {
            let mut pending = self.pending.lock();
            for ask in asks {
                if let Some(p) = pending.get_mut(ask) {
                    p.via = Some(connection);
                }
            }
        }
        self.is_current(peer, connection)
    }

    /// Whether `connection` is the one this node has to `peer` now.
    fn is_current(&self, peer: &NodeId, connection: u64) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|links| links.connection == connection)
    }

    /// How this node reaches `peer` now, if it is connected.
    pub(crate) fn links(&self, peer: &NodeId) -> Option<PeerLinks> {
        self.peers.get(peer).map(|links| links.clone())
    }

    pub(crate) fn is_connected(&self, peer: &NodeId) -> bool {
        self.peers.contains_key(peer)
    }

    /// The lane to `peer` for the receiver `key`, with the largest frame to send on it
    /// ([`max_frame_to`](Self::max_frame_to)) and the connection it belongs to, in one
    /// look-up.
    pub(crate) fn lane_and_limit(
        &self,
        peer: &NodeId,
        key: u64,
    ) -> Option<(mpsc::Sender<Bytes>, usize, u64)> {
        let links = self.peers.get(peer)?;
        let own = self.max_frame.load(Ordering::Relaxed);
        Some((
            links.lanes[(key as usize) % LANES].clone(),
            links.max_frame.min(own),
            links.connection,
        ))
    }

    /// Sends a signal to a peer, in order with the others to it; kept until the peer
    /// acknowledges it, and sent again on the next connection if this one ends first (or
    /// when the next comes up, if none is up now). Dropped (with a log line) for a node this
    /// node never connected to, or one declared down.
    pub(crate) fn signal(&self, peer: &NodeId, signal: RemoteSignal) {
        self.signal_kept(peer, signal);
    }

    /// [`signal`](Self::signal), saying whether it is kept for `peer`: false if `peer` is not
    /// a member (it left or went down), which never hears it.
    fn signal_kept(&self, peer: &NodeId, signal: RemoteSignal) -> bool {
        let signal = signal.fitted();
        if let RemoteSignal::Down { monitor, actor, .. } = &signal {
            // A local actor's end fires the monitors set on it: the peer's monitor is done.
            self.forget_watched(peer, actor.seq(), *monitor);
        }
        let Some(signals) = self.signals.get(peer).map(|s| Arc::clone(s.value())) else {
            tracing::debug!(%peer, ?signal, "signal not sent: the node is not a connected member");
            return false;
        };
        let mut outbox = signals.outbox.lock();
        if outbox.is_closed() {
            // Its node went as this was sent: `node_down` took what it had.
            return false;
        }
        let seq = outbox.push(signal.clone());
        if let Some(links) = self.peers.get(peer) {
            links.signal(seq, signal);
        }
        true
    }

    /// Forgets monitor `monitor` that `peer` set on local actor `local`.
    fn forget_watched(&self, peer: &NodeId, local: u64, monitor: u64) {
        let mut watched = self.watched_from.lock();
        if let Some(set) = watched.get_mut(peer) {
            set.remove(&(local, monitor));
            if set.is_empty() {
                watched.remove(peer);
            }
        }
    }

    /// Answers a request of `peer` on its control stream: an answer that finds the queue full
    /// waits for room, in order with the signals, rather than be dropped and leave the asker
    /// waiting out its timeout for nothing. False if `peer` is not connected.
    pub(crate) fn answer_on_control(&self, peer: &NodeId, answer: Control) -> bool {
        let Some(links) = self.peers.get(peer) else {
            return false;
        };
        links.in_order(answer);
        true
    }

    /// The peer applied this node's signals up to `through`.
    pub(crate) fn signals_applied(&self, peer: &NodeId, through: u64) {
        if let Some(signals) = self.signals.get(peer) {
            signals.outbox.lock().acknowledged(through);
        }
    }

    /// The number of the last signal applied from `peer`, if not acknowledged yet.
    pub(crate) fn acknowledgement_due(&self, peer: &NodeId) -> Option<u64> {
        self.signals
            .get(peer)
            .and_then(|s| s.inbox.lock().acknowledgement_due())
    }

    /// An acknowledgement of `peer`'s signals up to `through` went out.
    pub(crate) fn acknowledgement_sent(&self, peer: &NodeId, through: u64) {
        if let Some(signals) = self.signals.get(peer) {
            signals.inbox.lock().acknowledgement_sent(through);
        }
    }

    /// A peer is gone for good: fail asks waiting on it, fire monitors and links to its actors.
    pub(crate) fn node_down(&self, node: &Node, down: &NodeId) {
        self.peers.remove(down);
        // Closed before its monitors and links fire below: a signal of it applied after them
        // (a link, a monitor) would never fire. One being applied now finishes first.
        if let Some((_, signals)) = self.signals.remove(down) {
            signals.inbox.lock().close();
            // Actors spawned for it whose answer it never acknowledged: nobody owns them.
            let unacknowledged = signals.outbox.lock().close();
            for (_, signal) in &unacknowledged {
                if let RemoteSignal::Spawned {
                    result: Ok(actor), ..
                } = signal
                    && let Some(cell) = node.inner.cell(actor.id.seq())
                {
                    tracing::warn!(node = %node.id(), %down, actor = %actor.id, "killing an actor spawned for a node that went before it heard of it");
                    cell.kill();
                }
            }
        }
        // Requests to it end now, their askers told it went down (the sender dropped).
        self.requests
            .lock()
            .retain(|_, request| &request.to != down);
        let reason = node_down_reason(down);
        let failed = take_where(&mut self.pending.lock(), |p| p.target.node() == down);
        for (_, p) in failed {
            p.reply.fail(AskError::Stopped {
                actor: p.target,
                reason: reason.clone(),
            });
        }
        let fired = take_where(&mut self.watches.lock(), |w| w.target().node() == down);
        for (monitor, watch) in fired {
            watch.fire(monitor, reason.clone());
        }
        // Monitors it set on local actors go: none of them will ever be taken back.
        let watched = self.watched_from.lock().remove(down).unwrap_or_default();
        for (local, monitor) in watched {
            if let Some(cell) = node.inner.cell(local) {
                cell.core().remove_remote_monitor(down, monitor);
            }
        }
        let linked = self.links.lock().remove(down).unwrap_or_default();
        for (local, remote_actor) in linked {
            if let Some(cell) = node.inner.cell(local) {
                cell.push_signal(Signal::Exit {
                    from: remote_actor,
                    reason: reason.clone(),
                });
            }
        }
    }

    // ---- exports and delivery

    /// Makes a local actor reachable from other nodes, for as long as it lives.
    pub(crate) fn export<M: RemoteMessage>(&self, cell: &Arc<Cell<M>>) {
        let seq = cell.id.seq();
        if self.exports.contains_key(&seq) {
            return;
        }
        self.exports.insert(seq, cell.clone() as Arc<dyn Inbox>);
        // Checked after the insert, not before: an actor ends by marking itself dead and then
        // unexporting. Dead before this check, it is taken out here; dead after it, its own
        // unexport comes after the insert. Checked before, an end in between would leave the
        // dead actor's cell in the table for as long as the node runs.
        if !cell.core.is_alive() {
            self.exports.remove(&seq);
        }
    }

    pub(crate) fn unexport(&self, seq: u64) {
        self.exports.remove(&seq);
    }

    pub(crate) fn exported_type(&self, seq: u64) -> Option<&'static str> {
        self.exports.get(&seq).map(|inbox| inbox.msg_type())
    }

    /// Handles a data frame from `from`.
    pub(crate) fn on_data(&self, node: &Node, from: &NodeId, data: Data<'_>) {
        match data {
            Data::Tell {
                to,
                msg_type,
                payload,
                ask,
                more_asks,
            } => {
                let asks = CarriedAsks {
                    first: ask,
                    more: &more_asks,
                };
                let inbox = self.exports.get(&to).map(|e| e.value().clone());
                let Some(inbox) = inbox else {
                    let id = ActorId::new(node.id().clone(), to);
                    node.inner
                        .dead_letters
                        .record(1, &id, "no such actor (remote send)");
                    self.answer(from, asks, Outcome::NoActor);
                    return;
                };
                if inbox.msg_type() != msg_type {
                    let id = ActorId::new(node.id().clone(), to);
                    let reason = format!(
                        "actor {id} takes messages of type {}, not {msg_type}",
                        inbox.msg_type()
                    );
                    tracing::warn!(%from, %reason, "refused a remote message of the wrong type");
                    metrics::counter!("ensemble_remote_refused_total", "why" => "wrong_type")
                        .increment(1);
                    node.inner
                        .dead_letters
                        .record(1, &id, "a remote message of the wrong type");
                    self.answer(from, asks, Outcome::Refused(reason.into()));
                    return;
                }
                inbox.deliver(node, from, payload, asks);
            }
            Data::Reply { ask, outcome } => {
                // Out of the table before the reply is decoded: a reply handle of this node
                // inside it takes its own ask from the table (`take_pending`).
                let pending = self.pending.lock().remove(&ask);
                if let Some(p) = pending {
                    p.reply.complete(outcome, &p.target, node);
                }
            }
            Data::Spawn {
                request,
                module,
                args,
            } => self.spawn_for(node, from, request, module, args),
        }
    }

    /// Starts an actor of `module` for a spawn request from `from`, and answers with the
    /// signal [`RemoteSignal::Spawned`] once the actor's `started` hook has run (or why none
    /// was started). The answer outlives a connection that ends (signals are sent again); an
    /// actor whose answer cannot be sent (the asker's node left or went down) is killed, as
    /// is one whose answer the asker's node had not acknowledged when it went
    /// ([`Remote::node_down`]): nobody would own it.
    fn spawn_for(&self, node: &Node, from: &NodeId, request: u64, module: &str, args: &[u8]) {
        let found = self.modules.get(module).map(|m| m.value().clone());
        let (node, from, module, args) =
            (node.clone(), from.clone(), module.to_owned(), args.to_vec());
        tokio::spawn(async move {
            let result = match found {
                Some(m) => m
                    .start(&node, &module, &args, &|_| {})
                    .await
                    .map(|s| s.to_wire()),
                None => Err(format!(
                    "node {} has no module named {module:?} (register it there with Node::register_module)",
                    node.id()
                )),
            };
            if let Err(reason) = &result {
                tracing::warn!(node = %node.id(), %from, %module, "remote spawn failed: {reason}");
            }
            let remote = &node.inner.remote;
            let started = result.as_ref().ok().map(|actor| actor.id.seq());
            let answered = remote.signal_kept(&from, RemoteSignal::Spawned { request, result });
            if !answered && let Some(cell) = started.and_then(|seq| node.inner.cell(seq)) {
                tracing::warn!(node = %node.id(), %from, actor = %cell.id(), "killing an actor spawned for a node that can no longer be told of it");
                cell.kill();
            }
        });
    }

    /// Sends the outcome of a message refused unread to the node of every ask it carried.
    pub(crate) fn answer(&self, origin: &NodeId, asks: CarriedAsks<'_>, outcome: Outcome<'_>) {
        for ask in asks.iter() {
            self.reply(origin, ask, outcome.clone());
        }
    }

    /// Sends a reply frame; false if it could not be queued.
    pub(crate) fn reply(&self, origin: &NodeId, ask: u64, outcome: Outcome<'_>) -> bool {
        let Some((lane, max_frame, _)) = self.lane_and_limit(origin, ask) else {
            tracing::debug!(%origin, ask, "reply not sent: the asking node is not connected");
            return false;
        };
        match frame_within(&Data::Reply { ask, outcome }, max_frame) {
            Ok(frame) => match lane.try_send(frame) {
                Ok(()) => true,
                // The lane is full of tells: the answer waits for room rather than being lost
                // (its asker would wait out its timeout).
                Err(mpsc::error::TrySendError::Full(frame)) => {
                    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                        tracing::debug!(%origin, ask, "reply not sent: its lane is full");
                        return false;
                    };
                    runtime.spawn(async move {
                        // Fails only if the connection ends first: the answer goes with it,
                        // as the frames queued before it do.
                        let _ = lane.send(frame).await;
                    });
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    tracing::debug!(%origin, ask, "reply not sent: the connection ended");
                    false
                }
            },
            Err(err) => {
                // Too large for a frame, most likely: the asker hears why now rather than
                // waiting out its timeout.
                tracing::warn!(%origin, ask, "reply not sent: {err}");
                let reason = format!("the reply could not be sent: {err}");
                if let Ok(frame) = frame_within(
                    &Data::Reply {
                        ask,
                        outcome: Outcome::Refused(reason.into()),
                    },
                    max_frame,
                ) {
                    let _ = lane.try_send(frame);
                }
                false
            }
        }
    }

    // ---- pending asks

    pub(crate) fn register_pending<T: RemoteMessage>(
        &self,
        target: ActorId,
        tx: oneshot::Sender<Result<T, AskError>>,
    ) -> u64 {
        let id = self.next_id();
        self.pending.lock().insert(
            id,
            Pending {
                target,
                reply: Box::new(tx),
                via: None,
            },
        );
        id
    }

    /// Takes back the sender of an ask of this node (a reply handle that came home).
    pub(crate) fn take_pending<T: RemoteMessage>(
        &self,
        ask: u64,
    ) -> Option<oneshot::Sender<Result<T, AskError>>> {
        let pending = self.pending.lock().remove(&ask)?;
        pending
            .reply
            .into_any()
            .downcast::<oneshot::Sender<Result<T, AskError>>>()
            .ok()
            .map(|tx| *tx)
    }

    /// Fails the asks of a message that could not go out.
    pub(crate) fn fail_pending(&self, asks: &[u64], reason: &str) {
        for ask in asks {
            let pending = self.pending.lock().remove(ask);
            if let Some(p) = pending {
                p.reply.fail(AskError::Unreachable {
                    actor: p.target,
                    reason: reason.to_owned(),
                });
            }
        }
    }

    /// Forgets asks whose asker gave up (timed out), so that replies that never come do not
    /// accumulate.
    pub(crate) fn sweep(&self) {
        self.pending.lock().retain(|_, p| !p.reply.is_closed());
        let mut abandoned = Vec::new();
        self.watches.lock().retain(|monitor, w| {
            let wanted = match w {
                Watch::Waiter { tx, .. } => !tx.is_closed(),
                Watch::Actor { watcher, .. } => watcher.core().is_alive(),
            };
            if !wanted {
                abandoned.push((*monitor, w.target().clone()));
            }
            wanted
        });
        // The watched actors' nodes forget them too, rather than hold them until the actors end.
        for (monitor, target) in abandoned {
            self.signal(
                target.node(),
                RemoteSignal::Demonitor {
                    to: target.seq(),
                    monitor,
                },
            );
        }
    }

    /// Forgets the link between local actor `local` (by sequence number) and `remote_actor`.
    fn forget_link(&self, local: u64, remote_actor: &ActorId) {
        if let Some(set) = self.links.lock().get_mut(remote_actor.node()) {
            set.remove(&(local, remote_actor.clone()));
        }
    }

    /// A local actor linked with a remote one ended: forgets the link and tells the other end.
    pub(crate) fn linked_ended(&self, local: &ActorId, remote_actor: &ActorId, reason: ExitReason) {
        self.forget_link(local.seq(), remote_actor);
        self.signal(
            remote_actor.node(),
            RemoteSignal::Exit {
                to: remote_actor.seq(),
                from: local.clone(),
                reason,
            },
        );
    }

    // ---- signals

    /// Stops (with a reason) or kills (without) an actor of another node.
    pub(crate) fn stop(&self, actor: &ActorId, reason: Option<ExitReason>) {
        self.signal(
            actor.node(),
            RemoteSignal::Stop {
                to: actor.seq(),
                reason,
            },
        );
    }

    /// Sets a monitor from a local actor on a remote one.
    pub(crate) fn monitor(&self, watcher: CellHandle, target: &ActorId, monitor: MonitorRef) {
        let id = monitor.raw();
        if !self.is_connected(target.node()) {
            let reason = unreachable_reason(watcher.core().node.id(), target);
            Watch::Actor {
                watcher,
                target: target.clone(),
            }
            .fire(id, reason);
            return;
        }
        let watch = Watch::Actor {
            watcher,
            target: target.clone(),
        };
        self.add_watch(id, watch);
    }

    /// Records a watch of an actor of a node found connected and asks that node to monitor
    /// it; says whether it stands: false if the node went down meanwhile, its watches fired
    /// already without this one, which fired here then.
    fn add_watch(&self, id: u64, watch: Watch) -> bool {
        let target = watch.target().clone();
        let node = target.node();
        self.watches.lock().insert(id, watch);
        // `node_down` takes the peer's signals out before its watches: with them still here,
        // it has not taken the watches yet and fires this one with the others. Without them,
        // whoever takes the watch out fires it, once.
        if !self.signals.contains_key(node) {
            if let Some(watch) = self.watches.lock().remove(&id) {
                watch.fire(id, node_down_reason(node));
            }
            return false;
        }
        let monitor = RemoteSignal::Monitor {
            to: target.seq(),
            monitor: id,
        };
        self.signal(node, monitor);
        true
    }

    pub(crate) fn demonitor(&self, target: &ActorId, monitor: MonitorRef) {
        if self.watches.lock().remove(&monitor.raw()).is_some() {
            self.signal(
                target.node(),
                RemoteSignal::Demonitor {
                    to: target.seq(),
                    monitor: monitor.raw(),
                },
            );
        }
    }

    /// Waits for a remote actor's end (`own` is this node).
    pub(crate) async fn wait_for_exit(&self, own: &NodeId, target: &ActorId) -> ExitReason {
        if !self.is_connected(target.node()) {
            return unreachable_reason(own, target);
        }
        let (tx, rx) = oneshot::channel();
        let id = self.next_monitor().raw();
        let watch = Watch::Waiter {
            target: target.clone(),
            tx,
        };
        self.add_watch(id, watch);
        rx.await.unwrap_or_else(|_| node_down_reason(target.node()))
    }

    /// Links a local actor with a remote one of a node found connected (the local side is
    /// recorded by the caller). False if the node went down meanwhile, its links broken
    /// already without this one: the caller delivers its exit then.
    pub(crate) fn link(&self, local: &ActorId, remote_actor: &ActorId) -> bool {
        let node = remote_actor.node();
        let link = (local.seq(), remote_actor.clone());
        self.links
            .lock()
            .entry(node.clone())
            .or_default()
            .insert(link.clone());
        // As for watches (`add_watch`): `node_down` takes the signals out before the links.
        if !self.signals.contains_key(node) {
            let mut links = self.links.lock();
            let Some(set) = links.get_mut(node) else {
                return true;
            };
            let mine = set.remove(&link);
            if set.is_empty() {
                links.remove(node);
            }
            return !mine;
        }
        self.signal(
            remote_actor.node(),
            RemoteSignal::Link {
                to: remote_actor.seq(),
                from: local.clone(),
            },
        );
        true
    }

    pub(crate) fn unlink(&self, local: &ActorId, remote_actor: &ActorId) {
        self.forget_link(local.seq(), remote_actor);
        self.signal(
            remote_actor.node(),
            RemoteSignal::Unlink {
                to: remote_actor.seq(),
                from: local.clone(),
            },
        );
    }

    /// Handles signal number `seq` from `from`, unless it applied already (sent again on a
    /// new connection) or `from` is gone (declared down or left: its last frames may still be
    /// read after its monitors and links fired).
    pub(crate) fn on_signal(&self, node: &Node, from: &NodeId, seq: u64, signal: RemoteSignal) {
        let Some(signals) = self.signals.get(from).map(|s| Arc::clone(s.value())) else {
            tracing::debug!(%from, ?signal, "signal dropped: its node is gone");
            return;
        };
        let mut inbox = signals.inbox.lock();
        if inbox.admit(seq) {
            self.apply(node, from, signal);
        }
    }

    fn apply(&self, node: &Node, from: &NodeId, signal: RemoteSignal) {
        match signal {
            RemoteSignal::Stop { to, reason } => {
                if let Some(cell) = node.inner.cell(to) {
                    match reason {
                        Some(reason) => cell.stop(reason),
                        None => cell.kill(),
                    }
                }
            }
            RemoteSignal::Monitor { to, monitor } => {
                let watcher = crate::actor::Watcher::Remote {
                    node: from.clone(),
                    monitor,
                };
                // Indexed first: an actor that ends as the monitor is set sends its `Down`
                // (which takes the entry out again) only once the monitor is set.
                self.watched_from
                    .lock()
                    .entry(from.clone())
                    .or_default()
                    .insert((to, monitor));
                let set = node
                    .inner
                    .cell(to)
                    .map(|cell| cell.core().add_watcher(watcher).is_ok());
                if set != Some(true) {
                    self.signal(
                        from,
                        RemoteSignal::Down {
                            monitor,
                            actor: ActorId::new(node.id().clone(), to),
                            reason: ExitReason::NoProc,
                        },
                    );
                }
            }
            RemoteSignal::Demonitor { to, monitor } => {
                self.forget_watched(from, to, monitor);
                if let Some(cell) = node.inner.cell(to) {
                    cell.core().remove_remote_monitor(from, monitor);
                }
            }
            RemoteSignal::Down {
                monitor, reason, ..
            } => {
                let watch = self.watches.lock().remove(&monitor);
                if let Some(watch) = watch {
                    watch.fire(monitor, reason);
                }
            }
            RemoteSignal::Link {
                to,
                from: remote_actor,
            } => match node.inner.cell(to) {
                Some(cell)
                    if cell
                        .core()
                        .add_remote_link(remote_actor.clone(), node.clone()) =>
                {
                    self.links
                        .lock()
                        .entry(from.clone())
                        .or_default()
                        .insert((to, remote_actor));
                }
                _ => self.signal(
                    from,
                    RemoteSignal::Exit {
                        to: remote_actor.seq(),
                        from: ActorId::new(node.id().clone(), to),
                        reason: ExitReason::NoProc,
                    },
                ),
            },
            RemoteSignal::Unlink {
                to,
                from: remote_actor,
            } => {
                if let Some(cell) = node.inner.cell(to) {
                    cell.core().remove_link(&remote_actor);
                }
                if let Some(set) = self.links.lock().get_mut(from) {
                    set.remove(&(to, remote_actor));
                }
            }
            RemoteSignal::Exit {
                to,
                from: remote_actor,
                reason,
            } => {
                if let Some(set) = self.links.lock().get_mut(from) {
                    set.remove(&(to, remote_actor.clone()));
                }
                if let Some(cell) = node.inner.cell(to) {
                    cell.push_signal(Signal::Exit {
                        from: remote_actor,
                        reason,
                    });
                }
            }
            RemoteSignal::Spawned { request, result } => {
                if let Some(Ok(Some(late))) = self.end_request(request, result.map(Some)) {
                    // Started after its asker gave up (or after the connection that carried
                    // the request ended): nobody would own it.
                    tracing::warn!(node = %node.id(), %from, actor = %late.id, "an actor spawned for this node was answered after its request ended; stopping it");
                    self.stop(&late.id, None);
                }
            }
        }
    }

    // ---- requests to other nodes (name lookups, spawns)

    /// A request to `to`, to go out on `connection`: its number, and where its answer comes.
    /// The connection's end answers it with an error. `None` if `connection` has ended
    /// already: nothing may go out on it.
    pub(crate) fn start_request(
        &self,
        to: &NodeId,
        connection: u64,
    ) -> Option<(u64, oneshot::Receiver<Answer>)> {
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        self.requests.lock().insert(
            id,
            Request {
                to: to.clone(),
                via: connection,
                answer: tx,
            },
        );
        // After the insert: an end that came before it is seen here, one after it sees it.
        if !self.is_current(to, connection) {
            self.forget_request(id);
            return None;
        }
        Some((id, rx))
    }

    /// Gives a request its answer; hands the answer back if nobody waits for it any more (the
    /// asker timed out, or stopped waiting).
    pub(crate) fn end_request(&self, request: u64, answer: Answer) -> Option<Answer> {
        let waiting = self.requests.lock().remove(&request);
        match waiting {
            Some(request) => request.answer.send(answer).err(),
            None => Some(answer),
        }
    }

    pub(crate) fn forget_request(&self, request: u64) {
        self.requests.lock().remove(&request);
    }

    /// Answers another node's lookup of a local name: found only if its holder is exported.
    pub(crate) fn lookup_local(&self, node: &Node, name: &str) -> Option<WireRef> {
        let holder = node.inner.names.get(name).map(|e| e.value().clone())?;
        if !holder.core().is_alive() {
            return None;
        }
        let msg_type = self.exported_type(holder.id().seq())?;
        Some(WireRef {
            id: holder.id().clone(),
            msg_type: msg_type.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::actor::{Actor, ActorResult, Context, ReplyTo};
    use crate::node::NodeConfig;

    /// Counts the numbers it is sent.
    struct Counter(u64);

    #[derive(serde::Serialize, serde::Deserialize)]
    enum CounterMsg {
        Add(u64),
        AddTouchy(Touchy),
        #[serde(skip)]
        Get(ReplyTo<u64>),
    }

    impl Actor for Counter {
        type Msg = CounterMsg;

        async fn handle(&mut self, msg: CounterMsg, _ctx: &mut Context<Self>) -> ActorResult {
            match msg {
                CounterMsg::Add(n) | CounterMsg::AddTouchy(Touchy(n)) => self.0 += n,
                CounterMsg::Get(reply) => {
                    let _ = reply.send(self.0);
                }
            }
            Ok(())
        }
    }

    /// A number whose decoder panics at 13, as a faulty user type's may.
    #[derive(serde::Serialize)]
    struct Touchy(u64);

    impl<'de> serde::Deserialize<'de> for Touchy {
        fn deserialize<D: serde::Deserializer<'de>>(decoder: D) -> Result<Self, D::Error> {
            let n = u64::deserialize(decoder)?;
            assert_ne!(n, 13, "a faulty decoder");
            Ok(Touchy(n))
        }
    }

    async fn exported_counter() -> (Node, crate::ActorRef<CounterMsg>) {
        let node = Node::new(NodeConfig::new("n1")).unwrap();
        let counter = node.spawn(Counter(0)).unwrap();
        node.inner.remote.export(counter.local().unwrap());
        (node, counter)
    }

    fn tell<'a>(to: u64, msg_type: &'a str, payload: &'a [u8]) -> Data<'a> {
        Data::Tell {
            to,
            msg_type,
            payload,
            ask: Some(7),
            more_asks: Vec::new(),
        }
    }

    async fn total(counter: &crate::ActorRef<CounterMsg>) -> u64 {
        counter
            .ask(CounterMsg::Get, Duration::from_secs(5))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_message_of_the_right_type_is_delivered() {
        let (node, counter) = exported_counter().await;
        let peer = NodeId::new("n2", 1);
        let payload = rmp_serde::to_vec_named(&CounterMsg::Add(5)).unwrap();
        let msg_type = std::any::type_name::<CounterMsg>();
        node.inner
            .remote
            .on_data(&node, &peer, tell(counter.id().seq(), msg_type, &payload));
        assert_eq!(total(&counter).await, 5);
    }

    #[tokio::test]
    async fn a_message_of_another_type_is_refused_not_misread() {
        let (node, counter) = exported_counter().await;
        let peer = NodeId::new("n2", 1);
        // A u64 encodes like the payload of `Add`, but it was sent as another type: refused.
        let payload = rmp_serde::to_vec_named(&5u64).unwrap();
        node.inner
            .remote
            .on_data(&node, &peer, tell(counter.id().seq(), "u64", &payload));
        assert_eq!(total(&counter).await, 0);
        assert_eq!(node.dead_letters(), 1);
    }

    #[tokio::test]
    async fn garbage_of_the_right_type_name_is_refused_and_the_node_goes_on() {
        let (node, counter) = exported_counter().await;
        let peer = NodeId::new("n2", 1);
        let msg_type = std::any::type_name::<CounterMsg>();
        for garbage in [vec![], vec![0xc1], vec![0x92, 0xff, 0x00, 0x13]] {
            node.inner
                .remote
                .on_data(&node, &peer, tell(counter.id().seq(), msg_type, &garbage));
        }
        assert_eq!(node.dead_letters(), 3);
        assert_eq!(total(&counter).await, 0);
        assert!(counter.is_alive());
    }

    #[tokio::test]
    async fn a_decoder_that_panics_refuses_its_message_and_the_node_goes_on() {
        let (node, counter) = exported_counter().await;
        let peer = NodeId::new("n2", 1);
        let msg_type = std::any::type_name::<CounterMsg>();
        let send = |n| {
            let payload = rmp_serde::to_vec_named(&CounterMsg::AddTouchy(Touchy(n))).unwrap();
            node.inner
                .remote
                .on_data(&node, &peer, tell(counter.id().seq(), msg_type, &payload));
        };
        send(13);
        assert_eq!(node.dead_letters(), 1);
        assert!(
            decoding_node().is_none(),
            "the decoding context was left set"
        );
        send(5);
        assert_eq!(total(&counter).await, 5);
    }

    #[tokio::test]
    async fn a_message_for_an_unknown_actor_is_a_dead_letter() {
        let (node, _counter) = exported_counter().await;
        let peer = NodeId::new("n2", 1);
        node.inner
            .remote
            .on_data(&node, &peer, tell(999, "u64", &[1]));
        assert_eq!(node.dead_letters(), 1);
    }

    #[tokio::test]
    async fn actors_that_were_never_sent_to_another_node_are_not_reachable() {
        let node = Node::new(NodeConfig::new("n1")).unwrap();
        let counter = node.spawn(Counter(0)).unwrap();
        let peer = NodeId::new("n2", 1);
        let payload = rmp_serde::to_vec_named(&CounterMsg::Add(5)).unwrap();
        let msg_type = std::any::type_name::<CounterMsg>();
        node.inner
            .remote
            .on_data(&node, &peer, tell(counter.id().seq(), msg_type, &payload));
        assert_eq!(total(&counter).await, 0);
    }

    /// This node, with a peer `n2` whose control frames the test reads.
    fn connected() -> (Node, NodeId, mpsc::Receiver<Control>) {
        let node = Node::new(NodeConfig::new("n1")).unwrap();
        let peer = NodeId::new("n2", 1);
        let sent = connection(&node, &peer, 1);
        (node, peer, sent)
    }

    /// Connection number `connection` of `node` to `peer`; answers its control frames (its
    /// lanes are closed).
    fn connection(node: &Node, peer: &NodeId, connection: u64) -> mpsc::Receiver<Control> {
        kept_connection(node, peer, connection).0
    }

    #[tokio::test]
    async fn a_reply_waits_for_room_in_a_full_lane() {
        let node = Node::new(NodeConfig::new("n1")).unwrap();
        let peer = NodeId::new("n2", 1);
        let (lanes, mut queued): (Vec<_>, Vec<_>) = (0..LANES).map(|_| mpsc::channel(1)).unzip();
        node.inner.remote.connect(
            peer.clone(),
            PeerLinks {
                control: mpsc::channel(16).0,
                overflow: Arc::default(),
                lanes: lanes.clone().into(),
                connection: 1,
                runtime: tokio::runtime::Handle::current(),
                max_frame: frame::DEFAULT_MAX_FRAME,
            },
        );
        let ask = 5;
        let lane = &mut queued[ask as usize % LANES];
        // Tells fill the lane the reply goes on.
        lanes[ask as usize % LANES]
            .try_send(Bytes::from_static(b"a tell"))
            .unwrap();
        assert!(node.inner.remote.reply(&peer, ask, Outcome::Dropped));
        assert_eq!(lane.recv().await.unwrap(), "a tell");
        let reply = tokio::time::timeout(Duration::from_secs(10), lane.recv())
            .await
            .expect("the reply was dropped")
            .unwrap();
        assert_ne!(reply, "a tell");
    }

    /// A request of node `n1` to actor 7 of node `n2`, with the reply handle it carries.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Question(ReplyTo<u64>);

    /// Connection number `connection` of `node` to `peer`, whose lanes keep what is queued
    /// on them (returned with its control queue, so nothing sent on it fails).
    fn kept_connection(
        node: &Node,
        peer: &NodeId,
        connection: u64,
    ) -> (mpsc::Receiver<Control>, Vec<mpsc::Receiver<Bytes>>) {
        let (control, sent) = mpsc::channel(16);
        let (lanes, queued): (Vec<_>, Vec<_>) = (0..LANES).map(|_| mpsc::channel(16)).unzip();
        node.inner.remote.connect(
            peer.clone(),
            PeerLinks {
                control,
                overflow: Arc::default(),
                lanes: lanes.into(),
                connection,
                runtime: tokio::runtime::Handle::current(),
                max_frame: frame::DEFAULT_MAX_FRAME,
            },
        );
        (sent, queued)
    }

    /// Asks actor 7 of `peer` from `node`, with a timeout nothing in these tests waits out;
    /// returns once the request is queued on the connection's lane for that actor.
    async fn ask_queued(
        node: &Node,
        peer: &NodeId,
        lanes: &mut [mpsc::Receiver<Bytes>],
    ) -> tokio::task::JoinHandle<Result<u64, AskError>> {
        let target = crate::ActorRef::<Question>::from_remote(super::super::RemoteRef::new(
            ActorId::new(peer.clone(), 7),
            node.clone(),
        ));
        let asking =
            tokio::spawn(async move { target.ask(Question, Duration::from_secs(3600)).await });
        lanes[7 % LANES]
            .recv()
            .await
            .expect("the request is queued");
        asking
    }

    #[tokio::test]
    async fn an_ask_whose_connection_ends_fails_at_once() {
        let node = Node::new(NodeConfig::new("n1")).unwrap();
        let peer = NodeId::new("n2", 1);
        let (_control, mut lanes) = kept_connection(&node, &peer, 1);
        let asking = ask_queued(&node, &peer, &mut lanes).await;
        node.inner.remote.disconnect(&peer, 1);
        let answer = tokio::time::timeout(Duration::from_secs(60), asking)
            .await
            .expect("the ask ended with its connection, not its timeout")
            .unwrap();
        assert_eq!(
            answer,
            Err(AskError::ConnectionLost {
                actor: ActorId::new(peer, 7)
            })
        );
    }

    #[tokio::test]
    async fn a_connection_replaced_fails_its_asks_and_no_later_ones() {
        let node = Node::new(NodeConfig::new("n1")).unwrap();
        let remote = &node.inner.remote;
        let peer = NodeId::new("n2", 1);
        let (_first_control, mut first) = kept_connection(&node, &peer, 1);
        let on_first = ask_queued(&node, &peer, &mut first).await;
        // A new connection took the old one's place before the old one's end was noticed.
        let (_second_control, mut second) = kept_connection(&node, &peer, 2);
        let failed = tokio::time::timeout(Duration::from_secs(60), on_first)
            .await
            .expect("the ask ended with its connection")
            .unwrap();
        assert!(matches!(failed, Err(AskError::ConnectionLost { .. })));
        let _on_second = ask_queued(&node, &peer, &mut second).await;
        // The first connection's end, noticed late, leaves the second's ask waiting.
        remote.disconnect(&peer, 1);
        assert_eq!(remote.pending.lock().len(), 1);
        remote.disconnect(&peer, 2);
        assert_eq!(remote.pending.lock().len(), 0);
    }

    #[tokio::test]
    async fn asks_marked_after_their_connection_ended_are_not_sent_on_it() {
        let node = Node::new(NodeConfig::new("n1")).unwrap();
        let remote = &node.inner.remote;
        let peer = NodeId::new("n2", 1);
        let (_control, _lanes) = kept_connection(&node, &peer, 1);
        let (tx, _rx) = oneshot::channel::<Result<u64, AskError>>();
        let ask = remote.register_pending(ActorId::new(peer.clone(), 7), tx);
        assert!(remote.carried_by(&[ask], &peer, 1));
        // The connection ends between the lane's look-up and the mark: the message must not
        // go out on it (its sender then fails the asks as not sent).
        remote.disconnect(&peer, 1);
        let (tx, _rx) = oneshot::channel::<Result<u64, AskError>>();
        let late = remote.register_pending(ActorId::new(peer.clone(), 7), tx);
        assert!(!remote.carried_by(&[late], &peer, 1));
    }

    /// A request of `n1` carrying two reply handles.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct TwoQuestions(ReplyTo<u64>, ReplyTo<u64>);

    #[tokio::test]
    async fn every_ask_a_message_carries_fails_with_its_connection() {
        let node = Node::new(NodeConfig::new("n1")).unwrap();
        let peer = NodeId::new("n2", 1);
        let (_control, mut lanes) = kept_connection(&node, &peer, 1);
        let target = crate::ActorRef::<TwoQuestions>::from_remote(super::super::RemoteRef::new(
            ActorId::new(peer.clone(), 7),
            node.clone(),
        ));
        let (first, first_answer) = oneshot::channel();
        let (second, second_answer) = oneshot::channel();
        target
            .tell(TwoQuestions(ReplyTo::local(first), ReplyTo::local(second)))
            .await
            .unwrap();
        lanes[7 % LANES]
            .recv()
            .await
            .expect("the request is queued");
        node.inner.remote.disconnect(&peer, 1);
        for answer in [first_answer, second_answer] {
            let answer = tokio::time::timeout(Duration::from_secs(60), answer)
                .await
                .expect("failed with the connection, not at the timeout")
                .unwrap();
            assert!(matches!(answer, Err(AskError::ConnectionLost { .. })));
        }
    }

    /// Hands the frames queued on `lane` to `to`, as if `from` had sent them; returns how many.
    fn pass_on(lane: &mut mpsc::Receiver<Bytes>, to: &Node, from: &NodeId) -> usize {
        let mut passed = 0;
        while let Ok(bytes) = lane.try_recv() {
            let mut decoder = frame::FrameDecoder::new(frame::DEFAULT_MAX_FRAME);
            decoder.extend(&bytes);
            while let Some(payload) = decoder.next_frame().unwrap() {
                let data: Data<'_> = frame::decode_borrowed(&payload).unwrap();
                to.inner.remote.on_data(to, from, data);
                passed += 1;
            }
        }
        passed
    }

    #[tokio::test]
    async fn a_message_refused_unread_is_refused_to_every_ask_it_carries() {
        let asked = Node::new(NodeConfig::new("n2")).unwrap();
        // Actor 7 of the asked node does not exist; the counter takes another type.
        let counter = asked.spawn(Counter(0)).unwrap();
        asked.inner.remote.export(counter.local().unwrap());
        for (to, refused) in [
            (7, "no such actor"),
            (counter.id().seq(), "of another type"),
        ] {
            let asking = Node::new(NodeConfig::new("n1")).unwrap();
            let (_control, mut to_asked) = kept_connection(&asking, asked.id(), 1);
            let (_control, mut to_asking) = kept_connection(&asked, asking.id(), 1);
            let target = crate::ActorRef::<TwoQuestions>::from_remote(
                super::super::RemoteRef::new(ActorId::new(asked.id().clone(), to), asking.clone()),
            );
            let (first, mut first_answer) = oneshot::channel();
            let (second, mut second_answer) = oneshot::channel();
            target
                .tell(TwoQuestions(ReplyTo::local(first), ReplyTo::local(second)))
                .await
                .unwrap();
            let lane = &mut to_asked[to as usize % LANES];
            assert_eq!(pass_on(lane, &asked, asking.id()), 1, "{refused}");
            let replies: usize = to_asking
                .iter_mut()
                .map(|lane| pass_on(lane, &asking, asked.id()))
                .sum();
            assert_eq!(replies, 2, "{refused}: one answer for each ask");
            for answer in [first_answer.try_recv(), second_answer.try_recv()] {
                assert!(
                    matches!(
                        answer,
                        Ok(Err(AskError::Dead { .. } | AskError::Refused { .. }))
                    ),
                    "{refused}: {answer:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_request_whose_connection_ends_is_answered_at_once() {
        let node = Node::new(NodeConfig::new("n1")).unwrap();
        let remote = &node.inner.remote;
        let peer = NodeId::new("n2", 1);
        let (_control, _lanes) = kept_connection(&node, &peer, 1);
        let (_, waiting) = remote.start_request(&peer, 1).expect("connected");
        remote.disconnect(&peer, 1);
        let answered = |waiting: oneshot::Receiver<Answer>| async {
            tokio::time::timeout(Duration::from_secs(60), waiting)
                .await
                .expect("answered at once")
                .expect("answered, not dropped")
        };
        let answer = answered(waiting).await;
        assert!(answer.unwrap_err().contains("connection to node n2"));
        // None starts on a connection that has ended already, and none is left behind.
        assert!(remote.start_request(&peer, 1).is_none());
        assert!(remote.requests.lock().is_empty());
    }

    /// The numbers and targets of the stops queued on a connection.
    fn stops(sent: &mut mpsc::Receiver<Control>) -> Vec<(u64, u64)> {
        let mut stops = Vec::new();
        while let Ok(frame) = sent.try_recv() {
            match frame {
                Control::Signal {
                    seq,
                    signal: RemoteSignal::Stop { to, .. },
                } => stops.push((seq, to)),
                other => panic!("not a stop: {other:?}"),
            }
        }
        stops
    }

    #[tokio::test]
    async fn signals_outlive_a_connection_until_the_peer_applied_them() {
        let (node, peer, mut first) = connected();
        let remote = &node.inner.remote;
        let stop = |to| remote.stop(&ActorId::new(peer.clone(), to), None);
        stop(7);
        assert_eq!(stops(&mut first), [(1, 7)]);
        // The connection ends; a stop sent meanwhile waits for the next one.
        remote.disconnect(&peer, 1);
        stop(8);
        let mut second = connection(&node, &peer, 2);
        stop(9);
        assert_eq!(
            stops(&mut second),
            [(1, 7), (2, 8), (3, 9)],
            "the unapplied signals first, in order"
        );
        remote.signals_applied(&peer, 2);
        remote.disconnect(&peer, 2);
        let mut third = connection(&node, &peer, 3);
        assert_eq!(stops(&mut third), [(3, 9)]);
        // Declared down: nothing is kept for it any more.
        remote.node_down(&node, &peer);
        stop(10);
        let mut fourth = connection(&node, &peer, 4);
        assert_eq!(stops(&mut fourth), []);
    }

    #[tokio::test]
    async fn a_signal_sent_again_applies_once_and_in_order() {
        let (node, peer, _sent) = connected();
        let counter = node.spawn(Counter(0)).unwrap();
        let remote_actor = ActorId::new(peer.clone(), 9);
        let link = RemoteSignal::Link {
            to: counter.id().seq(),
            from: remote_actor.clone(),
        };
        let unlink = RemoteSignal::Unlink {
            to: counter.id().seq(),
            from: remote_actor.clone(),
        };
        let remote = &node.inner.remote;
        remote.on_signal(&node, &peer, 1, link.clone());
        remote.on_signal(&node, &peer, 2, unlink.clone());
        // A new connection brings the link again (and ends before the unlink): the unlink
        // stays.
        remote.on_signal(&node, &peer, 1, link);
        let linked = remote.links.lock().get(&peer).map_or(0, |set| set.len());
        assert_eq!(linked, 0, "a link sent again undid the unlink after it");
        assert_eq!(remote.acknowledgement_due(&peer), Some(2));
        remote.acknowledgement_sent(&peer, 2);
        assert_eq!(remote.acknowledgement_due(&peer), None);
    }

    #[tokio::test]
    async fn signals_of_a_node_declared_down_no_longer_apply() {
        let (node, peer, _sent) = connected();
        let counter = node.spawn(Counter(0)).unwrap();
        let remote = &node.inner.remote;
        remote.node_down(&node, &peer);
        // Its last frames, read after its links fired: a link set now would never fire.
        remote.on_signal(
            &node,
            &peer,
            1,
            RemoteSignal::Link {
                to: counter.id().seq(),
                from: ActorId::new(peer.clone(), 9),
            },
        );
        assert!(remote.links.lock().get(&peer).is_none());
        assert!(counter.is_alive());
    }

    #[tokio::test]
    async fn a_local_actor_that_ends_forgets_its_links_to_other_nodes() {
        let (node, peer, mut sent) = connected();
        let counter = node.spawn(Counter(0)).unwrap();
        let remote_actor = ActorId::new(peer.clone(), 9);
        node.inner.remote.on_signal(
            &node,
            &peer,
            1,
            RemoteSignal::Link {
                to: counter.id().seq(),
                from: remote_actor.clone(),
            },
        );
        let linked = || {
            node.inner
                .remote
                .links
                .lock()
                .get(&peer)
                .map_or(0, |set| set.len())
        };
        assert_eq!(linked(), 1);
        counter.stop();
        counter.wait_for_exit().await;
        assert_eq!(linked(), 0, "the link outlived its local end");
        assert!(matches!(
            sent.try_recv(),
            Ok(Control::Signal {
                signal: RemoteSignal::Exit { to: 9, .. },
                ..
            })
        ));
    }

    /// The next signal `sent` carries, skipping other frames, within a minute.
    async fn next_signal(sent: &mut mpsc::Receiver<Control>) -> RemoteSignal {
        loop {
            match tokio::time::timeout(Duration::from_secs(60), sent.recv()).await {
                Ok(Some(Control::Signal { signal, .. })) => return signal,
                Ok(Some(_)) => {}
                other => panic!("no signal came: {other:?}"),
            }
        }
    }

    /// A spawn's answer is a signal: lost with the connection it went out on, it is sent
    /// again on the next (where the asker, which gave up on the first, stops the actor);
    /// never acknowledged when the asker's node goes, its actor is killed.
    #[tokio::test]
    async fn a_spawn_s_answer_outlives_its_connection_and_its_actor_its_asker() {
        let (node, peer, mut first) = connected();
        node.register_module("test.counter", |(): ()| Counter(0));
        let remote = &node.inner.remote;
        let args = rmp_serde::to_vec(&()).unwrap();
        remote.spawn_for(&node, &peer, 5, "test.counter", &args);
        let RemoteSignal::Spawned {
            request: 5,
            result: Ok(spawned),
        } = next_signal(&mut first).await
        else {
            panic!("not the spawn's answer");
        };
        let actor = node
            .inner
            .cell(spawned.id.seq())
            .expect("the spawned actor");
        // The connection ends before the peer read the answer: it goes again on the next.
        remote.disconnect(&peer, 1);
        let mut second = connection(&node, &peer, 2);
        assert!(matches!(
            next_signal(&mut second).await,
            RemoteSignal::Spawned { request: 5, .. }
        ));
        assert!(actor.core().is_alive());
        // The peer goes without having acknowledged it: nobody owns the actor.
        remote.node_down(&node, &peer);
        let reason = tokio::time::timeout(Duration::from_secs(60), actor.core().wait_for_exit())
            .await
            .expect("the unowned actor ended");
        assert_eq!(reason, ExitReason::Killed);
    }

    /// An answer that finds the peer's control queue full waits for room, in order.
    #[tokio::test]
    async fn an_answer_that_finds_the_control_queue_full_waits_for_room() {
        let (node, peer, mut sent) = connected();
        let remote = &node.inner.remote;
        let target = ActorId::new(peer.clone(), 9);
        // Stops fill the queue (16) and wait beyond it.
        for _ in 0..20 {
            remote.stop(&target, None);
        }
        let found = Control::Found {
            request: 7,
            actor: None,
        };
        assert!(remote.answer_on_control(&peer, found));
        let mut frames = 0;
        loop {
            match tokio::time::timeout(Duration::from_secs(60), sent.recv()).await {
                Ok(Some(Control::Found { request: 7, .. })) => break,
                Ok(Some(_)) => frames += 1,
                other => panic!("the answer never came: {other:?}"),
            }
        }
        assert_eq!(
            frames, 20,
            "the answer overtook the signals queued before it"
        );
        assert!(!remote.answer_on_control(&NodeId::new("n3", 1), Control::Leaving { lanes: 0 }));
    }

    /// Monitors a node set on local actors go when it goes down (it sends no demonitor), and
    /// when the actor ends; one taken back goes from the index too.
    #[tokio::test]
    async fn monitors_set_from_a_node_that_went_down_are_dropped() {
        let (node, peer, _sent) = connected();
        let remote = &node.inner.remote;
        let counters: Vec<_> = (0..3).map(|_| node.spawn(Counter(0)).unwrap()).collect();
        for (i, counter) in counters.iter().enumerate() {
            let monitor = RemoteSignal::Monitor {
                to: counter.id().seq(),
                monitor: 10 + i as u64,
            };
            remote.on_signal(&node, &peer, 1 + i as u64, monitor);
        }
        let watched = || {
            remote
                .watched_from
                .lock()
                .get(&peer)
                .map_or(0, HashSet::len)
        };
        let monitors = |i: usize| counters[i].local().unwrap().core.monitor_count();
        assert_eq!((watched(), monitors(0), monitors(1)), (3, 1, 1));
        let demonitor = RemoteSignal::Demonitor {
            to: counters[1].id().seq(),
            monitor: 11,
        };
        remote.on_signal(&node, &peer, 4, demonitor);
        counters[2].stop();
        counters[2].wait_for_exit().await;
        assert_eq!((watched(), monitors(1)), (1, 0));
        remote.node_down(&node, &peer);
        assert_eq!(
            monitors(0),
            0,
            "the monitor of a node that went down stayed"
        );
        assert!(remote.watched_from.lock().is_empty());
    }

    /// A monitor, wait or link set on an actor of a node found connected, whose recording
    /// came after the node went down (its watches and links fired without it): it fires at
    /// once with `NodeDown`, and nothing of it is kept.
    #[tokio::test]
    async fn a_watch_or_link_recorded_after_its_node_went_down_fires_at_once() {
        let (node, peer, _sent) = connected();
        let remote = &node.inner.remote;
        let target = ActorId::new(peer.clone(), 9);
        // As `monitor` and `wait_for_exit` found the node connected just before.
        remote.node_down(&node, &peer);
        let (tx, fired) = oneshot::channel();
        let id = remote.next_monitor().raw();
        let watch = Watch::Waiter {
            target: target.clone(),
            tx,
        };
        assert!(!remote.add_watch(id, watch), "the watch stands");
        assert_eq!(fired.await, Ok(ExitReason::NodeDown(peer.clone())));
        assert!(remote.watches.lock().is_empty());
        let local = ActorId::new(node.id().clone(), 1);
        assert!(!remote.link(&local, &target), "the link stands");
        assert!(remote.links.lock().is_empty());
    }

    #[tokio::test]
    async fn monitors_of_a_watcher_that_ended_are_dropped_on_the_watched_node_too() {
        let (node, peer, mut sent) = connected();
        let watcher = node.spawn(Counter(0)).unwrap();
        let target = ActorId::new(peer.clone(), 9);
        let monitor = node.inner.remote.next_monitor();
        let handle: CellHandle = watcher.local().unwrap().clone();
        node.inner.remote.monitor(handle, &target, monitor);
        assert!(matches!(
            sent.try_recv(),
            Ok(Control::Signal {
                signal: RemoteSignal::Monitor { to: 9, .. },
                ..
            })
        ));
        watcher.stop();
        watcher.wait_for_exit().await;
        node.inner.remote.sweep();
        match sent.try_recv() {
            Ok(Control::Signal {
                signal: RemoteSignal::Demonitor { to: 9, monitor: m },
                ..
            }) => {
                assert_eq!(m, monitor.raw());
            }
            other => panic!("no demonitor went to the watched node: {other:?}"),
        }
    }
}
