//! App specs: what an application is made of, as written in TOML.
//!
//! ```toml
//! name = "kv"
//!
//! [[roles]]
//! name = "master"
//! module = "kv.master"
//! singleton = true
//! global_name = "kv.master"
//! args = { partitions = 16 }
//!
//! [[roles]]
//! name = "worker"
//! module = "kv.worker"
//! instances = 4
//! min_instances = 2
//! placement = { spread = "spread", resources = { cpu = 100 } }
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::agent::AGENTS_GROUP;
use crate::placement::Requirements;
use crate::program::{PROGRAM_MODULE, ProgramSpec};
use crate::spec::Restart;

/// Whether `name` can name an app: 1 or more ASCII letters, digits, `-`, `_` or `.`, so that
/// it goes into an admin API path and a registry key as it is.
pub fn is_app_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The most instances one role may ask for: each is an actor the controller plans, starts and
/// watches, and a plan is made instance by instance.
pub(crate) const MAX_INSTANCES: usize = 100_000;

/// An application: roles, each a module run as some number of instances across the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// The app's name, unique in the cluster.
    pub name: String,
    /// Its roles, started in this order.
    pub roles: Vec<RoleSpec>,
}

/// One role of an app.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    /// The role's name, unique in the app.
    pub name: String,
    /// The module its instances run (registered on the nodes with `Node::register_module`);
    /// or empty, for a program role.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub module: String,
    /// The external program its instances run, instead of a module (see
    /// [`program`](crate::program)): `program = { command = "python3", args = [...] }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<ProgramSpec>,
    /// How many instances the app wants.
    #[serde(default = "one")]
    pub instances: usize,
    /// The fewest instances the role accepts (negotiation: ask for `instances`, accept
    /// this many); defaults to `instances`. Fewer placed is reported as a shortage.
    #[serde(default)]
    pub min_instances: Option<usize>,
    /// At most one instance in the cluster, guarded by a registry lease (implies one
    /// instance).
    #[serde(default)]
    pub singleton: bool,
    /// A global name each instance registers. With several instances it must contain `{i}`,
    /// replaced by the instance's index.
    #[serde(default)]
    pub global_name: Option<String>,
    /// Groups each instance joins (besides the role's own, see [`role_group`]).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Where instances may run.
    #[serde(default)]
    pub placement: Requirements,
    /// When an instance that ended is replaced.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Arguments for the module, handed to its factory.
    #[serde(default)]
    pub args: Option<toml::Value>,
}

fn one() -> usize {
    1
}

/// When instances of a role are replaced, and how often at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestartPolicy {
    /// Permanent (always), transient (after an abnormal end) or temporary (never).
    pub restart: Restart,
    /// At most this many replacements within `within_secs`; one more and the role gives up
    /// (shown in its status) until the app is deployed again.
    pub max_restarts: u32,
    /// The window of `max_restarts`.
    pub within_secs: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            restart: Restart::Permanent,
            max_restarts: 10,
            within_secs: 60,
        }
    }
}

/// The start of every role's group name (see [`role_group`]); reserved.
const APP_GROUP_PREFIX: &str = "ensemble.app/";

/// The registry group every instance of a role joins: how the controller counts them.
pub fn role_group(app: &str, role: &str) -> String {
    format!("{APP_GROUP_PREFIX}{app}/{role}")
}

/// An app spec that is not valid, saying which key of which role is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The TOML text does not parse or does not fit the spec's shape.
    #[error("the app spec is not valid TOML for an app: {0}")]
    Parse(String),
    /// A value is wrong.
    #[error("app {app:?}: {key}: {problem}")]
    Invalid {
        /// The app.
        app: String,
        /// The key, e.g. `roles[worker].instances`.
        key: String,
        /// What is wrong and what is expected.
        problem: String,
    },
}

impl AppSpec {
    /// Parses and validates a spec from TOML.
    pub fn from_toml(text: &str) -> Result<AppSpec, SpecError> {
        let spec: AppSpec = toml::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// The spec as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("an app spec always serializes")
    }

