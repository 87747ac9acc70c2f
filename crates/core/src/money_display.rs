//! Money as people read it: grouping, decimal separator and currency symbol per locale, from
//! integer minor units (no floats). `EUR 123456` reads `€1,234.56` in `en` and `1.234,56 €` in
//! `de`; zero-decimal currencies (JPY) have no decimals, three-decimal ones (KWD) three.

use crate::money::Currency;

/// The locales pages are shown in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Locale {
    /// English: `$1,234.56`.
    #[default]
    En,
    /// German: `1.234,56 €`.
    De,
}

impl Locale {
    /// Parses a BCP 47 tag by its language (`en`, `en-US`, `de`, `de-AT`, …); `None` for a
    /// language Tally has no format for.
    pub fn parse(tag: &str) -> Option<Locale> {
        let lang = tag.split(['-', '_']).next().unwrap_or("");
        match lang.to_ascii_lowercase().as_str() {
            "en" => Some(Locale::En),
            "de" => Some(Locale::De),
            _ => None,
        }
    }

    /// The language tag (`en`, `de`).
    pub fn tag(self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::De => "de",
        }
    }

    fn separators(self) -> (char, char) {
        match self {
            Locale::En => (',', '.'),
            Locale::De => ('.', ','),
        }
    }
}

/// The symbol a currency is written with, when it has a well-known one.
fn symbol(currency: Currency) -> Option<&'static str> {
    match currency.code() {
        "usd" => Some("$"),
        "eur" => Some("€"),
        "gbp" => Some("£"),
        "jpy" => Some("¥"),
        _ => None,
    }
}

/// `minor` units of `currency` written for `locale`: `en` puts the symbol first (`$1,234.56`,
/// `-€0.05`), `de` after the number with a space (`1.234,56 €`); a currency without a well-known
/// symbol is written with its upper-case code (`KWD 1,234.567`, `1.234,567 KWD`).
pub fn format_money(minor: i64, currency: Currency, locale: Locale) -> String {
    let number = format_number(minor, currency.exponent(), locale);
    let sign = if minor < 0 { "-" } else { "" };
    let code = currency.code().to_ascii_uppercase();
    match (locale, symbol(currency)) {
        (Locale::En, Some(s)) => format!("{sign}{s}{number}"),
        (Locale::En, None) => format!("{sign}{code}\u{a0}{number}"),
        (Locale::De, s) => format!("{sign}{number}\u{a0}{}", s.unwrap_or(&code)),
    }
}

/// The absolute value of `minor` with `exponent` decimals, digits grouped by three.
fn format_number(minor: i64, exponent: u32, locale: Locale) -> String {
    let (group, decimal) = locale.separators();
    let digits = minor.unsigned_abs().to_string();
    let exp = exponent as usize;
    // Left-pad so there is at least one integer digit.
    let digits = format!("{digits:0>width$}", width = exp + 1);
    let (int, frac) = digits.split_at(digits.len() - exp);
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(group);
        }
        out.push(c);
    }
    if exp > 0 {
        out.push(decimal);
        out.push_str(frac);
    }
    out
}

/// A decimal quantity string (`1234567.5`, as Tally's APIs write quantities) grouped for
/// `locale` (`1,234,567.5` / `1.234.567,5`). Text that is not a plain decimal is returned as is.
pub fn format_quantity(q: &str, locale: Locale) -> String {
    let (sign, rest) = match q.strip_prefix('-') {
        Some(r) => ("-", r),
        None => ("", q),
    };
    let (int, frac) = rest.split_once('.').unwrap_or((rest, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return q.to_owned();
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return q.to_owned();
    }
    let (group, decimal) = locale.separators();
    let mut out = String::from(sign);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(group);
        }
        out.push(c);
    }
    if !frac.is_empty() {
        out.push(decimal);
        out.push_str(frac);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    #[test]
    fn two_decimal_currencies_per_locale() {
        assert_eq!(format_money(123456, cur("usd"), Locale::En), "$1,234.56");
        assert_eq!(
            format_money(123456, cur("eur"), Locale::De),
            "1.234,56\u{a0}€"
        );
        assert_eq!(format_money(123456, cur("eur"), Locale::En), "€1,234.56");
        assert_eq!(
            format_money(123456, cur("usd"), Locale::De),
            "1.234,56\u{a0}$"
        );
        assert_eq!(format_money(5, cur("usd"), Locale::En), "$0.05");
        assert_eq!(format_money(0, cur("eur"), Locale::De), "0,00\u{a0}€");
        assert_eq!(format_money(-5, cur("eur"), Locale::En), "-€0.05");
        assert_eq!(format_money(100, cur("chf"), Locale::En), "CHF\u{a0}1.00");
        assert_eq!(
            format_money(123456789012, cur("usd"), Locale::En),
            "$1,234,567,890.12"
        );
    }

    #[test]
    fn zero_and_three_decimal_currencies() {
        assert_eq!(format_money(1234, cur("jpy"), Locale::En), "¥1,234");
        assert_eq!(format_money(1234, cur("jpy"), Locale::De), "1.234\u{a0}¥");
        assert_eq!(format_money(0, cur("jpy"), Locale::En), "¥0");
        assert_eq!(
            format_money(1234567, cur("kwd"), Locale::En),
            "KWD\u{a0}1,234.567"
        );
        assert_eq!(
            format_money(1234567, cur("kwd"), Locale::De),
            "1.234,567\u{a0}KWD"
        );
        assert_eq!(format_money(7, cur("kwd"), Locale::En), "KWD\u{a0}0.007");
    }

    #[test]
    fn extremes_do_not_overflow() {
        assert_eq!(
            format_money(i64::MIN, cur("usd"), Locale::En),
            "-$92,233,720,368,547,758.08"
        );
        assert_eq!(
            format_money(i64::MAX, cur("jpy"), Locale::De),
            "9.223.372.036.854.775.807\u{a0}¥"
        );
    }

    #[test]
    fn locales_parse_by_language() {
        assert_eq!(Locale::parse("de-AT"), Some(Locale::De));
        assert_eq!(Locale::parse("EN_us"), Some(Locale::En));
        assert_eq!(Locale::parse("fr"), None);
        assert_eq!(Locale::parse(""), None);
    }

    #[test]
    fn quantities_group_per_locale() {
        assert_eq!(format_quantity("1234567.5", Locale::En), "1,234,567.5");
        assert_eq!(format_quantity("1234567.5", Locale::De), "1.234.567,5");
        assert_eq!(format_quantity("-1000", Locale::En), "-1,000");
        assert_eq!(format_quantity("12", Locale::De), "12");
        assert_eq!(format_quantity("1e5", Locale::En), "1e5");
    }
}
