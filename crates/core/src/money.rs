//! Money: integer counts of a currency's minor unit, and the ISO 4217 currencies Tally knows.
//!
//! Amounts are never floats. A [`Money`] is an `i64` count of minor units (cents for EUR, yen for
//! JPY, fils for KWD) next to its [`Currency`]. Prices and rates that need more precision than the
//! minor unit are [`Decimal`]s in major units, and become money only through [`round_to_minor`].

use std::fmt;
use std::str::FromStr;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Errors building currencies and money values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The code is not an ISO 4217 currency Tally knows.
    #[error("unknown currency \"{0}\"")]
    UnknownCurrency(String),
    /// An amount has more decimal places than the currency's minor unit allows.
    #[error("{amount} has more decimal places than {currency} allows ({exponent})")]
    TooPrecise {
        /// The amount as written.
        amount: Decimal,
        /// The currency's upper-case code.
        currency: String,
        /// Decimal places of the currency's minor unit.
        exponent: u32,
    },
    /// An amount does not fit in an `i64` count of minor units.
    #[error("{0} is too large for an amount of money")]
    Overflow(Decimal),
    /// Two amounts in different currencies were combined.
    #[error("cannot combine {0} and {1} amounts")]
    CurrencyMismatch(String, String),
}

/// ISO 4217 codes and their minor-unit exponents (decimal places).
const CURRENCIES: &[(&str, u32)] = &[
    // Zero-decimal currencies.
    ("bif", 0),
    ("clp", 0),
    ("djf", 0),
    ("gnf", 0),
    ("isk", 0),
    ("jpy", 0),
    ("kmf", 0),
    ("krw", 0),
    ("pyg", 0),
    ("rwf", 0),
    ("ugx", 0),
    ("vnd", 0),
    ("vuv", 0),
    ("xaf", 0),
    ("xof", 0),
    ("xpf", 0),
    // Three-decimal currencies.
    ("bhd", 3),
    ("iqd", 3),
    ("jod", 3),
    ("kwd", 3),
    ("lyd", 3),
    ("omr", 3),
    ("tnd", 3),
    // Two-decimal currencies.
    ("aed", 2),
    ("ars", 2),
    ("aud", 2),
    ("bgn", 2),
    ("brl", 2),
    ("cad", 2),
    ("chf", 2),
    ("cny", 2),
    ("cop", 2),
    ("czk", 2),
    ("dkk", 2),
    ("egp", 2),
    ("eur", 2),
    ("gbp", 2),
    ("hkd", 2),
    ("huf", 2),
    ("idr", 2),
    ("ils", 2),
    ("inr", 2),
    ("kes", 2),
    ("mad", 2),
    ("mxn", 2),
    ("myr", 2),
    ("ngn", 2),
    ("nok", 2),
    ("nzd", 2),
    ("pen", 2),
    ("php", 2),
    ("pkr", 2),
    ("pln", 2),
    ("ron", 2),
    ("rsd", 2),
    ("sar", 2),
    ("sek", 2),
    ("sgd", 2),
    ("thb", 2),
    ("try", 2),
    ("twd", 2),
    ("uah", 2),
    ("usd", 2),
    ("zar", 2),
];

/// An ISO 4217 currency with the number of decimal places of its minor unit.
///
/// Only currencies in Tally's table can be built, so every `Currency` has a known exponent.
/// Codes are lowercase, as Stripe writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: &'static str,
    exponent: u32,
}

impl Currency {
    /// Euro.
    pub const EUR: Currency = Currency {
        code: "eur",
        exponent: 2,
    };
    /// US dollar.
    pub const USD: Currency = Currency {
        code: "usd",
        exponent: 2,
    };

    /// Parses an ISO 4217 code in any letter case (`"EUR"`, `"eur"`).
    pub fn parse(code: &str) -> Result<Currency, MoneyError> {
        let lower = code.trim().to_ascii_lowercase();
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == lower)
            .map(|&(code, exponent)| Currency { code, exponent })
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_string()))
    }

    /// The lowercase ISO code, e.g. `"eur"`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Decimal places of the minor unit: 2 for EUR, 0 for JPY, 3 for KWD.
    pub fn exponent(&self) -> u32 {
        self.exponent
    }

    /// Converts an exact amount in major units to minor units, refusing amounts finer than the
    /// minor unit (`"199.001"` EUR) instead of rounding them.
    pub fn exact_minor(&self, major: Decimal) -> Result<i64, MoneyError> {
        let normalized = major.normalize();
        if normalized.scale() > self.exponent {
            return Err(MoneyError::TooPrecise {
                amount: major,
                currency: self.code.to_ascii_uppercase(),
                exponent: self.exponent,
            });
        }
        try_round_to_minor(major, *self)
    }

    /// Formats a count of minor units in major units with the currency's decimal places
    /// (`19900` EUR → `"199.00"`).
    pub fn format_minor(&self, minor: i64) -> String {
        Decimal::new(minor, self.exponent).to_string()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Currency::parse(&code).map_err(serde::de::Error::custom)
    }
}

/// An amount of money: an integer count of the currency's minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// Count of minor units (cents for EUR); negative for credits and refunds.
    pub minor: i64,
    /// The currency the amount is in.
    pub currency: Currency,
}

impl Money {
    /// An amount of `minor` minor units of `currency`.
    pub fn new(minor: i64, currency: Currency) -> Money {
        Money { minor, currency }
    }

    /// Zero in `currency`.
    pub fn zero(currency: Currency) -> Money {
        Money { minor: 0, currency }
    }

