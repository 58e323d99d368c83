//! A simulated network for deterministic tests: UDP datagrams between sockets of one process,
//! with seeded loss, duplication, delay (and so reordering) and partitions, on tokio's clock.
//!
//! It sits behind the same seam as the real network: a [`Cluster`](crate::cluster::Cluster)
//! configured with [`Network::Simulated`] runs its QUIC endpoint (TLS, streams, congestion
//! control, everything) over a [`SimNet`] socket instead of a UDP socket. Only the datagrams
//! are simulated; every byte above them is the code that runs in production.
//!
//! With tokio's time paused (`start_paused`), a datagram's delay is virtual, so a simulation
//! of many seconds of cluster life runs in a fraction of that. Every fault decision comes from
//! one random number generator seeded by [`SimNet::new`]'s seed, in the order datagrams are
//! sent: on a current-thread runtime the fault schedule is a function of the seed. The QUIC
//! endpoints' own random choices follow it too (`SimNet::endpoint_seed`); what else must be
//! seeded for a whole run to repeat (fastrand's and the hash maps' seeds) is listed
//! in `docs/reliability.md`. Every datagram goes into a running hash, [`SimStats::trace`]:
//! two runs with the same trace took the same course.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::Mutex;
use quinn::udp::{RecvMeta, Transmit};

/// Which network a cluster's endpoint uses.
#[derive(Clone, Debug, Default)]
pub enum Network {
    /// Real UDP sockets.
    #[default]
    Udp,
    /// A [`SimNet`]: for simulation tests.
    Simulated(SimNet),
}

/// What happens to datagrams in flight.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Faults {
    /// The chance that a datagram is lost, in [0, 1].
    pub loss: f64,
    /// The chance that a datagram is delivered twice, in [0, 1].
    pub duplicate: f64,
    /// The shortest delay of a datagram.
    pub min_delay: Duration,
    /// The longest delay; delays are uniform in between, so datagrams overtake each other.
    pub max_delay: Duration,
}

impl Default for Faults {
    /// A perfect network with a 100 µs delay.
    fn default() -> Self {
        Faults {
            loss: 0.0,
            duplicate: 0.0,
            min_delay: Duration::from_micros(100),
            max_delay: Duration::from_micros(100),
        }
    }
}

/// Counts of what the network did with the datagrams sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams delivered (duplicates included).
    pub delivered: u64,
    /// Datagrams lost at random.
    pub lost: u64,
    /// Datagrams dropped by a partition.
    pub cut: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// A hash of every datagram's virtual send time, ends, length and fate, in order: two
    /// runs whose traces are equal sent the same datagrams at the same instants.
    pub trace: u64,
}

/// A simulated network. Clones share it.
#[derive(Clone)]
pub struct SimNet(Arc<Net>);

struct Net {
    state: Mutex<NetState>,
}

struct NetState {
    /// The seed the network was made with.
    seed: u64,
    rng: fastrand::Rng,
    faults: Faults,
    sockets: BTreeMap<SocketAddr, Weak<SimSocket>>,
    /// Pairs of addresses that cannot reach each other (both directions are listed).
    cut: BTreeSet<(SocketAddr, SocketAddr)>,
    next_port: u16,
    stats: SimStats,
    /// When the network was made: the zero of the times in the trace.
    origin: tokio::time::Instant,
    /// Every datagram's line of the trace, when recorded (`SimNet::record`).
    journal: Option<Vec<String>>,
}

impl fmt::Debug for SimNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.0.state.lock();
        f.debug_struct("SimNet")
            .field("sockets", &state.sockets.keys().collect::<Vec<_>>())
            .field("faults", &state.faults)
            .field("stats", &state.stats)
            .finish()
    }
}

impl SimNet {
    /// A network with no faults whose random decisions follow `seed`.
    pub fn new(seed: u64) -> SimNet {
        SimNet(Arc::new(Net {
            state: Mutex::new(NetState {
                seed,
                rng: fastrand::Rng::with_seed(seed),
                faults: Faults::default(),
                sockets: BTreeMap::new(),
                cut: BTreeSet::new(),
                next_port: 10_000,
                stats: SimStats::default(),
                origin: tokio::time::Instant::now(),
                journal: None,
            }),
        }))
    }

