//! Boundary cases of rating, periods, proration and coupons, each with a hand-computed figure.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_core::catalog::{Catalog, Coupon, CouponDuration, Discount};
use tally_core::money::{round_to_minor, Currency};
use tally_core::period::{allowance_period, billing_period, Interval, Period};
use tally_core::rating::{
    discount_amount, prorate, rate, Invoice, LineKind, PlanChange, RatingInput,
};

/// A one-plan catalog in `currency` whose plan `p` charges metric `m` as `overage`.
fn plan_with(currency: &str, overage: &str, included: &str, extra: &str) -> Catalog {
    let src = format!(
        "[catalog]\nname = \"T\"\ncurrency = \"{currency}\"\n\
         [metrics.m]\nname = \"W\"\nunit = \"unit\"\n\
         [plans.p]\nname = \"P\"\n{extra}\n\
         [plans.p.metrics.m]\nincluded = \"{included}\"\noverage = {overage}\n"
    );
    Catalog::parse(&src, "t.toml").unwrap_or_else(|e| panic!("{e}"))
}

fn invoice(c: &Catalog, qty: Decimal, coupon: Option<&Coupon>) -> Invoice {
    let usage = BTreeMap::from([("m".to_string(), qty)]);
    rate(&RatingInput {
        coupon,
        ..RatingInput::new(c.plan("p").unwrap(), Interval::Month, &usage)
    })
    .unwrap()
}

fn usage_amount(c: &Catalog, qty: Decimal) -> i64 {
    invoice(c, qty, None)
        .lines
        .iter()
        .find(|l| l.kind == LineKind::Usage)
        .unwrap()
        .amount
}

fn coupon(discount: Discount) -> Coupon {
    Coupon {
        id: "C".into(),
        name: "C".into(),
        discount,
        duration: CouponDuration::Forever,
        redeem_by: None,
        max_redemptions: None,
        plans: vec![],
    }
}

fn t(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

const TIERS: &str = r#"tiers = [
    { up_to = 100, unit_price = "0.10" },
    { up_to = 1000, unit_price = "0.05", flat = "2.00" },
    { unit_price = "0.01" } ]"#;

#[test]
fn graduated_tiers_at_and_across_boundaries() {
    let c = plan_with(
        "eur",
        &format!("{{ model = \"graduated\", {TIERS} }}"),
        "0",
        "",
    );
    // Exactly at up_to: the next tier (and its flat fee) is not reached.
    assert_eq!(usage_amount(&c, dec!(100)), 1000);
    // 100 × 0.10 + 0.5 × 0.05 + 2.00 = 12.025 → 12.03.
    assert_eq!(usage_amount(&c, dec!(100.5)), 1203);
    // 10.00 + 900 × 0.05 + 2.00 = 57.00.
    assert_eq!(usage_amount(&c, dec!(1000)), 5700);
    // 57.00 + 0.1 × 0.01 = 57.001 → 57.00.
    assert_eq!(usage_amount(&c, dec!(1000.1)), 5700);
}

#[test]
fn volume_tiers_at_and_across_boundaries() {
    let c = plan_with(
        "eur",
        &format!("{{ model = \"volume\", {TIERS} }}"),
        "0",
        "",
    );
    assert_eq!(usage_amount(&c, dec!(100)), 1000); // 100 × 0.10
    assert_eq!(usage_amount(&c, dec!(100.5)), 703); // 100.5 × 0.05 + 2.00 = 7.025 → 7.03
    assert_eq!(usage_amount(&c, dec!(1000)), 5200); // 1000 × 0.05 + 2.00
    assert_eq!(usage_amount(&c, dec!(1000.5)), 1001); // 1000.5 × 0.01 = 10.005 → 10.01
}

#[test]
fn packages_round_a_started_package_up() {
    let c = plan_with(
        "eur",
        r#"{ model = "package", size = 1000, price = "2.50" }"#,
        "0",
        "",
    );
    assert_eq!(usage_amount(&c, dec!(1000)), 250);
    assert_eq!(usage_amount(&c, dec!(1000.5)), 500); // 2 packages
    assert_eq!(usage_amount(&c, dec!(0.0001)), 250);
}

