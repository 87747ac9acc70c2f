//! Rating with hand-computed figures for every charge model, coupons, minimums and proration.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use super::*;
use crate::catalog::Catalog;

const MAGIC_BOX: &str = include_str!("../../../../catalogs/magicbox.toml");

fn magic_box() -> Catalog {
    Catalog::parse(MAGIC_BOX, "magicbox.toml").unwrap()
}

fn usage(pairs: &[(&str, Decimal)]) -> BTreeMap<String, Decimal> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// A one-plan EUR catalog whose `p` plan charges metric `m` (unit "unit") as `overage`.
fn plan_with(overage: &str, included: &str, extra: &str) -> Catalog {
    let src = format!(
        "[catalog]\nname = \"T\"\ncurrency = \"eur\"\n\
         [metrics.m]\nname = \"Widgets\"\nunit = \"unit\"\n\
         [metrics.spend]\nunit = \"eur\"\n\
         [plans.p]\nname = \"P\"\nprices.month = {{ amount = \"10.00\" }}\n{extra}\n\
         [plans.p.metrics.m]\nincluded = \"{included}\"\noverage = {overage}\n"
    );
    Catalog::parse(&src, "t.toml").unwrap_or_else(|e| panic!("{e}"))
}

fn usage_amount(c: &Catalog, qty: Decimal) -> i64 {
    let u = usage(&[("m", qty)]);
    let inv = rate(&RatingInput::new(c.plan("p").unwrap(), Interval::Month, &u)).unwrap();
    inv.lines
        .iter()
        .find(|l| l.kind == LineKind::Usage)
        .unwrap()
        .amount
}

#[test]
fn seed_example_pro_monthly() {
    // Base 199.00 + 50 h × 0.04 = 2.00 + (180 − 150) × 1.15 = 34.50.
    let c = magic_box();
    let u = usage(&[("compute_hours", dec!(350)), ("api_spend", dec!(180))]);
    let inv = rate(&RatingInput::new(
        c.plan("pro").unwrap(),
        Interval::Month,
        &u,
    ))
    .unwrap();
    let json = serde_json::to_value(&inv).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "currency": "eur",
            "plan": "pro",
            "interval": "month",
            "lines": [
                {"kind": "base", "description": "Pro plan (monthly)", "quantity": "1", "amount": 19900},
                {"kind": "usage", "metric": "compute_hours",
                 "description": "Compute hours: 50 hour beyond 300 included, at EUR 0.04 per hour",
                 "quantity": "50", "amount": 200},
                {"kind": "usage", "metric": "api_spend",
                 "description": "API spend: EUR 30 beyond EUR 150 included, plus 15% markup",
                 "quantity": "30", "amount": 3450},
            ],
            "subtotal": 23550,
            "discount": 0,
            "total": 23550
        })
    );
}

#[test]
fn seed_examples_starter_and_enterprise() {
    let c = magic_box();
    // Starter: 99.00 + 30 h × 0.05 = 1.50 + 12.50 × 1.20 = 15.00.
    let u = usage(&[("compute_hours", dec!(130)), ("api_spend", dec!(62.50))]);
    let inv = rate(&RatingInput::new(
        c.plan("starter").unwrap(),
        Interval::Month,
        &u,
    ))
    .unwrap();
    let amounts: Vec<i64> = inv.lines.iter().map(|l| l.amount).collect();
    assert_eq!(amounts, [9900, 150, 1500]);
    assert_eq!(inv.total, 11550);
    // Enterprise: unlimited compute has no line; 499.00 + (600 − 500) × 1.10 = 110.00.
    let u = usage(&[("compute_hours", dec!(10000)), ("api_spend", dec!(600))]);
    let inv = rate(&RatingInput::new(
        c.plan("enterprise").unwrap(),
        Interval::Month,
        &u,
    ))
    .unwrap();
    let amounts: Vec<i64> = inv.lines.iter().map(|l| l.amount).collect();
    assert_eq!(amounts, [49900, 11000]);
    assert_eq!(inv.total, 60900);
}

#[test]
fn usage_within_the_allowance_gives_zero_lines() {
    let c = magic_box();
    let u = usage(&[("compute_hours", dec!(299.5))]);
    let inv = rate(&RatingInput::new(
        c.plan("pro").unwrap(),
        Interval::Month,
        &u,
    ))
    .unwrap();
    assert_eq!(inv.lines.len(), 3);
    for line in &inv.lines[1..] {
        assert_eq!((line.quantity, line.amount), (dec!(0), 0));
    }
    assert_eq!(inv.total, 19900);
}