    /// Sets the faults applied to datagrams sent from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.0.state.lock().faults = faults;
    }

    /// Cuts every address of `a` off from every address of `b`, both ways.
    pub fn partition(&self, a: &[SocketAddr], b: &[SocketAddr]) {
        let mut state = self.0.state.lock();
        for &x in a {
            for &y in b {
                state.cut.insert((x, y));
                state.cut.insert((y, x));
            }
        }
    }

    /// Cuts `addr` off from every other socket bound now.
    pub fn isolate(&self, addr: SocketAddr) {
        let others: Vec<SocketAddr> = self
            .0
            .state
            .lock()
            .sockets
            .keys()
            .copied()
            .filter(|&a| a != addr)
            .collect();
        self.partition(&[addr], &others);
    }

    /// Removes every partition.
    pub fn heal(&self) {
        self.0.state.lock().cut.clear();
    }

    /// What the network did so far.
    pub fn stats(&self) -> SimStats {
        self.0.state.lock().stats
    }

    /// Keeps a line per datagram from now on (its virtual send time, ends, length and fate),
    /// for finding where two runs of one seed part ways.
    pub fn record(&self) {
        self.0.state.lock().journal.get_or_insert_with(Vec::new);
    }

    /// The lines kept since [`SimNet::record`].
    pub fn journal(&self) -> Vec<String> {
        self.0.state.lock().journal.clone().unwrap_or_default()
    }

    /// The seed of the QUIC endpoint at `addr`: its connections' random choices (packet
    /// number skips, greasing) follow the network's seed.
    pub(crate) fn endpoint_seed(&self, addr: SocketAddr) -> [u8; 32] {
        let mut hasher = std::hash::DefaultHasher::new();
        (self.0.state.lock().seed, addr).hash(&mut hasher);
        let mut rng = fastrand::Rng::with_seed(hasher.finish());
        let mut bytes = [0; 32];
        rng.fill(&mut bytes);
        bytes
    }

    /// Binds a socket at `addr`; port 0 picks a free one.
    pub(crate) fn bind(&self, addr: SocketAddr) -> io::Result<Arc<SimSocket>> {
        let mut state = self.0.state.lock();
        state.sockets.retain(|_, s| s.strong_count() > 0);
        let addr = if addr.port() == 0 {
            loop {
                let candidate = SocketAddr::new(addr.ip(), state.next_port);
                state.next_port = state.next_port.checked_add(1).unwrap_or(10_000);
                if !state.sockets.contains_key(&candidate) {
                    break candidate;
                }
            }
        } else {
            addr
        };
        if state.sockets.contains_key(&addr) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("simulated address {addr} is in use"),
            ));
        }
        let socket = Arc::new(SimSocket {
            addr,
            net: Arc::downgrade(&self.0),
            inbox: Mutex::new(Inbox::default()),
        });
        state.sockets.insert(addr, Arc::downgrade(&socket));
        Ok(socket)
    }
}

#[derive(Default)]
struct Inbox {
    datagrams: VecDeque<(SocketAddr, Vec<u8>)>,
    waker: Option<Waker>,
}

/// A socket of a [`SimNet`], as quinn sees it.
pub(crate) struct SimSocket {
    addr: SocketAddr,
    net: Weak<Net>,
    inbox: Mutex<Inbox>,
}

impl fmt::Debug for SimSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimSocket")
            .field("addr", &self.addr)
            .finish()
    }
}

impl SimSocket {
    fn deliver(&self, from: SocketAddr, datagram: Vec<u8>) {
        let mut inbox = self.inbox.lock();
        inbox.datagrams.push_back((from, datagram));
        if let Some(waker) = inbox.waker.take() {
            waker.wake();
        }
    }
}

/// What the network did with one datagram.
#[derive(Debug, Hash)]
enum Fate {
    Cut,
    Lost,
    NoListener,
    Delivered(Vec<Duration>),
}

impl NetState {
    /// Decides a datagram's fate, counting it.
    fn decide(&mut self, from: SocketAddr, to: SocketAddr) -> Fate {
        self.stats.sent += 1;
        if self.cut.contains(&(from, to)) {
            self.stats.cut += 1;
            return Fate::Cut;
        }
        let faults = self.faults;
        if self.rng.f64() < faults.loss {
            self.stats.lost += 1;
            return Fate::Lost;
        }
        let copies = if self.rng.f64() < faults.duplicate {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        let spread = faults.max_delay.saturating_sub(faults.min_delay);
        let delays: Vec<Duration> = (0..copies)
            .map(|_| faults.min_delay + spread.mul_f64(self.rng.f64()))
            .collect();
        if self.sockets.get(&to).is_none_or(|s| s.strong_count() == 0) {
            // Nobody listens there: the datagram vanishes, as on a real network.
            return Fate::NoListener;
        }
        self.stats.delivered += copies;
        Fate::Delivered(delays)
    }

    /// Adds a datagram to the trace (and the journal, if kept).
    fn trace(&mut self, from: SocketAddr, to: SocketAddr, len: usize, fate: &Fate) {
        let at = self.origin.elapsed();
        let mut hasher = std::hash::DefaultHasher::new();
        (self.stats.trace, at, from, to, len, fate).hash(&mut hasher);
        self.stats.trace = hasher.finish();
        if let Some(journal) = &mut self.journal {
            journal.push(format!("{at:?} {from} -> {to} {len} B: {fate:?}"));
        }
    }
}

/// Sends one datagram through the network: lost, cut, delayed, or duplicated.
fn route(net: &Net, from: SocketAddr, to: SocketAddr, datagram: &[u8]) {
    let (target, delays) = {
        let mut state = net.state.lock();
        let fate = state.decide(from, to);
        state.trace(from, to, datagram.len(), &fate);
        let Fate::Delivered(delays) = fate else {
            return;
        };
        let Some(target) = state.sockets.get(&to).and_then(Weak::upgrade) else {
            return;
        };
        (target, delays)
    };
    for delay in delays {
        let target = target.clone();
        let datagram = datagram.to_vec();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            target.deliver(from, datagram);
        });
    }
}