#[test]
fn usage_below_or_at_the_allowance_bills_zero() {
    let c = plan_with(
        "eur",
        r#"{ model = "per_unit", unit_price = "1" }"#,
        "10.50",
        "",
    );
    let inv = invoice(&c, dec!(10.500), None);
    let json = serde_json::to_value(&inv).unwrap();
    assert_eq!(json["lines"][0]["quantity"], "0");
    assert_eq!(json["lines"][0]["amount"], 0);
    let inv = invoice(&c, dec!(3), None);
    assert_eq!((inv.lines[0].quantity, inv.total), (dec!(0), 0));
}

#[test]
fn unlimited_allowances_bill_nothing() {
    let src = "[catalog]\nname = \"x\"\ncurrency = \"eur\"\n[metrics.m]\nunit = \"u\"\n\
               [plans.p]\n[plans.p.metrics.m]\nincluded = \"unlimited\"\n";
    let c = Catalog::parse(src, "x.toml").unwrap();
    let inv = invoice(&c, dec!(1000000000), None);
    assert!(inv.lines.is_empty());
    assert_eq!(inv.total, 0);
}

#[test]
fn pass_through_markup_rounds_at_the_half_cent() {
    let src = "[catalog]\nname = \"x\"\ncurrency = \"eur\"\n[metrics.m]\nunit = \"eur\"\n\
               [plans.p]\n[plans.p.metrics.m]\n\
               overage = { model = \"pass_through\", markup_percent = \"25\" }\n";
    let c = Catalog::parse(src, "x.toml").unwrap();
    assert_eq!(usage_amount(&c, dec!(0.1)), 13); // 0.1 × 1.25 = 0.125 → 0.13
    assert_eq!(usage_amount(&c, dec!(0.02)), 3); // 0.025 → 0.03
    assert_eq!(round_to_minor(dec!(-0.125), Currency::EUR), -13);
}

#[test]
fn jpy_and_kwd_invoices_round_to_their_minor_units() {
    let jpy = plan_with(
        "jpy",
        r#"{ model = "per_unit", unit_price = "0.5" }"#,
        "0",
        "prices.month = { amount = \"1000\" }",
    );
    let inv = invoice(&jpy, dec!(5), None);
    // ¥1000 + 5 × 0.5 = 2.5 → ¥3.
    assert_eq!(
        (inv.lines[0].amount, inv.lines[1].amount, inv.total),
        (1000, 3, 1003)
    );
    // 15 % of ¥1003 = 150.45 → ¥150.
    let off = coupon(Discount::Percent(dec!(15)));
    let inv = invoice(&jpy, dec!(5), Some(&off));
    assert_eq!((inv.discount, inv.total), (150, 853));

    let kwd = plan_with(
        "kwd",
        r#"{ model = "per_unit", unit_price = "0.0005" }"#,
        "0",
        "prices.month = { amount = \"1.234\" }",
    );
    let inv = invoice(&kwd, dec!(3), None);
    // 1.234 KWD + 3 × 0.0005 = 0.0015 → 0.002 KWD.
    assert_eq!(
        (inv.lines[0].amount, inv.lines[1].amount, inv.total),
        (1234, 2, 1236)
    );
    let json = serde_json::to_value(&inv).unwrap();
    assert_eq!(json["currency"], "kwd");
    assert!(Catalog::parse(
        "[catalog]\nname = \"x\"\ncurrency = \"jpy\"\n[plans.p]\nprices.month = { amount = \"10.5\" }\n",
        "x.toml"
    )
    .is_err());
}