    /// An exact amount in major units (`"199.00"` EUR); fails when it is finer than the minor unit.
    pub fn from_major(major: Decimal, currency: Currency) -> Result<Money, MoneyError> {
        Ok(Money {
            minor: currency.exact_minor(major)?,
            currency,
        })
    }

    /// The amount in major units, exactly.
    pub fn to_major(&self) -> Decimal {
        Decimal::new(self.minor, self.currency.exponent())
    }

    /// Adds two amounts of the same currency.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(
                self.currency.code().to_string(),
                other.currency.code().to_string(),
            ));
        }
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(MoneyError::Overflow(self.to_major()))?;
        Ok(Money::new(minor, self.currency))
    }
}

impl fmt::Display for Money {
    /// `EUR 199.00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            self.currency.code().to_ascii_uppercase(),
            self.currency.format_minor(self.minor)
        )
    }
}

/// Rounds an amount in major units to the currency's minor unit, half away from zero
/// (`0.125` EUR → 13 cents, `-0.125` EUR → −13 cents), failing when it does not fit an `i64`.
pub fn try_round_to_minor(major: Decimal, currency: Currency) -> Result<i64, MoneyError> {
    let scale = Decimal::from(10i64.pow(currency.exponent()));
    major
        .checked_mul(scale)
        .map(|m| m.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero))
        .and_then(|m| m.to_i64())
        .ok_or(MoneyError::Overflow(major))
}

/// Rounds an amount in major units to the currency's minor unit, half away from zero.
///
/// Amounts beyond the `i64` range saturate at `i64::MIN`/`i64::MAX`; billing code that can meet
/// such amounts uses [`try_round_to_minor`].
pub fn round_to_minor(major: Decimal, currency: Currency) -> i64 {
    try_round_to_minor(major, currency).unwrap_or(if major.is_sign_negative() {
        i64::MIN
    } else {
        i64::MAX
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn parses_codes_in_any_case() {
        assert_eq!(Currency::parse("EUR").unwrap(), Currency::EUR);
        assert_eq!(Currency::parse("eur").unwrap().code(), "eur");
        assert_eq!(Currency::parse("JPY").unwrap().exponent(), 0);
        assert_eq!(Currency::parse("kwd").unwrap().exponent(), 3);
        assert_eq!(
            Currency::parse("EUX"),
            Err(MoneyError::UnknownCurrency("EUX".into()))
        );
        assert_eq!(
            Currency::parse("EUX").unwrap_err().to_string(),
            "unknown currency \"EUX\""
        );
    }

    #[test]
    fn serializes_as_lowercase_code() {
        assert_eq!(serde_json::to_string(&Currency::EUR).unwrap(), "\"eur\"");
        let c: Currency = serde_json::from_str("\"USD\"").unwrap();
        assert_eq!(c, Currency::USD);
        assert!(serde_json::from_str::<Currency>("\"xyz\"").is_err());
    }

    #[test]
    fn rounds_half_away_from_zero() {
        let eur = Currency::EUR;
        assert_eq!(round_to_minor(dec!(0.125), eur), 13);
        assert_eq!(round_to_minor(dec!(0.124999), eur), 12);
        assert_eq!(round_to_minor(dec!(-0.125), eur), -13);
        assert_eq!(
            round_to_minor(dec!(2.5), Currency::parse("jpy").unwrap()),
            3
        );
        assert_eq!(
            round_to_minor(dec!(1.0005), Currency::parse("kwd").unwrap()),
            1001
        );
        assert_eq!(round_to_minor(dec!(34.5), eur), 3450);
    }

    #[test]
    fn round_to_minor_saturates_and_try_reports_overflow() {
        let huge = Decimal::MAX;
        assert_eq!(round_to_minor(huge, Currency::EUR), i64::MAX);
        assert_eq!(round_to_minor(-huge, Currency::EUR), i64::MIN);
        assert_eq!(
            try_round_to_minor(huge, Currency::EUR),
            Err(MoneyError::Overflow(huge))
        );
    }

    #[test]
    fn exact_amounts_refuse_sub_minor_precision() {
        assert_eq!(Currency::EUR.exact_minor(dec!(199.00)), Ok(19900));
        assert_eq!(Currency::EUR.exact_minor(dec!(199.000)), Ok(19900));
        let err = Currency::EUR.exact_minor(dec!(199.001)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "199.001 has more decimal places than EUR allows (2)"
        );
        let jpy = Currency::parse("jpy").unwrap();
        assert_eq!(jpy.exact_minor(dec!(500)), Ok(500));
        assert!(jpy.exact_minor(dec!(500.5)).is_err());
    }

    #[test]
    fn formats_money() {
        assert_eq!(Money::new(19900, Currency::EUR).to_string(), "EUR 199.00");
        assert_eq!(Money::new(-5, Currency::EUR).to_string(), "EUR -0.05");
        assert_eq!(
            Money::new(500, Currency::parse("jpy").unwrap()).to_string(),
            "JPY 500"
        );
        assert_eq!(
            Money::from_major(dec!(5), Currency::USD).unwrap().minor,
            500
        );
        assert_eq!(Money::new(123, Currency::EUR).to_major(), dec!(1.23));
    }

    #[test]
    fn adding_checks_currency() {
        let a = Money::new(100, Currency::EUR);
        assert_eq!(a.checked_add(a).unwrap().minor, 200);
        assert!(a.checked_add(Money::new(1, Currency::USD)).is_err());
    }
}
