//! Catalog push: make Stripe's products, prices, coupons, promotion codes and Customer Portal
//! configuration match a Tally catalog.
//!
//! Safe to run twice at once and to rerun after a crash half-way:
//! - every object is looked up first (products and coupons by their deterministic custom ids,
//!   prices by lookup key, promotion codes by code, the portal configuration by metadata);
//! - every write carries an idempotency key derived from its parameters and the state it
//!   replaces, so two concurrent runs send the same keys and Stripe makes each object once;
//! - prices are immutable: a changed amount creates a new price that takes over the lookup key
//!   (`transfer_lookup_key`), and any other active price left on a managed product (also one left
//!   behind by a crash between the two steps) is archived.

use crate::idempotency::IdempotencyKey;
use crate::model::{
    Coupon, CouponDiscount, CouponDuration, Interval, Metadata, Price, Product, Recurring,
};
use crate::resources::catalog::{
    NewCoupon, NewPrice, NewProduct, NewPromotionCode, PortalConfigurationParams, ProductUpdate,
};
use crate::{Client, Error};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use tally_core::catalog::{self, Catalog};
use tally_core::period;

/// Metadata key naming the catalog an object belongs to.
pub const META_CATALOG: &str = "tally_catalog";
/// Metadata key of a plan's id.
pub const META_PLAN: &str = "tally_plan";
/// Metadata key of a credit pack's id.
pub const META_CREDIT_PACK: &str = "tally_credit_pack";
/// Metadata key of a coupon's id.
pub const META_COUPON: &str = "tally_coupon";
/// Metadata key with the hash of the portal configuration Tally last wrote.
pub const META_PORTAL_HASH: &str = "tally_portal_hash";

/// One thing the push did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Change {
    /// A product was created.
    CreateProduct {
        /// Product id.
        id: String,
        /// Name.
        name: String,
    },
    /// A product's name, metadata or active flag was changed.
    UpdateProduct {
        /// Product id.
        id: String,
        /// What changed.
        fields: Vec<String>,
    },
    /// A price was created.
    CreatePrice {
        /// Lookup key.
        lookup_key: String,
        /// Minor units.
        amount: i64,
        /// Currency.
        currency: String,
        /// `month`, `year` or None for one-time.
        interval: Option<String>,
        /// The new price's id (None in a dry run).
        id: Option<String>,
        /// The price it replaces (whose lookup key it takes).
        replaces: Option<String>,
    },
    /// An archived price with the right amount was activated again.
    ReactivatePrice {
        /// Price id.
        id: String,
        /// Lookup key.
        lookup_key: String,
    },
    /// A price was archived.
    ArchivePrice {
        /// Price id.
        id: String,
        /// Its lookup key, if it still has one.
        lookup_key: Option<String>,
    },
    /// A coupon was created.
    CreateCoupon {
        /// Coupon id.
        id: String,
    },
    /// A coupon's name or metadata was changed.
    UpdateCoupon {
        /// Coupon id.
        id: String,
    },
    /// A promotion code was created.
    CreatePromotionCode {
        /// The code.
        code: String,
        /// Its coupon.
        coupon: String,
    },
    /// The Customer Portal configuration was created.
    CreatePortalConfiguration {
        /// Id (None in a dry run).
        id: Option<String>,
    },
    /// The Customer Portal configuration was updated.
    UpdatePortalConfiguration {
        /// Id.
        id: String,
    },
    /// A Billing Meter was created (meter mode).
    CreateMeter {
        /// Its event name.
        event_name: String,
        /// `mtr_…` (None in a dry run).
        id: Option<String>,
    },
    /// A metered price was created (meter mode).
    CreateMeteredPrice {
        /// Lookup key.
        lookup_key: String,
        /// The meter's event name.
        event_name: String,
        /// The new price's id (None in a dry run).
        id: Option<String>,
        /// The price it replaces (whose lookup key it takes).
        replaces: Option<String>,
    },
}

