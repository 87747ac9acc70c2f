//! Entitlement decisions: may a customer use a feature, or this much more of a metric?
//!
//! A feature check reads the plan's boolean or numeric feature. A metric check compares usage
//! after the request — the period's aggregate for metered metrics, the latest value for gauges,
//! plus the requested quantity — with the plan's limit: a hard limit denies, a soft limit allows
//! and the excess is billed as overage. When the metric costs prepaid credits, the customer's
//! balance must also cover the request.
//!
//! `used`, `remaining`, `percent` and `level` describe usage before the request.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

use crate::catalog::{Allowance, Enforcement, FeatureValue, Metric, Plan};

/// Why a check was answered the way it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A boolean feature that is on, or a numeric feature above zero.
    FeatureEnabled,
    /// A boolean feature that is off, or a numeric feature of zero.
    FeatureDisabled,
    /// The plan does not declare the feature.
    FeatureNotInPlan,
    /// The metric has no limit on this plan, and usage after the request stays within the
    /// included quantity (or the allowance is unlimited, or nothing beyond it is charged).
    Unlimited,
    /// The metric has no limit, but usage after the request goes beyond the included quantity:
    /// allowed, and the excess is billed as overage.
    Overage,
    /// Usage after the request stays within the limit.
    WithinLimit,
    /// A hard limit would be exceeded.
    LimitExceeded,
    /// A soft limit is exceeded: allowed, and the excess is billed as overage.
    SoftLimitExceeded,
    /// The credit balance does not cover the request.
    InsufficientCredits,
}

/// How close usage is to its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageLevel {
    /// Below every warning threshold, or no limit.
    Ok,
    /// At or above a warning threshold, below the limit.
    Warning,
    /// At or above the limit.
    AtLimit,
}

/// The answer to an entitlement check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntitlementDecision {
    /// Whether the customer may go ahead.
    pub allowed: bool,
    /// Why.
    pub reason: Reason,
    /// Usage so far (metric checks) or `None`.
    pub used: Option<Decimal>,
    /// The limit, or a numeric feature's value; `None` when unlimited.
    pub limit: Option<Decimal>,
    /// `max(limit − used, 0)`; `None` when unlimited.
    pub remaining: Option<Decimal>,
    /// `used ÷ limit × 100`, two decimals, half away from zero; `None` without a positive limit.
    pub percent: Option<Decimal>,
    /// How close usage is to the limit.
    pub level: UsageLevel,
    /// Credits the request costs, when the metric is paid with credits.
    pub credits_required: Option<Decimal>,
    /// Whether usage after the request goes beyond the included quantity into a billed overage
    /// charge (a soft limit, or no limit at all).
    pub overage: bool,
}

/// Checks a boolean or numeric feature of a plan.
pub fn check_feature(plan: &Plan, feature: &str) -> EntitlementDecision {
    let (allowed, reason, limit) = match plan.features.get(feature) {
        None => (false, Reason::FeatureNotInPlan, None),
        Some(FeatureValue::Bool(true)) => (true, Reason::FeatureEnabled, None),
        Some(FeatureValue::Bool(false)) => (false, Reason::FeatureDisabled, None),
        Some(FeatureValue::Number(n)) if *n > Decimal::ZERO => {
            (true, Reason::FeatureEnabled, Some(*n))
        }
        Some(FeatureValue::Number(n)) => (false, Reason::FeatureDisabled, Some(*n)),
    };
    EntitlementDecision {
        allowed,
        reason,
        used: None,
        limit,
        remaining: limit,
        percent: None,
        level: UsageLevel::Ok,
        credits_required: None,
        overage: false,
    }
}

/// A metric check's inputs.
#[derive(Debug, Clone, Copy)]
pub struct MetricCheck<'a> {
    /// The customer's plan.
    pub plan: &'a Plan,
    /// The metric asked about.
    pub metric: &'a Metric,
    /// Usage so far: this period's aggregate for metered metrics, the latest value for gauges.
    pub used: Decimal,
    /// How much more the customer wants to use (0 asks about the current state).
    pub quantity: Decimal,
    /// The customer's credit balance, needed when the metric has a credit cost.
    pub credit_balance: Decimal,
}