impl quinn::AsyncUdpSocket for SimSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let Some(net) = self.net.upgrade() else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the simulated network is gone",
            ));
        };
        match transmit.segment_size {
            Some(size) if size > 0 => {
                for segment in transmit.contents.chunks(size) {
                    route(&net, self.addr, transmit.destination, segment);
                }
            }
            _ => route(&net, self.addr, transmit.destination, transmit.contents),
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut inbox = self.inbox.lock();
        let mut received = 0;
        while received < bufs.len().min(meta.len()) {
            let Some((from, datagram)) = inbox.datagrams.pop_front() else {
                break;
            };
            let len = datagram.len().min(bufs[received].len());
            bufs[received][..len].copy_from_slice(&datagram[..len]);
            meta[received] = RecvMeta {
                addr: from,
                len,
                stride: len,
                dst_ip: Some(self.addr.ip()),
                ..RecvMeta::default()
            };
            received += 1;
        }
        if received > 0 {
            return Poll::Ready(Ok(received));
        }
        inbox.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }

    fn may_fragment(&self) -> bool {
        false
    }
}

/// Sending never blocks on a simulated network.
#[derive(Debug)]
struct AlwaysWritable;

impl quinn::UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The address a simulated node at index `i` listens on: `10.0.0.<i+1>:7000`.
pub fn sim_addr(i: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i + 1)), 7000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn::AsyncUdpSocket;

    async fn recv(socket: &SimSocket) -> (SocketAddr, Vec<u8>) {
        std::future::poll_fn(|cx| {
            let mut buf = [0u8; 64];
            let mut bufs = [IoSliceMut::new(&mut buf)];
            let mut meta = [RecvMeta::default()];
            match socket.poll_recv(cx, &mut bufs, &mut meta) {
                Poll::Ready(Ok(_)) => Poll::Ready((meta[0].addr, bufs[0][..meta[0].len].to_vec())),
                Poll::Ready(Err(e)) => panic!("{e}"),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    fn send(socket: &SimSocket, to: SocketAddr, contents: &[u8]) {
        socket
            .try_send(&Transmit {
                destination: to,
                ecn: None,
                contents,
                segment_size: None,
                src_ip: None,
            })
            .expect("send");
    }

    #[tokio::test(start_paused = true)]
    async fn datagrams_arrive_after_their_delay_and_not_across_a_partition() {
        let net = SimNet::new(1);
        net.set_faults(Faults {
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(5),
            ..Faults::default()
        });
        let a = net.bind(sim_addr(0)).unwrap();
        let b = net.bind(sim_addr(1)).unwrap();
        let start = tokio::time::Instant::now();
        send(&a, b.addr, b"hello");
        assert_eq!(recv(&b).await, (a.addr, b"hello".to_vec()));
        assert_eq!(start.elapsed(), Duration::from_millis(5));

        net.isolate(a.addr);
        send(&a, b.addr, b"lost");
        send(&b, a.addr, b"lost too");
        net.heal();
        send(&a, b.addr, b"after");
        assert_eq!(recv(&b).await.1, b"after".to_vec());
        let stats = net.stats();
        assert_eq!((stats.sent, stats.cut, stats.delivered), (4, 2, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_seed_makes_the_same_fault_decisions() {
        let run = |seed| {
            let net = SimNet::new(seed);
            net.set_faults(Faults {
                loss: 0.3,
                duplicate: 0.2,
                ..Faults::default()
            });
            let a = net.bind(sim_addr(0)).unwrap();
            let b = net.bind(sim_addr(1)).unwrap();
            for i in 0..200u8 {
                send(&a, b.addr, &[i]);
            }
            net.stats()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let stats = run(7);
        assert!(stats.lost > 0 && stats.duplicated > 0, "{stats:?}");
    }

    #[tokio::test]
    async fn an_address_is_bound_once() {
        let net = SimNet::new(1);
        let _a = net.bind(sim_addr(0)).unwrap();
        let err = net.bind(sim_addr(0)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let any = net.bind(SocketAddr::from(([10, 0, 0, 9], 0))).unwrap();
        assert_ne!(any.addr.port(), 0);
    }
}
