//! Accepting and bounding the admin server's connections, each served by hyper in a task of
//! its own.
//!
//! axum's `serve` bounds nothing; this loop bounds what a client can hold, so that clients
//! which connect and then stall cannot take the file descriptors the node's registry and
//! cluster need:
//! - the connections open at once (more are closed as they are accepted);
//! - the time to send a request's headers, idle time between requests included (hyper's
//!   header timeout);
//! - the time a write of an answer may make no progress ([`StallGuard`]): a client that stops
//!   reading would otherwise hold its connection for good.
//!
//! The time a request may take, its body included, is bounded by the guard (`guard.rs`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;

/// What a failed `accept` (out of file descriptors, say) waits before the next, so the loop
/// does not spin on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The bounds of one server's connections.
pub(super) struct Bounds {
    /// Connections open at once.
    pub(super) max_connections: usize,
    /// Until a request's headers are in (idle time before them included).
    pub(super) header_timeout: Duration,
    /// How long a write of an answer may make no progress.
    pub(super) write_stall: Duration,
    /// How long requests in progress get to finish once the server stops.
    pub(super) grace: Duration,
}

/// Accepts connections on `listener` until `stopped`, serving each with `router` within
/// `bounds`. Then it closes the listener at once, and gives the open connections `grace`
/// to finish their requests before it ends them.
pub(super) async fn serve(
    listener: TcpListener,
    router: axum::Router,
    bounds: Bounds,
    mut stopped: oneshot::Receiver<()>,
) {
    let permits = Arc::new(Semaphore::new(bounds.max_connections));
    let graceful = GracefulShutdown::new();
    let service = TowerToHyperService::new(router);
    let mut connections = JoinSet::new();
    loop {
        let (stream, from) = tokio::select! {
            _ = &mut stopped => break,
            // Reaps the tasks of connections that ended.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot accept an admin connection; trying again shortly");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%from, max = bounds.max_connections, "admin connection refused: too many open");
            metrics::counter!("ensemble_admin_connections_refused_total").increment(1);
            continue;
        };
        let io = TokioIo::new(StallGuard::new(stream, bounds.write_stall));
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(bounds.header_timeout)
            .serve_connection(io, service.clone());
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%from, error = %err, "admin connection ended");
            }
            drop(permit);
        });
    }
    // No new connection from here: a client connecting now is refused, not left waiting in
    // the backlog, and the address is free for a new server.
    drop(listener);
    // Idle connections close at once, the others after their request in progress.
    if tokio::time::timeout(bounds.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?bounds.grace, open = connections.len(), "admin requests still running after the grace period; ending them");
    }
    connections.shutdown().await;
}

/// A connection whose writes fail once one has made no progress for `stall`.
pub(super) struct StallGuard<S> {
    inner: S,
    stall: Duration,
    /// Set when a write first found no room, cleared when one makes progress.
    blocked: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> StallGuard<S> {
    pub(super) fn new(inner: S, stall: Duration) -> Self {
        StallGuard {
            inner,
            stall,
            blocked: None,
        }
    }

    /// After a write found no room: whether it has waited `stall` since the first that found
    /// none (if not, the caller is woken when it has).
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let stall = self.stall;
        let blocked = self
            .blocked
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        blocked.as_mut().poll(cx).is_ready()
    }

    fn outcome<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending if self.stalled(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing of the answer for {:?}", self.stall),
            ))),
            Poll::Pending => Poll::Pending,
            ready => {
                self.blocked = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.outcome(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.outcome(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.outcome(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.outcome(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A writer whose reader reads nothing fails after the stall; one whose reader keeps
    /// reading, however slowly, does not.
    #[tokio::test(start_paused = true)]
    async fn a_write_fails_only_after_making_no_progress_for_the_stall() {
        let stall = Duration::from_secs(5);
        let (server, _client) = tokio::io::duplex(64);
        let mut guarded = StallGuard::new(server, stall);
        let started = tokio::time::Instant::now();
        let err = guarded.write_all(&[7; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), stall);

        let (server, mut client) = tokio::io::duplex(64);
        let mut guarded = StallGuard::new(server, stall);
        let reader = tokio::spawn(async move {
            let mut buf = [0; 32];
            let mut read = 0;
            while read < 1024 {
                tokio::time::sleep(stall / 2).await;
                read += client.read(&mut buf).await.unwrap();
            }
        });
        guarded.write_all(&[7; 1024]).await.expect("a slow reader");
        reader.await.unwrap();
    }
}