#[test]
fn annual_plans_bill_the_yearly_base_only_when_asked() {
    let c = magic_box();
    let u = usage(&[("compute_hours", dec!(400))]);
    let pro = c.plan("pro").unwrap();
    let first = rate(&RatingInput::new(pro, Interval::Year, &u)).unwrap();
    assert_eq!(first.lines[0].amount, 199000);
    assert_eq!(first.lines[0].description, "Pro plan (yearly)");
    assert_eq!(first.total, 199000 + 400);
    let later = rate(&RatingInput {
        include_base: false,
        ..RatingInput::new(pro, Interval::Year, &u)
    })
    .unwrap();
    assert_eq!(later.lines.len(), 2);
    assert_eq!(later.total, 400);
}

#[test]
fn per_unit_rounds_each_line_half_away_from_zero() {
    let c = plan_with(r#"{ model = "per_unit", unit_price = "0.0025" }"#, "0", "");
    assert_eq!(usage_amount(&c, dec!(50)), 13); // 0.125 → 0.13
    assert_eq!(usage_amount(&c, dec!(49)), 12); // 0.1225 → 0.12
    assert_eq!(usage_amount(&c, dec!(1)), 0); // 0.0025 → 0.00
}

#[test]
fn graduated_tiers_price_each_slice() {
    let c = plan_with(
        r#"{ model = "graduated", tiers = [
            { up_to = 100, unit_price = "0.10" },
            { up_to = 1000, unit_price = "0.05", flat = "2.00" },
            { unit_price = "0.01" } ] }"#,
        "50",
        "",
    );
    // 50 included: 100 billable → 100 × 0.10 = 10.00.
    assert_eq!(usage_amount(&c, dec!(150)), 1000);
    // 101 billable → 10.00 + 1 × 0.05 + 2.00 flat = 12.05.
    assert_eq!(usage_amount(&c, dec!(151)), 1205);
    // 1500 billable → 10.00 + 900 × 0.05 + 2.00 + 500 × 0.01 = 62.00.
    assert_eq!(usage_amount(&c, dec!(1550)), 6200);
    assert_eq!(usage_amount(&c, dec!(50)), 0);
}

#[test]
fn volume_tiers_price_every_unit_at_one_tier() {
    let c = plan_with(
        r#"{ model = "volume", tiers = [
            { up_to = 100, unit_price = "0.10" },
            { up_to = 1000, unit_price = "0.05", flat = "1.00" },
            { unit_price = "0.01" } ] }"#,
        "0",
        "",
    );
    assert_eq!(usage_amount(&c, dec!(100)), 1000); // 100 × 0.10
    assert_eq!(usage_amount(&c, dec!(101)), 605); // 101 × 0.05 + 1.00
    assert_eq!(usage_amount(&c, dec!(2000)), 2000); // 2000 × 0.01
    assert_eq!(usage_amount(&c, dec!(0)), 0);
}

#[test]
fn packages_round_up() {
    let c = plan_with(
        r#"{ model = "package", size = 1000, price = "2.50" }"#,
        "200",
        "",
    );
    assert_eq!(usage_amount(&c, dec!(200)), 0);
    assert_eq!(usage_amount(&c, dec!(201)), 250); // 1 unit → 1 package
    assert_eq!(usage_amount(&c, dec!(1200)), 250); // 1000 → 1 package
    assert_eq!(usage_amount(&c, dec!(1201)), 500); // 1001 → 2 packages
    assert_eq!(usage_amount(&c, dec!(1200.5)), 500); // 1000.5 → 2 packages
}

#[test]
fn packages_round_up_even_when_the_division_is_inexact() {
    // 3000.0000000000000000000000001 ÷ 3 is 1000.0000000000000000000000000333…, which has more
    // digits than a Decimal holds and rounds to 1000: the started 1001st package still counts.
    let c = plan_with(
        r#"{ model = "package", size = 3, price = "1.00" }"#,
        "0",
        "",
    );
    assert_eq!(
        usage_amount(&c, dec!(3000.0000000000000000000000001)),
        100_100
    );
    assert_eq!(usage_amount(&c, dec!(3000)), 100_000);
    let c = plan_with(
        r#"{ model = "package", size = "0.3", price = "1.00" }"#,
        "0",
        "",
    );
    assert_eq!(usage_amount(&c, dec!(0.9)), 300);
    assert_eq!(usage_amount(&c, dec!(0.9000000000000000000000000001)), 400);
}

