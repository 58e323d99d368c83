//! Starting the registry on a node: storage, Raft, the server, the local copy and the session.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ensemble_runtime::cluster::Cluster;
use openraft::{Config, Raft, SnapshotPolicy};

use crate::client::{Registry, mirror::Mirror, proposer, session};
use crate::config::RegistryConfig;
use crate::error::RegistryError;
use crate::limits::{Limits, MIN_FRAME};
use crate::raft::lease::LeaderLease;
use crate::raft::log_store::{self, LogStore};
use crate::raft::network::{Network, Servers};
use crate::raft::{StateMachine, TypeConfig, Voter, raft_id};
use crate::server::protocol::SERVER_NAME;
use crate::server::{LeaderContact, Leadership, Server};

/// The directory inside the data dir that holds the Raft log and vote; the snapshots are in
/// its sibling [`snapshot_dir`](crate::raft::log_store::snapshot_dir)
/// (`registry-log-snapshots`).
pub const LOG_DIR: &str = "registry-log";

/// The file inside the data dir where versions before the move to fjall kept the log; it is
/// imported into [`LOG_DIR`] at start, then renamed to `registry.redb.imported`.
pub const LEGACY_LOG_FILE: &str = "registry.redb";

impl Registry {
    /// Starts the registry on this node and opens the node's session, waiting up to
    /// `config.request_timeout` x 6 for a leader to commit it.
    ///
    /// The cluster should decide downs through the registry
    /// ([`DownDecision::External`](ensemble_runtime::cluster::DownDecision::External)): the
    /// registry declares a node down when its session expires.
    pub async fn start(
        cluster: &Cluster,
        config: RegistryConfig,
    ) -> Result<Registry, RegistryError> {
        config.validate().map_err(RegistryError::Start)?;
        let node = cluster.node().clone();
        let name = node.id().name().to_owned();
        let path = config.data_dir.join(LOG_DIR);
        log_store::import_redb(&config.data_dir.join(LEGACY_LOG_FILE), &path)
            .map_err(|e| RegistryError::Start(e.to_string()))?;
        let store = if config.inline_storage {
            LogStore::<TypeConfig>::open_inline(&path)
        } else {
            LogStore::<TypeConfig>::open(&path)
        }
        .map_err(|e| RegistryError::Start(e.to_string()))?;
        let state_machine = StateMachine::open(store.clone()).await.map_err(|e| {
            RegistryError::Start(format!(
                "cannot read the registry snapshot in {}: {e}",
                log_store::snapshot_dir(&path).display()
            ))
        })?;
        let max_frame = cluster.max_frame_size();
        if max_frame < MIN_FRAME {
            return Err(RegistryError::Start(format!(
                "the cluster's max_frame_size ({max_frame} bytes) is too small for the registry, \
                 which needs frames of at least {MIN_FRAME} bytes: raise it"
            )));
        }
        let limits = Limits::for_frame(max_frame);
        let raft_config = Config {
            cluster_name: "ensemble-registry".into(),
            heartbeat_interval: config.on_local_clock(config.heartbeat_interval).as_millis() as u64,
            election_timeout_min: config.on_local_clock(config.election_timeout.0).as_millis()
                as u64,
            election_timeout_max: config.on_local_clock(config.election_timeout.1).as_millis()
                as u64,
            max_payload_entries: 256,
            // A chunk and its framing must fit one frame of the transport.
            snapshot_max_chunk_size: limits.append as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.log_kept_after_snapshot,
            // Not before this node knows that it votes: `session::watch_standing`.
            enable_elect: false,
            ..Config::default()
        }
        .validate()
        .map_err(|e| RegistryError::Start(format!("bad Raft settings: {e}")))?;
        let servers = Servers::new(cluster.clone());
        let id = raft_id(&name);
        // Each follower's vote refusal (openraft: `election_timeout_max`), as it tells it, less
        // the drift margin.
        let lease = LeaderLease::new(id, config.drift_margin, config.clock_rate);
        // Before Raft reads the vote: a restarted node must not resume a lead (see there).
        store.report_own_appends_early(id);
        let last_log = store.last_log_id_reader();
        let raft = Raft::<TypeConfig>::new(
            id,
            Arc::new(raft_config),
            Network {
                servers: servers.clone(),
                lease: lease.clone(),
                log: store.clone(),
                retry: config.on_local_clock(config.heartbeat_interval),
                limits,
            },
            store,
            state_machine.clone(),
        )
        .await
        .map_err(|e| RegistryError::Start(format!("Raft did not start: {e}")))?;

        let leadership = Leadership::new(config.clock_rate, lease, cluster.clone());
        tokio::spawn(leadership.clone().run(
            raft.clone(),
            state_machine.clone(),
            config.voters,
            config.voter_grace,
        ));
        let timeout = config.request_timeout.saturating_mul(6);
        // Not hearing a leader: no AppendEntries for longer than an election takes (twenty
        // heartbeats, and four of the longest election timeouts: 1 s by default).
        let leader_silence = config
            .on_local_clock(config.heartbeat_interval)
            .saturating_mul(20)
            .max(
                config
                    .on_local_clock(config.election_timeout.1)
                    .saturating_mul(4),
            );
        // A follower names the leader to clients while it heard from it within the shortest
        // election timeout (three heartbeats by default): past that, the leader may be dead.
        let leader_fresh = config.on_local_clock(config.election_timeout.0);
        let bootstrap = config.bootstrap;
        // Whether the leader said this node does not vote although its log says it does:
        // read by its copy's feed, set by `watch_standing` and by `leave`.
        let retired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let shared = Registry::new_shared(
            cluster.clone(),
            config,
            servers,
            leadership.clone(),
            raft.clone(),
            retired.clone(),
        );
        let waits_on_copy = {
            let shared = Arc::downgrade(&shared);
            Arc::new(move || {
                shared
                    .upgrade()
                    .is_some_and(|shared| shared.waits_on_copy())
            })
        };
        let leader_contact = LeaderContact::new(leader_silence, leader_fresh);
        let server = node
            .spawn(Server::new(
                raft.clone(),
                state_machine,
                leadership,
                limits,
                waits_on_copy,
                leader_contact.clone(),
                last_log.clone(),
            ))
            .map_err(|e| RegistryError::Start(e.to_string()))?;
        node.register_remote(SERVER_NAME, &server)
            .map_err(|e| RegistryError::Start(e.to_string()))?;

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| RegistryError::Start(e.to_string()))?;
        if bootstrap && !initialized {
            tracing::info!(node = %node.id(), "starting a new registry with this node as its voter");
            let voters = BTreeMap::from([(id, Voter { name: name.clone() })]);
            raft.initialize(voters)
                .await
                .map_err(|e| RegistryError::Start(format!("cannot start a new registry: {e}")))?;
        }

        let mirror = node
            .spawn(Mirror {
                shared: shared.clone(),
                partial: None,
                uncommitted: Default::default(),
            })
            .map_err(|e| RegistryError::Start(e.to_string()))?;
        let local = session::LocalVoter {
            id,
            metrics: raft.metrics(),
            leader_contact,
            retired,
            last_log,
        };
        tokio::spawn(session::watch_standing(
            Arc::downgrade(&shared),
            local.clone(),
        ));
        tokio::spawn(session::feed(Arc::downgrade(&shared), mirror, local));
        tokio::spawn(proposer::run(Arc::downgrade(&shared)));
        let opened = session::open(&shared, timeout).await?;
        tokio::spawn(session::keep(Arc::downgrade(&shared), opened));
        tokio::spawn(session::watch_declared_down(Arc::downgrade(&shared)));
        let registry = Registry { shared };
        cluster.node().set_extension(registry.clone());
        registry.wait_synced(Duration::from_secs(5)).await;
        Ok(registry)
    }

    /// Waits until this node's copy holds its own session (or `limit` passes).
    async fn wait_synced(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let me = self.shared.cluster.node().id().clone();
        while tokio::time::Instant::now() < deadline {
            if self.shared.view.read().state.session(&me).is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
