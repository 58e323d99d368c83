//! Applications: specs deployed into the registry, kept at their wanted shape by the cluster.
//!
//! - `spec`: [`AppSpec`] and its roles, parsed from TOML and validated.
//! - `controller`: the [`Controller`], a cluster singleton that places and replaces
//!   instances through the node agents ([`crate::agent`]).
//! - this module: [`Apps`], the API to deploy, list, inspect and remove apps, and to start a
//!   node's part in running them.
//!
//! Semantics in detail: `docs/apps.md` of the repository.

mod controller;
mod spec;

use std::collections::BTreeMap;

use ensemble_registry::{Registry, RegistryError};
use ensemble_runtime::cluster::Cluster;
use ensemble_runtime::{ActorRef, Node};

pub use controller::{Controller, ControllerMsg};
pub use spec::{
    AppSpec, AppStatus, RestartPolicy, RoleSpec, RoleStatus, SpecError, is_app_name, role_group,
};

use crate::agent::{Agent, AgentMsg};
use crate::singleton::{Singleton, SingletonMsg};

/// Where deployed specs live in the registry's config, by app name.
pub const APPS_PREFIX: &str = "ensemble/apps/";
/// Where the controller writes why roles fall short, by app name.
pub const STATUS_PREFIX: &str = "ensemble/app-status/";
/// The singleton name of the app controller.
pub const CONTROLLER: &str = "ensemble.apps.controller";

/// Why an app operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The spec is not valid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The registry could not be reached or refused.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The node lacks a part the apps need.
    #[error("{0}")]
    Setup(String),
}

/// The apps of a cluster, as one node reaches them. Cheap to clone.
#[derive(Clone)]
pub struct Apps {
    registry: Registry,
    cluster: Cluster,
}

/// What [`Apps::start`] started on the node.
pub struct AppsNode {
    /// The API.
    pub apps: Apps,
    /// The node's agent.
    pub agent: ActorRef<AgentMsg>,
    /// The node's manager of the controller singleton.
    pub controller: ActorRef<SingletonMsg>,
}

impl Apps {
    /// The API, for a node with a cluster and a registry.
    pub fn new(node: &Node) -> Result<Apps, AppError> {
        let cluster = node.extension::<Cluster>().ok_or_else(|| {
            AppError::Setup(format!(
                "node {} has no cluster service: start one first",
                node.id()
            ))
        })?;
        let registry = node.extension::<Registry>().ok_or_else(|| {
            AppError::Setup(format!(
                "node {} has no registry: start one first (Registry::start)",
                node.id()
            ))
        })?;
        Ok(Apps { registry, cluster })
    }

    /// Makes this node take part in running apps: starts its agent (so instances can be
    /// placed here) and its manager of the controller singleton (so the controller can run
    /// here when the node holding it dies).
    pub async fn start(node: &Node) -> Result<AppsNode, AppError> {
        let apps = Apps::new(node)?;
        // Program roles run as this module, on whichever node they are placed.
        crate::program::register(node);
        let agent = Agent::start(node).await.map_err(AppError::Setup)?;
        let (registry, cluster) = (apps.registry.clone(), apps.cluster.clone());
        let manager = Singleton::new(CONTROLLER, move |_token| {
            Controller::new(registry.clone(), cluster.clone())
        });
        let controller = node.start(manager).await.map_err(|e| {
            AppError::Setup(format!("cannot start the app controller's manager: {e}"))
        })?;
        Ok(AppsNode {
            apps,
            agent,
            controller,
        })
    }

    /// Deploys an app, or changes a deployed one (roles added, removed or resized; new
    /// instances use the new module arguments, running ones keep theirs). A role kept may
    /// not change its module, `singleton` or `global_name` ([`AppSpec::check_change`]).
    pub async fn deploy(&self, spec: &AppSpec) -> Result<(), AppError> {
        spec.validate()?;
        let key = format!("{APPS_PREFIX}{}", spec.name);
        // Written only over the spec that was checked: a deploy racing this one is read and
        // checked again.
        const ATTEMPTS: usize = 5;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let deployed = self.registry.get(&key).await?;
            if let Some(old) = deployed
                .as_ref()
                .and_then(|kv| AppSpec::from_toml(&String::from_utf8_lossy(&kv.value)).ok())
            {
                spec.check_change(&old)?;
            }
            let expected = deployed.map_or(0, |kv| kv.modified);
            match self
                .registry
                .compare_and_set(&key, expected, Some(spec.to_toml().into_bytes()))
                .await
            {
                Ok(_) => return Ok(()),
                Err(RegistryError::RevisionMismatch { .. }) if attempt < ATTEMPTS => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Removes an app: its instances are stopped. Says whether it was deployed.
    pub async fn remove(&self, name: &str) -> Result<bool, AppError> {
        Ok(self
            .registry
            .delete(&format!("{APPS_PREFIX}{name}"))
            .await?)
    }

    /// The deployed apps.
    pub async fn list(&self) -> Result<Vec<AppSpec>, AppError> {
        let mut specs = Vec::new();
        for (_, value) in self.registry.get_prefix(APPS_PREFIX).await? {
            specs.push(AppSpec::from_toml(&String::from_utf8_lossy(&value.value))?);
        }
        Ok(specs)
    }

    /// What a deployed app is doing: per role, instances wanted and running by node, and why
    /// any are missing. From this node's copy of the registry; `None` if it holds no spec of
    /// that name.
    pub fn status(&self, name: &str) -> Option<AppStatus> {
        let spec = self
            .registry
            .get_cached(&format!("{APPS_PREFIX}{name}"))
            .and_then(|kv| AppSpec::from_toml(&String::from_utf8_lossy(&kv.value)).ok())?;
        Some(self.status_of(&spec))
    }

    /// What the app `spec` describes is doing, counted against that spec (so that a listing
    /// pairs each spec with its own counts, even while a newer one arrives). From this node's
    /// copy of the registry.
    pub fn status_of(&self, spec: &AppSpec) -> AppStatus {
        let name = &spec.name;
        let problems: BTreeMap<String, String> = self
            .registry
            .get_cached(&format!("{STATUS_PREFIX}{name}"))
            .and_then(|kv| toml::from_str(&String::from_utf8_lossy(&kv.value)).ok())
            .unwrap_or_default();
        let roles = spec
            .roles
            .iter()
            .map(|role| {
                let mut running = BTreeMap::new();
                for wire in self.registry.group_members(&role_group(name, &role.name)) {
                    *running.entry(wire.id.node().name().to_owned()).or_default() += 1;
                }
                RoleStatus {
                    name: role.name.clone(),
                    wanted: role.instances,
                    running,
                    problem: problems.get(&role.name).cloned(),
                }
            })
            .collect();
        AppStatus {
            name: spec.name.clone(),
            roles,
        }
    }

    /// The registry handle the apps use.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}
