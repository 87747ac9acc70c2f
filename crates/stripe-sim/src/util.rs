//! Ids, calendar arithmetic and fixed-point quantities shared by every resource.

use rand::Rng;

const ALPHANUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A Stripe-style id: `prefix_` followed by 24 random alphanumerics.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_chars(24))
}

pub fn random_chars(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ALPHANUM[rng.random_range(0..ALPHANUM.len())] as char)
        .collect()
}

pub fn random_upper(n: usize) -> String {
    const UPPER: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| UPPER[rng.random_range(0..UPPER.len())] as char)
        .collect()
}

/// Wall-clock unix seconds.
pub fn wall_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub const DAY: i64 = 86_400;

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    days_from_civil(ny, nm, 1) - days_from_civil(y, m, 1)
}

/// `anchor` moved forward by `months` calendar months, keeping the anchor's day of month and
/// clamping it to the last day of shorter months (Jan 31 → Feb 28 → Mar 31), as Stripe does.
pub fn add_months(anchor: i64, months: i64) -> i64 {
    let days = anchor.div_euclid(DAY);
    let secs = anchor.rem_euclid(DAY);
    let (y, m, d) = civil_from_days(days);
    let total = y * 12 + (m - 1) + months;
    let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) + 1);
    let nd = d.min(days_in_month(ny, nm));
    days_from_civil(ny, nm, nd) * DAY + secs
}

/// The end of the `n`-th billing period counted from `anchor` for a price interval.
pub fn add_interval(anchor: i64, interval: &str, count: i64, n: i64) -> i64 {
    match interval {
        "day" => anchor + DAY * count * n,
        "week" => anchor + 7 * DAY * count * n,
        "year" => add_months(anchor, 12 * count * n),
        _ => add_months(anchor, count * n),
    }
}

/// Formats unix seconds as `YYYY-MM-DD`.
pub fn ymd(ts: i64) -> String {
    let (y, m, d) = civil_from_days(ts.div_euclid(DAY));
    format!("{y:04}-{m:02}-{d:02}")
}

/// A non-negative or negative decimal quantity with 9 fractional digits, exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dec(pub i128);

pub const DEC_SCALE: i128 = 1_000_000_000;

impl Dec {
    pub fn from_int(v: i64) -> Dec {
        Dec(v as i128 * DEC_SCALE)
    }

    /// Parses `"12"`, `"-3.5"`, `"0.000001"`. More than 15 significant digits or 9 decimals is refused.
    pub fn parse(s: &str) -> Option<Dec> {
        let s = s.trim();
        let (neg, body) = match s.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, s),
        };
        let (int, frac) = match body.split_once('.') {
            Some((i, f)) => (i, f),
            None => (body, ""),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let frac = frac.trim_end_matches('0');
        if frac.len() > 9 {
            return None;
        }
        let digits = format!("{}{}", int.trim_start_matches('0'), frac);
        if digits.trim_start_matches('0').len() > 15 {
            return None;
        }
        let i: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut f: i128 = if frac.is_empty() {
            0
        } else {
            frac.parse().ok()?
        };
        for _ in frac.len()..9 {
            f *= 10;
        }
        let v = i * DEC_SCALE + f;
        Some(Dec(if neg { -v } else { v }))
    }

    pub fn is_whole(self) -> bool {
        self.0 % DEC_SCALE == 0
    }

    /// Rounded half away from zero to an integer.
    pub fn round(self) -> i64 {
        div_round(self.0, DEC_SCALE) as i64
    }

    /// `self × other`, rounded half away from zero to an integer (used for quantity × unit price).
    pub fn mul_round(self, other: Dec) -> i64 {
        div_round(self.0 * other.0, DEC_SCALE * DEC_SCALE) as i64
    }

    pub fn as_json_number(self) -> serde_json::Value {
        if self.is_whole() {
            serde_json::Value::from((self.0 / DEC_SCALE) as i64)
        } else {
            serde_json::Number::from_f64(self.0 as f64 / DEC_SCALE as f64)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null)
        }
    }
}

impl std::fmt::Display for Dec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let neg = self.0 < 0;
        let a = self.0.unsigned_abs();
        let int = a / DEC_SCALE as u128;
        let frac = a % DEC_SCALE as u128;
        let sign = if neg { "-" } else { "" };
        if frac == 0 {
            write!(f, "{sign}{int}")
        } else {
            let fs = format!("{frac:09}");
            write!(f, "{sign}{int}.{}", fs.trim_end_matches('0'))
        }
    }
}

/// Integer division rounded half away from zero.
pub fn div_round(n: i128, d: i128) -> i128 {
    let q = n / d;
    let r = n % d;
    if 2 * r.abs() >= d.abs() {
        if (n < 0) != (d < 0) {
            q - 1
        } else {
            q + 1
        }
    } else {
        q
    }
}

impl serde::Serialize for Dec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Dec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Dec, D::Error> {
        let s = String::deserialize(d)?;
        Dec::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("invalid decimal {s}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_clamp_to_month_end_and_keep_anchor_day() {
        let jan31 = days_from_civil(2025, 1, 31) * DAY + 3600;
        assert_eq!(ymd(add_months(jan31, 1)), "2025-02-28");
        assert_eq!(ymd(add_months(jan31, 2)), "2025-03-31");
        assert_eq!(ymd(add_months(jan31, 13)), "2026-02-28");
        assert_eq!(add_months(jan31, 2).rem_euclid(DAY), 3600);
        assert_eq!(ymd(add_interval(jan31, "year", 1, 1)), "2026-01-31");
    }

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(Dec::parse("12").map(|d| d.0), Some(12 * DEC_SCALE));
        assert_eq!(Dec::parse("0.5").map(|d| d.0), Some(DEC_SCALE / 2));
        assert_eq!(
            Dec::parse("-1.25").map(|d| d.to_string()),
            Some("-1.25".into())
        );
        assert!(Dec::parse("1234567890123456").is_none());
        assert!(Dec::parse("abc").is_none());
        assert_eq!(Dec::parse("2.5").map(|d| d.round()), Some(3));
        assert_eq!(Dec::parse("-2.5").map(|d| d.round()), Some(-3));
        let q = Dec::parse("3").unwrap_or_default();
        let u = Dec::parse("0.25").unwrap_or_default();
        assert_eq!(q.mul_round(u), 1);
    }
}
