//! RFC 3339 timestamps of usage events, read without chrono's general parser for the form nearly
//! every client sends (`YYYY-MM-DDTHH:MM:SS[.fraction]` in UTC, `Z` or `+00:00`): at hundreds of
//! thousands of events per second the general parser is a measurable share of ingestion.
//! Anything else goes to chrono, so the result is always exactly chrono's.

use chrono::{DateTime, Utc};

/// `DateTime::parse_from_rfc3339(s)` in UTC, or `None` where chrono fails.
pub fn parse_utc(s: &str) -> Option<DateTime<Utc>> {
    match parse_common(s.as_bytes()) {
        Some(t) => Some(t),
        None => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
    }
}

/// The common form only; `None` means "ask chrono" (which may still accept it).
fn parse_common(b: &[u8]) -> Option<DateTime<Utc>> {
    let head: &[u8; 19] = b.get(..19)?.try_into().ok()?;
    let digit = |c: u8| -> Option<i64> {
        let d = c.wrapping_sub(b'0');
        (d < 10).then_some(i64::from(d))
    };
    let two = |i: usize| -> Option<i64> { Some(digit(head[i])? * 10 + digit(head[i + 1])?) };
    if head[4] != b'-'
        || head[7] != b'-'
        || head[10] != b'T'
        || head[13] != b':'
        || head[16] != b':'
    {
        return None;
    }
    let year = two(0)? * 100 + two(2)?;
    let (month, day) = (two(5)?, two(8)?);
    let (hour, minute, second) = (two(11)?, two(14)?, two(17)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        // A leap second (60) is chrono's to represent.
        || second > 59
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut nanos: u32 = 0;
    if let [b'.', tail @ ..] = rest {
        let n = tail.iter().take_while(|c| c.is_ascii_digit()).count();
        // No digit, or more than nanosecond precision: chrono decides.
        if n == 0 || n > 9 {
            return None;
        }
        for c in &tail[..n] {
            nanos = nanos * 10 + u32::from(c - b'0');
        }
        nanos *= [
            1,
            10,
            100,
            1_000,
            10_000,
            100_000,
            1_000_000,
            10_000_000,
            100_000_000,
        ][9 - n];
        rest = &tail[n..];
    }
    match rest {
        [b'Z'] | [b'+', b'0', b'0', b':', b'0', b'0'] => {}
        _ => return None,
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    DateTime::from_timestamp(secs, nanos)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chrono(s: &str) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    #[test]
    fn the_common_forms_are_read_without_chrono_and_agree_with_it() {
        for s in [
            "2026-11-21T10:00:00Z",
            "2026-11-21T10:00:00.5Z",
            "2026-11-21T10:00:00.123Z",
            "2026-11-21T10:00:00.123456789+00:00",
            "2024-02-29T23:59:59.999999999Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "1969-12-31T23:59:59.1Z",
        ] {
            let fast = parse_common(s.as_bytes());
            assert!(fast.is_some(), "{s}");
            assert_eq!(fast, chrono(s), "{s}");
        }
    }

    #[test]
    fn other_forms_are_left_to_chrono() {
        for s in [
            "2026-11-21T10:00:00+01:00",
            "2026-11-21T10:00:00-00:00",
            "2026-11-21t10:00:00z",
            "2026-11-21 10:00:00Z",
            "2026-11-21T10:00:60Z",
            "2026-11-21T10:00:00.1234567891Z",
            "2026-11-21T10:00:00.Z",
            "2023-02-29T10:00:00Z",
            "2026-13-01T10:00:00Z",
            "2026-11-21T24:00:00Z",
            "2026-11-21T10:00:00",
            "2026-11-21T10:00:00Zjunk",
            "+2026-11-21T10:00:00Z",
            "",
            "é",
        ] {
            assert_eq!(parse_common(s.as_bytes()), None, "{s}");
            assert_eq!(parse_utc(s), chrono(s), "{s}");
        }
    }

    fn component(max: u32, width: usize) -> impl Strategy<Value = String> {
        prop_oneof![
            8 => (0..=max).prop_map(move |n| format!("{n:0width$}")),
            1 => "[0-9]{0,5}",
            1 => "[0-9a-z:+.-]{1,3}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn always_exactly_chronos_result(
            year in component(9999, 4),
            month in component(13, 2),
            day in component(32, 2),
            hour in component(24, 2),
            minute in component(60, 2),
            second in component(61, 2),
            t in prop_oneof!["T", "t", " ", "x"],
            fraction in prop_oneof!["", "\\.[0-9]{0,12}", "\\.[0-9a]{1,4}"],
            offset in prop_oneof![
                "Z", "z", "\\+00:00", "-00:00", "[+-][0-2][0-9]:[0-5][0-9]", "", "Z ", "\\+0000"
            ],
        ) {
            let s = format!("{year}-{month}-{day}{t}{hour}:{minute}:{second}{fraction}{offset}");
            prop_assert_eq!(parse_utc(&s), chrono(&s), "{}", s);
        }

        #[test]
        fn any_text_gives_chronos_result(s in "\\PC{0,40}") {
            prop_assert_eq!(parse_utc(&s), chrono(&s), "{}", s);
        }
    }
}
