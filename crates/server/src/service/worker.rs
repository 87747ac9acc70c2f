//! What the background workers (the period closer, the threshold notifier) share: each runs its
//! round item by item, and one item's failure — an error or a panic — is logged, counted in
//! `tally_worker_failures_total{worker}` and skipped, so the worker never dies and the other items
//! are done all the same.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

use crate::error::ApiError;
use crate::state::AppState;

/// The period closer's name in logs and metrics.
pub const CLOSER: &str = "closer";
/// The threshold notifier's name in logs and metrics.
pub const NOTIFIER: &str = "notifier";
/// The webhook delivery worker's name in logs and metrics.
pub const DELIVERER: &str = "deliverer";
/// The automatic top-up worker's name in logs and metrics.
pub const TOPUPS: &str = "topups";
/// Its name in logs and metrics when it sends customer emails.
pub const EMAILER: &str = "emailer";

/// Runs one item of `worker`'s round; `None` when it failed (logged and counted).
///
/// A panic is caught here rather than in a task of its own because items borrow the round's
/// state. Unwinding through it is safe: shared state sits behind locks whose poisoning every user
/// tolerates, and the store changes nothing outside a committed transaction.
pub async fn run_item<T>(
    state: &AppState,
    worker: &'static str,
    item: &str,
    work: impl Future<Output = Result<T, ApiError>>,
) -> Option<T> {
    match AssertUnwindSafe(work).catch_unwind().await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::warn!(worker, item, error = %e, "background work failed; skipped this round");
            state.metrics.add_worker_failure(worker);
            None
        }
        Err(panic) => {
            tracing::error!(
                worker,
                item,
                panic = panic_message(&*panic),
                "background work panicked; skipped this round"
            );
            state.metrics.add_worker_failure(worker);
            None
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}