#[test]
fn a_coupon_discounts_the_minimum_top_up_too() {
    // 10.00 base + 3.00 usage, topped up to the 25.00 minimum; 10 % off the subtotal = 2.50.
    let c = plan_with(
        "eur",
        r#"{ model = "per_unit", unit_price = "1" }"#,
        "0",
        "prices.month = { amount = \"10.00\" }\nminimum = \"25.00\"",
    );
    let off = coupon(Discount::Percent(dec!(10)));
    let inv = invoice(&c, dec!(3), Some(&off));
    let amounts: Vec<i64> = inv.lines.iter().map(|l| l.amount).collect();
    assert_eq!(amounts, [1000, 300, 1200]);
    assert_eq!((inv.subtotal, inv.discount, inv.total), (2500, 250, 2250));
    // An amount off larger than the subtotal takes it to zero, never below.
    let big = coupon(Discount::Amount {
        amount: 999_999,
        currency: Currency::EUR,
    });
    let inv = invoice(&c, dec!(3), Some(&big));
    assert_eq!((inv.subtotal, inv.discount, inv.total), (2500, 2500, 0));
}

#[test]
fn percent_coupons_on_odd_subtotals() {
    let p = |pct: Decimal| coupon(Discount::Percent(pct));
    // 15 % of 0.03 = 0.0045 → 0; of 0.10 = 0.015 → 0.02; 33.3333 % of 0.03 = 0.009999… → 0.01.
    assert_eq!(discount_amount(&p(dec!(15)), 3, Currency::EUR), Ok(0));
    assert_eq!(discount_amount(&p(dec!(15)), 10, Currency::EUR), Ok(2));
    assert_eq!(discount_amount(&p(dec!(33.3333)), 3, Currency::EUR), Ok(1));
    // 12.5 % of 1.01 = 0.12625 → 0.13.
    assert_eq!(discount_amount(&p(dec!(12.5)), 101, Currency::EUR), Ok(13));
}

#[test]
fn month_end_anchors_clamp_and_come_back() {
    // Jan 31 → Feb 29 (leap) → Mar 31 → Apr 30 → … → Jan 31 → Feb 28 (non-leap).
    let anchor = t(2024, 1, 31, 10);
    let mut at = anchor;
    let mut starts = Vec::new();
    for _ in 0..14 {
        let p = allowance_period(anchor, at);
        assert_eq!(p.start, at);
        starts.push(p.start.format("%m-%d").to_string());
        at = p.end;
    }
    assert_eq!(
        starts,
        [
            "01-31", "02-29", "03-31", "04-30", "05-31", "06-30", "07-31", "08-31", "09-30",
            "10-31", "11-30", "12-31", "01-31", "02-28"
        ]
    );
    // The 29th and 30th in a non-leap February clamp to the 28th, then return.
    for day in [29, 30] {
        let anchor = t(2023, 1, day, 0);
        assert_eq!(
            allowance_period(anchor, t(2023, 2, 28, 0)),
            Period {
                start: t(2023, 2, 28, 0),
                end: t(2023, 3, day, 0)
            }
        );
        assert_eq!(
            allowance_period(anchor, t(2023, 2, 27, 23)),
            Period {
                start: t(2023, 1, day, 0),
                end: t(2023, 2, 28, 0)
            }
        );
    }
}

#[test]
fn periods_are_half_open_with_the_anchor_time_of_day() {
    let anchor = t(2024, 12, 31, 23);
    // Year end: the instant at the boundary starts the next period.
    let dec_period = allowance_period(anchor, t(2025, 1, 31, 22));
    assert_eq!(dec_period.start, t(2024, 12, 31, 23));
    let jan = allowance_period(anchor, t(2025, 1, 31, 23));
    assert_eq!(
        jan,
        Period {
            start: t(2025, 1, 31, 23),
            end: t(2025, 2, 28, 23)
        }
    );
    assert!(!dec_period.contains(jan.start) && jan.contains(jan.start));
    // An annual plan bills yearly from the anchor and resets allowances monthly.
    let year = billing_period(anchor, Interval::Year, t(2025, 12, 31, 22));
    assert_eq!(
        year,
        Period {
            start: t(2024, 12, 31, 23),
            end: t(2025, 12, 31, 23)
        }
    );
    assert_eq!(
        billing_period(anchor, Interval::Year, t(2025, 12, 31, 23)).start,
        t(2025, 12, 31, 23)
    );
    let march_30 = t(2024, 3, 30, 0);
    assert_eq!(
        allowance_period(march_30, t(2025, 2, 28, 5)),
        Period {
            start: t(2025, 2, 28, 0),
            end: t(2025, 3, 30, 0)
        }
    );
}

