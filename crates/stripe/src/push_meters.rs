//! Meter mode of the catalog push (`[catalog] stripe_usage = "meters"`): one Billing Meter per
//! metric a plan bills, and per plan a metered price per metric on its monthly interval.
//!
//! Names are stable, so a push finds what an earlier one made: the meter's `event_name` is
//! `tally_<catalog>_<metric>`, the price's lookup key `<plan's monthly lookup key>_<metric>`, on
//! the product `tally_<catalog>_metric_<metric>`. A price's terms (meter, currency, tiers) are
//! hashed into `metadata[tally_terms]`: a price whose hash differs is replaced by a new one that
//! takes its lookup key.
//!
//! Yearly prices get no metered price: Tally's allowances reset monthly, and every price of a
//! Stripe subscription shares its interval, so a yearly metered price would rate the year's sum
//! against one allowance. Yearly subscriptions of a meter-mode catalog keep invoice items.

use sha2::{Digest, Sha256};
use tally_core::catalog::meters::{self, MeteredPrice};
use tally_core::catalog::{Catalog, StripeUsage};
use tally_core::period;

use crate::model::Metadata;
use crate::resources::meters::PriceTier;

/// Metadata key with the hash of a metered price's terms.
pub const META_TERMS: &str = "tally_terms";
/// Metadata key of a metric's id.
pub const META_METRIC: &str = "tally_metric";

/// A meter's event name for a metric.
pub fn meter_event_name(c: &Catalog, metric: &str) -> String {
    format!("tally_{}_{metric}", super::push::catalog_slug(c))
}

/// The product holding a metric's metered prices.
pub fn metric_product_id(c: &Catalog, metric: &str) -> String {
    format!("tally_{}_metric_{metric}", super::push::catalog_slug(c))
}

/// The lookup key of a plan's metered price for a metric.
pub fn metered_lookup_key(plan_lookup_key: &str, metric: &str) -> String {
    format!("{plan_lookup_key}_{metric}")
}

/// One metered price the catalog wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantMetered {
    /// Plan id.
    pub plan: String,
    /// Metric id.
    pub metric: String,
    /// Lookup key.
    pub lookup_key: String,
    /// Product id.
    pub product: String,
    /// Meter event name.
    pub event_name: String,
    /// Lowercase ISO currency.
    pub currency: String,
    /// Graduated tiers.
    pub tiers: Vec<PriceTier>,
    /// Metadata, with the hash of the terms.
    pub metadata: Metadata,
}

fn tiers(p: &MeteredPrice) -> Vec<PriceTier> {
    p.tiers
        .iter()
        .map(|t| PriceTier {
            up_to: t.up_to,
            unit_amount: t.unit_amount,
            flat_amount: t.flat_amount,
        })
        .collect()
}

/// The metered prices of a meter-mode catalog (none in invoice-items mode), or every reason
/// why the catalog cannot be billed through meters.
pub fn wanted_metered(c: &Catalog) -> Result<Vec<WantMetered>, Vec<String>> {
    if c.stripe_usage != StripeUsage::Meters {
        return Ok(Vec::new());
    }
    let slug = super::push::catalog_slug(c);
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for plan in c.plans() {
        let Some(monthly) = plan.prices.get(&period::Interval::Month) else {
            continue;
        };
        for (metric, pm) in plan.metrics_in_order() {
            match meters::metered_price(plan, pm) {
                Ok(None) => {}
                Ok(Some(p)) => {
                    let event_name = meter_event_name(c, metric);
                    let product = metric_product_id(c, metric);
                    let currency = plan.currency.code().to_string();
                    let tiers = tiers(&p);
                    let terms = format!("{event_name}|{product}|{currency}|month|{tiers:?}");
                    let hash = hex::encode(Sha256::digest(terms.as_bytes()));
                    let metadata: Metadata = [
                        (super::push::META_CATALOG.to_string(), slug.clone()),
                        (super::push::META_PLAN.to_string(), plan.id.clone()),
                        (META_METRIC.to_string(), metric.clone()),
                        (META_TERMS.to_string(), hash),
                    ]
                    .into();
                    out.push(WantMetered {
                        plan: plan.id.clone(),
                        metric: metric.clone(),
                        lookup_key: metered_lookup_key(&monthly.lookup_key, metric),
                        product,
                        event_name,
                        currency,
                        tiers,
                        metadata,
                    });
                }
                Err(e) => errors.push(e),
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The lookup keys of the metered prices a subscription to `plan` on `interval` carries as
/// extra items (none outside meter mode, and none on yearly prices).
pub fn metered_lookup_keys(c: &Catalog, plan: &str, interval: period::Interval) -> Vec<String> {
    if interval != period::Interval::Month {
        return Vec::new();
    }
    wanted_metered(c)
        .unwrap_or_default()
        .into_iter()
        .filter(|w| w.plan == plan)
        .map(|w| w.lookup_key)
        .collect()
}
