//! Moving time, for tests and demos (`POST /v1/clock/advance`, `tally clock advance`): Tally's
//! clock and the Stripe test clocks of Tally's customers move forward together, and the answer
//! waits until both sides have settled — Stripe's clocks `ready`, the events they caused in
//! Tally's inbox and applied, the period closer caught up — so a month of billing plays out in
//! seconds, observed only from the outside.
//!
//! Tally moves first, then Stripe, in steps of at most 31 days (Stripe advances a clock by at
//! most two intervals of its shortest subscription at once, and each renewal is then applied in
//! order). How far Tally's clock was moved is written to the database before it moves, so a
//! restart keeps it.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Months, Utc};
use serde::{Deserialize, Serialize};
use tally_store::InboxFilter;
use tally_stripe::IdempotencyKey;
use utoipa::ToSchema;

use super::stripe_customers::stripe_error;
use crate::error::ApiError;
use crate::state::AppState;

/// Test clocks Tally made are named this, then the customer's id.
pub const CLOCK_NAME_PREFIX: &str = "tally:";
/// The longest single step.
const STEP: Duration = Duration::days(31);
/// How long one step may wait for Stripe's clocks and the inbox.
const SETTLE: StdDuration = StdDuration::from_secs(60);
/// How often settling is checked.
const POLL: StdDuration = StdDuration::from_millis(50);

/// One advance at a time per process: steps of two advances must not interleave.
pub(crate) static ADVANCING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Body of `POST /v1/clock/advance`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdvanceInput {
    /// How far: a number and a unit — `s`, `m` (minutes), `h`, `d`, `w`, `M` (calendar months)
    /// or `y` — e.g. `1M`, `7d`, `36h`.
    pub by: String,
}

/// What `POST /v1/clock/advance` did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClockAdvanced {
    /// Tally's time now.
    pub now: DateTime<Utc>,
    /// How far Tally's clock is ahead of the system clock, in seconds.
    pub offset_seconds: i64,
    /// The Stripe test clocks moved with it.
    pub stripe_test_clocks: usize,
    /// Stripe events read into the inbox while settling (each applied once).
    pub events: usize,
    /// Invoices the period closer wrote for periods that ended.
    pub invoices_closed: usize,
}

/// `POST /v1/clock/advance`'s `by`, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Calendar months.
    Months(u32),
    /// A fixed span.
    Span(Duration),
}

impl Step {
    /// `1M`, `7d`, `36h`, `90m`, `30s`, `2w`, `1y`.
    pub fn parse(s: &str) -> Option<Step> {
        let s = s.trim();
        let unit = s.chars().last()?;
        let n: u32 = s[..s.len() - unit.len_utf8()].parse().ok()?;
        if n == 0 {
            return None;
        }
        let n64 = i64::from(n);
        Some(match unit {
            'M' => Step::Months(n),
            'y' => Step::Months(n.checked_mul(12)?),
            's' => Step::Span(Duration::try_seconds(n64)?),
            'm' => Step::Span(Duration::try_minutes(n64)?),
            'h' => Step::Span(Duration::try_hours(n64)?),
            'd' => Step::Span(Duration::try_days(n64)?),
            'w' => Step::Span(Duration::try_weeks(n64)?),
            _ => return None,
        })
    }

    /// `from` moved by this step.
    pub fn after(self, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Step::Months(n) => from.checked_add_months(Months::new(n)),
            Step::Span(d) => from.checked_add_signed(d),
        }
    }
}

fn not_movable() -> ApiError {
    ApiError::conflict(
        "clock_not_movable",
        "Tally's clock is the system clock: start tally serve with --movable-clock or --stripe-test-clocks to move it",
    )
}

/// `POST /v1/clock/advance`.
pub async fn advance(state: &AppState, input: AdvanceInput) -> Result<ClockAdvanced, ApiError> {
    if !state.config.movable_clock {
        return Err(not_movable());
    }
    let step = Step::parse(&input.by).ok_or_else(|| {
        ApiError::unprocessable(
            "invalid_duration",
            format!(
                "by {:?} must be a positive number and a unit (s, m, h, d, w, M, y), e.g. 1M or 7d",
                input.by
            ),
        )
        .with_param("by")
    })?;
    let _one = ADVANCING.lock().await;
    let start = state.clock.now();
    let target = step.after(start).ok_or_else(|| {
        ApiError::unprocessable("invalid_duration", "that is too far").with_param("by")
    })?;
    let mut events = 0;
    let mut clocks = 0;
    let mut cur = start;
    while cur < target {
        let to = (cur + STEP).min(target);
        let (n, e) = step_to(state, to).await?;
        clocks = n;
        events += e;
        cur = to;
    }
    let invoices = crate::service::closer::close_due(state, state.clock.now())
        .await?
        .len();
    Ok(ClockAdvanced {
        now: state.clock.now(),
        offset_seconds: state.clock.shifted().num_seconds(),
        stripe_test_clocks: clocks,
        events,
        invoices_closed: invoices,
    })
}

