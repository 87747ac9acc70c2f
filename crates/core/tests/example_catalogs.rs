//! The example catalogs reproduce the seeds' pricing.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_core::catalog::{
    Allowance, Catalog, Charge, CouponDuration, Discount, Enforcement, FeatureValue, Limit,
};
use tally_core::money::Currency;
use tally_core::period::Interval;
use tally_core::rating::{rate, RatingInput};

fn load(name: &str) -> Catalog {
    let path = format!("{}/../../catalogs/{name}", env!("CARGO_MANIFEST_DIR"));
    let src = std::fs::read_to_string(&path).unwrap();
    Catalog::parse(&src, name).unwrap_or_else(|e| panic!("{e}"))
}

fn prices(c: &Catalog, plan: &str) -> (Option<i64>, Option<i64>) {
    let p = c.plan(plan).unwrap();
    (
        p.prices.get(&Interval::Month).map(|p| p.amount),
        p.prices.get(&Interval::Year).map(|p| p.amount),
    )
}

#[test]
fn magic_box() {
    let c = load("magicbox.toml");
    assert_eq!(c.currency, Currency::EUR);
    let ids: Vec<&str> = c.plans().iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["starter", "pro", "enterprise"]);
    assert_eq!(prices(&c, "starter"), (Some(9900), Some(99000)));
    assert_eq!(prices(&c, "pro"), (Some(19900), Some(199000)));
    assert_eq!(prices(&c, "enterprise"), (Some(49900), Some(499000)));
    assert_eq!(
        c.plan("pro").unwrap().prices[&Interval::Month].lookup_key,
        "magicbox_pro_monthly"
    );

    for (plan, hours, rate_) in [
        ("starter", dec!(100), dec!(0.05)),
        ("pro", dec!(300), dec!(0.04)),
    ] {
        let pm = &c.plan(plan).unwrap().metrics["compute_hours"];
        assert_eq!(pm.included, Allowance::Quantity(hours));
        assert_eq!(pm.overage, Some(Charge::PerUnit { unit_price: rate_ }));
    }
    let ent = &c.plan("enterprise").unwrap().metrics["compute_hours"];
    assert_eq!(
        (ent.included, ent.overage.clone()),
        (Allowance::Unlimited, None)
    );

    for (plan, included, markup) in [
        ("starter", dec!(50), dec!(20)),
        ("pro", dec!(150), dec!(15)),
        ("enterprise", dec!(500), dec!(10)),
    ] {
        let pm = &c.plan(plan).unwrap().metrics["api_spend"];
        assert_eq!(pm.included, Allowance::Quantity(included));
        assert_eq!(pm.overage, Some(Charge::PassThrough { markup }));
    }

    let early = c.coupon("EARLYBIRD30").unwrap();
    assert_eq!(early.discount, Discount::Percent(dec!(30)));
    assert_eq!(early.duration, CouponDuration::Forever);
    let launch = c.coupon("LAUNCH2025").unwrap();
    assert_eq!(launch.discount, Discount::Percent(dec!(20)));
    assert_eq!(launch.duration, CouponDuration::Once);
    assert_eq!(launch.max_redemptions, Some(100));
    assert_eq!(
        launch.redeem_by.unwrap().to_rfc3339(),
        "2026-01-01T00:00:00+00:00"
    );
}

#[test]
fn localboxs() {
    let c = load("localboxs.toml");
    assert_eq!(c.currency, Currency::USD);
    assert_eq!(c.free_plan.as_deref(), Some("free"));
    let ids: Vec<&str> = c.plans().iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["free", "pro", "pro_plus", "enterprise"]);
    assert_eq!(c.plan("free").unwrap().monthly_credits, Some(dec!(100)));
    assert!(c.plan("free").unwrap().prices.is_empty());
    assert!(c.plan("enterprise").unwrap().prices.is_empty());
    let packs: Vec<(Decimal, i64)> = c
        .credit_packs()
        .iter()
        .map(|p| (p.credits, p.amount))
        .collect();
    assert_eq!(
        packs,
        [
            (dec!(500), 500),
            (dec!(1000), 1000),
            (dec!(5000), 4500),
            (dec!(10000), 8000)
        ]
    );
    assert_eq!(c.metric("api_calls").unwrap().credit_cost, Some(dec!(1)));
}

#[test]
fn devflowhub() {
    let c = load("devflowhub.toml");
    assert_eq!(c.currency, Currency::USD);
    let ids: Vec<&str> = c.plans().iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["free", "starter", "pro", "scale"]);
    assert_eq!(prices(&c, "free"), (None, None));
    // Yearly = 12 × monthly × 0.83 (17 % off).
    assert_eq!(prices(&c, "starter"), (Some(3000), Some(29880)));
    assert_eq!(prices(&c, "pro"), (Some(6000), Some(59760)));
    assert_eq!(prices(&c, "scale"), (Some(12000), Some(119520)));

    let limits = [
        ("projects", [1, 1, 3, 8]),
        ("build_hours", [5, 40, 150, 500]),
        ("storage_gb", [1, 10, 50, 200]),
    ];
    for (metric, caps) in limits {
        for (plan, cap) in ids.iter().zip(caps) {
            let pm = &c.plan(plan).unwrap().metrics[metric];
            assert_eq!(
                pm.limit,
                Some(Limit {
                    quantity: Decimal::from(cap),
                    enforcement: Enforcement::Hard
                }),
                "{plan} {metric}"
            );
            assert_eq!(pm.warn_at_percent[0], 80);
        }
    }
    for m in [
        "ai_tokens",
        "preview_minutes",
        "sandbox_runs",
        "deployments",
    ] {
        assert!(c.metric(m).is_some(), "{m}");
    }
    assert_eq!(
        c.plan("scale").unwrap().features["isolated_db"],
        FeatureValue::Bool(true)
    );
    let flag = c.flag("billing_v2").unwrap();
    assert!(!flag.enabled);
    assert_eq!(flag.rollout_percent, dec!(0));

    // Hard-capped metrics carry no overage: a SCALE month is its base price.
    let usage = BTreeMap::from([("build_hours".to_string(), dec!(499))]);
    let inv = rate(&RatingInput::new(
        c.plan("scale").unwrap(),
        Interval::Month,
        &usage,
    ))
    .unwrap();
    assert_eq!((inv.lines.len(), inv.total), (1, 12000));
}
