//! Tally's one grammar for decimal numbers written as text, the limits each kind of number must
//! keep, and exact arithmetic for sums and charges.
//!
//! **Grammar** (event values, catalog numbers, credit amounts, CLI quantities): an optional `-`,
//! an integer part (`0`, or digits without a leading zero) and an optional fraction (`.` and at
//! least one digit). Nothing else: no `+`, no `_`, no spaces, no trailing or leading `.`, no
//! exponent. A JSON *number* may also carry JSON's exponent (`1e-9`, as JSON serializers write
//! small floats): [`parse_json_number`] reads it exactly, and the limits apply to the value it
//! denotes as if written out (`1e3` is `1000`, four significant digits). A string never takes one.
//!
//! **Limits** are counted on the text as written: integer digits (the lone `0` of `0.5` counts
//! none), fraction digits (trailing zeros count: they state precision), and significant digits
//! (every written digit from the first non-zero one on). Every number within them is held exactly
//! by a [`Decimal`].
//!
//! **Exact arithmetic**: [`Decimal`] rounds silently once a result needs more than 28 digits.
//! [`Exact`] computes with a 128-bit mantissa and reports, instead of rounding, any result it
//! cannot hold; [`add`] and [`sub`] are the exact counterparts of `Decimal`'s `+` and `-`.

use std::cmp::Ordering;
use std::fmt;

use rust_decimal::Decimal;

/// The bounds one kind of number is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// At most this many integer digits: `|value| < 10^max_integer_digits`.
    pub max_integer_digits: u32,
    /// At most this many digits after the point.
    pub max_fraction_digits: u32,
    /// At most this many significant digits.
    pub max_significant_digits: u32,
    /// Whether a `-` is allowed (a negative zero is zero and always allowed).
    pub negative: bool,
}

/// One usage event's `value`: `|value| < 10^15`, at most 9 decimal places and 18 significant
/// digits. Sums of such values keep 9 decimal places, so a period's usage stays exact far beyond
/// any real total.
pub const EVENT_VALUE: Limits = Limits {
    max_integer_digits: 15,
    max_fraction_digits: 9,
    max_significant_digits: 18,
    negative: true,
};

/// A number in the catalog (prices, quantities, tiers, percentages): `|value| < 10^15`, at most
/// 12 decimal places and 18 significant digits.
pub const CATALOG_NUMBER: Limits = Limits {
    max_integer_digits: 15,
    max_fraction_digits: 12,
    max_significant_digits: 18,
    negative: true,
};

/// A period's usage total of one metric (what the store keeps, and what
/// `tally invoice preview --usage` takes): `|total| < 10^19`, held exactly by a [`Decimal`] (at
/// most 28 significant digits). Far beyond any real total; a sum that would leave it is refused.
pub const USAGE_TOTAL: Limits = Limits {
    max_integer_digits: 19,
    max_fraction_digits: 28,
    max_significant_digits: 28,
    negative: true,
};

/// Why a text is not a number within its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// Not of the grammar.
    #[error("is not a decimal number (digits, an optional leading - and .digits; no +, _, spaces or exponent)")]
    Syntax,
    /// A `-` where negatives are not allowed.
    #[error("must not be negative")]
    Negative,
    /// Too many integer digits.
    #[error("is too large: at most {0} integer digits")]
    TooLarge(u32),
    /// Too many digits after the point.
    #[error("has too many decimal places: at most {0}")]
    TooManyFractionDigits(u32),
    /// Too many significant digits.
    #[error("has too many significant digits: at most {0}")]
    TooManySignificantDigits(u32),
}

/// Parses `text` by the grammar and checks it against `limits`. Never allocates.
pub fn parse(text: &str, limits: &Limits) -> Result<Decimal, DecimalError> {
    let bytes = text.as_bytes();
    let (negative, body) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    let int_len = body.iter().take_while(|b| b.is_ascii_digit()).count();
    let (int, rest) = body.split_at(int_len);
    if int.is_empty() || (int.len() > 1 && int[0] == b'0') {
        return Err(DecimalError::Syntax);
    }
    let frac = match rest.split_first() {
        None => &[][..],
        Some((b'.', f)) if !f.is_empty() && f.iter().all(u8::is_ascii_digit) => f,
        Some(_) => return Err(DecimalError::Syntax),
    };
    let int = if int == b"0" { &[][..] } else { int };
    let nonzero = int.iter().chain(frac).any(|b| *b != b'0');
    if negative && nonzero && !limits.negative {
        return Err(DecimalError::Negative);
    }
    check_counts(
        len_u32(int.len()),
        len_u32(frac.len()),
        len_u32(
            int.len()
                + frac
                    .iter()
                    .skip_while(|b| int.is_empty() && **b == b'0')
                    .count(),
        ),
        limits,
    )?;
    let mut m: i128 = 0;
    for b in int.iter().chain(frac) {
        m = m
            .checked_mul(10)
            .and_then(|m| m.checked_add(i128::from(b - b'0')))
            .ok_or(DecimalError::TooManySignificantDigits(
                limits.max_significant_digits,
            ))?;
    }
    if negative {
        m = -m;
    }
    Decimal::try_from_i128_with_scale(m, len_u32(frac.len()))
        .map_err(|_| DecimalError::TooManySignificantDigits(limits.max_significant_digits.min(28)))
}