    /// Checks names, counts and options; the error names the key at fault.
    pub fn validate(&self) -> Result<(), SpecError> {
        let invalid = |key: String, problem: &str| SpecError::Invalid {
            app: self.name.clone(),
            key,
            problem: problem.to_owned(),
        };
        if !is_app_name(&self.name) {
            return Err(invalid(
                "name".into(),
                "must be 1 or more ASCII letters, digits, '-', '_' or '.' (it is a path segment of the admin API and a registry key)",
            ));
        }
        if self.roles.is_empty() {
            return Err(invalid(
                "roles".into(),
                "an app needs at least one role ([[roles]] with name and module)",
            ));
        }
        let mut seen = BTreeSet::new();
        let mut names = BTreeMap::new();
        for role in &self.roles {
            let key = |k: &str| format!("roles[{}].{k}", role.name);
            if role.name.is_empty() || role.name.contains('/') {
                return Err(invalid(key("name"), "must be a non-empty name without '/'"));
            }
            if !seen.insert(role.name.as_str()) {
                return Err(invalid(key("name"), "another role has the same name"));
            }
            match (&role.program, role.module.is_empty()) {
                (None, true) => {
                    return Err(invalid(
                        key("module"),
                        "give a module (a registered actor module) or a program (an external program)",
                    ));
                }
                (Some(_), false) => {
                    return Err(invalid(
                        key("program"),
                        "give either a module or a program, not both",
                    ));
                }
                (Some(program), true) => {
                    if let Err(problem) = program.validate() {
                        let (field, what) = problem.split_once(": ").unwrap_or(("", &problem));
                        return Err(invalid(key(&format!("program.{field}")), what));
                    }
                    if role.args.is_some() {
                        return Err(invalid(
                            key("args"),
                            "a program role takes no args (give the program's own args in program.args)",
                        ));
                    }
                }
                (None, false) => {}
            }
            if role.instances > MAX_INSTANCES {
                return Err(invalid(
                    key("instances"),
                    &format!(
                        "{} is more than a role may ask for; give at most {MAX_INSTANCES}",
                        role.instances
                    ),
                ));
            }
            if role.singleton && role.instances != 1 {
                return Err(invalid(
                    key("instances"),
                    "a singleton role has exactly one instance",
                ));
            }
            if let Some(min) = role.min_instances
                && min > role.instances
            {
                return Err(invalid(key("min_instances"), "must not exceed instances"));
            }
            if let Some(name) = &role.global_name
                && role.instances > 1
                && !name.contains("{i}")
            {
                return Err(invalid(
                    key("global_name"),
                    "with several instances the name must contain {i} (the instance's index)",
                ));
            }
            if let Some(name) = &role.global_name
                && let Some(other) = names.insert(name.as_str(), role.name.as_str())
            {
                return Err(invalid(
                    key("global_name"),
                    &format!(
                        "role {other} has the same global name {name:?}: a name resolves to one actor, so one of them could never start; give each role its own"
                    ),
                ));
            }
            for group in &role.groups {
                if group.starts_with(APP_GROUP_PREFIX) || group == AGENTS_GROUP {
                    return Err(invalid(
                        key("groups"),
                        &format!(
                            "{group:?} is a group the runtime counts instances or agents by (names starting with {APP_GROUP_PREFIX:?}, and {AGENTS_GROUP:?}, are reserved); pick another name"
                        ),
                    ));
                }
            }
            if role.restart.within_secs == 0 {
                return Err(invalid(key("restart.within_secs"), "must be at least 1"));
            }
        }
        Ok(())
    }