/// Percent of `limit` that `used` is, two decimals, half away from zero.
pub fn percent_of(used: Decimal, limit: Decimal) -> Option<Decimal> {
    if limit <= Decimal::ZERO {
        return None;
    }
    used.checked_mul(Decimal::ONE_HUNDRED)
        .and_then(|v| v.checked_div(limit))
        .map(|p| p.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero))
}

/// Decides whether `quantity` more of a metric is allowed. See the module documentation.
pub fn check_metric(check: &MetricCheck<'_>) -> EntitlementDecision {
    let pm = check.plan.metrics.get(&check.metric.id);
    let limit = pm.and_then(|pm| pm.limit);
    let after = check.used.saturating_add(check.quantity);
    // Percentages refer to the limit, or without one to a finite included quantity.
    let reference = limit
        .map(|l| l.quantity)
        .or(match pm.map(|pm| pm.included) {
            Some(Allowance::Quantity(q)) if q > Decimal::ZERO => Some(q),
            _ => None,
        });
    let percent = reference.and_then(|r| percent_of(check.used, r));
    let thresholds = pm.map_or(&[][..], |pm| pm.warn_at_percent.as_slice());
    let level = match reference.filter(|r| *r > Decimal::ZERO) {
        Some(r) if reaches(check.used, r, 100) => UsageLevel::AtLimit,
        Some(r) if thresholds.iter().any(|t| reaches(check.used, r, *t)) => UsageLevel::Warning,
        _ => UsageLevel::Ok,
    };
    let credits_required = check
        .metric
        .credit_cost
        .map(|c| c.saturating_mul(check.quantity.max(Decimal::ZERO)));

    // Usage after the request beyond a finite included quantity, priced by an overage charge.
    let overage = pm.is_some_and(|pm| {
        pm.overage.is_some()
            && match pm.included {
                Allowance::Quantity(q) => after > q,
                Allowance::Unlimited => false,
            }
    });
    let (allowed, reason) = match limit {
        Some(l) if after > l.quantity && l.enforcement == Enforcement::Hard => {
            (false, Reason::LimitExceeded)
        }
        Some(l) if after > l.quantity => (true, Reason::SoftLimitExceeded),
        Some(_) => (true, Reason::WithinLimit),
        None if overage => (true, Reason::Overage),
        None => (true, Reason::Unlimited),
    };
    let (allowed, reason) = match credits_required {
        Some(needed) if allowed && needed > check.credit_balance => {
            (false, Reason::InsufficientCredits)
        }
        _ => (allowed, reason),
    };
    EntitlementDecision {
        allowed,
        reason,
        used: Some(check.used),
        limit: limit.map(|l| l.quantity),
        // Saturating only beyond Decimal's range, which callers refuse before asking (see
        // `decimal::sub`); never a panic.
        remaining: limit.map(|l| l.quantity.saturating_sub(check.used).max(Decimal::ZERO)),
        percent,
        level,
        credits_required,
        overage: allowed && overage,
    }
}

/// The warning thresholds (in percent of `limit`) that usage crosses going from `before` to
/// `after`: each threshold `t` with `before% < t ≤ after%`, compared exactly. The caller sends one notification per
/// threshold and period.
pub fn crossed_thresholds(
    before: Decimal,
    after: Decimal,
    limit: Decimal,
    thresholds: &[u32],
) -> Vec<u32> {
    if limit <= Decimal::ZERO {
        return Vec::new();
    }
    thresholds
        .iter()
        .copied()
        .filter(|t| !reaches(before, limit, *t) && reaches(after, limit, *t))
        .collect()
}

