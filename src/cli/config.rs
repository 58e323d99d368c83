//! A node's configuration: a TOML file, overridden by environment variables, overridden by
//! flags. Each setting has one key (the file's), one variable and one flag:
//!
//! | key | variable | flag | default |
//! |---|---|---|---|
//! | `name` | `ENSEMBLE_NAME` | `--name` | (required) |
//! | `cluster` | `ENSEMBLE_CLUSTER` | `--cluster` | `ensemble` |
//! | `listen` | `ENSEMBLE_LISTEN` | `--listen` | `127.0.0.1:7000` |
//! | `join` | `ENSEMBLE_JOIN` (comma-separated) | `--join` (repeated) | none: start a new cluster |
//! | `data_dir` | `ENSEMBLE_DATA_DIR` | `--data-dir` | `data/<name>` |
//! | `certs` | `ENSEMBLE_CERTS` | `--certs` | `certs` |
//! | `resources` | `ENSEMBLE_RESOURCES` (`cpu=4000,mem=8192`) | `--resource` (repeated) | none |
//! | `labels` | `ENSEMBLE_LABELS` (`zone=a,disk=ssd`) | `--label` (repeated) | none |
//! | `apps` | `ENSEMBLE_NO_APPS` (`1`: false) | `--no-apps` (`--no-apps=false`: true) | `true` |
//! | `log` | `ENSEMBLE_LOG` | `--log` | `info` |
//! | `threads` | `ENSEMBLE_THREADS` | `--threads` | one per core |
//! | `admin.listen` | `ENSEMBLE_ADMIN` | `--admin` | `127.0.0.1:7070` (`off` to disable) |
//! | `admin.token` | `ENSEMBLE_ADMIN_TOKEN` | `--admin-token` | none (required beyond loopback) |
//! | `registry.*` | | | see [`RegistrySection`] |
//!
//! A value that does not parse is an error naming the key, where it came from (file,
//! variable or flag) and the form expected; an unknown key in the file is an error naming it.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ArgMatches;
use clap::parser::ValueSource;
use ensemble::admin::AdminConfig;
use ensemble::registry::RegistryConfig;
use serde::Deserialize;

/// The flags of `ensemble node`; each overrides its key in the config file and its
/// environment variable.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Precedence: flags over environment variables over the config file over defaults. \
    The config file reference is in docs/operations.md."
)]
pub(crate) struct NodeArgs {
    /// A TOML config file; flags and environment variables override what it sets.
    #[arg(long, short, env = "ENSEMBLE_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// The node's name, unique in the cluster; its certificate must name it [key: name].
    #[arg(long, env = "ENSEMBLE_NAME", value_name = "NAME")]
    pub(crate) name: Option<String>,
    /// The cluster's name; nodes of another cluster are refused [key: cluster].
    #[arg(long, env = "ENSEMBLE_CLUSTER", value_name = "NAME")]
    pub(crate) cluster: Option<String>,
    /// Where to accept cluster connections (QUIC over UDP); port 0 picks a free one [key: listen].
    #[arg(long, env = "ENSEMBLE_LISTEN", value_name = "HOST:PORT")]
    pub(crate) listen: Option<String>,
    /// A member to join the cluster through; repeat for several. None: start a new cluster
    /// [key: join].
    #[arg(
        long,
        env = "ENSEMBLE_JOIN",
        value_name = "HOST:PORT",
        value_delimiter = ','
    )]
    pub(crate) join: Vec<String>,
    /// Where the registry keeps its Raft log and snapshots [key: data_dir].
    #[arg(long, env = "ENSEMBLE_DATA_DIR", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// The directory holding NAME.pem, NAME.key and ca.pem (see `ensemble cert`) [key: certs].
    #[arg(long, env = "ENSEMBLE_CERTS", value_name = "DIR")]
    pub(crate) certs: Option<PathBuf>,
    /// A resource offered to placement; repeat for several [key: resources].
    #[arg(
        long = "resource",
        env = "ENSEMBLE_RESOURCES",
        value_name = "NAME=AMOUNT",
        value_delimiter = ','
    )]
    pub(crate) resources: Vec<String>,
    /// A label placement constraints can match; repeat for several [key: labels].
    #[arg(
        long = "label",
        env = "ENSEMBLE_LABELS",
        value_name = "KEY=VALUE",
        value_delimiter = ','
    )]
    pub(crate) labels: Vec<String>,
    /// Take no app instances (a client node); `--no-apps=false` takes them whatever the
    /// config file says. The variable counts as set unless it is empty, 0, false, no, n, f or
    /// off [key: apps = false].
    #[arg(
        long,
        env = "ENSEMBLE_NO_APPS",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub(crate) no_apps: Option<bool>,
    /// The log filter, as RUST_LOG takes it (`info`, `ensemble_registry=debug,info`) [key: log].
    #[arg(long, env = "ENSEMBLE_LOG", value_name = "FILTER")]
    pub(crate) log: Option<String>,
    /// Worker threads of the node's async runtime; nodes sharing a machine do best with a
    /// share of its cores each (default: one per core) [key: threads].
    #[arg(long, env = "ENSEMBLE_THREADS", value_name = "N")]
    pub(crate) threads: Option<String>,
    /// Where the admin HTTP server (API, metrics, dashboard) listens; `off` for none
    /// [key: admin.listen].
    #[arg(long, env = "ENSEMBLE_ADMIN", value_name = "HOST:PORT")]
    pub(crate) admin: Option<String>,
    /// The bearer token the admin API requires; required when it listens beyond loopback
    /// [key: admin.token].
    #[arg(
        long,
        env = "ENSEMBLE_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub(crate) admin_token: Option<String>,
    /// Stop when standard input closes (for a parent process that runs nodes as children).
    #[arg(long, hide = true)]
    pub(crate) exit_with_stdin: bool,
}

