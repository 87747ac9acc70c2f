//! Upkeep of the metrics and a cheap reachability check of Stripe.
//!
//! Histogram samples are folded into their buckets every few seconds (so they do not pile up
//! between scrapes). When Stripe is configured and Tally has not talked to it for
//! [`STRIPE_PING_AFTER`], one cheap request (`GET /v1/events?limit=1`) refreshes what
//! `/health` and `tally_stripe_reachable` say: probes read the last result, never call Stripe.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::state::AppState;

/// How often the metrics' upkeep runs.
const UPKEEP: Duration = Duration::from_secs(5);
/// Stripe is pinged after this long without any request to it.
pub const STRIPE_PING_AFTER: Duration = Duration::from_secs(60);

/// Runs until `stop` turns true.
pub fn spawn(state: AppState, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut last_ping = Instant::now();
        loop {
            state.metrics.upkeep();
            if let Some(client) = &state.stripe {
                let quiet = state.stripe_status.since_last_request();
                let due = quiet.is_none_or(|q| q >= STRIPE_PING_AFTER)
                    && last_ping.elapsed() >= STRIPE_PING_AFTER;
                if due {
                    last_ping = Instant::now();
                    let filter = tally_stripe::EventFilter {
                        limit: Some(1),
                        ..Default::default()
                    };
                    // The observer records the outcome; an error here is what it records.
                    if let Err(e) = client.events(&filter).await {
                        tracing::warn!(error = %e, "Stripe reachability check failed");
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(UPKEEP) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
}