/// Parses the text of a JSON number: the grammar of [`parse`] plus JSON's optional exponent
/// (`e` or `E`, an optional sign, digits), read exactly; the limits apply to the value as if it
/// were written out without the exponent. Never allocates.
pub fn parse_json_number(text: &str, limits: &Limits) -> Result<Decimal, DecimalError> {
    let Some(at) = text.find(['e', 'E']) else {
        return parse(text, limits);
    };
    let (base, exp) = (&text[..at], &text[at + 1..]);
    // The base alone, unbounded but for its length, checks the grammar.
    let unbounded = Limits {
        max_integer_digits: u32::MAX,
        max_fraction_digits: u32::MAX,
        max_significant_digits: u32::MAX,
        negative: true,
    };
    let bytes = base.as_bytes();
    let negative = bytes.first() == Some(&b'-');
    match parse(base, &unbounded) {
        Ok(_) | Err(DecimalError::TooManySignificantDigits(_)) => {}
        Err(e) => return Err(e),
    }
    let exp_digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
    if exp_digits.is_empty() || !exp_digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DecimalError::Syntax);
    }
    // Any exponent beyond this puts every non-zero value beyond every limit.
    let magnitude: i64 = if exp_digits.len() > 6 {
        1_000_000
    } else {
        exp_digits.parse().unwrap_or(1_000_000)
    };
    let e = if exp.starts_with('-') {
        -magnitude
    } else {
        magnitude
    };
    let unsigned = if negative { &bytes[1..] } else { bytes };
    let (int, frac) = match unsigned.iter().position(|b| *b == b'.') {
        Some(p) => (&unsigned[..p], &unsigned[p + 1..]),
        None => (unsigned, &[][..]),
    };
    let all = || int.iter().chain(frac);
    let lead = all().take_while(|b| **b == b'0').count();
    let n = int.len() + frac.len() - lead;
    if n == 0 {
        return Ok(Decimal::ZERO);
    }
    if negative && !limits.negative {
        return Err(DecimalError::Negative);
    }
    // Where the point falls among the significant digits.
    let point = i64::try_from(int.len()).unwrap_or(i64::MAX) - i64::try_from(lead).unwrap_or(0) + e;
    let n_i = i64::try_from(n).unwrap_or(i64::MAX);
    let int_digits = point.max(0);
    let frac_digits = (n_i - point).max(0);
    let significant = n_i + (point - n_i).max(0);
    let clamp = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
    check_counts(
        clamp(int_digits),
        clamp(frac_digits),
        clamp(significant),
        limits,
    )?;
    let mut m: i128 = 0;
    for b in all().skip(lead) {
        m = m
            .checked_mul(10)
            .and_then(|m| m.checked_add(i128::from(b - b'0')))
            .ok_or(DecimalError::TooManySignificantDigits(
                limits.max_significant_digits,
            ))?;
    }
    if point > n_i {
        m = pow10(clamp(point - n_i))
            .and_then(|p| m.checked_mul(p))
            .ok_or(DecimalError::TooLarge(limits.max_integer_digits))?;
    }
    if negative {
        m = -m;
    }
    Decimal::try_from_i128_with_scale(m, clamp(frac_digits))
        .map_err(|_| DecimalError::TooManySignificantDigits(limits.max_significant_digits.min(28)))
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn check_counts(int: u32, frac: u32, significant: u32, l: &Limits) -> Result<(), DecimalError> {
    if int > l.max_integer_digits {
        return Err(DecimalError::TooLarge(l.max_integer_digits));
    }
    if frac > l.max_fraction_digits {
        return Err(DecimalError::TooManyFractionDigits(l.max_fraction_digits));
    }
    if significant > l.max_significant_digits {
        return Err(DecimalError::TooManySignificantDigits(
            l.max_significant_digits,
        ));
    }
    Ok(())
}