/// The config file, every key optional (defaults and overrides fill in).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    name: Option<String>,
    cluster: Option<String>,
    listen: Option<String>,
    join: Option<Vec<String>>,
    data_dir: Option<PathBuf>,
    certs: Option<PathBuf>,
    resources: Option<BTreeMap<String, u64>>,
    labels: Option<BTreeMap<String, String>>,
    apps: Option<bool>,
    log: Option<String>,
    threads: Option<usize>,
    #[serde(default)]
    admin: AdminSection,
    #[serde(default)]
    registry: RegistrySection,
}

/// `[admin]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminSection {
    listen: Option<String>,
    token: Option<String>,
}

/// `[registry]` in the config file: the registry's timing and voters. Durations are in
/// milliseconds; the defaults suit a LAN.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegistrySection {
    /// How many voters the leader keeps (default 3).
    voters: Option<usize>,
    /// Whether this node may vote (default true).
    voter: Option<bool>,
    /// A node is down this long after its last keepalive (default 1000).
    session_ttl_ms: Option<u64>,
    /// How often a node renews its session (default 100).
    keepalive_interval_ms: Option<u64>,
    /// How long a voter may be gone before another node takes its vote (default 30000).
    voter_grace_ms: Option<u64>,
    /// How long registry calls wait (default 5000).
    request_timeout_ms: Option<u64>,
    /// Raft heartbeats (default 50).
    heartbeat_interval_ms: Option<u64>,
    /// The election timeout's lower bound (default 150).
    election_timeout_min_ms: Option<u64>,
    /// The election timeout's upper bound (default 250).
    election_timeout_max_ms: Option<u64>,
    /// A voter snapshots its state after this many entries (default 5000).
    snapshot_every: Option<u64>,
    /// Entries a voter keeps before its latest snapshot (default 1000).
    log_kept_after_snapshot: Option<u64>,
}

/// A node's settings, resolved.
#[derive(Debug)]
pub(crate) struct NodeSettings {
    pub(crate) name: String,
    pub(crate) cluster: String,
    pub(crate) listen: SocketAddr,
    pub(crate) join: Vec<SocketAddr>,
    pub(crate) data_dir: PathBuf,
    pub(crate) certs: PathBuf,
    pub(crate) resources: BTreeMap<String, u64>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) apps: bool,
    pub(crate) log: String,
    pub(crate) threads: usize,
    pub(crate) admin: Option<AdminConfig>,
    pub(crate) registry: RegistryConfig,
}

/// Where a value came from, for error messages.
struct Origin<'a> {
    matches: &'a ArgMatches,
    file: Option<&'a Path>,
}

impl Origin<'_> {
    /// Where the value of the flag `id` (for the file key `key`) came from.
    fn of(&self, id: &str, flag: &str, var: &str) -> String {
        match self.matches.value_source(id) {
            Some(ValueSource::CommandLine) => format!("flag {flag}"),
            Some(ValueSource::EnvVariable) => format!("environment variable {var}"),
            _ => match self.file {
                Some(file) => format!("config file {}", file.display()),
                None => "defaults".to_owned(),
            },
        }
    }
}