/// Whether `used` is at least `percent` % of a positive `limit`, compared exactly: the
/// percentage rounded for display (199.99999 of 200 shows as 100.00 %) decides nothing.
pub fn reaches(used: Decimal, limit: Decimal, percent: u32) -> bool {
    let percent = Decimal::from(percent);
    match (
        used.checked_mul(Decimal::ONE_HUNDRED),
        limit.checked_mul(percent),
    ) {
        (Some(u), Some(l)) => u >= l,
        // Beyond Decimal's range: fall back to the quotient, which is then far from any threshold.
        _ => used
            .checked_div(limit)
            .and_then(|q| q.checked_mul(Decimal::ONE_HUNDRED))
            .is_none_or(|p| p >= percent),
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;
    use crate::catalog::Catalog;

    fn devflowhub() -> Catalog {
        Catalog::parse(
            include_str!("../../../catalogs/devflowhub.toml"),
            "devflowhub.toml",
        )
        .unwrap()
    }

    #[test]
    fn features() {
        let c = devflowhub();
        let pro = c.plan("pro").unwrap();
        let d = check_feature(pro, "autoscale");
        assert_eq!((d.allowed, d.reason), (true, Reason::FeatureEnabled));
        let d = check_feature(pro, "isolated_db");
        assert_eq!((d.allowed, d.reason), (false, Reason::FeatureDisabled));
        let d = check_feature(pro, "teleport");
        assert_eq!((d.allowed, d.reason), (false, Reason::FeatureNotInPlan));

        let src = "[catalog]\nname = \"x\"\ncurrency = \"usd\"\n[plans.p]\nfeatures = { seats = 5, api = 0 }\n";
        let c = Catalog::parse(src, "x.toml").unwrap();
        let d = check_feature(c.plan("p").unwrap(), "seats");
        assert_eq!((d.allowed, d.limit), (true, Some(dec!(5))));
        assert!(!check_feature(c.plan("p").unwrap(), "api").allowed);
    }

    #[test]
    fn hard_limits_deny_beyond_the_limit() {
        let c = devflowhub();
        let pro = c.plan("pro").unwrap();
        let projects = c.metric("projects").unwrap();
        let check = MetricCheck {
            plan: pro,
            metric: projects,
            used: dec!(2),
            quantity: dec!(1),
            credit_balance: dec!(0),
        };
        let d = check_metric(&check);
        assert_eq!(
            d,
            EntitlementDecision {
                allowed: true,
                reason: Reason::WithinLimit,
                used: Some(dec!(2)),
                limit: Some(dec!(3)),
                remaining: Some(dec!(1)),
                percent: Some(dec!(66.67)),
                level: UsageLevel::Ok,
                credits_required: None,
                overage: false,
            }
        );
        let d = check_metric(&MetricCheck {
            used: dec!(3),
            ..check
        });
        assert_eq!((d.allowed, d.reason), (false, Reason::LimitExceeded));
        assert_eq!(
            (d.remaining, d.percent),
            (Some(dec!(0)), Some(dec!(100.00)))
        );
        assert_eq!(d.level, UsageLevel::AtLimit);
    }

    #[test]
    fn storage_warns_at_80_percent() {
        let c = devflowhub();
        let check = MetricCheck {
            plan: c.plan("starter").unwrap(),
            metric: c.metric("storage_gb").unwrap(),
            used: dec!(8),
            quantity: dec!(0),
            credit_balance: dec!(0),
        };
        let d = check_metric(&check);
        assert_eq!(
            (d.allowed, d.level, d.percent),
            (true, UsageLevel::Warning, Some(dec!(80.00)))
        );
        let d = check_metric(&MetricCheck {
            used: dec!(7.99),
            ..check
        });
        assert_eq!(d.level, UsageLevel::Ok);
        // 7.9999 GB of 10 rounds to 80.00 % for display, yet is below the 80 % threshold.
        let d = check_metric(&MetricCheck {
            used: dec!(7.9999),
            ..check
        });
        assert_eq!((d.percent, d.level), (Some(dec!(80.00)), UsageLevel::Ok));
        let d = check_metric(&MetricCheck {
            used: dec!(9.99999),
            ..check
        });
        assert_eq!(
            (d.percent, d.level, d.remaining),
            (Some(dec!(100.00)), UsageLevel::Warning, Some(dec!(0.00001)))
        );
    }

    #[test]
    fn soft_limits_allow_overage() {
        let src = "[catalog]\nname = \"x\"\ncurrency = \"eur\"\n[metrics.calls]\nunit = \"call\"\n\
                   [plans.p.metrics.calls]\nincluded = 100\n\
                   overage = { model = \"per_unit\", unit_price = \"0.01\" }\n\
                   limit = { quantity = 200, enforcement = \"soft\" }\n";
        let c = Catalog::parse(src, "x.toml").unwrap();
        let d = check_metric(&MetricCheck {
            plan: c.plan("p").unwrap(),
            metric: c.metric("calls").unwrap(),
            used: dec!(190),
            quantity: dec!(20),
            credit_balance: dec!(0),
        });
        assert_eq!((d.allowed, d.reason), (true, Reason::SoftLimitExceeded));
        assert_eq!(
            (d.remaining, d.percent, d.level),
            (Some(dec!(10)), Some(dec!(95.00)), UsageLevel::Warning)
        );
    }

    #[test]
    fn credit_priced_metrics_need_the_balance() {
        let src = include_str!("../../../catalogs/localboxs.toml");
        let c = Catalog::parse(src, "localboxs.toml").unwrap();
        let check = MetricCheck {
            plan: c.plan("free").unwrap(),
            metric: c.metric("api_calls").unwrap(),
            used: dec!(40),
            quantity: dec!(3),
            credit_balance: dec!(2),
        };
        let d = check_metric(&check);
        assert_eq!((d.allowed, d.reason), (false, Reason::InsufficientCredits));
        assert_eq!(d.credits_required, Some(dec!(3)));
        assert_eq!((d.limit, d.remaining, d.percent), (None, None, None));
        let d = check_metric(&MetricCheck {
            credit_balance: dec!(3),
            ..check
        });
        assert_eq!((d.allowed, d.reason), (true, Reason::Unlimited));
    }

    #[test]
    fn usage_beyond_the_included_quantity_without_a_limit_is_overage() {
        let catalog = Catalog::parse(
            include_str!("../../../catalogs/magicbox.toml"),
            "magicbox.toml",
        )
        .expect("catalog");
        let (Some(pro), Some(compute)) = (catalog.plan("pro"), catalog.metric("compute_hours"))
        else {
            panic!("Magic Box has pro and compute_hours");
        };
        let check = MetricCheck {
            plan: pro,
            metric: compute,
            used: dec!(299),
            quantity: dec!(1),
            credit_balance: dec!(0),
        };
        let d = check_metric(&check);
        assert_eq!(
            (d.allowed, d.reason, d.overage),
            (true, Reason::Unlimited, false)
        );
        assert_eq!((d.limit, d.percent), (None, Some(dec!(99.67))));
        let d = check_metric(&MetricCheck {
            used: dec!(350),
            ..check
        });
        assert_eq!(
            (d.allowed, d.reason, d.overage),
            (true, Reason::Overage, true)
        );
        assert_eq!(
            (d.limit, d.remaining, d.percent),
            (None, None, Some(dec!(116.67)))
        );
        // Enterprise: unlimited compute hours, never overage.
        let Some(enterprise) = catalog.plan("enterprise") else {
            panic!("Magic Box has enterprise");
        };
        let d = check_metric(&MetricCheck {
            plan: enterprise,
            used: dec!(100000),
            ..check
        });
        assert_eq!(
            (d.allowed, d.reason, d.overage),
            (true, Reason::Unlimited, false)
        );
    }

    #[test]
    fn thresholds_are_reported_once_when_crossed() {
        let t = [80, 95, 100];
        assert_eq!(
            crossed_thresholds(dec!(70), dec!(96), dec!(100), &t),
            [80, 95]
        );
        assert_eq!(
            crossed_thresholds(dec!(80), dec!(94), dec!(100), &t),
            Vec::<u32>::new()
        );
        assert_eq!(
            crossed_thresholds(dec!(79.9), dec!(80), dec!(100), &t),
            [80]
        );
        assert_eq!(crossed_thresholds(dec!(4), dec!(5), dec!(5), &t), [95, 100]);
        // Thresholds compare exact usage, not the percentage rounded for display: 199.99999 of
        // 200 GB shows as 100.00 % but has not reached the limit.
        assert_eq!(
            crossed_thresholds(dec!(150), dec!(199.99999), dec!(200), &t),
            [80, 95]
        );
        assert_eq!(
            crossed_thresholds(dec!(159.99999), dec!(160), dec!(200), &t),
            [80]
        );
        assert_eq!(
            crossed_thresholds(dec!(0), dec!(500), dec!(0), &t),
            Vec::<u32>::new()
        );
    }
}