/// Checks a number that did not come as text (e.g. a TOML integer) against `limits`, counting
/// its digits as [`Decimal`]'s text would write them.
pub fn check(value: Decimal, limits: &Limits) -> Result<Decimal, DecimalError> {
    if value.is_sign_negative() && !value.is_zero() && !limits.negative {
        return Err(DecimalError::Negative);
    }
    let digits = digit_count(value.mantissa().unsigned_abs());
    let scale = value.scale();
    let int = digits.saturating_sub(scale);
    check_counts(int, scale, digits, limits)?;
    Ok(value)
}

/// Digits of `m` (0 for 0).
fn digit_count(mut m: u128) -> u32 {
    let mut n = 0;
    while m > 0 {
        m /= 10;
        n += 1;
    }
    n
}

/// `a + b` exactly, or `None` when the exact sum does not fit a [`Decimal`] (where `+` would
/// round it).
pub fn add(a: Decimal, b: Decimal) -> Option<Decimal> {
    Exact::from(a).checked_add(Exact::from(b))?.to_decimal()
}

/// `a − b` exactly, or `None` when the exact difference does not fit a [`Decimal`].
pub fn sub(a: Decimal, b: Decimal) -> Option<Decimal> {
    Exact::from(a).checked_sub(Exact::from(b))?.to_decimal()
}

/// `a × b` exactly, or `None` when the exact product does not fit a [`Decimal`].
pub fn mul(a: Decimal, b: Decimal) -> Option<Decimal> {
    Exact::from(a).checked_mul(Exact::from(b))?.to_decimal()
}

/// An exact decimal `mantissa × 10^-scale` with a 128-bit mantissa: wide enough for a product
/// of two [`Decimal`]s of ordinary size, which `Decimal` itself would round to 28 digits.
#[derive(Debug, Clone, Copy)]
pub struct Exact {
    mantissa: i128,
    scale: u32,
}

/// The largest scale an [`Exact`] takes (10^38 is the largest power of ten below `i128::MAX`).
const MAX_EXACT_SCALE: u32 = 38;

fn pow10(n: u32) -> Option<i128> {
    10i128.checked_pow(n)
}

impl From<Decimal> for Exact {
    fn from(d: Decimal) -> Exact {
        Exact {
            mantissa: d.mantissa(),
            scale: d.scale(),
        }
    }
}

impl From<i64> for Exact {
    fn from(v: i64) -> Exact {
        Exact {
            mantissa: i128::from(v),
            scale: 0,
        }
    }
}

impl Exact {
    /// Zero.
    pub const ZERO: Exact = Exact {
        mantissa: 0,
        scale: 0,
    };

    /// `mantissa × 10^-scale`.
    pub fn new(mantissa: i128, scale: u32) -> Option<Exact> {
        (scale <= MAX_EXACT_SCALE).then_some(Exact { mantissa, scale })
    }

    /// Both at the larger scale.
    fn aligned(self, other: Exact) -> Option<(i128, i128, u32)> {
        let scale = self.scale.max(other.scale);
        let a = self.mantissa.checked_mul(pow10(scale - self.scale)?)?;
        let b = other.mantissa.checked_mul(pow10(scale - other.scale)?)?;
        Some((a, b, scale))
    }

    /// `self + other`, `None` when it does not fit.
    pub fn checked_add(self, other: Exact) -> Option<Exact> {
        let (a, b, scale) = self.aligned(other)?;
        Some(Exact {
            mantissa: a.checked_add(b)?,
            scale,
        })
    }

    /// `self − other`, `None` when it does not fit.
    pub fn checked_sub(self, other: Exact) -> Option<Exact> {
        let (a, b, scale) = self.aligned(other)?;
        Some(Exact {
            mantissa: a.checked_sub(b)?,
            scale,
        })
    }

    /// `self × other`, `None` when it does not fit.
    pub fn checked_mul(self, other: Exact) -> Option<Exact> {
        let scale = self.scale.checked_add(other.scale)?;
        let mantissa = self.mantissa.checked_mul(other.mantissa)?;
        Exact { mantissa, scale }.reduced()
    }