/// Something the push cannot fix by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// The object concerned.
    pub object: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// The outcome of a push.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Whether changes were made (`--commit`) or only planned.
    pub committed: bool,
    /// Changes made or planned, in order.
    pub changes: Vec<Change>,
    /// Objects found as they should be.
    pub unchanged: usize,
    /// Differences left alone.
    pub warnings: Vec<Warning>,
}

/// Why a push stopped. What was done before the failure is in `report`; rerunning continues.
#[derive(Debug, thiserror::Error)]
#[error("catalog push stopped at {step}: {source}")]
pub struct PushError {
    /// What was being done.
    pub step: String,
    /// Stripe's error (with its request id).
    #[source]
    pub source: Error,
    /// What was done before.
    pub report: Report,
}

/// Lowercase letters, digits and `_` of the catalog name: the namespace of Tally's custom ids.
pub fn catalog_slug(c: &Catalog) -> String {
    let s: String = c
        .name
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() {
                ch.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_matches('_').to_string();
    if s.is_empty() {
        "catalog".to_string()
    } else {
        s
    }
}

/// Product id of a plan.
pub fn plan_product_id(c: &Catalog, plan: &str) -> String {
    format!("tally_{}_plan_{plan}", catalog_slug(c))
}

/// Product id of a credit pack.
pub fn credit_pack_product_id(c: &Catalog, pack: &str) -> String {
    format!("tally_{}_pack_{pack}", catalog_slug(c))
}

struct WantProduct {
    id: String,
    name: String,
    metadata: Metadata,
}

struct WantPrice {
    lookup_key: String,
    product: String,
    currency: String,
    amount: i64,
    recurring: Option<Recurring>,
    metadata: Metadata,
}

fn interval(i: period::Interval) -> Interval {
    match i {
        period::Interval::Month => Interval::Month,
        period::Interval::Year => Interval::Year,
    }
}

fn key(scope: &str, what: &impl std::fmt::Debug, state: &str) -> IdempotencyKey {
    IdempotencyKey::from_content(&format!("push:{scope}"), &[&format!("{what:?}"), state])
}

fn wanted(c: &Catalog) -> (Vec<WantProduct>, Vec<WantPrice>) {
    let slug = catalog_slug(c);
    let mut products = Vec::new();
    let mut prices = Vec::new();
    for plan in c.plans() {
        // A plan without prices (the free plan) has nothing to sell through Stripe.
        if plan.prices.is_empty() {
            continue;
        }
        let id = plan_product_id(c, &plan.id);
        let metadata: Metadata = [
            (META_CATALOG.to_string(), slug.clone()),
            (META_PLAN.to_string(), plan.id.clone()),
        ]
        .into();
        for (i, p) in &plan.prices {
            prices.push(WantPrice {
                lookup_key: p.lookup_key.clone(),
                product: id.clone(),
                currency: plan.currency.code().to_string(),
                amount: p.amount,
                recurring: Some(Recurring {
                    interval: interval(*i),
                    interval_count: 1,
                }),
                metadata: metadata.clone(),
            });
        }
        products.push(WantProduct {
            id,
            name: plan.name.clone(),
            metadata,
        });
    }
    // Meter mode: one product per billed metric, holding the plans' metered prices.
    let mut metrics_done = BTreeSet::new();
    for w in crate::push_meters::wanted_metered(c).unwrap_or_default() {
        if !metrics_done.insert(w.metric.clone()) {
            continue;
        }
        let name = c
            .metric(&w.metric)
            .map_or_else(|| w.metric.clone(), |m| m.name.clone());
        products.push(WantProduct {
            id: w.product.clone(),
            name,
            metadata: [
                (META_CATALOG.to_string(), slug.clone()),
                (
                    crate::push_meters::META_METRIC.to_string(),
                    w.metric.clone(),
                ),
            ]
            .into(),
        });
    }
    for pack in c.credit_packs() {
        let id = credit_pack_product_id(c, &pack.id);
        let metadata: Metadata = [
            (META_CATALOG.to_string(), slug.clone()),
            (META_CREDIT_PACK.to_string(), pack.id.clone()),
            (
                "tally_credits".to_string(),
                pack.credits.normalize().to_string(),
            ),
        ]
        .into();
        prices.push(WantPrice {
            lookup_key: pack.lookup_key.clone(),
            product: id.clone(),
            currency: pack.currency.code().to_string(),
            amount: pack.amount,
            recurring: None,
            metadata: metadata.clone(),
        });
        products.push(WantProduct {
            id,
            name: pack.name.clone(),
            metadata,
        });
    }
    (products, prices)
}

fn coupon_params(c: &Catalog, coupon: &catalog::Coupon) -> NewCoupon {
    NewCoupon {
        id: Some(coupon.id.clone()),
        name: coupon.name.clone(),
        discount: match &coupon.discount {
            catalog::Discount::Percent(p) => CouponDiscount::Percent(p.normalize()),
            catalog::Discount::Amount { amount, currency } => CouponDiscount::Amount {
                amount: *amount,
                currency: currency.code().to_string(),
            },
        },
        duration: match coupon.duration {
            catalog::CouponDuration::Once => CouponDuration::Once,
            catalog::CouponDuration::Forever => CouponDuration::Forever,
            catalog::CouponDuration::Repeating { months } => CouponDuration::Repeating { months },
        },
        max_redemptions: coupon.max_redemptions,
        redeem_by: coupon.redeem_by.map(|t| t.timestamp()),
        applies_to_products: coupon.plans.iter().map(|p| plan_product_id(c, p)).collect(),
        metadata: [
            (META_CATALOG.to_string(), catalog_slug(c)),
            (META_COUPON.to_string(), coupon.id.clone()),
        ]
        .into(),
    }
}

/// The terms of an existing coupon that differ from the catalog's (they cannot be changed).
fn coupon_term_differences(have: &Coupon, want: &NewCoupon) -> Vec<&'static str> {
    let mut d = Vec::new();
    if have.discount != want.discount {
        d.push("discount");
    }
    if have.duration != want.duration {
        d.push("duration");
    }
    if have.max_redemptions != want.max_redemptions {
        d.push("max_redemptions");
    }
    if have.redeem_by != want.redeem_by {
        d.push("redeem_by");
    }
    let a: BTreeSet<&String> = have.applies_to_products.iter().collect();
    let b: BTreeSet<&String> = want.applies_to_products.iter().collect();
    if a != b {
        d.push("plans");
    }
    d
}