/// The most worker threads a node's runtime may have.
const MAX_THREADS: usize = 1024;

fn bad(key: &str, origin: &str, problem: impl std::fmt::Display) -> String {
    format!("bad value for {key} (from {origin}): {problem}")
}

/// Resolves `ensemble node`'s settings from its flags (`matches` tells which were given on
/// the command line and which came from the environment) and its config file.
pub(crate) fn resolve(args: &NodeArgs, matches: &ArgMatches) -> Result<NodeSettings, String> {
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => FileConfig::default(),
    };
    let origin = Origin {
        matches,
        file: args.config.as_deref(),
    };

    let name = args.name.clone().or(file.name).ok_or_else(|| {
        "no node name: pass --name NAME, set ENSEMBLE_NAME, or set name in the config file"
            .to_owned()
    })?;
    // Names become paths (the default data dir `data/<name>`, certificate files): one made
    // of dots only would name the directory itself or its parent.
    if name.chars().all(|c| c == '.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(bad(
            "name",
            &origin.of("name", "--name", "ENSEMBLE_NAME"),
            format!(
                "{name:?} is not a node name: use 1 or more ASCII letters, digits, '-', '_' or '.', not dots alone"
            ),
        ));
    }
    let cluster = args
        .cluster
        .clone()
        .or(file.cluster)
        .unwrap_or_else(|| "ensemble".to_owned());

    let listen_origin = origin.of("listen", "--listen", "ENSEMBLE_LISTEN");
    let listen = match args.listen.clone().or(file.listen) {
        Some(text) => parse_addr(&text).map_err(|e| bad("listen", &listen_origin, e))?,
        None => SocketAddr::from(([127, 0, 0, 1], 7000)),
    };
    if listen.ip().is_unspecified() {
        // The node tells its peers this address to dial it back.
        return Err(bad(
            "listen",
            &listen_origin,
            format!(
                "{listen} is not an address peers can dial; give this machine's address that they reach, e.g. 10.0.0.2:{}",
                listen.port()
            ),
        ));
    }

    let join_origin = origin.of("join", "--join", "ENSEMBLE_JOIN");
    let join_texts = if args.join.is_empty() {
        file.join.unwrap_or_default()
    } else {
        args.join.clone()
    };
    // A blank entry (`--join=`, a template's unset variable) is refused, not skipped: an empty
    // list would start a new cluster where one was to be joined.
    let join = join_texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            if text.trim().is_empty() {
                return Err(bad(
                    &format!("join[{i}]"),
                    &join_origin,
                    "empty; give HOST:PORT of a member, or leave join out to start a new cluster",
                ));
            }
            parse_addr(text).map_err(|e| bad(&format!("join[{i}]"), &join_origin, e))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let data_dir = args
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("data").join(&name));
    let certs = args
        .certs
        .clone()
        .or(file.certs)
        .unwrap_or_else(|| PathBuf::from("certs"));

    let resources = if args.resources.is_empty() {
        file.resources.unwrap_or_default()
    } else {
        let from = origin.of("resources", "--resource", "ENSEMBLE_RESOURCES");
        pairs(&args.resources, "resources", &from, |v| {
            v.parse::<u64>()
                .map_err(|_| format!("{v:?} is not a whole number"))
        })?
    };
    let labels = if args.labels.is_empty() {
        file.labels.unwrap_or_default()
    } else {
        let from = origin.of("labels", "--label", "ENSEMBLE_LABELS");
        pairs(&args.labels, "labels", &from, |v| Ok(v.to_owned()))?
    };
    // The flag or variable, when given either way, overrides the file.
    let apps = match args.no_apps {
        Some(no_apps) => !no_apps,
        None => file.apps.unwrap_or(true),
    };
    let log = args
        .log
        .clone()
        .or(file.log)
        .unwrap_or_else(|| "info".to_owned());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log) {
        return Err(bad("log", &origin.of("log", "--log", "ENSEMBLE_LOG"), e));
    }

    let threads_origin = origin.of("threads", "--threads", "ENSEMBLE_THREADS");
    let threads = match &args.threads {
        Some(text) => text.trim().parse::<usize>().map_err(|_| {
            bad(
                "threads",
                &threads_origin,
                format!("{text:?} is not a whole number of threads"),
            )
        })?,
        None => file.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }),
    };
    if threads == 0 {
        return Err(bad(
            "threads",
            &threads_origin,
            "0 threads cannot run a node; give 1 or more",
        ));
    }
    // Each is an OS thread started with the runtime: far more than the cores only costs.
    if threads > MAX_THREADS {
        return Err(bad(
            "threads",
            &threads_origin,
            format!(
                "{threads} threads is more than the {MAX_THREADS} a node may start; give about one per core"
            ),
        ));
    }

    let admin_origin = origin.of("admin", "--admin", "ENSEMBLE_ADMIN");
    let admin = match args.admin.clone().or(file.admin.listen) {
        Some(text) if text == "off" => None,
        Some(text) => Some(parse_addr(&text).map_err(|e| {
            bad(
                "admin.listen",
                &admin_origin,
                format!("{e}, or off for no admin server"),
            )
        })?),
        None => Some(SocketAddr::from(([127, 0, 0, 1], 7070))),
    };
    // Trimmed as tokens in requests are, so that one with spaces around it still matches.
    let token = args
        .admin_token
        .clone()
        .or(file.admin.token)
        .map(|t| t.trim().to_owned());
    if token.as_deref().is_some_and(str::is_empty) {
        return Err(bad(
            "admin.token",
            &origin.of("admin_token", "--admin-token", "ENSEMBLE_ADMIN_TOKEN"),
            "the token is empty; give a long random string, or none on loopback",
        ));
    }
    // A token with characters an HTTP header cannot carry could never be sent, and every
    // call would be refused.
    if let Some(bad_char) = token.as_deref().and_then(super::client::not_for_a_header) {
        return Err(bad(
            "admin.token",
            &origin.of("admin_token", "--admin-token", "ENSEMBLE_ADMIN_TOKEN"),
            format!(
                "the token holds {bad_char:?}, which an HTTP header cannot carry; use printable ASCII (letters, digits, punctuation)"
            ),
        ));
    }
    let admin = admin.map(|listen| AdminConfig {
        listen,
        token,
        ..AdminConfig::default()
    });

    let registry = registry_config(&file.registry, &data_dir, &origin)?;
    let mut labels = labels;
    if file.registry.voter == Some(false) {
        labels.insert("registry.voter".into(), "no".into());
    }

    Ok(NodeSettings {
        name,
        cluster,
        listen,
        join,
        data_dir,
        certs,
        resources,
        labels,
        apps,
        log,
        threads,
        admin,
        registry,
    })
}

fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        format!(
            "config file {} is invalid: {}",
            path.display(),
            e.to_string().trim_end()
        )
    })
}

fn registry_config(
    section: &RegistrySection,
    data_dir: &Path,
    origin: &Origin<'_>,
) -> Result<RegistryConfig, String> {
    let mut config = RegistryConfig::new(data_dir);
    let ms = Duration::from_millis;
    if let Some(voters) = section.voters {
        config.voters = voters;
    }
    if let Some(v) = section.session_ttl_ms {
        config.session_ttl = ms(v);
    }
    if let Some(v) = section.keepalive_interval_ms {
        config.keepalive_interval = ms(v);
    }
    if let Some(v) = section.voter_grace_ms {
        config.voter_grace = ms(v);
    }
    if let Some(v) = section.request_timeout_ms {
        config.request_timeout = ms(v);
    }
    if let Some(v) = section.heartbeat_interval_ms {
        config.heartbeat_interval = ms(v);
    }
    if let Some(v) = section.election_timeout_min_ms {
        config.election_timeout.0 = ms(v);
    }
    if let Some(v) = section.election_timeout_max_ms {
        config.election_timeout.1 = ms(v);
    }
    if let Some(v) = section.snapshot_every {
        config.snapshot_every = v;
    }
    if let Some(v) = section.log_kept_after_snapshot {
        config.log_kept_after_snapshot = v;
    }
    config.validate().map_err(|problem| {
        let from = match origin.file {
            Some(file) => format!("config file {}", file.display()),
            None => "defaults".to_owned(),
        };
        // The registry names its settings as its Rust API does; the file's keys of durations
        // end in `_ms`.
        let key = [
            ("session_ttl", "session_ttl_ms"),
            ("keepalive_interval", "keepalive_interval_ms"),
            ("voter_grace", "voter_grace_ms"),
            ("request_timeout", "request_timeout_ms"),
            ("heartbeat_interval", "heartbeat_interval_ms"),
            (
                "election_timeout",
                "election_timeout_min_ms and election_timeout_max_ms",
            ),
        ]
        .into_iter()
        .find(|(field, _)| problem.starts_with(&format!("registry.{field} ")));
        let hint = key.map_or(String::new(), |(_, key)| {
            format!(" (in the config file: [registry] {key}, in milliseconds)")
        });
        format!("bad registry settings (from {from}): {problem}{hint}")
    })?;
    Ok(config)
}