    /// The smallest integer at least `self / other` (`other > 0`), `None` when it does not fit.
    pub fn div_ceil(self, other: Exact) -> Option<Exact> {
        let (a, b, _) = self.aligned(other)?;
        if b <= 0 {
            return None;
        }
        let q = a.div_euclid(b);
        let q = if a.rem_euclid(b) == 0 {
            q
        } else {
            q.checked_add(1)?
        };
        Some(Exact {
            mantissa: q,
            scale: 0,
        })
    }

    /// Without trailing zeros beyond what [`MAX_EXACT_SCALE`] allows; `None` when it stays
    /// beyond.
    fn reduced(mut self) -> Option<Exact> {
        while self.scale > MAX_EXACT_SCALE {
            if self.mantissa % 10 != 0 {
                return None;
            }
            self.mantissa /= 10;
            self.scale -= 1;
        }
        Some(self)
    }

    /// Rounded once, half away from zero, to `dp` decimal places: the mantissa at scale `dp`.
    pub fn round_to(self, dp: u32) -> Option<i128> {
        if self.scale <= dp {
            return self.mantissa.checked_mul(pow10(dp - self.scale)?);
        }
        let div = pow10(self.scale - dp)?;
        let q = self.mantissa / div;
        let r = (self.mantissa % div).unsigned_abs();
        // r ≥ div/2, compared without overflow.
        if r >= div.unsigned_abs() - r {
            q.checked_add(self.mantissa.signum())
        } else {
            Some(q)
        }
    }

    /// Whether it is below zero.
    pub fn is_negative(self) -> bool {
        self.mantissa < 0
    }

    /// The same number as a [`Decimal`], `None` when it needs more than a `Decimal` holds.
    pub fn to_decimal(self) -> Option<Decimal> {
        // Decimal's mantissa is 96 bits.
        const MAX_MANTISSA: u128 = (1 << 96) - 1;
        let mut e = self;
        // Trailing zeros of the fraction can go without changing the value, when Decimal has no
        // room for them.
        while (e.scale > 28 || e.mantissa.unsigned_abs() > MAX_MANTISSA)
            && e.scale > 0
            && e.mantissa % 10 == 0
        {
            e.mantissa /= 10;
            e.scale -= 1;
        }
        Decimal::try_from_i128_with_scale(e.mantissa, e.scale).ok()
    }
}