#[test]
fn pass_through_adds_the_markup() {
    let src = "[catalog]\nname = \"T\"\ncurrency = \"eur\"\n[metrics.spend]\nname = \"Spend\"\nunit = \"eur\"\n\
               [plans.p]\n[plans.p.metrics.spend]\nincluded = \"10\"\n\
               overage = { model = \"pass_through\", markup_percent = \"12.5\" }\n";
    let c = Catalog::parse(src, "t.toml").unwrap();
    let u = usage(&[("spend", dec!(10.05))]);
    let inv = rate(&RatingInput::new(c.plan("p").unwrap(), Interval::Month, &u)).unwrap();
    // No prices: no base line. 0.05 × 1.125 = 0.05625 → 0.06.
    assert_eq!(inv.lines.len(), 1);
    assert_eq!(inv.lines[0].amount, 6);
    assert_eq!(inv.lines[0].quantity, dec!(0.05));
}

#[test]
fn a_minimum_tops_up_the_period() {
    let c = plan_with(
        r#"{ model = "per_unit", unit_price = "1" }"#,
        "0",
        "minimum = \"25.00\"",
    );
    let u = usage(&[("m", dec!(3))]);
    let inv = rate(&RatingInput::new(c.plan("p").unwrap(), Interval::Month, &u)).unwrap();
    // 10.00 base + 3.00 usage = 13.00 < 25.00 → minimum line 12.00.
    let last = inv.lines.last().unwrap();
    assert_eq!(last.kind, LineKind::Minimum);
    assert_eq!(last.amount, 1200);
    assert_eq!(last.description, "Minimum charge of EUR 25.00 per period");
    assert_eq!(inv.total, 2500);
    let u = usage(&[("m", dec!(30))]);
    let inv = rate(&RatingInput::new(c.plan("p").unwrap(), Interval::Month, &u)).unwrap();
    assert!(inv.lines.iter().all(|l| l.kind != LineKind::Minimum));
    assert_eq!(inv.total, 4000);
}

#[test]
fn an_annual_plan_counts_a_twelfth_of_its_yearly_price_toward_each_monthly_minimum() {
    // 10.00 a month or 120.00 a year, with a 25.00 minimum per monthly allowance period.
    let c = plan_with(
        r#"{ model = "per_unit", unit_price = "1" }"#,
        "0",
        "prices.year = { amount = \"120.00\" }\nminimum = \"25.00\"",
    );
    let plan = c.plan("p").unwrap();
    let u = usage(&[("m", dec!(3))]);
    // A monthly subscriber: 10.00 + 3.00, topped up by 12.00 to 25.00.
    let monthly = rate(&RatingInput::new(plan, Interval::Month, &u)).unwrap();
    assert_eq!(monthly.total, 2500);
    // The yearly subscriber's first month: 120.00 + 3.00, and 120.00 / 12 = 10.00 of it pays
    // this month, so the top-up is the same 12.00.
    let first = rate(&RatingInput::new(plan, Interval::Year, &u)).unwrap();
    let amounts: Vec<i64> = first.lines.iter().map(|l| l.amount).collect();
    assert_eq!(amounts, [12000, 300, 1200]);
    // The other eleven months: the yearly price already paid 10.00 of each; 3.00 of usage is
    // topped up by 12.00, not by 22.00 as if the plan had been free.
    let later = rate(&RatingInput {
        include_base: false,
        ..RatingInput::new(plan, Interval::Year, &u)
    })
    .unwrap();
    let amounts: Vec<i64> = later.lines.iter().map(|l| l.amount).collect();
    assert_eq!(amounts, [300, 1200]);
    // A year costs the yearly subscriber what it costs the monthly one: 12 × 25.00.
    assert_eq!(first.total + 11 * later.total, 12 * monthly.total);
    // A share finer than the minor unit is rounded once: 100.00 / 12 = 8.3333…, so 25.00 − 3.00
    // − 8.3333… = 13.6666… → 13.67.
    let c = plan_with(
        r#"{ model = "per_unit", unit_price = "1" }"#,
        "0",
        "prices.year = { amount = \"100.00\" }\nminimum = \"25.00\"",
    );
    let later = rate(&RatingInput {
        include_base: false,
        ..RatingInput::new(c.plan("p").unwrap(), Interval::Year, &u)
    })
    .unwrap();
    assert_eq!(later.lines.last().unwrap().amount, 1367);
}

