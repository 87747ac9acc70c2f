//! The catalog file's shape as written, with source spans, before validation.

use std::collections::BTreeMap;
use std::fmt;

use rust_decimal::Decimal;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

use crate::decimal::{self, DecimalError, CATALOG_NUMBER};

pub(crate) type Map<T> = BTreeMap<Spanned<String>, Spanned<T>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCatalog {
    pub catalog: Spanned<RawHeader>,
    #[serde(default)]
    pub metrics: Map<RawMetric>,
    #[serde(default)]
    pub plans: Map<RawPlan>,
    #[serde(default)]
    pub credit_packs: Map<RawCreditPack>,
    #[serde(default)]
    pub coupons: Map<RawCoupon>,
    #[serde(default)]
    pub flags: Map<RawFlag>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeader {
    pub name: Spanned<String>,
    pub currency: Spanned<String>,
    pub free_plan: Option<Spanned<String>>,
    pub stripe_usage: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetric {
    pub name: Option<Spanned<String>>,
    pub unit: Option<Spanned<String>>,
    pub aggregation: Option<Spanned<String>>,
    pub kind: Option<Spanned<String>>,
    #[serde(default)]
    pub allow_negative: bool,
    pub unique_property: Option<Spanned<String>>,
    pub credit_cost: Option<Spanned<Num>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlan {
    pub name: Option<Spanned<String>>,
    pub currency: Option<Spanned<String>>,
    #[serde(default)]
    pub prices: Map<RawPrice>,
    pub trial_days: Option<Spanned<i64>>,
    #[serde(default)]
    pub metrics: Map<RawPlanMetric>,
    #[serde(default)]
    pub features: Map<RawFeature>,
    pub monthly_credits: Option<Spanned<Num>>,
    #[serde(default)]
    pub credits_roll_over: bool,
    pub low_credit_balance: Option<Spanned<Num>>,
    pub minimum: Option<Spanned<Num>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPrice {
    pub amount: Spanned<Num>,
    pub lookup_key: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlanMetric {
    pub included: Option<Spanned<RawAllowance>>,
    pub overage: Option<Spanned<RawCharge>>,
    pub limit: Option<Spanned<RawLimit>>,
    pub warn_at_percent: Option<Spanned<Vec<Spanned<i64>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCharge {
    pub model: Spanned<String>,
    pub unit_price: Option<Spanned<Num>>,
    pub tiers: Option<Spanned<Vec<Spanned<RawTier>>>>,
    pub size: Option<Spanned<Num>>,
    pub price: Option<Spanned<Num>>,
    pub markup_percent: Option<Spanned<Num>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTier {
    pub up_to: Option<Spanned<RawAllowance>>,
    pub unit_price: Option<Spanned<Num>>,
    pub flat: Option<Spanned<Num>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimit {
    pub quantity: Spanned<Num>,
    pub enforcement: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCreditPack {
    pub name: Option<Spanned<String>>,
    pub credits: Spanned<Num>,
    pub currency: Option<Spanned<String>>,
    pub price: Spanned<RawPrice>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCoupon {
    pub name: Option<Spanned<String>>,
    pub percent_off: Option<Spanned<Num>>,
    pub amount_off: Option<Spanned<Num>>,
    pub currency: Option<Spanned<String>>,
    pub duration: Spanned<String>,
    pub duration_in_months: Option<Spanned<i64>>,
    pub redeem_by: Option<Spanned<toml::value::Datetime>>,
    pub max_redemptions: Option<Spanned<i64>>,
    #[serde(default)]
    pub plans: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFlag {
    pub description: Option<Spanned<String>>,
    #[serde(default)]
    pub enabled: bool,
    pub rollout_percent: Option<Spanned<Num>>,
    #[serde(default)]
    pub environments: Vec<Spanned<String>>,
}

/// A decimal number written as a string (`"0.04"`) or a TOML integer (`300`). TOML floats are
/// refused: they would pass through binary floating point.
pub(crate) struct Num(pub Decimal);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumVisitor).map(Num)
    }
}

struct NumVisitor;

fn parse_decimal<E: de::Error>(s: &str) -> Result<Decimal, E> {
    decimal::parse(s, &CATALOG_NUMBER).map_err(|e| E::custom(format!("\"{s}\" {e}")))
}

fn decimal_from_i64<E: de::Error>(v: i64) -> Result<Decimal, E> {
    decimal::check(Decimal::from(v), &CATALOG_NUMBER).map_err(|e| E::custom(format!("{v} {e}")))
}

/// A TOML integer beyond `i64` (toml reads those as `i128`) is beyond the limits too.
fn decimal_from_i128<E: de::Error>(v: i128) -> Result<Decimal, E> {
    Decimal::try_from_i128_with_scale(v, 0)
        .ok()
        .and_then(|d| decimal::check(d, &CATALOG_NUMBER).ok())
        .ok_or_else(|| {
            E::custom(format!(
                "{v} {}",
                DecimalError::TooLarge(CATALOG_NUMBER.max_integer_digits)
            ))
        })
}

fn decimal_from_u128<E: de::Error>(v: u128) -> Result<Decimal, E> {
    i128::try_from(v)
        .map_err(|_| {
            E::custom(format!(
                "{v} {}",
                DecimalError::TooLarge(CATALOG_NUMBER.max_integer_digits)
            ))
        })
        .and_then(decimal_from_i128)
}

pub(crate) const FLOAT_MESSAGE: &str =
    "write decimal numbers as strings (e.g. \"0.05\") so they are read exactly";

impl Visitor<'_> for NumVisitor {
    type Value = Decimal;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a decimal number as a string (\"0.05\") or an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Decimal, E> {
        decimal_from_i64(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Decimal, E> {
        decimal_from_u128(u128::from(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Decimal, E> {
        decimal_from_i128(v)
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Decimal, E> {
        decimal_from_u128(v)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Decimal, E> {
        Err(E::custom(FLOAT_MESSAGE))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Decimal, E> {
        parse_decimal(v)
    }
}

/// `"unlimited"`, a decimal string or an integer.
pub(crate) enum RawAllowance {
    Unlimited,
    Quantity(Decimal),
}

impl<'de> Deserialize<'de> for RawAllowance {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AllowanceVisitor)
    }
}

struct AllowanceVisitor;

impl Visitor<'_> for AllowanceVisitor {
    type Value = RawAllowance;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"unlimited\" or a quantity")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawAllowance, E> {
        decimal_from_i64(v).map(RawAllowance::Quantity)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawAllowance, E> {
        decimal_from_u128(u128::from(v)).map(RawAllowance::Quantity)
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<RawAllowance, E> {
        decimal_from_i128(v).map(RawAllowance::Quantity)
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<RawAllowance, E> {
        decimal_from_u128(v).map(RawAllowance::Quantity)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawAllowance, E> {
        Err(E::custom(FLOAT_MESSAGE))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawAllowance, E> {
        if v == "unlimited" {
            return Ok(RawAllowance::Unlimited);
        }
        match decimal::parse(v, &CATALOG_NUMBER) {
            Ok(q) => Ok(RawAllowance::Quantity(q)),
            Err(DecimalError::Syntax) => Err(E::custom(format!(
                "\"{v}\" is neither \"unlimited\" nor a quantity"
            ))),
            Err(e) => Err(E::custom(format!("\"{v}\" {e}"))),
        }
    }
}

/// A feature value: `true`/`false`, an integer, or a decimal string.
pub(crate) enum RawFeature {
    Bool(bool),
    Number(Decimal),
}

impl<'de> Deserialize<'de> for RawFeature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FeatureVisitor)
    }
}

struct FeatureVisitor;

impl Visitor<'_> for FeatureVisitor {
    type Value = RawFeature;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("true, false or a number")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawFeature, E> {
        Ok(RawFeature::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawFeature, E> {
        decimal_from_i64(v).map(RawFeature::Number)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawFeature, E> {
        decimal_from_u128(u128::from(v)).map(RawFeature::Number)
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<RawFeature, E> {
        decimal_from_i128(v).map(RawFeature::Number)
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<RawFeature, E> {
        decimal_from_u128(v).map(RawFeature::Number)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawFeature, E> {
        Err(E::custom(FLOAT_MESSAGE))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawFeature, E> {
        parse_decimal::<E>(v).map(RawFeature::Number).map_err(|_| {
            E::custom(format!(
                "feature values are true, false or a number, not \"{v}\" (an unlimited quantity is \
                 a metric with included = \"unlimited\")"
            ))
        })
    }
}