fn metadata_missing(have: &Metadata, want: &Metadata) -> bool {
    want.iter().any(|(k, v)| have.get(k) != Some(v))
}

fn same_terms(p: &Price, w: &WantPrice) -> bool {
    p.product == w.product
        && p.currency == w.currency
        && p.unit_amount == Some(w.amount)
        && p.recurring == w.recurring
}

struct Run<'a> {
    client: &'a Client,
    commit: bool,
    report: Report,
}

impl Run<'_> {
    fn fail(self, step: impl Into<String>, source: Error) -> PushError {
        PushError {
            step: step.into(),
            source,
            report: self.report,
        }
    }
}

macro_rules! attempt {
    ($run:ident, $step:expr, $fut:expr) => {
        match $fut.await {
            Ok(v) => v,
            Err(e) => return Err($run.fail($step, e)),
        }
    };
}

/// Makes Stripe match `catalog` (with `commit`), or reports what that would change. `now` (unix
/// seconds, from Tally's clock) decides which coupons can no longer be redeemed.
pub async fn push(
    client: &Client,
    catalog: &Catalog,
    commit: bool,
    now: i64,
) -> Result<Report, PushError> {
    let mut run = Run {
        client,
        commit,
        report: Report {
            committed: commit,
            ..Default::default()
        },
    };
    // Meter mode refuses charges Stripe cannot rate before it writes anything.
    let metered = match crate::push_meters::wanted_metered(catalog) {
        Ok(m) => m,
        Err(reasons) => {
            let e = Error {
                kind: crate::ErrorKind::Config(reasons.join("; ")),
                request_id: None,
                status: None,
                attempts: 0,
            };
            return Err(run.fail("meter mode", e));
        }
    };
    let (products, prices) = wanted(catalog);

    // Products.
    let mut existing_products: BTreeMap<String, Product> = BTreeMap::new();
    for w in &products {
        let found = attempt!(run, format!("product {}", w.id), run.client.product(&w.id));
        match found.map(|f| f.value) {
            None => {
                run.report.changes.push(Change::CreateProduct {
                    id: w.id.clone(),
                    name: w.name.clone(),
                });
                if run.commit {
                    let p = NewProduct {
                        id: Some(w.id.clone()),
                        name: w.name.clone(),
                        metadata: w.metadata.clone(),
                    };
                    let k = key("product", &p, "");
                    match run.client.create_product(&p, &k).await {
                        Ok(made) => {
                            existing_products.insert(w.id.clone(), made.value);
                        }
                        // Another run made it between our look-up and our create.
                        Err(e) if e.kind.is_already_exists() => {}
                        Err(e) => return Err(run.fail(format!("create product {}", w.id), e)),
                    }
                }
            }
            Some(have) => {
                let mut fields = Vec::new();
                if have.name != w.name {
                    fields.push("name".to_string());
                }
                if metadata_missing(&have.metadata, &w.metadata) {
                    fields.push("metadata".to_string());
                }
                if !have.active {
                    fields.push("active".to_string());
                }
                if fields.is_empty() {
                    run.report.unchanged += 1;
                } else {
                    run.report.changes.push(Change::UpdateProduct {
                        id: w.id.clone(),
                        fields,
                    });
                    if run.commit {
                        let u = ProductUpdate {
                            name: Some(w.name.clone()),
                            active: Some(true),
                            metadata: w.metadata.clone(),
                        };
                        let state = format!("{}|{}|{:?}", have.name, have.active, have.metadata);
                        let k = key("product_update", &(&w.id, &u), &state);
                        attempt!(
                            run,
                            format!("update product {}", w.id),
                            run.client.update_product(&w.id, &u, &k)
                        );
                    }
                }
                existing_products.insert(w.id.clone(), have);
            }
        }
    }

    // Prices, by lookup key.
    let keys: Vec<String> = prices.iter().map(|p| p.lookup_key.clone()).collect();
    let current = attempt!(
        run,
        "list prices by lookup key",
        run.client.prices_by_lookup_keys(&keys)
    );
    let by_key: BTreeMap<String, Price> = current
        .into_iter()
        .filter_map(|p| Some((p.lookup_key.clone()?, p)))
        .collect();
    // The price that holds each lookup key once the push is done, per product.
    let mut keep: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut price_ids: BTreeMap<String, String> = BTreeMap::new();
    for w in &prices {
        let have = by_key.get(&w.lookup_key);
        match have {
            Some(p) if same_terms(p, w) => {
                if p.active {
                    run.report.unchanged += 1;
                } else {
                    run.report.changes.push(Change::ReactivatePrice {
                        id: p.id.clone(),
                        lookup_key: w.lookup_key.clone(),
                    });
                    if run.commit {
                        let k = key("price_active", &(&p.id, true), "");
                        attempt!(
                            run,
                            format!("reactivate price {}", p.id),
                            run.client.set_price_active(&p.id, true, &k)
                        );
                    }
                }
                keep.entry(w.product.clone())
                    .or_default()
                    .insert(p.id.clone());
                price_ids.insert(w.lookup_key.clone(), p.id.clone());
            }
            _ => {
                let replaces = have.map(|p| p.id.clone());
                let mut id = None;
                if run.commit {
                    let np = NewPrice {
                        product: w.product.clone(),
                        currency: w.currency.clone(),
                        unit_amount: w.amount,
                        recurring: w.recurring,
                        lookup_key: Some(w.lookup_key.clone()),
                        // Also takes the key from an archived price that still holds it.
                        transfer_lookup_key: true,
                        metadata: w.metadata.clone(),
                    };
                    // The replaced price is part of the key: going back to an earlier amount
                    // later must make a new price, not replay the first one.
                    let k = key("price", &np, replaces.as_deref().unwrap_or("-"));
                    let made = attempt!(
                        run,
                        format!("create price {}", w.lookup_key),
                        run.client.create_price(&np, &k)
                    );
                    keep.entry(w.product.clone())
                        .or_default()
                        .insert(made.value.id.clone());
                    price_ids.insert(w.lookup_key.clone(), made.value.id.clone());
                    id = Some(made.value.id);
                }
                run.report.changes.push(Change::CreatePrice {
                    lookup_key: w.lookup_key.clone(),
                    amount: w.amount,
                    currency: w.currency.clone(),
                    interval: w.recurring.map(|r| r.interval.as_str().to_string()),
                    id,
                    replaces: replaces.clone(),
                });
                if let Some(old) = have.filter(|p| p.active) {
                    if !run.commit {
                        // With --commit, the sweep below archives it.
                        run.report.changes.push(Change::ArchivePrice {
                            id: old.id.clone(),
                            lookup_key: old.lookup_key.clone(),
                        });
                    }
                }
            }
        }
    }
    if !metered.is_empty() {
        run = match push_metered(run, &metered, &mut keep).await {
            Ok(r) => r,
            Err(e) => return Err(*e),
        };
    }
    // Archive every other active price of the products Tally manages: the prices just replaced
    // and any left behind by an interrupted push.
    if run.commit {
        for w in &products {
            let list = attempt!(
                run,
                format!("list prices of {}", w.id),
                run.client.prices_of_product(&w.id, Some(true))
            );
            for p in list {
                if keep.get(&w.id).is_some_and(|k| k.contains(&p.id)) {
                    continue;
                }
                run.report.changes.push(Change::ArchivePrice {
                    id: p.id.clone(),
                    lookup_key: p.lookup_key.clone(),
                });
                let k = key("price_active", &(&p.id, false), "");
                attempt!(
                    run,
                    format!("archive price {}", p.id),
                    run.client.set_price_active(&p.id, false, &k)
                );
            }
        }
    }

    // Coupons and their promotion codes.
    for coupon in catalog.coupons() {
        let want = coupon_params(catalog, coupon);
        let have = attempt!(
            run,
            format!("coupon {}", coupon.id),
            run.client.coupon(&coupon.id)
        );
        let usable = match have.map(|h| h.value) {
            None => {
                if want.redeem_by.is_some_and(|t| t <= now) {
                    run.report.warnings.push(Warning {
                        object: format!("coupon {}", coupon.id),
                        message: "its redeem_by has passed; not created".into(),
                    });
                    false
                } else {
                    run.report.changes.push(Change::CreateCoupon {
                        id: coupon.id.clone(),
                    });
                    if run.commit {
                        let k = key("coupon", &want, "");
                        match run.client.create_coupon(&want, &k).await {
                            Ok(_) => {}
                            Err(e) if e.kind.is_already_exists() => {}
                            Err(e) => {
                                return Err(run.fail(format!("create coupon {}", coupon.id), e))
                            }
                        }
                    }
                    true
                }
            }
            Some(h) => {
                let diff = coupon_term_differences(&h, &want);
                if !diff.is_empty() {
                    run.report.warnings.push(Warning {
                        object: format!("coupon {}", coupon.id),
                        message: format!(
                            "Stripe's coupon differs in {} and coupon terms cannot be changed; \
                             give the coupon a new id in the catalog",
                            diff.join(", ")
                        ),
                    });
                }
                if h.name.as_deref() != Some(want.name.as_str())
                    || metadata_missing(&h.metadata, &want.metadata)
                {
                    run.report.changes.push(Change::UpdateCoupon {
                        id: coupon.id.clone(),
                    });
                    if run.commit {
                        let state = format!("{:?}|{:?}", h.name, h.metadata);
                        let k = key("coupon_update", &(&want.name, &want.metadata), &state);
                        attempt!(
                            run,
                            format!("update coupon {}", coupon.id),
                            run.client
                                .update_coupon(&coupon.id, &want.name, &want.metadata, &k)
                        );
                    }
                } else {
                    run.report.unchanged += 1;
                }
                h.valid
            }
        };
        if !usable {
            continue;
        }
        let codes = attempt!(
            run,
            format!("promotion code {}", coupon.id),
            run.client.promotion_codes_by_code(&coupon.id)
        );
        if codes.iter().any(|p| p.coupon == coupon.id) {
            run.report.unchanged += 1;
        } else {
            run.report.changes.push(Change::CreatePromotionCode {
                code: coupon.id.clone(),
                coupon: coupon.id.clone(),
            });
            if run.commit {
                let p = NewPromotionCode {
                    coupon: coupon.id.clone(),
                    code: coupon.id.clone(),
                    metadata: want.metadata.clone(),
                };
                let k = key("promotion_code", &p, "");
                attempt!(
                    run,
                    format!("create promotion code {}", coupon.id),
                    run.client.create_promotion_code(&p, &k)
                );
            }
        }
    }

    // The Customer Portal configuration: switch between the plans' recurring prices.
    let slug = catalog_slug(catalog);
    let mut switch = Vec::new();
    for plan in catalog.plans() {
        let ids: Vec<String> = plan
            .prices
            .values()
            .map(|p| {
                price_ids
                    .get(&p.lookup_key)
                    .cloned()
                    .unwrap_or_else(|| format!("<{}>", p.lookup_key))
            })
            .collect();
        if !ids.is_empty() {
            switch.push((plan_product_id(catalog, &plan.id), ids));
        }
    }
    let mut portal = PortalConfigurationParams {
        cancel_at_period_end: true,
        switch_prices: switch,
        proration_behavior: "create_prorations".into(),
        payment_method_update: true,
        invoice_history: true,
        default_return_url: None,
        metadata: [(META_CATALOG.to_string(), slug.clone())].into(),
    };
    let hash = hex::encode(Sha256::digest(format!("{portal:?}").as_bytes()));
    portal
        .metadata
        .insert(META_PORTAL_HASH.to_string(), hash.clone());
    let configs = attempt!(
        run,
        "list portal configurations",
        run.client.portal_configurations()
    );
    let mine = configs
        .iter()
        .find(|c| c.metadata.get(META_CATALOG) == Some(&slug));
    match mine {
        None => {
            let mut id = None;
            if run.commit {
                let k = key("portal", &hash, "");
                let made = attempt!(
                    run,
                    "create portal configuration",
                    run.client.create_portal_configuration(&portal, &k)
                );
                id = Some(made.value.id);
            }
            run.report
                .changes
                .push(Change::CreatePortalConfiguration { id });
        }
        Some(c) if c.metadata.get(META_PORTAL_HASH) == Some(&hash) => {
            run.report.unchanged += 1;
        }
        Some(c) => {
            run.report
                .changes
                .push(Change::UpdatePortalConfiguration { id: c.id.clone() });
            if run.commit {
                let k = key("portal_update", &hash, &c.id);
                attempt!(
                    run,
                    "update portal configuration",
                    run.client.update_portal_configuration(&c.id, &portal, &k)
                );
            }
        }
    }
    Ok(run.report)
}

