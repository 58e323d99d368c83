//! Node configuration.

use std::time::Duration;

/// How a node runs: its name and the defaults for its actors.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub(crate) name: String,
    pub(crate) incarnation: Option<u64>,
    pub(crate) mailbox_capacity: usize,
    pub(crate) shutdown_timeout: Duration,
}

/// Default mailbox capacity: enough to absorb bursts, small enough that a stuck actor
/// pushes back on its senders quickly.
pub const DEFAULT_MAILBOX_CAPACITY: usize = 1024;

/// Default time `Node::shutdown` gives actors to stop before killing them.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

impl NodeConfig {
    /// A configuration with defaults for a node of this name.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            incarnation: None,
            mailbox_capacity: DEFAULT_MAILBOX_CAPACITY,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }

    /// The incarnation number; by default the start time in microseconds since the Unix epoch,
    /// so every start of a node is a new incarnation.
    pub fn incarnation(mut self, incarnation: u64) -> Self {
        self.incarnation = Some(incarnation);
        self
    }

    /// The mailbox capacity of actors spawned without one of their own.
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        self.mailbox_capacity = capacity;
        self
    }

    /// How long `Node::shutdown` waits for actors to stop before killing them.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The node name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let name_ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(ConfigError {
                key: "name",
                problem: format!(
                    "{:?} is not a node name: use 1 or more ASCII letters, digits, '-', '_' or '.'",
                    self.name
                ),
            });
        }
        if self.mailbox_capacity == 0 {
            return Err(ConfigError {
                key: "mailbox_capacity",
                problem: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// A configuration value is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid node configuration `{key}`: {problem}")]
pub struct ConfigError {
    /// The offending key.
    pub key: &'static str,
    /// What is wrong and what is expected.
    pub problem: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_and_capacities_are_refused_with_the_key() {
        let err = NodeConfig::new("has space").validate().unwrap_err();
        assert_eq!(err.key, "name");
        assert!(err.to_string().contains("has space"));
        assert_eq!(NodeConfig::new("").validate().unwrap_err().key, "name");
        let err = NodeConfig::new("n1")
            .mailbox_capacity(0)
            .validate()
            .unwrap_err();
        assert_eq!(err.key, "mailbox_capacity");
        assert!(NodeConfig::new("n1.a-b_c").validate().is_ok());
    }
}
