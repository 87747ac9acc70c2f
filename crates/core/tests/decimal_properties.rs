//! Properties of Tally's one decimal grammar and of exact arithmetic: no input panics, every
//! accepted text denotes exactly the number written and keeps the limits, and exact results
//! agree with `Decimal` wherever `Decimal` itself is exact.

use std::str::FromStr;

use proptest::prelude::*;
use rust_decimal::Decimal;
use tally_core::catalog::Catalog;
use tally_core::decimal::{
    self, check, parse, parse_json_number, DecimalError, Exact, Limits, CATALOG_NUMBER,
    EVENT_VALUE, USAGE_TOTAL,
};

const ALL: [Limits; 3] = [EVENT_VALUE, CATALOG_NUMBER, USAGE_TOTAL];

/// Text made of the characters numbers are written with, and a few others.
fn numberish() -> impl Strategy<Value = String> {
    prop_oneof![
        "[-+0-9._eE ]{0,40}",
        "-?(0|[1-9][0-9]{0,30})(\\.[0-9]{1,30})?([eE][+-]?[0-9]{1,3})?",
        any::<String>(),
    ]
}

/// A plain decimal of the grammar with `int` integer and `frac` fraction digits.
fn plain() -> impl Strategy<Value = (String, u32, u32, u32)> {
    (
        any::<bool>(),
        0usize..22,
        0usize..16,
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(neg, int, frac, a, b)| {
            let digits = format!("{a:020}{b:020}{a:020}");
            let mut int_part: String = digits[..int].trim_start_matches('0').to_owned();
            if int_part.is_empty() {
                int_part = "0".into();
            }
            let frac_part = &digits[20..20 + frac];
            let mut text = String::new();
            if neg {
                text.push('-');
            }
            text.push_str(&int_part);
            if frac > 0 {
                text.push('.');
                text.push_str(frac_part);
            }
            let int_digits = if int_part == "0" { 0 } else { int_part.len() };
            let significant = if int_digits > 0 {
                int_digits + frac
            } else {
                frac_part.trim_start_matches('0').len()
            };
            (text, int_digits as u32, frac as u32, significant as u32)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn parsing_never_panics_and_accepts_only_what_it_reads_exactly(text in numberish()) {
        for limits in &ALL {
            if let Ok(v) = parse(&text, limits) {
                // The number written, digit for digit (a negative zero reads as zero).
                let written = if v.is_zero() { text.trim_start_matches('-') } else { &text };
                prop_assert_eq!(v.to_string(), written);
                prop_assert!(check(v, limits).is_ok());
            }
            if let Ok(v) = parse_json_number(&text, limits) {
                prop_assert!(check(v, limits).is_ok(), "{} → {}", text, v);
                if let Ok(reference) = Decimal::from_scientific(&text).or_else(|_| Decimal::from_str(&text)) {
                    prop_assert_eq!(v, reference, "{}", text);
                }
            }
            // Without an exponent, a JSON number reads as plain text does.
            if !text.contains(['e', 'E']) {
                prop_assert_eq!(parse_json_number(&text, limits), parse(&text, limits));
            }
        }
    }

    #[test]
    fn the_limits_decide_exactly_which_plain_decimals_are_taken(
        (text, int, frac, significant) in plain()
    ) {
        for limits in &ALL {
            let want = if int > limits.max_integer_digits {
                Err(DecimalError::TooLarge(limits.max_integer_digits))
            } else if frac > limits.max_fraction_digits {
                Err(DecimalError::TooManyFractionDigits(limits.max_fraction_digits))
            } else if significant > limits.max_significant_digits {
                Err(DecimalError::TooManySignificantDigits(limits.max_significant_digits))
            } else {
                Ok(Decimal::from_str(&text).unwrap())
            };
            prop_assert_eq!(parse(&text, limits), want, "{}", &text);
        }
    }

    #[test]
    fn exact_arithmetic_agrees_with_decimal_where_decimal_is_exact(
        a in -10_000_000_000i64..10_000_000_000, sa in 0u32..10,
        b in -10_000_000_000i64..10_000_000_000, sb in 0u32..10,
    ) {
        let x = Decimal::new(a, sa);
        let y = Decimal::new(b, sb);
        prop_assert_eq!(decimal::add(x, y), Some(x + y));
        prop_assert_eq!(decimal::sub(x, y), Some(x - y));
        prop_assert_eq!(decimal::mul(x, y), Some(x * y));
        let product = Exact::from(x).checked_mul(Exact::from(y)).unwrap();
        let rounded = (x * y).round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
        prop_assert_eq!(product.round_to(2).map(|m| Decimal::from_i128_with_scale(m, 2)), Some(rounded));
        prop_assert_eq!(Exact::from(x).cmp(&Exact::from(y)), x.cmp(&y));
    }

    #[test]
    fn exact_sums_never_round(a in any::<i64>(), sa in 0u32..29, b in any::<i64>(), sb in 0u32..29) {
        let x = Decimal::new(a, sa);
        let y = Decimal::new(b, sb);
        if let Some(sum) = decimal::add(x, y) {
            // Undoing the sum gives back each operand exactly.
            prop_assert_eq!(decimal::sub(sum, y), Some(x));
        }
        // Ordering is exact at any scales (Decimal compares exactly too).
        prop_assert_eq!(Exact::from(x).cmp(&Exact::from(y)), x.cmp(&y));
    }

    #[test]
    fn exact_ordering_matches_decimal_across_the_whole_range(
        a in any::<i128>(), sa in 0u32..29, b in any::<i128>(), sb in 0u32..29,
    ) {
        // 96-bit mantissas, Decimal's whole range.
        let x = Decimal::from_i128_with_scale(a >> 32, sa);
        let y = Decimal::from_i128_with_scale(b >> 32, sb);
        prop_assert_eq!(Exact::from(x).cmp(&Exact::from(y)), x.cmp(&y));
        if let Some(sum) = decimal::add(x, y) {
            prop_assert_eq!(decimal::sub(sum, y), Some(x));
        }
    }

    #[test]
    fn a_catalog_number_never_panics(text in numberish()) {
        let src = format!(
            "[catalog]\nname = \"T\"\ncurrency = \"eur\"\n[metrics.m]\nname = \"M\"\nunit = \"u\"\n\
             [plans.p]\nname = \"P\"\nprices.month = {{ amount = \"10.00\" }}\n\
             [plans.p.metrics.m]\nincluded = {:?}\noverage = {{ model = \"per_unit\", unit_price = {:?} }}\n",
            text, text
        );
        let parsed = Catalog::parse(&src, "t.toml");
        if let Ok(c) = parsed {
            let plan = c.plan("p").unwrap();
            prop_assert!(parse(&text, &CATALOG_NUMBER).is_ok() || text == "unlimited", "{}", text);
            prop_assert!(plan.metrics.contains_key("m"));
        }
    }
}
