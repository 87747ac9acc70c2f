//! Meter mode (`[catalog] stripe_usage = "meters"`): how a plan's overage charge becomes a
//! Stripe metered price, and how a period's quantity becomes a meter event's value.
//!
//! Stripe takes integer meter values only, so quantities are sent in thousandths of the
//! metric's unit ([`METER_SCALE`]) and every price is expressed per thousandth. A metered price
//! is graduated-tiered: a free first tier up to the included quantity, then the overage charge's
//! tiers shifted by it. Per-unit, graduated and pass-through charges can be expressed so; volume
//! and package charges cannot (Stripe's volume tiers would price the included units too, and a
//! package price cannot hold a free tier), and an unlimited allowance needs no price at all.

use rust_decimal::Decimal;

use super::{Allowance, Charge, Plan, PlanMetric};
use crate::money::Currency;

/// Meter values are quantities times this: thousandths of the metric's unit.
pub const METER_SCALE: i64 = 1000;
/// Stripe accepts at most 12 decimal places in `unit_amount_decimal`.
const MAX_PRICE_DECIMALS: u32 = 12;

/// One tier of a metered price, in meter units (thousandths) and the currency's minor units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterTier {
    /// Upper bound in meter units (inclusive); `None` is the last, unbounded tier.
    pub up_to: Option<i64>,
    /// Price of one meter unit in minor units, possibly with a fraction (`unit_amount_decimal`).
    pub unit_amount: Decimal,
    /// Flat amount in minor units due once any unit falls into the tier.
    pub flat_amount: Decimal,
}

/// The metered price of one plan's metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeteredPrice {
    /// Graduated tiers, the first free up to the included quantity (when there is one).
    pub tiers: Vec<MeterTier>,
}

/// A quantity in meter units (thousandths), or `None` when it is not a whole number of them.
pub fn to_meter_units(q: Decimal) -> Option<i64> {
    let scaled = q.checked_mul(Decimal::from(METER_SCALE))?;
    if scaled.fract() != Decimal::ZERO {
        return None;
    }
    i64::try_from(scaled).ok()
}

/// A period's quantity as a meter event value: thousandths, rounded half away from zero when
/// the quantity is finer than that.
pub fn meter_value(q: Decimal) -> Option<i64> {
    let scaled = q.checked_mul(Decimal::from(METER_SCALE))?;
    i64::try_from(
        scaled.round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero),
    )
    .ok()
}

/// A price per unit in major units as minor units per meter unit, within Stripe's precision.
fn per_meter_unit(major: Decimal, currency: Currency, what: &str) -> Result<Decimal, String> {
    let minor = major
        .checked_mul(Decimal::from(10i64.pow(currency.exponent())))
        .and_then(|m| m.checked_div(Decimal::from(METER_SCALE)))
        .ok_or_else(|| format!("{what} is too large"))?
        .normalize();
    if minor.scale() > MAX_PRICE_DECIMALS {
        return Err(format!(
            "{what} {} {} per unit needs more than {MAX_PRICE_DECIMALS} decimal places of a \
             minor unit per thousandth, which Stripe cannot hold",
            currency.code().to_ascii_uppercase(),
            major.normalize()
        ));
    }
    Ok(minor)
}

fn minor(major: Decimal, currency: Currency) -> Result<Decimal, String> {
    major
        .checked_mul(Decimal::from(10i64.pow(currency.exponent())))
        .map(|d| d.normalize())
        .ok_or_else(|| "a flat tier amount is too large".to_owned())
}

fn units(q: Decimal, what: &str) -> Result<i64, String> {
    to_meter_units(q).ok_or_else(|| {
        format!(
            "{what} {} is finer than a thousandth of a unit, which meter values cannot carry",
            q.normalize()
        )
    })
}

