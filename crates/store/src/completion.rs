//! The asynchronous confirmation of a submitted batch.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::StoreError;

/// Resolves once a submitted batch is durable (or failed). Runtime-agnostic: a store's writer
/// thread completes it through the paired [`Completer`].
#[derive(Debug)]
pub struct Completion {
    inner: CompletionInner,
}

#[derive(Debug)]
enum CompletionInner {
    Ready(Option<Result<(), StoreError>>),
    Pending(oneshot::Receiver<Result<(), StoreError>>),
}

/// The writer's end of a [`Completion`].
#[derive(Debug)]
pub struct Completer(oneshot::Sender<Result<(), StoreError>>);

impl Completion {
    /// A completion that is already resolved.
    pub fn ready(result: Result<(), StoreError>) -> Completion {
        Completion {
            inner: CompletionInner::Ready(Some(result)),
        }
    }

    /// A pending completion and the handle that resolves it.
    pub fn pair() -> (Completer, Completion) {
        let (tx, rx) = oneshot::channel();
        (
            Completer(tx),
            Completion {
                inner: CompletionInner::Pending(rx),
            },
        )
    }

    /// True when the result is already known (a store that confirms synchronously, or a
    /// refusal), so a caller may act on it without waiting.
    pub fn is_ready(&self) -> bool {
        matches!(self.inner, CompletionInner::Ready(_))
    }

    /// Blocks the current thread until resolved; for tests and non-async callers only.
    pub fn wait_blocking(self) -> Result<(), StoreError> {
        match self.inner {
            CompletionInner::Ready(r) => r.unwrap_or(Err(StoreError::Closed)),
            CompletionInner::Pending(rx) => rx.blocking_recv().unwrap_or(Err(StoreError::Closed)),
        }
    }
}

impl Completer {
    /// Resolves the paired completion. A dropped [`Completion`] is not an error: the caller
    /// simply stopped waiting.
    pub fn complete(self, result: Result<(), StoreError>) {
        let _ = self.0.send(result);
    }
}

impl Future for Completion {
    type Output = Result<(), StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.inner {
            CompletionInner::Ready(r) => Poll::Ready(r.take().unwrap_or(Err(StoreError::Closed))),
            // A dropped Completer means the store went away without answering: report it as
            // closed rather than pretending the batch is durable.
            CompletionInner::Pending(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(StoreError::Closed))),
        }
    }
}
