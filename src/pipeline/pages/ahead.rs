//! Pages read ahead of their turn: up to `parallel` of one answer in flight at once, from the read
//! of its head to the last byte passed, each started in order once its org has a slot for it, and
//! handed to the delivery in order.

use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use super::passing::PageError;
use super::{Ctx, PageCall, Read};
use crate::common::request_id::with_current_request;

/// A page being read, in its place; the read stops if the delivery drops it.
pub(super) struct Pending(
    Option<JoinHandle<Result<Read, PageError>>>,
    Option<PageError>,
);

impl Pending {
    /// The page's answer, once its head has come.
    pub(super) async fn outcome(mut self) -> Result<Read, PageError> {
        if let Some(error) = self.1.take() {
            return Err(error);
        }
        let Some(handle) = self.0.as_mut() else {
            return Err(PageError::unexpected("a page", "it was read twice"));
        };
        let outcome = handle.await;
        self.0 = None;
        outcome.unwrap_or_else(|e| {
            Err(PageError::unexpected(
                "a page",
                format!("its read failed: {e}"),
            ))
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(handle) = &self.0 {
            handle.abort();
        }
    }
}

/// Reads the pages `calls` names, up to `parallel` at once, handed on in order; a problem in
/// place of a page is handed on in its place, and nothing after it is read.
pub(super) fn read(
    ctx: Arc<Ctx>,
    mut calls: mpsc::Receiver<Result<PageCall, PageError>>,
    parallel: usize,
) -> mpsc::Receiver<Pending> {
    let (to, reads) = mpsc::channel(parallel.max(1));
    let turns = Arc::new(Semaphore::new(parallel.max(1)));
    tokio::spawn(with_current_request(async move {
        loop {
            // A turn is held from the read's start to its page's last byte passed.
            let Ok(turn) = turns.clone().acquire_owned().await else {
                return;
            };
            // The delivery gone (its caller went away), nothing more is waited for or read: the
            // pages' source sees its receiver go.
            let called = tokio::select! {
                called = calls.recv() => called,
                () = to.closed() => return,
            };
            let pending = match called {
                None => return,
                Some(Err(error)) => Pending(None, Some(error)),
                Some(Ok(page)) => {
                    // The slot is taken here, in page order, so the pages an answer holds slots
                    // for are always the next ones it passes: it never waits on its own.
                    // So is the org's long-running slot of the fleet.
                    let taken = async {
                        let slot = ctx.slot(&page).await?;
                        let reserved = ctx.reserve(&page).await?;
                        Ok::<_, PageError>((slot, reserved))
                    };
                    let taken = tokio::select! {
                        taken = taken => taken,
                        () = to.closed() => return,
                    };
                    let (slot, reserved) = match taken {
                        Ok(taken) => taken,
                        Err(error) => {
                            let _ = to.send(Pending(None, Some(error))).await;
                            return;
                        }
                    };
                    let ctx = ctx.clone();
                    let reading = with_current_request(async move {
                        let answer = ctx.read(&page, reserved).await?;
                        Ok(Read {
                            page,
                            answer,
                            _held: (Some(turn), slot),
                        })
                    });
                    Pending(Some(tokio::spawn(reading)), None)
                }
            };
            let stop = pending.1.is_some();
            if to.send(pending).await.is_err() || stop {
                return;
            }
        }
    }));
    reads
}