/// The metered price that bills `pm`'s overage, `Ok(None)` when nothing is billed (no overage
/// charge, or an unlimited allowance), or why meter mode cannot express it.
pub fn metered_price(plan: &Plan, pm: &PlanMetric) -> Result<Option<MeteredPrice>, String> {
    let Some(charge) = &pm.overage else {
        return Ok(None);
    };
    let included = match pm.included {
        Allowance::Unlimited => return Ok(None),
        Allowance::Quantity(q) => units(q, "the included quantity")?,
    };
    let currency = plan.currency;
    let mut tiers = Vec::new();
    if included > 0 {
        tiers.push(MeterTier {
            up_to: Some(included),
            unit_amount: Decimal::ZERO,
            flat_amount: Decimal::ZERO,
        });
    }
    match charge {
        Charge::PerUnit { unit_price } => tiers.push(MeterTier {
            up_to: None,
            unit_amount: per_meter_unit(*unit_price, currency, "the unit price")?,
            flat_amount: Decimal::ZERO,
        }),
        Charge::PassThrough { markup } => {
            let factor = (Decimal::ONE_HUNDRED + *markup) / Decimal::ONE_HUNDRED;
            tiers.push(MeterTier {
                up_to: None,
                unit_amount: per_meter_unit(factor, currency, "the marked-up unit price")?,
                flat_amount: Decimal::ZERO,
            });
        }
        Charge::Graduated { tiers: ts } => {
            for t in ts {
                let up_to = match t.up_to {
                    None => None,
                    Some(u) => Some(
                        units(u, "a tier bound")?
                            .checked_add(included)
                            .ok_or("a tier bound is too large")?,
                    ),
                };
                tiers.push(MeterTier {
                    up_to,
                    unit_amount: per_meter_unit(t.unit_price, currency, "a tier's unit price")?,
                    flat_amount: minor(t.flat, currency)?,
                });
            }
        }
        Charge::Volume { .. } | Charge::Package { .. } => {
            return Err(format!(
                "the {} charge of {} on plan {} cannot be expressed as a Stripe metered price \
                 (meter mode supports per_unit, graduated and pass_through charges); bill this \
                 catalog with stripe_usage = \"invoice_items\"",
                charge.model(),
                pm.name,
                plan.id
            ))
        }
    }
    Ok(Some(MeteredPrice { tiers }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use rust_decimal_macros::dec;

    fn magic_box() -> Catalog {
        let src = include_str!("../../../../catalogs/magicbox.toml");
        Catalog::parse(src, "magicbox.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn magic_box_pro_as_metered_prices() {
        let c = magic_box();
        let pro = c.plan("pro").unwrap();
        let compute = metered_price(pro, &pro.metrics["compute_hours"]).unwrap();
        assert_eq!(
            compute,
            Some(MeteredPrice {
                tiers: vec![
                    MeterTier {
                        up_to: Some(300_000),
                        unit_amount: dec!(0),
                        flat_amount: dec!(0)
                    },
                    MeterTier {
                        up_to: None,
                        unit_amount: dec!(0.004),
                        flat_amount: dec!(0)
                    },
                ]
            })
        );
        let spend = metered_price(pro, &pro.metrics["api_spend"])
            .unwrap()
            .unwrap();
        assert_eq!(spend.tiers[0].up_to, Some(150_000));
        assert_eq!(spend.tiers[1].unit_amount, dec!(0.115));
        // Enterprise compute is unlimited: no price; a gauge without overage neither.
        let ent = c.plan("enterprise").unwrap();
        assert_eq!(metered_price(ent, &ent.metrics["compute_hours"]), Ok(None));
        assert_eq!(metered_price(pro, &pro.metrics["vms"]), Ok(None));
    }

    #[test]
    fn values_are_thousandths() {
        assert_eq!(meter_value(dec!(350)), Some(350_000));
        assert_eq!(meter_value(dec!(0.0005)), Some(1));
        assert_eq!(meter_value(dec!(0.0004)), Some(0));
        assert_eq!(to_meter_units(dec!(0.0005)), None);
        assert_eq!(to_meter_units(dec!(2.5)), Some(2500));
    }
}
