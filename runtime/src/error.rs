//! Errors of the local runtime, one enum per operation, each naming the actor or name concerned.

use std::fmt;
use std::time::Duration;

use crate::exit::ExitReason;
use crate::id::{ActorId, NodeId};

/// A message could not be put into a mailbox; the message is handed back.
#[derive(thiserror::Error)]
pub enum TellError<M> {
    /// The actor has stopped (or is stopping and no longer accepts messages).
    #[error("actor {actor} is stopped; the message was not delivered")]
    Dead {
        /// The receiver.
        actor: ActorId,
        /// The message, handed back.
        message: M,
    },
    /// The actor's node cannot be reached (not connected), or the message cannot be encoded
    /// for it.
    #[error("cannot reach actor {actor}: {reason}")]
    Unreachable {
        /// The receiver.
        actor: ActorId,
        /// The message, handed back.
        message: M,
        /// Why.
        reason: String,
    },
    /// The mailbox is at capacity (only `try_tell` reports this; `tell` waits instead).
    #[error(
        "mailbox of actor {actor} is full ({capacity} messages); wait with `tell` or retry later"
    )]
    Full {
        /// The receiver.
        actor: ActorId,
        /// The message, handed back.
        message: M,
        /// The mailbox capacity that was reached.
        capacity: usize,
    },
}

impl<M> TellError<M> {
    /// The undelivered message.
    pub fn into_message(self) -> M {
        match self {
            TellError::Dead { message, .. }
            | TellError::Full { message, .. }
            | TellError::Unreachable { message, .. } => message,
        }
    }

    /// The actor the message was for.
    pub fn actor(&self) -> &ActorId {
        match self {
            TellError::Dead { actor, .. }
            | TellError::Full { actor, .. }
            | TellError::Unreachable { actor, .. } => actor,
        }
    }

    /// True if the receiver has stopped.
    pub fn is_dead(&self) -> bool {
        matches!(self, TellError::Dead { .. })
    }
}

impl<M> fmt::Debug for TellError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TellError::Dead { actor, .. } => f.debug_struct("Dead").field("actor", actor).finish(),
            TellError::Unreachable { actor, reason, .. } => f
                .debug_struct("Unreachable")
                .field("actor", actor)
                .field("reason", reason)
                .finish(),
            TellError::Full {
                actor, capacity, ..
            } => f
                .debug_struct("Full")
                .field("actor", actor)
                .field("capacity", capacity)
                .finish(),
        }
    }
}

/// An `ask` that did not produce a reply. It always completes: it never hangs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// The actor had stopped before the request could be delivered.
    #[error("actor {actor} is stopped; the request was not delivered")]
    Dead {
        /// The actor asked.
        actor: ActorId,
    },
    /// No reply within the timeout; a late reply is discarded.
    #[error("actor {actor} did not reply within {after:?}")]
    Timeout {
        /// The actor asked.
        actor: ActorId,
        /// The timeout that passed.
        after: Duration,
    },
    /// The actor stopped before replying.
    #[error("actor {actor} stopped ({reason}) before replying")]
    Stopped {
        /// The actor asked.
        actor: ActorId,
        /// Why it stopped.
        reason: ExitReason,
    },
    /// The actor dropped the `ReplyTo` without replying.
    #[error("actor {actor} dropped the reply handle without replying")]
    Dropped {
        /// The actor asked.
        actor: ActorId,
    },
    /// The actor's node refused the request: a message of the wrong type for the actor, one
    /// it could not decode, a full mailbox, or a reply that could not be decoded.
    #[error("actor {actor} refused the request: {reason}")]
    Refused {
        /// The actor asked.
        actor: ActorId,
        /// Why.
        reason: String,
    },
    /// The actor's node could not be reached, or the request could not be encoded: the
    /// request was not sent, so sending it again cannot make it run twice.
    #[error("cannot reach actor {actor}: {reason}")]
    Unreachable {
        /// The actor asked.
        actor: ActorId,
        /// Why.
        reason: String,
    },
    /// The connection that carried the request ended before the reply came, and the node
    /// was not declared down first: a connection closed and dialed again, or a node that
    /// died and is not declared down yet. The request may or may not have been handled:
    /// like a timeout, and unlike [`Unreachable`](Self::Unreachable), sending it again may
    /// run it twice. Erlang's `gen_server:call` fails the same way.
    #[error(
        "the connection to the node of actor {actor} ended before it replied; the request \
         may or may not have been handled"
    )]
    ConnectionLost {
        /// The actor asked.
        actor: ActorId,
    },
}