#[test]
fn percent_coupons_discount_the_subtotal_once() {
    let c = magic_box();
    let u = usage(&[("compute_hours", dec!(350)), ("api_spend", dec!(180))]);
    let inv = rate(&RatingInput {
        coupon: c.coupon("EARLYBIRD30"),
        ..RatingInput::new(c.plan("pro").unwrap(), Interval::Month, &u)
    })
    .unwrap();
    // 30 % of 235.50 = 70.65.
    assert_eq!(
        (inv.subtotal, inv.discount, inv.total),
        (23550, 7065, 16485)
    );
    // 20 % of 235.50 = 47.10.
    let inv = rate(&RatingInput {
        coupon: c.coupon("LAUNCH2025"),
        ..RatingInput::new(c.plan("pro").unwrap(), Interval::Month, &u)
    })
    .unwrap();
    assert_eq!(inv.discount, 4710);
}

#[test]
fn discount_rounding_and_caps() {
    let percent = |p: Decimal| Coupon {
        id: "C".into(),
        name: "C".into(),
        discount: Discount::Percent(p),
        duration: crate::catalog::CouponDuration::Forever,
        redeem_by: None,
        max_redemptions: None,
        plans: vec![],
    };
    // 30 % of 123.45 = 37.035 → 37.04 (half away from zero).
    assert_eq!(
        discount_amount(&percent(dec!(30)), 12345, Currency::EUR),
        Ok(3704)
    );
    assert_eq!(
        discount_amount(&percent(dec!(100)), 12345, Currency::EUR),
        Ok(12345)
    );
    assert_eq!(discount_amount(&percent(dec!(30)), 0, Currency::EUR), Ok(0));
    let amount = Coupon {
        discount: Discount::Amount {
            amount: 5000,
            currency: Currency::EUR,
        },
        ..percent(dec!(1))
    };
    assert_eq!(discount_amount(&amount, 3000, Currency::EUR), Ok(3000));
    assert_eq!(discount_amount(&amount, 8000, Currency::EUR), Ok(5000));
    assert_eq!(
        discount_amount(&amount, 8000, Currency::USD),
        Err(RatingError::CouponCurrency {
            coupon: "C".into(),
            coupon_currency: Currency::EUR,
            invoice_currency: Currency::USD
        })
    );
    // A coupon in another currency is refused whatever the subtotal, not only when it is positive.
    assert_eq!(
        discount_amount(&amount, 0, Currency::USD),
        Err(RatingError::CouponCurrency {
            coupon: "C".into(),
            coupon_currency: Currency::EUR,
            invoice_currency: Currency::USD
        })
    );
}

