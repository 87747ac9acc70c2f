//! What another process sharing the database changed, followed without a restart: Tally's clock
//! moved by `tally clock advance` (the offset it persisted) and allowance anchors moved by a
//! mirrored Stripe subscription (the store's anchor version, which drops the cached anchors).
//!
//! Both are read every [`EVERY`]: two single-row reads, so a change made through one process is
//! seen by every other within that time.

use std::time::Duration;

use tokio::sync::watch;

use crate::error::ApiError;
use crate::service::worker;
use crate::state::AppState;

/// The worker's name in logs and metrics.
pub const WORKER: &str = "sync";
/// How often the shared values are read.
pub const EVERY: Duration = Duration::from_millis(200);

/// Runs until `stop` turns true.
pub fn spawn(state: AppState, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut seen: Option<i64> = None;
        loop {
            if let Some(v) =
                worker::run_item(&state, WORKER, "anchors", anchors(&state, seen)).await
            {
                seen = Some(v);
            }
            if state.config.movable_clock {
                worker::run_item(&state, WORKER, "clock", clock(&state)).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
}

/// Drops the cached anchors when the version moved since `seen`; returns the version read.
async fn anchors(state: &AppState, seen: Option<i64>) -> Result<i64, ApiError> {
    let v = state.store.anchor_version().await?;
    if seen.is_some_and(|s| s != v) {
        forget_anchors(state);
    }
    Ok(v)
}

/// Forgets every cached allowance anchor and customer record: the next use reads the store.
pub fn forget_anchors(state: &AppState) {
    if let Ok(mut cache) = state.anchors.write() {
        cache.clear();
    }
    state.credits.forget_all();
}

/// Moves this process's clock to the offset the store holds.
async fn clock(state: &AppState) -> Result<(), ApiError> {
    // An advance through this process writes the offset before it moves the clock: read the
    // offset only when none is under way, so it is never applied twice.
    let Ok(_one) = super::clock::ADVANCING.try_lock() else {
        return Ok(());
    };
    let Some(ms) = state.store.clock_offset().await? else {
        return Ok(());
    };
    let by = chrono::Duration::milliseconds(ms) - state.clock.shifted();
    if by != chrono::Duration::zero() {
        state.clock.shift(by);
        tracing::info!(
            moved_ms = by.num_milliseconds(),
            "Tally's clock follows an advance made through another process"
        );
    }
    Ok(())
}