fn magic_box() -> Catalog {
    Catalog::parse(
        include_str!("../../../catalogs/magicbox.toml"),
        "magicbox.toml",
    )
    .unwrap()
}

#[test]
fn proration_of_upgrades_and_downgrades_by_days() {
    let c = magic_box();
    let (starter, pro) = (c.plan("starter").unwrap(), c.plan("pro").unwrap());
    let feb = Period {
        start: t(2025, 2, 1, 0),
        end: t(2025, 3, 1, 0),
    };
    let change = |from, to, at| {
        prorate(&PlanChange {
            from,
            to,
            interval: Interval::Month,
            period: feb,
            at,
        })
        .unwrap()
    };
    // Downgrade on Feb 15 at midnight: 14 of 28 days left.
    // −199.00 × 14/28 = −99.50; 99.00 × 14/28 = 49.50.
    let p = change(pro, starter, t(2025, 2, 15, 0));
    assert_eq!(
        (p.credit.amount, p.charge.amount, p.net, p.days_remaining),
        (-9950, 4950, -5000, 14)
    );
    // Upgrade on the last day: 1 of 28 days. −99/28 = −3.5357 → −3.54; 199/28 = 7.107 → 7.11.
    let p = change(starter, pro, t(2025, 2, 28, 23));
    assert_eq!(
        (p.credit.amount, p.charge.amount, p.net, p.days_remaining),
        (-354, 711, 357, 1)
    );
    // On the first day, after the period started: the whole period is remaining.
    let p = change(starter, pro, t(2025, 2, 1, 9));
    assert_eq!(
        (p.credit.amount, p.charge.amount, p.days_remaining),
        (-9900, 19900, 28)
    );
    // A yearly plan over a leap year: 184 of 366 days from Jul 1.
    // −990.00 × 184/366 = −497.7049… → −497.70; 1990.00 × 184/366 = 1000.4371… → 1000.44.
    let p = prorate(&PlanChange {
        from: starter,
        to: pro,
        interval: Interval::Year,
        period: Period {
            start: t(2024, 1, 1, 0),
            end: t(2025, 1, 1, 0),
        },
        at: t(2024, 7, 1, 0),
    })
    .unwrap();
    assert_eq!(
        (
            p.credit.amount,
            p.charge.amount,
            p.days_remaining,
            p.days_in_period
        ),
        (-49770, 100044, 184, 366)
    );
}

#[test]
fn coupon_durations_redeem_by_and_max_redemptions() {
    let c = magic_box();
    let launch = c.coupon("LAUNCH2025").unwrap();
    let last = Utc.with_ymd_and_hms(2025, 12, 31, 23, 59, 59).unwrap();
    assert!(launch.can_redeem("pro", last, 99).is_ok());
    // At the redeem_by instant itself, redemption is refused; so is the 101st.
    assert!(launch.can_redeem("pro", t(2026, 1, 1, 0), 0).is_err());
    assert!(launch.can_redeem("pro", last, 100).is_err());
    let months: Vec<bool> = (0..4).map(|m| launch.discounts_month(m)).collect();
    assert_eq!(months, [true, false, false, false]);
    let three = Coupon {
        duration: CouponDuration::Repeating { months: 3 },
        ..launch.clone()
    };
    let months: Vec<bool> = (0..4).map(|m| three.discounts_month(m)).collect();
    assert_eq!(months, [true, true, true, false]);
    let early = c.coupon("EARLYBIRD30").unwrap();
    assert!((0..240).all(|m| early.discounts_month(m)));
    let only_pro = Coupon {
        plans: vec!["pro".into()],
        ..early.clone()
    };
    assert!(only_pro.applies("starter", last, 0, None).is_err());
    assert!(only_pro.applies("starter", last, 0, Some(1)).is_err());
    assert!(only_pro.applies("pro", last, 0, Some(1)).is_ok());
}