/// An actor could not be spawned or failed to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpawnError {
    /// The node is shutting down and accepts no new actors.
    #[error("node {node} is shutting down; no new actors can be spawned")]
    ShuttingDown {
        /// The node.
        node: NodeId,
    },
    /// The local name requested in the spawn options is held by another live actor.
    #[error("cannot spawn {type_name}: local name {name:?} is held by actor {holder}")]
    NameTaken {
        /// The actor type that was to be spawned.
        type_name: &'static str,
        /// The name.
        name: String,
        /// The actor holding it.
        holder: ActorId,
    },
    /// Another node could not start the actor: no such module, arguments that do not decode,
    /// a failing start, or the node could not be reached.
    #[error("cannot start module {module:?} on node {node}: {reason}")]
    Remote {
        /// The node asked.
        node: NodeId,
        /// The module.
        module: String,
        /// Why.
        reason: String,
    },
    /// The actor's `started` hook returned an error or panicked, or it was stopped before it
    /// finished starting.
    #[error("actor {actor} ({type_name}) failed to start: {reason}")]
    StartFailed {
        /// The actor that failed.
        actor: ActorId,
        /// Its type.
        type_name: &'static str,
        /// Why it ended.
        reason: ExitReason,
    },
}

/// A local name could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// Another live actor holds the name.
    #[error(
        "local name {name:?} is held by actor {holder}; unregister it first or pick another name"
    )]
    NameTaken {
        /// The name.
        name: String,
        /// Its holder.
        holder: ActorId,
    },
    /// Only actors of this node can hold its local names.
    #[error("cannot register local name {name:?}: actor {actor} runs on another node")]
    NotLocal {
        /// The name.
        name: String,
        /// The remote actor.
        actor: ActorId,
    },
    /// The actor to register has stopped.
    #[error("cannot register local name {name:?}: actor {actor} is stopped")]
    Stopped {
        /// The name.
        name: String,
        /// The stopped actor.
        actor: ActorId,
    },
}

/// A name lookup found nothing usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No live actor holds the name.
    #[error("no live actor is registered under local name {name:?}")]
    NotFound {
        /// The name.
        name: String,
    },
    /// The actor under the name takes another message type than the one asked for.
    #[error(
        "name {name:?} holds actor {actor} ({type_name}), which does not take messages of type {expected}"
    )]
    WrongType {
        /// The name.
        name: String,
        /// The actor found.
        actor: ActorId,
        /// The actor's type.
        type_name: &'static str,
        /// The message type asked for.
        expected: &'static str,
    },
    /// The node to look on could not be asked.
    #[error("cannot look up {name:?} on node {node}: {reason}")]
    Unreachable {
        /// The name.
        name: String,
        /// The node.
        node: NodeId,
        /// Why.
        reason: String,
    },
}

/// The error an actor hook returns to end the actor with [`ExitReason::Failed`].
///
/// Any `std::error::Error` converts into it, so handlers can use `?`; `ActorError::new` makes
/// one from a message. (Like `anyhow::Error`, it does not implement `Error` itself, so that the
/// blanket conversion can exist.)
pub struct ActorError {
    message: String,
}

impl ActorError {
    /// An error with this message.
    pub fn new(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
        }
    }

    /// The message, as the exit reason will carry it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for ActorError {
    fn from(err: E) -> Self {
        // Keep the chain of causes: the exit reason is often all an operator sees.
        let mut message = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self { message }
    }
}

impl fmt::Debug for ActorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorError({:?})", self.message)
    }
}

impl fmt::Display for ActorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn actor_error_keeps_the_cause_chain() {
        let err: ActorError = Outer(std::io::Error::other("disk gone")).into();
        assert_eq!(err.message(), "outer: disk gone");
    }

    #[test]
    fn tell_error_names_the_actor_and_hands_back_the_message() {
        let actor = ActorId::new(NodeId::new("n1", 1), 3);
        let err = TellError::Full {
            actor: actor.clone(),
            message: 17u32,
            capacity: 4,
        };
        assert!(err.to_string().contains("<n1#1.3>"));
        assert!(!err.is_dead());
        assert_eq!(err.into_message(), 17);
    }
}