/// Meters and metered prices (meter mode): each looked up by its stable name first, created
/// when missing; a metered price whose terms changed is replaced. The prices kept go into
/// `keep` so that the sweep does not archive them.
async fn push_metered<'a>(
    mut run: Run<'a>,
    metered: &[crate::push_meters::WantMetered],
    keep: &mut BTreeMap<String, BTreeSet<String>>,
) -> Result<Run<'a>, Box<PushError>> {
    use crate::push_meters::META_TERMS;
    use crate::resources::meters::{NewMeter, NewMeteredPrice};
    macro_rules! step {
        ($step:expr, $fut:expr) => {
            match $fut.await {
                Ok(v) => v,
                Err(e) => return Err(Box::new(run.fail($step, e))),
            }
        };
    }
    let existing = step!("list meters", run.client.active_meters());
    let mut meter_ids: BTreeMap<String, String> =
        existing.into_iter().map(|m| (m.event_name, m.id)).collect();
    let mut done = BTreeSet::new();
    for w in metered {
        if !done.insert(w.event_name.clone()) {
            continue;
        }
        if meter_ids.contains_key(&w.event_name) {
            run.report.unchanged += 1;
            continue;
        }
        let mut id = None;
        if run.commit {
            let display = format!(
                "{} ({})",
                w.metric,
                w.metadata.get(META_CATALOG).cloned().unwrap_or_default()
            );
            let m = NewMeter {
                display_name: display,
                event_name: w.event_name.clone(),
            };
            let made = step!(
                format!("create meter {}", w.event_name),
                run.client.create_meter(&m, &key("meter", &m, ""))
            );
            meter_ids.insert(w.event_name.clone(), made.value.id.clone());
            id = Some(made.value.id);
        }
        run.report.changes.push(Change::CreateMeter {
            event_name: w.event_name.clone(),
            id,
        });
    }
    let keys: Vec<String> = metered.iter().map(|w| w.lookup_key.clone()).collect();
    let current = step!(
        "list metered prices by lookup key",
        run.client.prices_by_lookup_keys(&keys)
    );
    let by_key: BTreeMap<String, Price> = current
        .into_iter()
        .filter_map(|p| Some((p.lookup_key.clone()?, p)))
        .collect();
    for w in metered {
        let have = by_key.get(&w.lookup_key);
        match have {
            Some(p) if p.metadata.get(META_TERMS) == w.metadata.get(META_TERMS) => {
                if p.active {
                    run.report.unchanged += 1;
                } else {
                    run.report.changes.push(Change::ReactivatePrice {
                        id: p.id.clone(),
                        lookup_key: w.lookup_key.clone(),
                    });
                    if run.commit {
                        step!(
                            format!("reactivate price {}", p.id),
                            run.client.set_price_active(
                                &p.id,
                                true,
                                &key("price_active", &(&p.id, true), "")
                            )
                        );
                    }
                }
                keep.entry(w.product.clone())
                    .or_default()
                    .insert(p.id.clone());
            }
            _ => {
                let replaces = have.map(|p| p.id.clone());
                let mut id = None;
                if run.commit {
                    let Some(meter) = meter_ids.get(&w.event_name).cloned() else {
                        continue;
                    };
                    let np = NewMeteredPrice {
                        product: w.product.clone(),
                        currency: w.currency.clone(),
                        interval: crate::model::Interval::Month,
                        meter,
                        tiers: w.tiers.clone(),
                        lookup_key: w.lookup_key.clone(),
                        metadata: w.metadata.clone(),
                    };
                    let k = key("metered_price", &np, replaces.as_deref().unwrap_or("-"));
                    let made = step!(
                        format!("create metered price {}", w.lookup_key),
                        run.client.create_metered_price(&np, &k)
                    );
                    keep.entry(w.product.clone())
                        .or_default()
                        .insert(made.value.id.clone());
                    id = Some(made.value.id);
                }
                run.report.changes.push(Change::CreateMeteredPrice {
                    lookup_key: w.lookup_key.clone(),
                    event_name: w.event_name.clone(),
                    id,
                    replaces,
                });
            }
        }
    }
    Ok(run)
}