/// Parses `HOST:PORT`, resolving a host name to its first address.
pub(crate) fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let expected = "expected HOST:PORT such as 127.0.0.1:7000 or node1.example.com:7000";
    if !text.contains(':') {
        return Err(format!("{text:?} has no port; {expected}"));
    }
    match text.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{text:?} resolves to no address; {expected}")),
        Err(e) => Err(format!("{text:?} is not an address ({e}); {expected}")),
    }
}

/// Parses `KEY=VALUE` items into a map.
fn pairs<V>(
    items: &[String],
    key: &str,
    origin: &str,
    value: impl Fn(&str) -> Result<V, String>,
) -> Result<BTreeMap<String, V>, String> {
    let mut map = BTreeMap::new();
    for item in items.iter().filter(|i| !i.trim().is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            return Err(bad(
                key,
                origin,
                format!("{item:?} is not KEY=VALUE (say cpu=4000)"),
            ));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(bad(
                key,
                origin,
                format!("{item:?} has no key before '=' (say cpu=4000)"),
            ));
        }
        let v = value(v.trim()).map_err(|e| bad(&format!("{key}.{k}"), origin, e))?;
        if map.insert(k.to_owned(), v).is_some() {
            return Err(bad(
                &format!("{key}.{k}"),
                origin,
                format!("{k:?} is given twice; give each key once"),
            ));
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        node: NodeArgs,
    }

    fn resolve_args(args: &[&str]) -> Result<NodeSettings, String> {
        let matches = Wrapper::command()
            .try_get_matches_from(std::iter::once("node").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        let wrapper = Wrapper::from_arg_matches(&matches).map_err(|e| e.to_string())?;
        resolve(&wrapper.node, &matches)
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write config");
        file
    }

    #[test]
    fn defaults_fill_in_what_is_not_given() {
        let settings = resolve_args(&["--name", "n1"]).expect("valid");
        assert_eq!(settings.listen, "127.0.0.1:7000".parse().unwrap());
        assert!(settings.join.is_empty());
        assert_eq!(settings.data_dir, PathBuf::from("data/n1"));
        assert_eq!(settings.cluster, "ensemble");
        assert_eq!(
            settings.admin.as_ref().map(|a| a.listen),
            Some("127.0.0.1:7070".parse().unwrap())
        );
        assert!(settings.apps);
    }

    #[test]
    fn flags_override_the_file() {
        let config = file(
            "name = \"from-file\"\nlisten = \"127.0.0.1:9000\"\njoin = [\"127.0.0.1:9001\"]\n\
             [resources]\ncpu = 2000\n[registry]\nsession_ttl_ms = 2000\nvoter_grace_ms = 45000\n",
        );
        let path = config.path().to_str().unwrap();
        let settings =
            resolve_args(&["--config", path, "--listen", "127.0.0.1:9100"]).expect("valid");
        assert_eq!(settings.name, "from-file");
        assert_eq!(settings.listen, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(settings.join, vec!["127.0.0.1:9001".parse().unwrap()]);
        assert_eq!(settings.resources.get("cpu"), Some(&2000));
        assert_eq!(settings.registry.session_ttl, Duration::from_secs(2));
        assert_eq!(settings.registry.voter_grace, Duration::from_secs(45));
    }

    #[test]
    fn a_bad_flag_value_names_the_key_and_the_flag() {
        let err = resolve_args(&["--name", "n1", "--listen", "nowhere"]).unwrap_err();
        assert!(
            err.contains("listen") && err.contains("flag --listen"),
            "{err}"
        );
        assert!(err.contains("HOST:PORT"), "{err}");
        let err = resolve_args(&["--name", "n1", "--resource", "cpu=lots"]).unwrap_err();
        assert!(
            err.contains("resources.cpu") && err.contains("whole number"),
            "{err}"
        );
    }

    #[test]
    fn threads_default_to_one_per_core_and_refuse_zero() {
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(resolve_args(&["--name", "n1"]).unwrap().threads, cores);
        let config = file("name = \"n1\"\nthreads = 3\n");
        let path = config.path().to_str().unwrap();
        assert_eq!(resolve_args(&["--config", path]).unwrap().threads, 3);
        let settings = resolve_args(&["--config", path, "--threads", "1"]).unwrap();
        assert_eq!(settings.threads, 1);
        let err = resolve_args(&["--name", "n1", "--threads", "0"]).unwrap_err();
        assert!(
            err.contains("threads") && err.contains("flag --threads") && err.contains("1 or more"),
            "{err}"
        );
        let err = resolve_args(&["--name", "n1", "--threads", "1000000"]).unwrap_err();
        assert!(
            err.contains("flag --threads") && err.contains("more than the 1024"),
            "{err}"
        );
        let err = resolve_args(&["--name", "n1", "--threads", "many"]).unwrap_err();
        assert!(err.contains("\"many\" is not a whole number"), "{err}");
        let config = file("name = \"n1\"\nthreads = 0\n");
        let path = config.path().to_str().unwrap();
        let err = resolve_args(&["--config", path]).unwrap_err();
        assert!(err.contains(path) && err.contains("1 or more"), "{err}");
    }

    #[test]
    fn a_bad_file_names_the_file_and_the_key() {
        let config = file("name = \"n1\"\nlisen = \"127.0.0.1:9000\"\n");
        let path = config.path().to_str().unwrap();
        let err = resolve_args(&["--config", path]).unwrap_err();
        assert!(err.contains(path) && err.contains("lisen"), "{err}");

        let config = file("name = \"n1\"\n[registry]\nsession_ttl_ms = \"long\"\n");
        let path = config.path().to_str().unwrap();
        let err = resolve_args(&["--config", path]).unwrap_err();
        assert!(err.contains("session_ttl_ms"), "{err}");

        let config = file("name = \"n1\"\n[registry]\nkeepalive_interval_ms = 900\n");
        let path = config.path().to_str().unwrap();
        let err = resolve_args(&["--config", path]).unwrap_err();
        assert!(err.contains("registry.keepalive_interval"), "{err}");

        let config = file("name = \"n1\"\n[registry]\nvoter_grace_ms = 0\n");
        let path = config.path().to_str().unwrap();
        let err = resolve_args(&["--config", path]).unwrap_err();
        assert!(
            err.contains("voter_grace_ms") && err.contains(path),
            "{err}"
        );
    }

    #[test]
    fn a_missing_name_says_how_to_give_one() {
        let err = resolve_args(&[]).unwrap_err();
        assert!(
            err.contains("--name") && err.contains("ENSEMBLE_NAME"),
            "{err}"
        );
        let err = resolve_args(&["--name", "my node"]).unwrap_err();
        assert!(err.contains("not a node name"), "{err}");
    }

    #[test]
    fn apps_follow_the_file_unless_the_flag_or_variable_says_otherwise() {
        assert!(resolve_args(&["--name", "n1"]).unwrap().apps);
        assert!(!resolve_args(&["--name", "n1", "--no-apps"]).unwrap().apps);
        let config = file("name = \"n1\"\napps = false\n");
        let path = config.path().to_str().unwrap();
        assert!(!resolve_args(&["--config", path]).unwrap().apps);
        // The flag overrides the file either way.
        assert!(
            resolve_args(&["--config", path, "--no-apps=false"])
                .unwrap()
                .apps
        );
        // The values people give the variable (which shares the flag's parser): 1, true, yes;
        // and 0 or false to take instances whatever the file says.
        for (value, apps) in [
            ("1", false),
            ("true", false),
            ("yes", false),
            ("0", true),
            ("false", true),
        ] {
            let flag = format!("--no-apps={value}");
            let settings = resolve_args(&["--config", path, &flag]).expect("valid");
            assert_eq!(settings.apps, apps, "ENSEMBLE_NO_APPS={value}");
        }
    }

    #[test]
    fn admin_can_be_turned_off() {
        let settings = resolve_args(&["--name", "n1", "--admin", "off"]).expect("valid");
        assert!(settings.admin.is_none());
    }
}
