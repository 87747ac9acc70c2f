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
        // $0.001 per credit, the seed's recommended price per API call.
        [
            (dec!(500), 50),
            (dec!(1000), 100),
            (dec!(5000), 500),
            (dec!(10000), 1000)
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

/// Rates one period of `plan` with `usage` and returns (line amounts, subtotal, discount, total).
fn preview(
    c: &Catalog,
    plan: &str,
    interval: Interval,
    usage: &[(&str, Decimal)],
    coupon: Option<&str>,
) -> (Vec<i64>, i64, i64, i64) {
    let usage: BTreeMap<String, Decimal> = usage.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let inv = rate(&RatingInput {
        coupon: coupon.map(|id| c.coupon(id).unwrap()),
        ..RatingInput::new(c.plan(plan).unwrap(), interval, &usage)
    })
    .unwrap();
    let amounts = inv.lines.iter().map(|l| l.amount).collect();
    (amounts, inv.subtotal, inv.discount, inv.total)
}

#[test]
fn magic_box_previews() {
    let c = load("magicbox.toml");
    // The seed example: 199.00 + 50 h × 0.04 + (180 − 150) × 1.15 = 235.50.
    assert_eq!(
        preview(
            &c,
            "pro",
            Interval::Month,
            &[("compute_hours", dec!(350)), ("api_spend", dec!(180))],
            None
        ),
        (vec![19900, 200, 3450], 23550, 0, 23550)
    );
    // Starter yearly with LAUNCH2025: 990.00 + 30 h × 0.05 = 1.50 + 12.50 × 1.20 = 15.00
    // → 1006.50; 20 % = 201.30 → 805.20.
    assert_eq!(
        preview(
            &c,
            "starter",
            Interval::Year,
            &[("compute_hours", dec!(130)), ("api_spend", dec!(62.50))],
            Some("LAUNCH2025")
        ),
        (vec![99000, 150, 1500], 100650, 20130, 80520)
    );
    // Enterprise with EARLYBIRD30: 499.00 + (500.01 − 500) × 1.10 = 0.011 → 0.01 → 499.01;
    // 30 % = 149.703 → 149.70 → 349.31.
    assert_eq!(
        preview(
            &c,
            "enterprise",
            Interval::Month,
            &[("compute_hours", dec!(99999)), ("api_spend", dec!(500.01))],
            Some("EARLYBIRD30")
        ),
        (vec![49900, 1], 49901, 14970, 34931)
    );
}

#[test]
fn localboxs_previews() {
    // Credits are prepaid: subscription invoices are the base price alone, whatever the calls.
    let c = load("localboxs.toml");
    let calls = [("api_calls", dec!(123456))];
    assert_eq!(
        preview(&c, "pro", Interval::Month, &calls, None),
        (vec![2900], 2900, 0, 2900)
    );
    assert_eq!(
        preview(&c, "pro_plus", Interval::Month, &calls, None),
        (vec![7900], 7900, 0, 7900)
    );
    assert_eq!(
        preview(&c, "free", Interval::Month, &calls, None),
        (vec![], 0, 0, 0)
    );
    assert_eq!(
        preview(&c, "enterprise", Interval::Year, &calls, None),
        (vec![], 0, 0, 0)
    );
    let credits: Vec<Option<Decimal>> = ["free", "pro", "pro_plus", "enterprise"]
        .iter()
        .map(|p| c.plan(p).unwrap().monthly_credits)
        .collect();
    assert_eq!(
        credits,
        [
            Some(dec!(100)),
            Some(dec!(3000)),
            Some(dec!(10000)),
            Some(dec!(50000))
        ]
    );
}

#[test]
fn devflowhub_previews() {
    let c = load("devflowhub.toml");
    let usage = [("build_hours", dec!(40)), ("storage_gb", dec!(10))];
    assert_eq!(
        preview(&c, "starter", Interval::Month, &usage, None),
        (vec![3000], 3000, 0, 3000)
    );
    // 12 × 60.00 × 0.83 = 597.60.
    assert_eq!(
        preview(&c, "pro", Interval::Year, &usage, None),
        (vec![59760], 59760, 0, 59760)
    );
    assert_eq!(
        preview(&c, "free", Interval::Month, &usage, None),
        (vec![], 0, 0, 0)
    );
}
