//! The one clock Tally reads "now" from.
//!
//! Every part of Tally that needs the time asks a [`Clock`] handed to it, never the system clock
//! directly, so tests and demos can move time: a clock is the system clock plus an offset that
//! [`Clock::advance`] moves forward, or a frozen instant that only moves when told. This module
//! is the only place that reads the wall clock.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};

/// A source of "now": the system clock shifted by an offset, or a frozen instant.
#[derive(Debug, Default)]
pub struct Clock {
    /// Milliseconds added to the system clock (when running) or the frozen instant in
    /// milliseconds since the epoch (when frozen).
    ms: AtomicI64,
    frozen: AtomicBool,
    /// Milliseconds moved by [`Clock::shift`] (what `tally clock advance` moved), so that what
    /// is stamped by the outside world's clock — a Stripe webhook signature — can be read
    /// against the unshifted time.
    shifted: AtomicI64,
}

/// A clock shared by the parts of one process.
pub type SharedClock = Arc<Clock>;

impl Clock {
    /// The system clock, unshifted.
    pub fn system() -> SharedClock {
        Arc::new(Clock::default())
    }

    /// A clock that runs from `start` at the system clock's pace.
    pub fn starting_at(start: DateTime<Utc>) -> SharedClock {
        let c = Clock::default();
        c.set(start);
        Arc::new(c)
    }

    /// A clock that stands still at `at` until it is advanced or set.
    pub fn frozen(at: DateTime<Utc>) -> SharedClock {
        let c = Clock::default();
        c.ms.store(at.timestamp_millis(), Ordering::SeqCst);
        c.frozen.store(true, Ordering::SeqCst);
        Arc::new(c)
    }

    /// The current instant.
    pub fn now(&self) -> DateTime<Utc> {
        let ms = self.ms.load(Ordering::SeqCst);
        if self.frozen.load(Ordering::SeqCst) {
            return from_ms(ms);
        }
        let wall = Utc::now();
        if ms == 0 {
            return wall;
        }
        wall.checked_add_signed(Duration::milliseconds(ms))
            .unwrap_or(wall)
    }

    /// Moves the clock forward (or back, with a negative duration) by `by`.
    pub fn advance(&self, by: Duration) {
        let step = by.num_milliseconds();
        let _ = self
            .ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |ms| {
                Some(ms.saturating_add(step))
            });
    }

    /// Moves the clock forward by `by` as [`Clock::advance`] does, and remembers it as a shift
    /// of Tally's time against the outside world's (see [`Clock::unshifted_now`]).
    pub fn shift(&self, by: Duration) {
        self.advance(by);
        let step = by.num_milliseconds();
        let _ = self
            .shifted
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |ms| {
                Some(ms.saturating_add(step))
            });
    }

    /// The total of [`Clock::shift`]s.
    pub fn shifted(&self) -> Duration {
        Duration::milliseconds(self.shifted.load(Ordering::SeqCst))
    }

    /// "Now" without the shifts: the time outside parties (Stripe's signatures) go by.
    pub fn unshifted_now(&self) -> DateTime<Utc> {
        let now = self.now();
        now.checked_sub_signed(self.shifted()).unwrap_or(now)
    }

    /// Makes "now" `at`: a frozen clock stays frozen there, a running one runs on from it.
    pub fn set(&self, at: DateTime<Utc>) {
        if self.frozen.load(Ordering::SeqCst) {
            self.ms.store(at.timestamp_millis(), Ordering::SeqCst);
        } else {
            let offset = at
                .timestamp_millis()
                .saturating_sub(Utc::now().timestamp_millis());
            self.ms.store(offset, Ordering::SeqCst);
        }
    }

    /// How far this clock is ahead of the system clock (zero for the system clock).
    pub fn offset(&self) -> Duration {
        if self.frozen.load(Ordering::SeqCst) {
            return from_ms(self.ms.load(Ordering::SeqCst)) - Utc::now();
        }
        Duration::milliseconds(self.ms.load(Ordering::SeqCst))
    }
}

fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frozen_clock_moves_only_when_told() {
        let t = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        let c = Clock::frozen(t);
        assert_eq!(c.now(), t);
        c.advance(Duration::days(31));
        assert_eq!(c.now(), Utc.with_ymd_and_hms(2026, 4, 1, 12, 0, 0).unwrap());
        c.set(t);
        assert_eq!(c.now(), t);
    }

    #[test]
    fn a_running_clock_keeps_its_offset() {
        let c = Clock::system();
        c.advance(Duration::days(30));
        let ahead = c.now() - Utc::now();
        assert!(ahead > Duration::days(30) - Duration::seconds(5), "{ahead}");
        assert!(ahead <= Duration::days(30), "{ahead}");
        assert_eq!(c.offset(), Duration::days(30));
    }

    #[test]
    fn a_shift_moves_now_but_not_the_unshifted_time() {
        let t = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        let c = Clock::frozen(t);
        c.shift(Duration::days(7));
        assert_eq!(c.now(), Utc.with_ymd_and_hms(2026, 3, 8, 12, 0, 0).unwrap());
        assert_eq!(c.unshifted_now(), t);
        assert_eq!(c.shifted(), Duration::days(7));
    }

    #[test]
    fn advancing_far_saturates_instead_of_overflowing() {
        let c = Clock::system();
        c.advance(Duration::MAX);
        c.advance(Duration::MAX);
        let _ = c.now();
    }
}
