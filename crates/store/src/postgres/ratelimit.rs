//! Rate limits counted in the database, so that every process sharing it admits together exactly
//! the configured rate (see `tally_server::ratelimit` for the GCRA they implement).
//!
//! Time is the database server's clock (`clock_timestamp()`): one clock for every process counting
//! a key, whatever their own clocks say.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;

use crate::Result;

/// Rows whose window has passed are deleted every this many admissions (such a row admits
/// exactly like a missing one, so deleting it changes nothing).
const PRUNE_EVERY: u64 = 4096;

const NOW_US: &str = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint";

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 4)
}

/// Admits one request of `key` (one request per `interval`, bursts up to `burst` ahead), or
/// returns how long to wait. An admission is one statement.
pub(crate) async fn admit(
    pool: &Pool,
    admissions: &AtomicU64,
    key: &str,
    interval: Duration,
    burst: Duration,
) -> Result<Option<Duration>> {
    let (interval, burst) = (micros(interval), micros(burst));
    let c = pool.get().await?;
    let stmt = c
        .prepare_cached(&format!(
            "INSERT INTO rate_limits AS r (key, tat) VALUES ($1, {NOW_US} + $2)
             ON CONFLICT (key) DO UPDATE SET tat = GREATEST(r.tat, {NOW_US}) + $2
             WHERE r.tat - $3 <= {NOW_US}
             RETURNING tat"
        ))
        .await?;
    if c.query_opt(&stmt, &[&key, &interval, &burst])
        .await?
        .is_some()
    {
        if admissions.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            c.execute(
                &format!("DELETE FROM rate_limits WHERE tat < {NOW_US}"),
                &[],
            )
            .await?;
        }
        return Ok(None);
    }
    // Refused: nothing was changed; read how long until the next admission.
    let wait: Option<i64> = c
        .query_opt(
            &format!("SELECT tat - $2 - {NOW_US} FROM rate_limits WHERE key = $1"),
            &[&key, &burst],
        )
        .await?
        .map(|r| r.get(0));
    let wait = u64::try_from(wait.unwrap_or(0).max(1)).unwrap_or(1);
    Ok(Some(Duration::from_micros(wait)))
}
