//! Billing periods: UTC, half-open `[start, end)`, anchored on a day of the month.
//!
//! Usage allowances reset every month on the subscription's anchor day — also on annual plans,
//! whose base fee is billed once a year. A period starting on the 31st clamps to the last day of
//! shorter months and returns to the 31st when it can (Jan 31 → Feb 28/29 → Mar 31), because each
//! period boundary is computed from the anchor, never from the previous boundary.

use chrono::{DateTime, Datelike, Duration, Months, Utc};
use serde::{Deserialize, Serialize};

/// How often a plan's base price is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    /// Every month.
    Month,
    /// Every year.
    Year,
}

impl Interval {
    /// Number of months in one interval (1 or 12).
    pub fn months(self) -> u32 {
        match self {
            Interval::Month => 1,
            Interval::Year => 12,
        }
    }

    /// `"month"` or `"year"`, as written in the catalog and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Month => "month",
            Interval::Year => "year",
        }
    }

    /// `"monthly"` or `"yearly"`, for descriptions.
    pub fn adjective(self) -> &'static str {
        match self {
            Interval::Month => "monthly",
            Interval::Year => "yearly",
        }
    }

    /// Parses `"month"` or `"year"`.
    pub fn parse(s: &str) -> Option<Interval> {
        match s {
            "month" => Some(Interval::Month),
            "year" => Some(Interval::Year),
            _ => None,
        }
    }
}

impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A half-open span of time `[start, end)` in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Period {
    /// First instant inside the period.
    pub start: DateTime<Utc>,
    /// First instant after the period.
    pub end: DateTime<Utc>,
}

impl Period {
    /// Whether `at` falls inside `[start, end)`.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.start <= at && at < self.end
    }

    /// The period's length.
    pub fn duration(&self) -> Duration {
        self.end - self.start
    }

    /// The period's length in days, counting a started day as a whole one.
    pub fn days(&self) -> i64 {
        ceil_days(self.duration())
    }
}

/// Whole days in `d`, rounding a partial day up; zero or negative durations give 0.
pub(crate) fn ceil_days(d: Duration) -> i64 {
    let secs = d.num_seconds() + i64::from(d.subsec_nanos() > 0);
    if secs <= 0 {
        0
    } else {
        (secs + 86_399) / 86_400
    }
}

/// Adds (or, when negative, subtracts) calendar months, keeping the time of day and clamping the
/// day to the end of shorter months (Jan 31 + 1 month = Feb 28, or Feb 29 in a leap year).
///
/// Saturates at chrono's representable range instead of failing.
pub fn add_months(at: DateTime<Utc>, months: i32) -> DateTime<Utc> {
    let n = Months::new(months.unsigned_abs());
    let moved = if months >= 0 {
        at.checked_add_months(n)
    } else {
        at.checked_sub_months(n)
    };
    moved.unwrap_or(if months >= 0 {
        DateTime::<Utc>::MAX_UTC
    } else {
        DateTime::<Utc>::MIN_UTC
    })
}

/// The `n`-th period of `months` months after `anchor` (negative `n` goes back in time).
fn nth_period(anchor: DateTime<Utc>, months: i32, n: i32) -> Period {
    Period {
        start: add_months(anchor, n.saturating_mul(months)),
        end: add_months(anchor, n.saturating_add(1).saturating_mul(months)),
    }
}

fn period_containing(anchor: DateTime<Utc>, months: u32, at: DateTime<Utc>) -> Period {
    let months = i32::try_from(months.max(1)).unwrap_or(1);
    let elapsed = (at.year() - anchor.year()) * 12 + (at.month() as i32 - anchor.month() as i32);
    let mut n = elapsed.div_euclid(months);
    // The calendar estimate is off by at most one period either way (day and time of day).
    for _ in 0..3 {
        let p = nth_period(anchor, months, n);
        if at < p.start {
            n -= 1;
        } else if at >= p.end {
            n += 1;
        } else {
            return p;
        }
    }
    nth_period(anchor, months, n)
}

/// The monthly allowance period containing `at`, anchored on `anchor`'s day of month and time of
/// day. Used for every plan, monthly or annual: allowances reset monthly.
///
/// Month-end anchors clamp: with an anchor on Jan 31, the periods start on Jan 31, Feb 28 (29),
/// Mar 31, Apr 30, …
pub fn allowance_period(anchor: DateTime<Utc>, at: DateTime<Utc>) -> Period {
    period_containing(anchor, 1, at)
}

/// Where a customer's allowance periods are anchored, including one change of anchor: once a
/// Stripe subscription is mirrored, periods follow its billing cycle anchor from that instant on.
///
/// Before `anchor`, periods follow `previous` (when the anchor changed) and the one running when
/// the anchor took over ends at it, so usage already counted in it stays there: with `previous`
/// on the 3rd and `anchor` on Jan 17, the periods are … [Jan 3, Jan 17), [Jan 17, Feb 17), ….
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AllowanceAnchor {
    /// The anchor of the periods from this instant on.
    pub anchor: DateTime<Utc>,
    /// The anchor of the periods before `anchor`, when it changed.
    pub previous: Option<DateTime<Utc>>,
}

impl AllowanceAnchor {
    /// An anchor that never changed.
    pub fn fixed(anchor: DateTime<Utc>) -> Self {
        AllowanceAnchor {
            anchor,
            previous: None,
        }
    }

    /// The monthly allowance period containing `at`.
    pub fn period(&self, at: DateTime<Utc>) -> Period {
        match self.previous {
            Some(previous) if at < self.anchor => {
                let p = allowance_period(previous, at);
                Period {
                    start: p.start,
                    end: p.end.min(self.anchor),
                }
            }
            _ => allowance_period(self.anchor, at),
        }
    }

