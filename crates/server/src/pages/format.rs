//! Dates and URL path segments as the pages write them.

use chrono::{DateTime, Datelike, Utc};
use tally_core::money_display::Locale;

const MONTHS_EN: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A day: `Dec 2, 2026` in `en`, `2.12.2026` in `de`.
pub fn date(t: DateTime<Utc>, locale: Locale) -> String {
    let month0 = t.month0() as usize;
    match locale {
        Locale::En => format!(
            "{} {}, {}",
            MONTHS_EN.get(month0).copied().unwrap_or("?"),
            t.day(),
            t.year()
        ),
        Locale::De => format!("{}.{}.{}", t.day(), t.month(), t.year()),
    }
}

/// A period `[start, end)` by its days: the end is exclusive, so the last day shown is the one
/// before it.
pub fn period(start: DateTime<Utc>, end: DateTime<Utc>, locale: Locale) -> String {
    let last = end - chrono::Duration::milliseconds(1);
    format!(
        "{} – {}",
        date(start, locale),
        date(last.max(start), locale)
    )
}

/// Percent-encodes a path segment (everything but RFC 3986 unreserved characters).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn dates_and_periods_per_locale() {
        let a = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
        let b = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(date(a, Locale::En), "Dec 1, 2026");
        assert_eq!(date(a, Locale::De), "1.12.2026");
        assert_eq!(period(a, b, Locale::En), "Dec 1, 2026 – Dec 31, 2026");
        assert_eq!(period(a, b, Locale::De), "1.12.2026 – 31.12.2026");
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(segment("inv_1.a-b~c"), "inv_1.a-b~c");
        assert_eq!(segment("a/b c:é"), "a%2Fb%20c%3A%C3%A9");
    }
}