/// Moves Tally to `to`, then Tally's Stripe test clocks, and waits for both to settle. Returns
/// the clocks moved and the events read.
async fn step_to(state: &AppState, to: DateTime<Utc>) -> Result<(usize, usize), ApiError> {
    let before = state.clock.now();
    let delta = to - before;
    if delta > Duration::zero() {
        let total = state.clock.shifted() + delta;
        // Written before the clock moves: a crash in between leaves the clock where it was
        // asked to go once restarted, never behind a change already applied.
        state
            .store
            .set_clock_offset(total.num_milliseconds(), before)
            .await?;
        state.clock.shift(delta);
    }
    let Some(client) = state
        .stripe
        .as_ref()
        .filter(|_| state.config.stripe.test_clocks)
    else {
        return Ok((0, 0));
    };
    let ours: Vec<_> = client
        .test_clocks()
        .await
        .map_err(stripe_error)?
        .into_iter()
        .filter(|c| {
            c.name
                .as_deref()
                .is_some_and(|n| n.starts_with(CLOCK_NAME_PREFIX))
        })
        .collect();
    let t = to.timestamp();
    for c in ours.iter().filter(|c| c.frozen_time < t) {
        // Moves nothing billable by itself and is the same request every time it is retried.
        let key = IdempotencyKey::from_content("test_clock_advance", &[&c.id, &t.to_string()]);
        client
            .advance_test_clock(&c.id, t, &key)
            .await
            .map_err(stripe_error)?;
    }
    let deadline = tokio::time::Instant::now() + SETTLE;
    for c in &ours {
        loop {
            let now = client.test_clock(&c.id).await.map_err(stripe_error)?;
            match now.map(|r| r.value) {
                Some(x) if x.status == "ready" => break,
                Some(x) if x.status == "internal_failure" => {
                    return Err(ApiError::new(
                        axum::http::StatusCode::BAD_GATEWAY,
                        "api_error",
                        "stripe_error",
                        format!("Stripe's test clock {} failed to advance", x.id),
                    ))
                }
                None => break,
                Some(_) if tokio::time::Instant::now() >= deadline => return Err(timeout()),
                Some(_) => tokio::time::sleep(POLL).await,
            }
        }
    }
    // The events the advance caused, read from Stripe rather than waited for: deliveries may
    // come later (duplicates then store nothing).
    let since = before - Duration::minutes(1);
    let report = super::stripe_events::backfill(state, since).await?;
    loop {
        let pending = state
            .store
            .inbox_list(InboxFilter {
                failed: false,
                since: Some(since),
                limit: 10_000,
            })
            .await?
            .into_iter()
            .filter(|e| e.status == "pending")
            .count();
        if pending == 0 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(timeout());
        }
        state.stripe_inbox.notify_one();
        tokio::time::sleep(POLL).await;
    }
    Ok((ours.len(), report.read))
}

fn timeout() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::GATEWAY_TIMEOUT,
        "api_error",
        "clock_not_settled",
        format!(
            "the clocks moved, but Stripe's test clocks or Tally's webhook inbox did not settle within {} s; see tally webhooks list",
            SETTLE.as_secs()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn steps_parse_with_calendar_months() {
        let t = Utc.with_ymd_and_hms(2026, 1, 31, 10, 0, 0).unwrap();
        assert_eq!(Step::parse("1M"), Some(Step::Months(1)));
        assert_eq!(
            Step::parse("1M").and_then(|s| s.after(t)),
            Some(Utc.with_ymd_and_hms(2026, 2, 28, 10, 0, 0).unwrap())
        );
        assert_eq!(Step::parse("1y"), Some(Step::Months(12)));
        assert_eq!(Step::parse("7d"), Some(Step::Span(Duration::days(7))));
        assert_eq!(Step::parse("90m"), Some(Step::Span(Duration::minutes(90))));
        for bad in ["", "M", "0d", "-1d", "1x", "1.5d", "d1"] {
            assert_eq!(Step::parse(bad), None, "{bad}");
        }
    }
}
