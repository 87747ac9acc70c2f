//! Property tests of rating: totals add up, are never negative, and never fall as usage grows.
//!
//! Volume tiers are left out of the monotonicity property on purpose: crossing into a cheaper
//! volume tier lowers the price of every unit, so a volume-priced total can fall as usage grows.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rust_decimal::Decimal;
use tally_core::catalog::{Catalog, Coupon, CouponDuration, Discount};
use tally_core::money::Currency;
use tally_core::period::Interval;
use tally_core::rating::{rate, Invoice, RatingInput};

/// A decimal with up to `scale` places from an integer mantissa.
fn dec(mantissa: i64, scale: u32) -> Decimal {
    Decimal::new(mantissa, scale)
}

fn overage() -> impl Strategy<Value = String> {
    prop_oneof![
        (0i64..100_000, 0u32..5).prop_map(|(m, s)| format!(
            "{{ model = \"per_unit\", unit_price = \"{}\" }}",
            dec(m, s)
        )),
        (1i64..1000, 1i64..1000, 0i64..10_000, 0i64..10_000, 0i64..10_000, 0i64..500).prop_map(
            |(a, b, p1, p2, p3, flat)| format!(
                "{{ model = \"graduated\", tiers = [{{ up_to = {a}, unit_price = \"{}\" }}, \
                 {{ up_to = {}, unit_price = \"{}\", flat = \"{}\" }}, {{ unit_price = \"{}\" }}] }}",
                dec(p1, 3),
                a + b,
                dec(p2, 3),
                dec(flat, 2),
                dec(p3, 3)
            )
        ),
        (1i64..10_000, 0i64..100_000).prop_map(|(size, price)| format!(
            "{{ model = \"package\", size = {size}, price = \"{}\" }}",
            dec(price, 2)
        )),
    ]
}

fn catalog(overage: &str, included: i64, markup: i64, base: i64, minimum: Option<i64>) -> Catalog {
    let minimum = minimum.map_or(String::new(), |m| format!("minimum = \"{}\"\n", dec(m, 2)));
    let src = format!(
        "[catalog]\nname = \"P\"\ncurrency = \"eur\"\n\
         [metrics.m]\nunit = \"unit\"\n[metrics.spend]\nunit = \"eur\"\n\
         [plans.p]\nprices.month = {{ amount = \"{}\" }}\n{minimum}\
         [plans.p.metrics.m]\nincluded = {included}\noverage = {overage}\n\
         [plans.p.metrics.spend]\nincluded = {included}\n\
         overage = {{ model = \"pass_through\", markup_percent = \"{}\" }}\n",
        dec(base, 2),
        dec(markup, 1)
    );
    Catalog::parse(&src, "p.toml").unwrap_or_else(|e| panic!("{e}\n{src}"))
}

fn coupon() -> impl Strategy<Value = Option<Coupon>> {
    let make = |discount| Coupon {
        id: "C".into(),
        name: "C".into(),
        discount,
        duration: CouponDuration::Forever,
        redeem_by: None,
        max_redemptions: None,
        plans: vec![],
    };
    prop_oneof![
        Just(None),
        (1i64..=10_000).prop_map(move |p| Some(make(Discount::Percent(dec(p, 2))))),
        (1i64..1_000_000).prop_map(move |a| Some(make(Discount::Amount {
            amount: a,
            currency: Currency::EUR
        }))),
    ]
}

fn rate_usage(c: &Catalog, coupon: Option<&Coupon>, m: Decimal, spend: Decimal) -> Invoice {
    let usage = BTreeMap::from([("m".to_string(), m), ("spend".to_string(), spend)]);
    rate(&RatingInput {
        coupon,
        ..RatingInput::new(c.plan("p").unwrap(), Interval::Month, &usage)
    })
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn totals_add_up_and_never_go_negative_or_fall(
        overage in overage(),
        included in 0i64..1000,
        markup in 0i64..1000,
        base in 0i64..100_000,
        minimum in proptest::option::of(0i64..200_000),
        coupon in coupon(),
        m in 0i64..10_000_000,
        m_more in 0i64..10_000_000,
        spend in 0i64..10_000_000,
        spend_more in 0i64..10_000_000,
    ) {
        let c = catalog(&overage, included, markup, base, minimum);
        let small = rate_usage(&c, coupon.as_ref(), dec(m, 2), dec(spend, 2));
        let large = rate_usage(&c, coupon.as_ref(), dec(m + m_more, 2), dec(spend + spend_more, 2));
        for inv in [&small, &large] {
            let sum: i64 = inv.lines.iter().map(|l| l.amount).sum();
            prop_assert_eq!(inv.subtotal, sum);
            prop_assert!(inv.discount >= 0 && inv.discount <= inv.subtotal);
            prop_assert_eq!(inv.total, inv.subtotal - inv.discount);
            prop_assert!(inv.total >= 0);
            prop_assert!(inv.lines.iter().all(|l| l.amount >= 0));
        }
        prop_assert!(large.subtotal >= small.subtotal);
        prop_assert!(large.total >= small.total, "{} < {}", large.total, small.total);
    }

    #[test]
    fn volume_totals_add_up_and_are_never_negative(
        a in 1i64..1000,
        p1 in 0i64..10_000,
        p2 in 0i64..10_000,
        flat in 0i64..500,
        coupon in coupon(),
        m in 0i64..10_000_000,
    ) {
        let overage = format!(
            "{{ model = \"volume\", tiers = [{{ up_to = {a}, unit_price = \"{}\" }}, \
             {{ unit_price = \"{}\", flat = \"{}\" }}] }}",
            dec(p1, 3),
            dec(p2, 3),
            dec(flat, 2)
        );
        let c = catalog(&overage, 0, 0, 1000, None);
        let inv = rate_usage(&c, coupon.as_ref(), dec(m, 2), Decimal::ZERO);
        let sum: i64 = inv.lines.iter().map(|l| l.amount).sum();
        prop_assert_eq!(inv.subtotal, sum);
        prop_assert_eq!(inv.total, inv.subtotal - inv.discount);
        prop_assert!(inv.total >= 0 && inv.discount >= 0);
    }

    #[test]
    fn each_line_is_the_exact_charge_rounded_once(
        price_mantissa in 0i64..10_000_000,
        scale in 0u32..6,
        qty in 0i64..100_000_000,
    ) {
        let unit_price = dec(price_mantissa, scale);
        let c = catalog(
            &format!("{{ model = \"per_unit\", unit_price = \"{unit_price}\" }}"),
            0, 0, 0, None,
        );
        let quantity = dec(qty, 3);
        let inv = rate_usage(&c, None, quantity, Decimal::ZERO);
        let line = inv.lines.iter().find(|l| l.metric.as_deref() == Some("m")).unwrap();
        // Exact product in cents, then half away from zero — computed independently.
        let cents = quantity * unit_price * Decimal::ONE_HUNDRED;
        let floor = cents.trunc();
        let expected = if cents - floor >= Decimal::new(5, 1) { floor + Decimal::ONE } else { floor };
        prop_assert_eq!(Decimal::from(line.amount), expected);
    }
}
