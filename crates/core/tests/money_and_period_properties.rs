//! Property tests of money conversion and allowance periods.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use tally_core::money::{round_to_minor, try_round_to_minor, Currency};
use tally_core::period::allowance_period;

fn currency() -> impl Strategy<Value = Currency> {
    prop_oneof![
        Just("eur"),
        Just("usd"),
        Just("jpy"),
        Just("krw"),
        Just("kwd"),
        Just("bhd")
    ]
    .prop_map(|c| Currency::parse(c).unwrap())
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    // 2000-01-01 .. 2100-01-01, to the second.
    (946_684_800i64..4_102_444_800).prop_map(|s| Utc.timestamp_opt(s, 0).unwrap())
}

proptest! {
    #[test]
    fn exact_amounts_round_trip(minor in -1_000_000_000_000i64..1_000_000_000_000, c in currency()) {
        let major = Decimal::new(minor, c.exponent());
        prop_assert_eq!(c.exact_minor(major), Ok(minor));
        prop_assert_eq!(round_to_minor(major, c), minor);
        prop_assert_eq!(c.format_minor(minor), major.to_string());
    }

    #[test]
    fn rounding_is_within_half_a_minor_unit_and_symmetric(
        mantissa in -1_000_000_000_000i64..1_000_000_000_000,
        scale in 0u32..8,
        c in currency(),
    ) {
        let major = Decimal::new(mantissa, scale);
        let minor = try_round_to_minor(major, c).unwrap();
        let unit = Decimal::new(1, c.exponent());
        let error = (Decimal::new(minor, c.exponent()) - major).abs();
        prop_assert!(error <= unit / Decimal::TWO);
        // Half away from zero is symmetric around zero.
        prop_assert_eq!(round_to_minor(-major, c), -minor);
    }

    #[test]
    fn allowance_periods_tile_time(anchor in instant(), at in instant()) {
        let p = allowance_period(anchor, at);
        prop_assert!(p.contains(at));
        prop_assert!(p.start < p.end);
        // Periods keep the anchor's time of day and the anchor's day where the month has it.
        prop_assert_eq!(p.start.time(), anchor.time());
        // A shorter month clamps the anchor day to its last day.
        let last_of_month = (p.start + chrono::Duration::days(1)).day() == 1;
        prop_assert!(p.start.day() == anchor.day() || (p.start.day() < anchor.day() && last_of_month));
        // The next period starts where this one ends, and the previous one ends where it starts.
        prop_assert_eq!(allowance_period(anchor, p.end).start, p.end);
        let before = p.start - chrono::Duration::seconds(1);
        prop_assert_eq!(allowance_period(anchor, before).end, p.start);
        // A period is 28 to 31 days long.
        let days = p.duration().num_days();
        prop_assert!((28..=31).contains(&days), "{days}");
    }
}
