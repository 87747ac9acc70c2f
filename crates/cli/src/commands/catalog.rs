//! `tally catalog check|show FILE`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use rust_decimal::Decimal;
use tally_core::catalog::{
    Allowance, Catalog, Charge, CouponDuration, Discount, Enforcement, FeatureValue, Plan,
    PlanMetric,
};
use tally_core::money::Currency;
use tally_core::period::Interval;

use super::{count, load_catalog, require_catalog, LoadError};
use crate::table::{Align, Table};

/// Catalog commands.
#[derive(Subcommand)]
pub enum CatalogCommand {
    /// Validate a catalog: a one-line summary and exit 0, or every error with its location and
    /// exit 1.
    Check {
        /// The catalog file (TOML).
        file: PathBuf,
    },
    /// Print a catalog's metrics, plans, prices, allowances, features, packs, coupons and flags.
    Show {
        /// The catalog file (TOML).
        file: PathBuf,
    },
}

/// Runs a catalog command.
pub fn run(cmd: CatalogCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CatalogCommand::Check { file } => match load_catalog(&file) {
            Ok(c) => {
                println!("{}: ok ({})", file.display(), summary(&c));
                Ok(ExitCode::SUCCESS)
            }
            Err(LoadError::Io(e)) => Err(e),
            Err(LoadError::Invalid(errors)) => {
                eprintln!("{errors}");
                eprintln!("{}: {}", file.display(), count(errors.len(), "error"));
                Ok(ExitCode::FAILURE)
            }
        },
        CatalogCommand::Show { file } => {
            let c = require_catalog(&file)?;
            print!("{}", show(&c));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn summary(c: &Catalog) -> String {
    format!(
        "{}: {}, {}, {}, {}, {}",
        c.name,
        count(c.plans().len(), "plan"),
        count(c.metrics().len(), "metric"),
        count(c.credit_packs().len(), "credit pack"),
        count(c.coupons().len(), "coupon"),
        count(c.flags().len(), "flag"),
    )
}

/// `EUR 199.00`.
pub fn money(minor: i64, currency: Currency) -> String {
    format!(
        "{} {}",
        currency.code().to_ascii_uppercase(),
        currency.format_minor(minor)
    )
}

fn num(d: Decimal) -> String {
    d.normalize().to_string()
}

fn price(plan: &Plan, interval: Interval) -> String {
    match plan.prices.get(&interval) {
        Some(p) => money(p.amount, plan.currency),
        None => "-".to_string(),
    }
}

fn is_money_metric(pm: &PlanMetric, currency: Currency) -> bool {
    pm.unit.eq_ignore_ascii_case(currency.code())
}

fn quantity(q: Decimal, pm: &PlanMetric, currency: Currency) -> String {
    if is_money_metric(pm, currency) {
        format!("{} {}", currency.code().to_ascii_uppercase(), num(q))
    } else {
        format!("{} {}", num(q), pm.unit)
    }
}

fn included(pm: &PlanMetric, currency: Currency) -> String {
    match pm.included {
        Allowance::Unlimited => "unlimited".to_string(),
        Allowance::Quantity(q) => quantity(q, pm, currency),
    }
}

fn overage(pm: &PlanMetric, currency: Currency) -> String {
    let code = currency.code().to_ascii_uppercase();
    let tiers = |tiers: &[tally_core::catalog::Tier]| {
        tiers
            .iter()
            .map(|t| {
                let bound = t
                    .up_to
                    .map_or("rest".to_string(), |u| format!("≤{}", num(u)));
                if t.flat.is_zero() {
                    format!("{bound} at {}", num(t.unit_price))
                } else {
                    format!("{bound} at {} + {}", num(t.unit_price), num(t.flat))
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match &pm.overage {
        None => "-".to_string(),
        Some(Charge::PerUnit { unit_price }) => {
            format!("{code} {} per {}", num(*unit_price), pm.unit)
        }
        Some(Charge::Graduated { tiers: t }) => format!("graduated {code}: {}", tiers(t)),
        Some(Charge::Volume { tiers: t }) => format!("volume {code}: {}", tiers(t)),
        Some(Charge::Package { size, price }) => {
            format!("{code} {} per {} {}", num(*price), num(*size), pm.unit)
        }
        Some(Charge::PassThrough { markup }) => format!("cost + {}%", num(*markup)),
    }
}

fn limit(pm: &PlanMetric, currency: Currency) -> String {
    match &pm.limit {
        None => "-".to_string(),
        Some(l) => {
            let how = match l.enforcement {
                Enforcement::Hard => "hard",
                Enforcement::Soft => "soft",
            };
            let warn = pm
                .warn_at_percent
                .iter()
                .map(|p| format!("{p}%"))
                .collect::<Vec<_>>()
                .join("/");
            format!(
                "{} {how}, warn at {warn}",
                quantity(l.quantity, pm, currency)
            )
        }
    }
}

/// The readable overview printed by `tally catalog show`.
pub fn show(c: &Catalog) -> String {
    let mut out = format!(
        "{} (currency {}, free plan: {})\n",
        c.name,
        c.currency.code().to_ascii_uppercase(),
        c.free_plan.as_deref().unwrap_or("none")
    );

    if !c.metrics().is_empty() {
        let mut t = Table::new(&[
            "METRIC",
            "NAME",
            "UNIT",
            "AGGREGATION",
            "KIND",
            "CREDITS/UNIT",
        ]);
        for m in c.metrics() {
            t.row(vec![
                m.id.clone(),
                m.name.clone(),
                m.unit.clone(),
                match &m.unique_property {
                    Some(p) => format!("{}({p})", m.aggregation.as_str()),
                    None => m.aggregation.as_str().to_string(),
                },
                match m.kind {
                    tally_core::catalog::MetricKind::Metered => "metered".to_string(),
                    tally_core::catalog::MetricKind::Gauge => "gauge".to_string(),
                },
                m.credit_cost.map_or("-".to_string(), num),
            ]);
        }
        out.push_str("\nMetrics\n");
        out.push_str(&t.render());
    }

    let mut t = Table::new(&[
        "PLAN",
        "NAME",
        "MONTHLY",
        "YEARLY",
        "TRIAL",
        "CREDITS/MONTH",
        "MINIMUM",
    ])
    .align(2, Align::Right)
    .align(3, Align::Right);
    for p in c.plans() {
        t.row(vec![
            p.id.clone(),
            p.name.clone(),
            price(p, Interval::Month),
            price(p, Interval::Year),
            if p.trial_days == 0 {
                "-".to_string()
            } else {
                count(p.trial_days as usize, "day")
            },
            p.monthly_credits.map_or("-".to_string(), |c| {
                if p.credits_roll_over {
                    format!("{} (roll over)", num(c))
                } else {
                    num(c)
                }
            }),
            p.minimum.map_or("-".to_string(), |m| money(m, p.currency)),
        ]);
    }
    out.push_str("\nPlans\n");
    out.push_str(&t.render());

    let mut t = Table::new(&["PLAN", "METRIC", "INCLUDED", "OVERAGE", "LIMIT"]);
    for p in c.plans() {
        for (id, pm) in p.metrics_in_order() {
            t.row(vec![
                p.id.clone(),
                id.clone(),
                included(pm, p.currency),
                overage(pm, p.currency),
                limit(pm, p.currency),
            ]);
        }
    }
    if c.plans().iter().any(|p| !p.metrics.is_empty()) {
        out.push_str("\nAllowances\n");
        out.push_str(&t.render());
    }

    // Features as a matrix: one row per feature, one column per plan.
    let features: std::collections::BTreeSet<&String> =
        c.plans().iter().flat_map(|p| p.features.keys()).collect();
    if !features.is_empty() {
        let mut header = vec!["FEATURE".to_string()];
        header.extend(c.plans().iter().map(|p| p.id.clone()));
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        let mut t = Table::new(&header);
        for feature in features {
            let mut row = vec![feature.clone()];
            for p in c.plans() {
                row.push(match p.features.get(feature) {
                    None => "-".to_string(),
                    Some(FeatureValue::Bool(true)) => "yes".to_string(),
                    Some(FeatureValue::Bool(false)) => "no".to_string(),
                    Some(FeatureValue::Number(n)) => num(*n),
                });
            }
            t.row(row);
        }
        out.push_str("\nFeatures\n");
        out.push_str(&t.render());
    }

    if !c.credit_packs().is_empty() {
        let mut t = Table::new(&["PACK", "NAME", "CREDITS", "PRICE", "LOOKUP KEY"])
            .align(2, Align::Right)
            .align(3, Align::Right);
        for pack in c.credit_packs() {
            t.row(vec![
                pack.id.clone(),
                pack.name.clone(),
                num(pack.credits),
                money(pack.amount, pack.currency),
                pack.lookup_key.clone(),
            ]);
        }
        out.push_str("\nCredit packs\n");
        out.push_str(&t.render());
    }

    if !c.coupons().is_empty() {
        let mut t = Table::new(&[
            "COUPON",
            "DISCOUNT",
            "DURATION",
            "REDEEM BEFORE",
            "MAX",
            "PLANS",
        ]);
        for coupon in c.coupons() {
            t.row(vec![
                coupon.id.clone(),
                match &coupon.discount {
                    Discount::Percent(p) => format!("{}% off", num(*p)),
                    Discount::Amount { amount, currency } => {
                        format!("{} off", money(*amount, *currency))
                    }
                },
                match coupon.duration {
                    CouponDuration::Once => "once".to_string(),
                    CouponDuration::Repeating { months } => count(months as usize, "month"),
                    CouponDuration::Forever => "forever".to_string(),
                },
                coupon.redeem_by.map_or("-".to_string(), |d| {
                    d.format("%Y-%m-%d %H:%M UTC").to_string()
                }),
                coupon
                    .max_redemptions
                    .map_or("-".to_string(), |m| m.to_string()),
                if coupon.plans.is_empty() {
                    "all".to_string()
                } else {
                    coupon.plans.join(", ")
                },
            ]);
        }
        out.push_str("\nCoupons\n");
        out.push_str(&t.render());
    }

    if !c.flags().is_empty() {
        let mut t = Table::new(&["FLAG", "ENABLED", "ROLLOUT", "ENVIRONMENTS"]);
        for f in c.flags() {
            t.row(vec![
                f.id.clone(),
                if f.enabled { "yes" } else { "no" }.to_string(),
                format!("{}%", num(f.rollout_percent)),
                if f.environments.is_empty() {
                    "all".to_string()
                } else {
                    f.environments.join(", ")
                },
            ]);
        }
        out.push_str("\nFlags\n");
        out.push_str(&t.render());
    }
    out
}