#[test]
fn amount_off_never_makes_the_total_negative() {
    let c = plan_with(r#"{ model = "per_unit", unit_price = "1" }"#, "0", "");
    let coupon = Coupon {
        id: "BIG".into(),
        name: "Big".into(),
        discount: Discount::Amount {
            amount: 100_000,
            currency: Currency::EUR,
        },
        duration: crate::catalog::CouponDuration::Once,
        redeem_by: None,
        max_redemptions: None,
        plans: vec![],
    };
    let u = usage(&[("m", dec!(2))]);
    let inv = rate(&RatingInput {
        coupon: Some(&coupon),
        ..RatingInput::new(c.plan("p").unwrap(), Interval::Month, &u)
    })
    .unwrap();
    assert_eq!((inv.subtotal, inv.discount, inv.total), (1200, 1200, 0));
}

#[test]
fn a_coupon_limited_to_other_plans_is_refused() {
    let src = "[catalog]\nname = \"T\"\ncurrency = \"eur\"\n[plans.a]\n[plans.b]\n\
               [coupons.X]\npercent_off = 10\nduration = \"once\"\nplans = [\"a\"]\n";
    let c = Catalog::parse(src, "t.toml").unwrap();
    let u = BTreeMap::new();
    let err = rate(&RatingInput {
        coupon: c.coupon("X"),
        ..RatingInput::new(c.plan("b").unwrap(), Interval::Month, &u)
    })
    .unwrap_err();
    assert_eq!(err.to_string(), "coupon X does not apply to plan b");
}

#[test]
fn a_missing_interval_price_is_an_error() {
    let c = plan_with(r#"{ model = "per_unit", unit_price = "1" }"#, "0", "");
    let u = BTreeMap::new();
    let err = rate(&RatingInput::new(c.plan("p").unwrap(), Interval::Year, &u)).unwrap_err();
    assert_eq!(err.to_string(), "plan p has no year price");
}

#[test]
fn usage_of_metrics_off_the_plan_is_ignored_and_negative_usage_bills_nothing() {
    let c = magic_box();
    let u = usage(&[("vms", dec!(9)), ("compute_hours", dec!(-20))]);
    let inv = rate(&RatingInput::new(
        c.plan("pro").unwrap(),
        Interval::Month,
        &u,
    ))
    .unwrap();
    assert_eq!(inv.total, 19900);
    assert!(inv.lines.iter().all(|l| l.metric.as_deref() != Some("vms")));
}

#[test]
fn adjustments_are_added_after_the_minimum() {
    let c = plan_with(r#"{ model = "per_unit", unit_price = "1" }"#, "0", "");
    let u = BTreeMap::new();
    let adjustment = InvoiceLine {
        kind: LineKind::Adjustment,
        metric: Some("m".into()),
        description: "Late usage of the previous period".into(),
        quantity: dec!(4),
        amount: 400,
    };
    let inv = rate(&RatingInput {
        adjustments: std::slice::from_ref(&adjustment),
        ..RatingInput::new(c.plan("p").unwrap(), Interval::Month, &u)
    })
    .unwrap();
    assert_eq!(inv.lines.last(), Some(&adjustment));
    assert_eq!(inv.total, 1400);
    let json = serde_json::to_value(inv.lines.last().unwrap()).unwrap();
    assert_eq!(json["kind"], "adjustment");
}

#[test]
fn huge_usage_is_an_overflow_error_not_a_panic() {
    let c = plan_with(r#"{ model = "per_unit", unit_price = "1000000" }"#, "0", "");
    let u = usage(&[("m", Decimal::MAX)]);
    let err = rate(&RatingInput::new(c.plan("p").unwrap(), Interval::Month, &u)).unwrap_err();
    assert_eq!(err, RatingError::Overflow("m".into()));
}

#[test]
fn prorates_an_upgrade_by_days() {
    let c = magic_box();
    let period = Period {
        start: Utc.with_ymd_and_hms(2025, 4, 1, 0, 0, 0).unwrap(),
        end: Utc.with_ymd_and_hms(2025, 5, 1, 0, 0, 0).unwrap(),
    };
    // Upgrade at noon on day 11: 19.5 days left count as 20 of 30.
    let p = prorate(&PlanChange {
        from: c.plan("starter").unwrap(),
        to: c.plan("pro").unwrap(),
        interval: Interval::Month,
        period,
        at: Utc.with_ymd_and_hms(2025, 4, 11, 12, 0, 0).unwrap(),
    })
    .unwrap();
    assert_eq!((p.days_remaining, p.days_in_period), (20, 30));
    // −99.00 × 20/30 = −66.00; 199.00 × 20/30 = 132.666… → 132.67.
    assert_eq!(p.credit.amount, -6600);
    assert_eq!(p.charge.amount, 13267);
    assert_eq!(p.net, 6667);
    assert_eq!(
        p.credit.description,
        "Unused time on Starter (20 of 30 days)"
    );
    assert_eq!(
        p.charge.description,
        "Remaining time on Pro (20 of 30 days)"
    );
    assert_eq!(p.charge.kind, LineKind::Proration);
}

#[test]
fn proration_checks_the_period_and_currency() {
    let c = magic_box();
    let period = Period {
        start: Utc.with_ymd_and_hms(2025, 4, 1, 0, 0, 0).unwrap(),
        end: Utc.with_ymd_and_hms(2025, 5, 1, 0, 0, 0).unwrap(),
    };
    let change = PlanChange {
        from: c.plan("starter").unwrap(),
        to: c.plan("pro").unwrap(),
        interval: Interval::Month,
        period,
        at: period.end,
    };
    assert!(matches!(
        prorate(&change),
        Err(RatingError::ChangeOutsidePeriod { .. })
    ));
    // At the very start the whole period is remaining.
    let p = prorate(&PlanChange {
        at: period.start,
        ..change
    })
    .unwrap();
    assert_eq!((p.credit.amount, p.charge.amount), (-9900, 19900));
}

#[test]
fn a_line_is_rounded_once_from_the_exact_product() {
    // 99.99999999999999999999999999 × 0.00015 = 0.0149999999999999999999999999985: one cent.
    // Decimal's own product rounds to 0.015 first, which would bill two.
    let c = plan_with(
        "{ model = \"per_unit\", unit_price = \"0.00015\" }",
        "0",
        "",
    );
    assert_eq!(usage_amount(&c, dec!(99.99999999999999999999999999)), 1);
    assert_eq!(usage_amount(&c, dec!(100)), 2);
}

#[test]
fn a_charge_that_cannot_be_computed_exactly_is_an_error() {
    let c = plan_with(
        "{ model = \"per_unit\", unit_price = \"0.000000000001\" }",
        "0.000000000001",
        "",
    );
    let u = usage(&[("m", Decimal::MAX)]);
    let got = rate(&RatingInput::new(c.plan("p").unwrap(), Interval::Month, &u));
    assert_eq!(got, Err(RatingError::Overflow("m".into())));
}