    /// Checks that this spec may replace `deployed`, the one deployed under its name: a role
    /// kept may change its counts, placement, policy and arguments, but not what its
    /// instances are (module or program, singleton or not, global name), since its running
    /// instances would keep the old ones beside new instances with the new ones (a non
    /// singleton instance, holding no lease, beside the singleton; two names for one index).
    /// The error names the role and the key; removing the app first, or renaming the role,
    /// replaces its instances.
    pub fn check_change(&self, deployed: &AppSpec) -> Result<(), SpecError> {
        for role in &self.roles {
            let Some(old) = deployed.role(&role.name) else {
                continue;
            };
            let changed = if old.module_name() != role.module_name() {
                Some(("module", describe_module(old), describe_module(role)))
            } else if old.singleton != role.singleton {
                Some((
                    "singleton",
                    old.singleton.to_string(),
                    role.singleton.to_string(),
                ))
            } else if old.global_name != role.global_name {
                Some((
                    "global_name",
                    format!("{:?}", old.global_name.as_deref().unwrap_or("none")),
                    format!("{:?}", role.global_name.as_deref().unwrap_or("none")),
                ))
            } else {
                None
            };
            if let Some((key, from, to)) = changed {
                return Err(SpecError::Invalid {
                    app: self.name.clone(),
                    key: format!("roles[{}].{key}", role.name),
                    problem: format!(
                        "cannot change from {from} to {to} while the app is deployed (its running instances would keep the old one); remove the app and deploy it again, or give the role a new name"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The role named `role`.
    pub fn role(&self, role: &str) -> Option<&RoleSpec> {
        self.roles.iter().find(|r| r.name == role)
    }
}

impl RoleSpec {
    /// The fewest instances the role accepts.
    pub fn min(&self) -> usize {
        self.min_instances.unwrap_or(self.instances)
    }

    /// The global name of instance `index`, if the role has one.
    pub fn global_name_of(&self, index: usize) -> Option<String> {
        self.global_name
            .as_ref()
            .map(|n| n.replace("{i}", &index.to_string()))
    }

    /// The module its instances run: its own, or [`PROGRAM_MODULE`] for a program role.
    pub fn module_name(&self) -> &str {
        if self.program.is_some() {
            PROGRAM_MODULE
        } else {
            &self.module
        }
    }

    /// The module's arguments, MessagePack-encoded (an empty map when there are none, which
    /// modules taking `()` or a struct whose fields all have defaults accept); for a program
    /// role, the program's spec.
    pub fn encoded_args(&self) -> Vec<u8> {
        if let Some(program) = &self.program {
            return rmp_serde::to_vec_named(program).expect("a program spec always encodes");
        }
        let empty = toml::Value::Table(toml::Table::new());
        rmp_serde::to_vec_named(self.args.as_ref().unwrap_or(&empty))
            .expect("TOML values always encode")
    }
}

fn describe_module(role: &RoleSpec) -> String {
    if role.program.is_some() {
        "a program".into()
    } else {
        format!("{:?}", role.module)
    }
}

/// What an app is doing, role by role, as any node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStatus {
    /// The app.
    pub name: String,
    /// Its roles.
    pub roles: Vec<RoleStatus>,
}

/// One role's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleStatus {
    /// The role.
    pub name: String,
    /// Instances wanted.
    pub wanted: usize,
    /// Instances running, by node.
    pub running: BTreeMap<String, usize>,
    /// Why instances are missing, if the controller could not place them.
    pub problem: Option<String>,
}

/// How the status of a role that lacks room says so: "N of M instances cannot be placed".
pub(crate) const LACKS_ROOM: &str = "instances cannot be placed";

impl RoleStatus {
    /// Instances running in all.
    pub fn running_total(&self) -> usize {
        self.running.values().sum()
    }

    /// Whether instances are missing only for want of room (no node can take them): what a
    /// role's `min_instances` accepts. Not for a role that gave up, nor one whose instances
    /// wait for a global name held by another actor.
    pub fn lacks_room(&self) -> bool {
        // "N of M instances cannot be placed (...": anchored, since other problems quote
        // texts of their own (a failure's reason).
        let lacks = |p: &str| -> Option<bool> {
            let (short, rest) = p.split_once(" of ")?;
            let (wanted, rest) = rest.split_once(' ')?;
            let numbers = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
            Some(numbers(short) && numbers(wanted) && rest.starts_with(LACKS_ROOM))
        };
        self.problem.as_deref().and_then(lacks).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KV: &str = r#"
name = "kv"

[[roles]]
name = "master"
module = "kv.master"
singleton = true
global_name = "kv.master"
args = { partitions = 16 }

[[roles]]
name = "worker"
module = "kv.worker"
instances = 4
min_instances = 2
placement = { spread = "pack", anti_affinity = true, resources = { cpu = 100 }, labels = { zone = "a" } }
restart = { restart = "transient", max_restarts = 3 }
"#;

    #[test]
    fn a_program_role_runs_the_program_module_and_round_trips() {
        let text = r#"
name = "web"

[[roles]]
name = "http"
instances = 2
program = { command = "python3", args = ["-m", "http.server", "{port}"], health = { http = "http://127.0.0.1:{port}/" } }
"#;
        let spec = AppSpec::from_toml(text).unwrap();
        let role = spec.role("http").unwrap();
        assert_eq!(role.module_name(), PROGRAM_MODULE);
        let args: ProgramSpec = rmp_serde::from_slice(&role.encoded_args()).unwrap();
        assert_eq!(args.command, "python3");
        assert_eq!(AppSpec::from_toml(&spec.to_toml()).unwrap(), spec);
    }

    #[test]
    fn a_bad_program_role_names_the_key() {
        let both = "name = \"a\"\n[[roles]]\nname = \"r\"\nmodule = \"m\"\nprogram = { command = \"x\" }\n";
        let err = AppSpec::from_toml(both).unwrap_err().to_string();
        assert!(err.contains("roles[r].program"), "{err}");
        let neither = "name = \"a\"\n[[roles]]\nname = \"r\"\n";
        let err = AppSpec::from_toml(neither).unwrap_err().to_string();
        assert!(err.contains("roles[r].module"), "{err}");
        let signal = "name = \"a\"\n[[roles]]\nname = \"r\"\nprogram = { command = \"x\", stop_signal = \"STOP\" }\n";
        let err = AppSpec::from_toml(signal).unwrap_err().to_string();
        assert!(err.contains("roles[r].program.stop_signal"), "{err}");
    }

    #[test]
    fn a_spec_round_trips_through_toml() {
        let spec = AppSpec::from_toml(KV).unwrap();
        assert_eq!(spec.roles.len(), 2);
        let worker = spec.role("worker").unwrap();
        assert_eq!((worker.instances, worker.min()), (4, 2));
        assert_eq!(worker.placement.resources["cpu"], 100);
        assert!(worker.placement.anti_affinity);
        assert_eq!(worker.restart.restart, Restart::Transient);
        assert_eq!(worker.restart.within_secs, 60);
        assert_eq!(spec.role("master").unwrap().instances, 1);
        assert_eq!(AppSpec::from_toml(&spec.to_toml()).unwrap(), spec);
    }

    #[test]
    fn bad_specs_name_the_key() {
        let err = AppSpec::from_toml("name = \"x\"\nroles = []").unwrap_err();
        assert_eq!(
            err.to_string(),
            "app \"x\": roles: an app needs at least one role ([[roles]] with name and module)"
        );
        let err = AppSpec::from_toml(
            "name = \"x\"\n[[roles]]\nname = \"a\"\nmodule = \"m\"\ninstances = 2\nsingleton = true",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "app \"x\": roles[a].instances: a singleton role has exactly one instance"
        );
        let err = AppSpec::from_toml(
            "name = \"x\"\n[[roles]]\nname = \"a\"\nmodule = \"m\"\ninstances = 2\nglobal_name = \"n\"",
        )
        .unwrap_err();
        assert!(err.to_string().contains("roles[a].global_name"), "{err}");
        let err = AppSpec::from_toml("name = \"kv?x\"\n[[roles]]\nname = \"a\"\nmodule = \"m\"")
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("app \"kv?x\": name: must be 1 or more ASCII letters"),
            "{err}"
        );
        let err = AppSpec::from_toml(
            "name = \"x\"\n[[roles]]\nname = \"a\"\nmodule = \"m\"\ninstances = 1000000000000",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "app \"x\": roles[a].instances: 1000000000000 is more than a role may ask for; give at most 100000"
        );
        let err =
            AppSpec::from_toml("name = \"x\"\n[[roles]]\nname = \"a\"\nmodul = \"m\"").unwrap_err();
        assert!(err.to_string().contains("unknown field `modul`"), "{err}");
    }

    #[test]
    fn a_role_kept_may_not_change_what_its_instances_are() {
        let deployed = AppSpec::from_toml(KV).unwrap();
        let mut resized = deployed.clone();
        resized.roles[1].instances = 8;
        resized.roles[1].args = Some(toml::Value::Integer(1));
        assert_eq!(resized.check_change(&deployed), Ok(()));
        let mut dropped = deployed.clone();
        dropped.roles.remove(0);
        assert_eq!(dropped.check_change(&deployed), Ok(()));

        let mut singleton = deployed.clone();
        singleton.roles[1].singleton = true;
        singleton.roles[1].instances = 1;
        let err = singleton.check_change(&deployed).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "app \"kv\": roles[worker].singleton: cannot change from false to true"
            ),
            "{err}"
        );
        let mut module = deployed.clone();
        module.roles[0].module = "kv.other".into();
        let err = module.check_change(&deployed).unwrap_err().to_string();
        assert!(err.contains("roles[master].module"), "{err}");
        assert!(err.contains("\"kv.master\" to \"kv.other\""), "{err}");
        let mut named = deployed.clone();
        named.roles[0].global_name = None;
        let err = named.check_change(&deployed).unwrap_err().to_string();
        assert!(err.contains("roles[master].global_name"), "{err}");
    }

    #[test]
    fn roles_may_not_share_a_global_name_or_take_a_reserved_group() {
        let two = "name = \"x\"\n[[roles]]\nname = \"a\"\nmodule = \"m\"\nglobal_name = \"boss\"\n[[roles]]\nname = \"b\"\nmodule = \"m\"\nglobal_name = \"boss\"\n";
        let err = AppSpec::from_toml(two).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "app \"x\": roles[b].global_name: role a has the same global name \"boss\""
            ),
            "{err}"
        );
        for group in ["ensemble.app/x/a", "ensemble.agents"] {
            let text = format!(
                "name = \"x\"\n[[roles]]\nname = \"a\"\nmodule = \"m\"\ngroups = [\"{group}\"]\n"
            );
            let err = AppSpec::from_toml(&text).unwrap_err().to_string();
            assert!(err.contains("roles[a].groups"), "{err}");
            assert!(err.contains(group), "{err}");
        }
        let fine =
            "name = \"x\"\n[[roles]]\nname = \"a\"\nmodule = \"m\"\ngroups = [\"ensemble.apps\"]\n";
        assert!(AppSpec::from_toml(fine).is_ok());
    }

    #[test]
    fn global_names_take_the_index() {
        let spec = AppSpec::from_toml(
            "name = \"x\"\n[[roles]]\nname = \"a\"\nmodule = \"m\"\ninstances = 2\nglobal_name = \"a.{i}\"",
        )
        .unwrap();
        assert_eq!(spec.roles[0].global_name_of(1).as_deref(), Some("a.1"));
    }
}