    /// The anchor whose periods contain `at` (for the yearly base fee's billing periods).
    pub fn anchor_at(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        match self.previous {
            Some(previous) if at < self.anchor => previous,
            _ => self.anchor,
        }
    }
}

/// The billing period of the base price containing `at`: monthly or yearly from `anchor`.
pub fn billing_period(anchor: DateTime<Utc>, interval: Interval, at: DateTime<Utc>) -> Period {
    period_containing(anchor, interval.months(), at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_changed_anchor_ends_the_running_period_and_leads_from_then_on() {
        let at = |m, d| Utc.with_ymd_and_hms(2026, m, d, 0, 0, 0).unwrap();
        let a = AllowanceAnchor {
            anchor: at(1, 17),
            previous: Some(at(1, 3)),
        };
        let p = |s: DateTime<Utc>, e: DateTime<Utc>| Period { start: s, end: e };
        assert_eq!(a.period(at(1, 10)), p(at(1, 3), at(1, 17)));
        assert_eq!(a.period(at(1, 2)), p(at(12, 3) - Months::new(12), at(1, 3)));
        assert_eq!(a.period(at(1, 17)), p(at(1, 17), at(2, 17)));
        assert_eq!(a.period(at(2, 16)), p(at(1, 17), at(2, 17)));
        assert_eq!(a.period(at(2, 17)), p(at(2, 17), at(3, 17)));
        assert_eq!(a.anchor_at(at(1, 10)), at(1, 3));
        assert_eq!(a.anchor_at(at(3, 1)), at(1, 17));
        let f = AllowanceAnchor::fixed(at(1, 3));
        assert_eq!(f.period(at(1, 10)), allowance_period(at(1, 3), at(1, 10)));
    }

    fn t(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    #[test]
    fn add_months_clamps_to_month_end() {
        assert_eq!(add_months(t(2025, 1, 31, 9), 1), t(2025, 2, 28, 9));
        assert_eq!(add_months(t(2024, 1, 31, 9), 1), t(2024, 2, 29, 9));
        assert_eq!(add_months(t(2025, 1, 31, 9), 2), t(2025, 3, 31, 9));
        assert_eq!(add_months(t(2025, 3, 31, 9), -1), t(2025, 2, 28, 9));
        assert_eq!(add_months(t(2025, 12, 15, 0), 1), t(2026, 1, 15, 0));
        assert_eq!(
            add_months(DateTime::<Utc>::MAX_UTC, 1),
            DateTime::<Utc>::MAX_UTC
        );
    }

    #[test]
    fn allowance_periods_follow_a_month_end_anchor() {
        let anchor = t(2025, 1, 31, 12);
        let feb = allowance_period(anchor, t(2025, 3, 1, 0));
        assert_eq!(
            feb,
            Period {
                start: t(2025, 2, 28, 12),
                end: t(2025, 3, 31, 12)
            }
        );
        let jan = allowance_period(anchor, t(2025, 2, 28, 11));
        assert_eq!(
            jan,
            Period {
                start: t(2025, 1, 31, 12),
                end: t(2025, 2, 28, 12)
            }
        );
        let apr = allowance_period(anchor, t(2025, 4, 30, 12));
        assert_eq!(
            apr,
            Period {
                start: t(2025, 4, 30, 12),
                end: t(2025, 5, 31, 12)
            }
        );
        let leap = allowance_period(t(2024, 1, 31, 0), t(2024, 2, 29, 0));
        assert_eq!(
            leap,
            Period {
                start: t(2024, 2, 29, 0),
                end: t(2024, 3, 31, 0)
            }
        );
    }

    #[test]
    fn allowance_period_is_half_open() {
        let anchor = t(2025, 1, 15, 0);
        let p = allowance_period(anchor, t(2025, 2, 15, 0));
        assert_eq!(p.start, t(2025, 2, 15, 0));
        assert_eq!(p.end, t(2025, 3, 15, 0));
        assert!(p.contains(t(2025, 2, 15, 0)));
        assert!(!p.contains(t(2025, 3, 15, 0)));
        assert_eq!(p.days(), 28);
    }

    #[test]
    fn allowance_period_before_the_anchor() {
        let p = allowance_period(t(2025, 3, 10, 0), t(2025, 1, 20, 0));
        assert_eq!(
            p,
            Period {
                start: t(2025, 1, 10, 0),
                end: t(2025, 2, 10, 0)
            }
        );
    }

    #[test]
    fn annual_plans_bill_yearly_but_reset_allowances_monthly() {
        let anchor = t(2024, 2, 29, 8);
        let year = billing_period(anchor, Interval::Year, t(2025, 6, 1, 0));
        assert_eq!(
            year,
            Period {
                start: t(2025, 2, 28, 8),
                end: t(2026, 2, 28, 8)
            }
        );
        let month = allowance_period(anchor, t(2025, 6, 1, 0));
        assert_eq!(
            month,
            Period {
                start: t(2025, 5, 29, 8),
                end: t(2025, 6, 29, 8)
            }
        );
    }

    #[test]
    fn interval_serde_and_names() {
        assert_eq!(serde_json::to_string(&Interval::Year).unwrap(), "\"year\"");
        assert_eq!(Interval::parse("month"), Some(Interval::Month));
        assert_eq!(Interval::parse("weekly"), None);
        assert_eq!(Interval::Year.months(), 12);
    }

    #[test]
    fn ceil_days_counts_partial_days() {
        assert_eq!(ceil_days(Duration::hours(1)), 1);
        assert_eq!(ceil_days(Duration::hours(24)), 1);
        assert_eq!(ceil_days(Duration::hours(25)), 2);
        assert_eq!(ceil_days(Duration::zero()), 0);
        assert_eq!(ceil_days(Duration::hours(-3)), 0);
    }
}