impl PartialEq for Exact {
    fn eq(&self, other: &Exact) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Exact {}

impl PartialOrd for Exact {
    fn partial_cmp(&self, other: &Exact) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Exact {
    fn cmp(&self, other: &Exact) -> Ordering {
        // Integer parts first, then the fractions at the larger scale: a fraction is below
        // 10^scale ≤ 10^38, so aligning it never overflows (aligning whole mantissas could).
        let split = |e: &Exact| {
            let unit = pow10(e.scale).unwrap_or(i128::MAX);
            (e.mantissa / unit, e.mantissa % unit)
        };
        let ((ia, fa), (ib, fb)) = (split(self), split(other));
        let scale = self.scale.max(other.scale);
        let align = |f: i128, s: u32| f.saturating_mul(pow10(scale - s).unwrap_or(i128::MAX));
        ia.cmp(&ib)
            .then_with(|| align(fa, self.scale).cmp(&align(fb, other.scale)))
    }
}

impl fmt::Display for Exact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_decimal() {
            Some(d) => write!(f, "{d}"),
            None => write!(f, "{}e-{}", self.mantissa, self.scale),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn the_grammar_takes_plain_decimals_only() {
        for (text, want) in [
            ("0", "0"),
            ("5", "5"),
            ("-2.50", "-2.50"),
            ("0.000000001", "0.000000001"),
            ("999999999999999", "999999999999999"),
            ("123456789.123456789", "123456789.123456789"),
            ("-0", "0"),
        ] {
            assert_eq!(
                parse(text, &EVENT_VALUE).map(|v| v.to_string()),
                Ok(want.to_string()),
                "{text}"
            );
        }
        for bad in [
            "", "-", "+5", " 5 ", "5 ", "1_000", "5.", ".5", "1e3", "1E3", "01", "-01", "--1",
            "0x10", "NaN", "inf", "1.2.3", "1,5", "½", "٣",
        ] {
            assert_eq!(
                parse(bad, &EVENT_VALUE),
                Err(DecimalError::Syntax),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_limits_are_counted_as_written() {
        use DecimalError::*;
        for (text, want) in [
            ("1000000000000000", TooLarge(15)),
            ("0.1234567891", TooManyFractionDigits(9)),
            ("1234567890123.123456", TooManySignificantDigits(18)),
            ("79228162514264337593543950335", TooLarge(15)),
            ("0.123456789012345678901234567890", TooManyFractionDigits(9)),
        ] {
            assert_eq!(parse(text, &EVENT_VALUE), Err(want), "{text}");
        }
        // Leading zeros of a fraction are not significant; trailing ones are.
        assert!(parse("0.000000123", &EVENT_VALUE).is_ok());
        assert_eq!(
            parse(
                "-1",
                &Limits {
                    negative: false,
                    ..EVENT_VALUE
                }
            ),
            Err(DecimalError::Negative)
        );
        assert_eq!(
            parse(
                "-0.0",
                &Limits {
                    negative: false,
                    ..EVENT_VALUE
                }
            )
            .map(|v| v.is_zero()),
            Ok(true)
        );
        // A very long text is refused without building its number.
        let long = "9".repeat(10_000);
        assert_eq!(parse(&long, &EVENT_VALUE), Err(TooLarge(15)));
    }

    #[test]
    fn json_numbers_may_carry_an_exponent() {
        use DecimalError::*;
        let ok = |t: &str| parse_json_number(t, &EVENT_VALUE).map(|v| v.to_string());
        for (text, want) in [
            ("1e3", "1000"),
            ("1E+3", "1000"),
            ("-2.5e-1", "-0.25"),
            ("1e-9", "0.000000001"),
            ("0.00012e2", "0.012"),
            ("1.50e1", "15.0"),
            ("0e999999999999", "0"),
            ("12.5", "12.5"),
        ] {
            assert_eq!(ok(text), Ok(want.to_string()), "{text}");
        }
        for (text, want) in [
            ("1e15", TooLarge(15)),
            ("1e-10", TooManyFractionDigits(9)),
            ("7.922816251426434e+28", TooLarge(15)),
            ("1e99999999999999999999", TooLarge(15)),
            ("1e-99999999999999999999", TooManyFractionDigits(9)),
            ("1e", Syntax),
            ("1e+", Syntax),
            ("e3", Syntax),
            ("1.e3", Syntax),
            ("+1e3", Syntax),
            ("1e3.5", Syntax),
            ("1ee3", Syntax),
        ] {
            assert_eq!(parse_json_number(text, &EVENT_VALUE), Err(want), "{text}");
        }
        // Plain text takes no exponent.
        assert_eq!(parse("1e3", &EVENT_VALUE), Err(Syntax));
    }

    #[test]
    fn check_counts_digits_as_parse_does() {
        for text in [
            "0",
            "5",
            "-2.50",
            "0.000000001",
            "999999999999999",
            "1000000000000000",
        ] {
            assert_eq!(
                check(d(text), &EVENT_VALUE).is_ok(),
                parse(text, &EVENT_VALUE).is_ok(),
                "{text}"
            );
        }
    }

    #[test]
    fn exact_sums_never_round() {
        assert_eq!(add(d("1.5"), d("2.25")), Some(d("3.75")));
        // Decimal's `+` would round this to 28 digits.
        let big = d("79228162514264337593543950.335");
        assert_eq!(add(big, d("0.0001")), None);
        assert_eq!(add(Decimal::MAX, Decimal::ONE), None);
        assert_eq!(sub(d("10"), d("0.000000001")), Some(d("9.999999999")));
    }

    #[test]
    fn rounding_is_half_away_from_zero_once() {
        let e = |s: &str| Exact::from(d(s));
        assert_eq!(e("0.005").round_to(2), Some(1));
        assert_eq!(e("-0.005").round_to(2), Some(-1));
        assert_eq!(e("0.0049999").round_to(2), Some(0));
        assert_eq!(e("12").round_to(2), Some(1200));
        // The product Decimal would round to 28 digits before the cent is taken.
        let p = e("99.99999999999999999999999999")
            .checked_mul(e("0.00015"))
            .unwrap();
        assert_eq!(p.round_to(2), Some(1));
        assert_eq!(p.to_decimal(), None);
    }

    #[test]
    fn exact_values_order_by_value() {
        let e = |s: &str| Exact::from(d(s));
        assert!(e("1.10") == e("1.1"));
        assert!(e("0.999") < e("1"));
        assert!(e("-2") < e("-1.5"));
        assert_eq!(
            e("7").div_ceil(e("2.5")).map(|q| q.round_to(0)),
            Some(Some(3))
        );
        assert_eq!(
            e("5").div_ceil(e("2.5")).map(|q| q.round_to(0)),
            Some(Some(2))
        );
    }
}
