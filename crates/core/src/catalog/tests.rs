//! Catalog loading: a valid file, and each error exactly as a user sees it.

use rust_decimal_macros::dec;

use super::*;

const VALID: &str = r#"
[catalog]
name = "Acme"
currency = "EUR"
free_plan = "free"

[metrics.calls]
name = "API calls"
unit = "call"
aggregation = "count"
credit_cost = "0.5"

[metrics.seats]
unit = "seat"
aggregation = "unique_count"
unique_property = "user_id"
kind = "gauge"

[metrics.spend]
unit = "eur"

[plans.free]
name = "Free"
monthly_credits = 100

[plans.team]
name = "Team"
trial_days = 14
minimum = "50"
prices.month = { amount = "49.90", lookup_key = "acme_team_monthly" }
prices.year = { amount = 499 }
features = { sso = true, projects = 10, storage_gb = "2.5" }

[plans.team.metrics.calls]
included = 1000
overage = { model = "graduated", tiers = [
  { up_to = "1000", unit_price = "0.01" },
  { up_to = 5000, unit_price = "0.005", flat = "1.00" },
  { unit_price = "0.001" },
] }
limit = { quantity = "100000", enforcement = "soft" }
warn_at_percent = [50, 100]

[plans.team.metrics.seats]
included = "unlimited"

[plans.team.metrics.spend]
overage = { model = "pass_through", markup_percent = "12.5" }

[credit_packs.small]
credits = 500
price = { amount = "5.00" }

[coupons.TENOFF]
amount_off = "10"
duration = "repeating"
duration_in_months = 3
plans = ["team"]

[coupons.HALF]
percent_off = 50
duration = "once"
redeem_by = 2025-12-31T12:00:00+02:00
max_redemptions = 5

[flags.new_ui]
enabled = true
rollout_percent = "12.5"
environments = ["staging"]
"#;

#[test]
fn parses_a_valid_catalog() {
    let c = Catalog::parse(VALID, "acme.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.name, "Acme");
    assert_eq!(c.currency, Currency::EUR);
    assert_eq!(c.free_plan.as_deref(), Some("free"));
    let ids: Vec<&str> = c.plans().iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["free", "team"]);
    let metric_ids: Vec<&str> = c.metrics().iter().map(|m| m.id.as_str()).collect();
    assert_eq!(metric_ids, ["calls", "seats", "spend"]);

    let calls = c.metric("calls").unwrap();
    assert_eq!(calls.aggregation, Aggregation::Count);
    assert_eq!(calls.kind, MetricKind::Metered);
    assert_eq!(calls.credit_cost, Some(dec!(0.5)));
    let seats = c.metric("seats").unwrap();
    assert_eq!(seats.name, "seats");
    assert_eq!(seats.unique_property.as_deref(), Some("user_id"));
    assert_eq!(seats.kind, MetricKind::Gauge);

    let team = c.plan("team").unwrap();
    assert_eq!(team.trial_days, 14);
    assert_eq!(team.minimum, Some(5000));
    assert_eq!(
        team.prices[&Interval::Month],
        Price {
            amount: 4990,
            lookup_key: "acme_team_monthly".into()
        }
    );
    assert_eq!(team.prices[&Interval::Year].amount, 49900);
    assert_eq!(team.prices[&Interval::Year].lookup_key, "team_yearly");
    assert_eq!(team.features["sso"], FeatureValue::Bool(true));
    assert_eq!(team.features["projects"], FeatureValue::Number(dec!(10)));
    assert_eq!(team.features["storage_gb"], FeatureValue::Number(dec!(2.5)));

    let order: Vec<&str> = team
        .metrics_in_order()
        .iter()
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(order, ["calls", "seats", "spend"]);
    let pm = &team.metrics["calls"];
    assert_eq!(pm.name, "API calls");
    assert_eq!(pm.position, 0);
    assert_eq!(pm.included, Allowance::Quantity(dec!(1000)));
    assert_eq!(
        pm.overage,
        Some(Charge::Graduated {
            tiers: vec![
                Tier {
                    up_to: Some(dec!(1000)),
                    unit_price: dec!(0.01),
                    flat: dec!(0)
                },
                Tier {
                    up_to: Some(dec!(5000)),
                    unit_price: dec!(0.005),
                    flat: dec!(1.00)
                },
                Tier {
                    up_to: None,
                    unit_price: dec!(0.001),
                    flat: dec!(0)
                },
            ]
        })
    );
    assert_eq!(
        pm.limit,
        Some(Limit {
            quantity: dec!(100000),
            enforcement: Enforcement::Soft
        })
    );
    assert_eq!(pm.warn_at_percent, [50, 100]);
    assert_eq!(team.metrics["seats"].included, Allowance::Unlimited);
    assert_eq!(team.metrics["seats"].warn_at_percent, [80, 95, 100]);
    assert_eq!(
        team.metrics["spend"].overage,
        Some(Charge::PassThrough { markup: dec!(12.5) })
    );
    assert_eq!(team.metrics["spend"].included, Allowance::Quantity(dec!(0)));

    let free = c.plan("free").unwrap();
    assert!(free.prices.is_empty());
    assert_eq!(free.monthly_credits, Some(dec!(100)));
    assert!(!free.credits_roll_over);
    assert_eq!(free.low_credit_balance, None);

    let pack = c.credit_pack("small").unwrap();
    assert_eq!((pack.credits, pack.amount), (dec!(500), 500));
    assert_eq!(pack.lookup_key, "small");

    let tenoff = c.coupon("TENOFF").unwrap();
    assert_eq!(
        tenoff.discount,
        Discount::Amount {
            amount: 1000,
            currency: Currency::EUR
        }
    );
    assert_eq!(tenoff.duration, CouponDuration::Repeating { months: 3 });
    assert_eq!(tenoff.plans, ["team"]);
    let half = c.coupon("HALF").unwrap();
    assert_eq!(half.discount, Discount::Percent(dec!(50)));
    assert_eq!(
        half.redeem_by.unwrap().to_rfc3339(),
        "2025-12-31T10:00:00+00:00"
    );
    assert_eq!(half.max_redemptions, Some(5));
    assert!(c.coupon("half").is_none());

    let flag = c.flag("new_ui").unwrap();
    assert!(flag.enabled);
    assert_eq!(flag.rollout_percent, dec!(12.5));
    assert_eq!(flag.environments, ["staging"]);
}

#[test]
fn a_date_redeem_by_means_the_end_of_that_day() {
    let src = VALID.replace("2025-12-31T12:00:00+02:00", "2025-12-31");
    let c = Catalog::parse(&src, "acme.toml").unwrap();
    assert_eq!(
        c.coupon("HALF").unwrap().redeem_by.unwrap().to_rfc3339(),
        "2026-01-01T00:00:00+00:00"
    );
}

const BASE: &str =
    "[catalog]\nname = \"Acme\"\ncurrency = \"eur\"\n\n[metrics.calls]\nunit = \"call\"\n\n";

/// Parses `BASE` followed by `rest` and returns the error report as a user sees it.
fn errors(rest: &str) -> String {
    match Catalog::parse(&format!("{BASE}{rest}"), "c.toml") {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn reports_toml_syntax_errors_with_their_location() {
    let e = Catalog::parse("[catalog\nname = 1", "c.toml").unwrap_err();
    assert_eq!(e.len(), 1);
    assert!(e.to_string().starts_with("c.toml:1:"), "{e}");
}

#[test]
fn reports_duplicate_ids() {
    let e = errors("[plans.a]\n[plans.a]\n");
    assert_eq!(
        e,
        "c.toml:9:8: duplicate key a: it is already defined above"
    );
}

#[test]
fn reports_duplicate_lookup_keys() {
    let e = errors(
        "[plans.a]\nprices.month = { amount = 1, lookup_key = \"k\" }\n\
         [plans.b]\nprices.month = { amount = 2, lookup_key = \"k\" }\n",
    );
    assert_eq!(
        e,
        "c.toml:11:43: duplicate lookup_key \"k\": already used by plan a (month)"
    );
}

#[test]
fn reports_unknown_fields() {
    let e = errors("[plans.a]\nprice = 5\n");
    assert_eq!(
        e,
        "c.toml:9:1: unknown field `price`, expected one of `name`, `currency`, `prices`, \
         `trial_days`, `metrics`, `features`, `monthly_credits`, `credits_roll_over`, `low_credit_balance`, `minimum`"
    );
}

#[test]
fn reports_an_unknown_currency() {
    let e = Catalog::parse(
        "[catalog]\nname = \"x\"\ncurrency = \"eux\"\n[plans.a]\n",
        "c.toml",
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "c.toml:3:12: unknown currency \"eux\"");
}

#[test]
fn reports_an_unknown_metric_referenced_by_a_plan() {
    let e = errors("[plans.a.metrics.cals]\nincluded = 5\n");
    assert_eq!(e, "c.toml:8:18: plan a refers to unknown metric \"cals\"");
}

#[test]
fn reports_a_negative_price() {
    let e = errors("[plans.a]\nprices.month = { amount = \"-5.00\" }\n");
    assert_eq!(e, "c.toml:9:27: price must not be negative (-5.00)");
}

#[test]
fn reports_a_price_finer_than_the_currency() {
    let e = errors("[plans.a]\nprices.month = { amount = \"5.001\" }\n");
    assert_eq!(
        e,
        "c.toml:9:27: price: 5.001 has more decimal places than EUR allows (2)"
    );
}

#[test]
fn reports_an_unknown_interval() {
    let e = errors("[plans.a]\nprices.week = { amount = 5 }\n");
    assert_eq!(
        e,
        "c.toml:9:8: unknown interval \"week\"; expected month or year"
    );
}

#[test]
fn refuses_toml_floats() {
    let e = errors("[plans.a]\nprices.month = { amount = 5.5 }\n");
    assert_eq!(
        e,
        "c.toml:9:27: write decimal numbers as strings (e.g. \"0.05\") so they are read exactly"
    );
}

#[test]
fn reports_huge_numbers_plainly() {
    // Catalog numbers have at most 15 integer digits, 12 decimal places and 18 significant
    // digits, however they are written.
    let e = errors("[plans.a]\nprices.month = { amount = 99999999999999999999 }\n");
    assert_eq!(
        e,
        "c.toml:9:27: 99999999999999999999 is too large: at most 15 integer digits"
    );
    let e = errors("[plans.a]\nprices.month = { amount = \"99999999999999999999\" }\n");
    assert_eq!(
        e,
        "c.toml:9:27: \"99999999999999999999\" is too large: at most 15 integer digits"
    );
    let e = errors("[plans.a]\nprices.month = { amount = \"1234567.1234567890123\" }\n");
    assert_eq!(
        e,
        "c.toml:9:27: \"1234567.1234567890123\" has too many decimal places: at most 12"
    );
    let e = errors("[plans.a]\nprices.month = { amount = \"12345678.12345678901\" }\n");
    assert_eq!(
        e,
        "c.toml:9:27: \"12345678.12345678901\" has too many significant digits: at most 18"
    );
    let e =
        errors("[plans.a]\nprices.month = { amount = 170141183460469231731687303715884105727 }\n");
    assert_eq!(
        e,
        "c.toml:9:27: 170141183460469231731687303715884105727 is too large: at most 15 integer \
         digits"
    );
}

#[test]
fn lists_every_toml_float_at_once() {
    // Floats are a common slip (`unit_price = 0.04`); each one is listed, not only the first.
    let e = errors(
        "[plans.a]\nprices.month = { amount = 9.5 }\n\
         [plans.a.metrics.calls]\nincluded = 1.5\n\
         overage = { model = \"graduated\", tiers = [{ up_to = 10, unit_price = 0.1 }, { unit_price = \"0.05\" }] }\n\
         [coupons.X]\npercent_off = 12.5\nduration = \"once\"\nmax_redemptions = 10.0\n",
    );
    let m = "write decimal numbers as strings (e.g. \"0.05\") so they are read exactly";
    assert_eq!(
        e,
        format!(
            "c.toml:9:27: {m}\nc.toml:11:12: {m}\nc.toml:12:70: {m}\nc.toml:14:15: {m}\n\
             c.toml:16:19: max_redemptions must be a whole number"
        )
    );
}

#[test]
fn reports_a_bad_decimal_string() {
    let e = errors("[plans.a]\nprices.month = { amount = \"five\" }\n");
    assert_eq!(
        e,
        "c.toml:9:27: \"five\" is not a decimal number (digits, an optional leading - and \
         .digits; no +, _, spaces or exponent)"
    );
    for bad in ["+5", " 5", "1_000", "5.", "1e3"] {
        let e = errors(&format!(
            "[plans.a]\nprices.month = {{ amount = \"{bad}\" }}\n"
        ));
        assert!(e.contains("is not a decimal number"), "{bad}: {e}");
    }
}

#[test]
fn reports_tiers_out_of_order() {
    let e = errors(
        "[plans.a.metrics.calls]\noverage = { model = \"graduated\", tiers = [\n\
         { up_to = 500, unit_price = \"0.01\" },\n\
         { up_to = 100, unit_price = \"0.02\" },\n\
         { unit_price = \"0.03\" },\n] }\n",
    );
    assert_eq!(
        e,
        "c.toml:11:11: tiers out of order: up_to 100 must be greater than the previous tier's 500"
    );
}

#[test]
fn reports_a_bounded_last_tier_and_an_unbounded_middle_tier() {
    let e = errors(
        "[plans.a.metrics.calls]\noverage = { model = \"volume\", tiers = [\n\
         { unit_price = \"0.01\" },\n\
         { up_to = 100, unit_price = \"0.02\" },\n] }\n",
    );
    assert_eq!(
        e,
        "c.toml:10:1: only the last tier may be unbounded; give this tier an up_to\n\
         c.toml:11:11: the last tier must be unbounded: leave out up_to or write up_to = \"unlimited\""
    );
}

#[test]
fn reports_charge_model_mistakes() {
    assert_eq!(
        errors("[plans.a.metrics.calls]\noverage = { model = \"tiered\" }\n"),
        "c.toml:9:21: unknown charge model \"tiered\"; expected per_unit, graduated, volume, \
         package or pass_through"
    );
    assert_eq!(
        errors("[plans.a.metrics.calls]\noverage = { model = \"per_unit\" }\n"),
        "c.toml:9:21: the per_unit model needs unit_price"
    );
    assert_eq!(
        errors(
            "[plans.a.metrics.calls]\noverage = { model = \"per_unit\", unit_price = 1, size = 5 }\n"
        ),
        "c.toml:9:56: size does not apply to the per_unit model"
    );
    assert_eq!(
        errors("[plans.a.metrics.calls]\noverage = { model = \"package\", size = 0, price = 5 }\n"),
        "c.toml:9:39: package size must be more than 0 (0)"
    );
}

#[test]
fn reports_a_pass_through_metric_not_in_the_plan_currency() {
    assert_eq!(
        errors("[plans.a.metrics.calls]\noverage = { model = \"pass_through\", markup_percent = 10 }\n"),
        "c.toml:9:21: metric calls is billed as pass-through cost, so its unit must be the plan's \
         currency \"eur\", not \"call\""
    );
}

#[test]
fn reports_allowance_and_limit_mistakes() {
    assert_eq!(
        errors("[plans.a.metrics.calls]\nincluded = \"-1\"\n"),
        "c.toml:9:12: included quantity must not be negative (-1)"
    );
    assert_eq!(
        errors("[plans.a.metrics.calls]\nincluded = \"lots\"\n"),
        "c.toml:9:12: \"lots\" is neither \"unlimited\" nor a quantity"
    );
    assert_eq!(
        errors("[plans.a.metrics.calls]\nincluded = 10\nlimit = { quantity = 5 }\n"),
        "c.toml:10:22: limit 5 is below the included quantity 10"
    );
    assert_eq!(
        errors("[plans.a.metrics.calls]\nlimit = { quantity = 5, enforcement = \"strict\" }\n"),
        "c.toml:9:39: unknown enforcement \"strict\"; expected hard or soft"
    );
    assert_eq!(
        errors(
            "[plans.a.metrics.calls]\nincluded = \"unlimited\"\noverage = { model = \"per_unit\", unit_price = 1 }\n"
        ),
        "c.toml:10:11: plan a includes unlimited calls, so an overage charge never applies"
    );
    assert_eq!(
        errors("[plans.a.metrics.calls]\nwarn_at_percent = [95, 80]\n"),
        "c.toml:9:24: warn_at_percent must be in increasing order"
    );
}

#[test]
fn reports_a_soft_limit_without_an_overage_charge() {
    // A soft limit lets usage through and promises to bill it; without an overage charge the
    // excess would be free.
    assert_eq!(
        errors("[plans.a.metrics.calls]\nincluded = 10\nlimit = { quantity = 20, enforcement = \"soft\" }\n"),
        "c.toml:10:9: plan a limits calls softly, so usage beyond the limit is billed: add an \
         overage charge, or make the limit hard"
    );
    let ok = format!(
        "{BASE}[plans.a.metrics.calls]\nincluded = 10\n\
         overage = {{ model = \"per_unit\", unit_price = \"0.01\" }}\n\
         limit = {{ quantity = 20, enforcement = \"soft\" }}\n\
         [plans.b.metrics.calls]\nlimit = {{ quantity = 5 }}\n"
    );
    assert!(Catalog::parse(&ok, "c.toml").is_ok());
}

#[test]
fn reports_metric_mistakes() {
    let e = Catalog::parse(
        "[catalog]\nname = \"x\"\ncurrency = \"eur\"\n[metrics.a]\naggregation = \"avg\"\nunit = \"x\"\n\
         [metrics.b]\nunit = \"u\"\naggregation = \"unique_count\"\n[metrics.c]\nkind = \"level\"\n\
         [plans.p]\n",
        "c.toml",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "c.toml:5:15: unknown aggregation \"avg\"; expected sum, count, max, latest or unique_count\n\
         c.toml:7:1: metric b counts unique values, so it needs unique_property = \"<event property>\"\n\
         c.toml:10:1: metric c needs a unit, e.g. unit = \"hour\"\n\
         c.toml:11:8: unknown metric kind \"level\"; expected metered or gauge"
    );
}

#[test]
fn reports_a_missing_free_plan_and_bad_ids() {
    let e = Catalog::parse(
        "[catalog]\nname = \"x\"\ncurrency = \"eur\"\nfree_plan = \"fre\"\n[plans.free]\n[plans.\"pro plan\"]\n",
        "c.toml",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "c.toml:4:13: free_plan \"fre\" is not a plan in this catalog\n\
         c.toml:6:8: plan id \"pro plan\" must be 1 to 64 letters, digits, '_', '-' or '.'"
    );
}

#[test]
fn reports_a_free_plan_that_costs_money() {
    // Customers land on the free plan when their subscription is deleted; it must not bill them.
    let e = Catalog::parse(
        "[catalog]\nname = \"x\"\ncurrency = \"eur\"\nfree_plan = \"basic\"\n\
         [plans.basic]\nprices.month = { amount = \"5.00\" }\n",
        "c.toml",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "c.toml:4:13: free_plan \"basic\" has a price (month EUR 5.00); the plan customers fall \
         back to must not charge"
    );
    let e = Catalog::parse(
        "[catalog]\nname = \"x\"\ncurrency = \"eur\"\nfree_plan = \"basic\"\n\
         [plans.basic]\nminimum = \"1.00\"\n",
        "c.toml",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "c.toml:4:13: free_plan \"basic\" has a minimum charge (EUR 1.00); the plan customers \
         fall back to must not charge"
    );
    // Zero prices are fine: a free plan may still be sold through checkout.
    assert!(Catalog::parse(
        "[catalog]\nname = \"x\"\ncurrency = \"eur\"\nfree_plan = \"basic\"\n\
         [plans.basic]\nprices.month = { amount = 0 }\n",
        "c.toml",
    )
    .is_ok());
}

#[test]
fn reports_an_amount_off_coupon_for_a_plan_in_another_currency() {
    let e = errors(
        "[plans.a]\n[plans.b]\ncurrency = \"usd\"\n\
         [coupons.X]\namount_off = \"5.00\"\nduration = \"once\"\nplans = [\"a\", \"b\"]\n",
    );
    assert_eq!(
        e,
        "c.toml:14:15: coupon X takes an amount off in eur, but plan b is priced in usd"
    );
}

#[test]
fn reports_a_catalog_without_plans() {
    let e = Catalog::parse("[catalog]\nname = \"x\"\ncurrency = \"eur\"\n", "c.toml")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "c.toml:1:1: the catalog declares no plans; add a [plans.<id>] table"
    );
}

#[test]
fn reports_coupon_mistakes() {
    let e = errors(
        "[plans.a]\n\
         [coupons.A]\npercent_off = 120\nduration = \"once\"\n\
         [coupons.B]\npercent_off = 10\namount_off = 5\nduration = \"forever\"\n\
         [coupons.C]\nduration = \"forever\"\n\
         [coupons.D]\npercent_off = 10\nduration = \"repeating\"\n\
         [coupons.E]\npercent_off = 10\nduration = \"once\"\nmax_redemptions = 0\nplans = [\"zz\"]\n\
         [coupons.F]\npercent_off = 10\nduration = \"always\"\nredeem_by = 2025-12-31T10:00:00\n",
    );
    assert_eq!(
        e,
        "c.toml:10:15: percent_off must be more than 0 and at most 100 (120)\n\
         c.toml:14:14: a coupon takes percent_off or amount_off, not both\n\
         c.toml:16:1: coupon C needs percent_off or amount_off\n\
         c.toml:20:12: a repeating coupon needs duration_in_months\n\
         c.toml:24:19: max_redemptions must be at least 1\n\
         c.toml:25:10: coupon E refers to unknown plan \"zz\"\n\
         c.toml:28:12: unknown coupon duration \"always\"; expected once, repeating or forever\n\
         c.toml:29:13: redeem_by must be a date (2025-12-31) or a date-time with an offset \
         (2025-12-31T23:59:59Z)"
    );
}

#[test]
fn reports_flag_and_pack_mistakes() {
    let e = errors(
        "[plans.a]\n\
         [credit_packs.p]\ncredits = 0\nprice = { amount = \"1.00\" }\n\
         [flags.f]\nrollout_percent = \"100.5\"\n",
    );
    assert_eq!(
        e,
        "c.toml:10:11: credits must be more than 0 (0)\n\
         c.toml:13:19: rollout_percent must be between 0 and 100 with at most two decimals (100.5)"
    );
}

#[test]
fn reports_every_error_in_file_order() {
    let e = Catalog::parse(
        "[catalog]\nname = \"x\"\ncurrency = \"eur\"\n\
         [plans.b.metrics.nope]\n\
         [plans.a]\nprices.month = { amount = \"-1\" }\ntrial_days = -3\n",
        "c.toml",
    )
    .unwrap_err();
    assert_eq!(e.len(), 3);
    assert_eq!(
        e.to_string(),
        "c.toml:4:18: plan b refers to unknown metric \"nope\"\n\
         c.toml:6:27: price must not be negative (-1)\n\
         c.toml:7:14: trial_days must be between 0 and 730"
    );
}

#[test]
fn explains_missing_and_misshapen_tables() {
    let e = Catalog::parse("", "c.toml").unwrap_err().to_string();
    assert_eq!(
        e,
        "c.toml:1:1: missing the [catalog] table with name and currency"
    );
    let e = Catalog::parse("[catalog]\nname = \"x\"\n[plans.a]\n", "c.toml")
        .unwrap_err()
        .to_string();
    assert_eq!(e, "c.toml:1:1: missing `currency`");
    let e = errors("[plans.a]\nprices.month = \"5\"\n");
    assert_eq!(
        e,
        "c.toml:9:16: invalid type: string \"5\", expected a table like \
         { amount = \"9.00\", lookup_key = \"…\" }"
    );
    let e = errors("[plans.a.metrics.calls]\noverage = \"per_unit\"\n");
    assert_eq!(
        e,
        "c.toml:9:11: invalid type: string \"per_unit\", expected a table like \
         { model = \"per_unit\", unit_price = \"0.04\" }"
    );
}

#[test]
fn serializes_plans_for_the_api() {
    let c = Catalog::parse(VALID, "acme.toml").unwrap();
    let plan = serde_json::to_value(c.plan("team").unwrap()).unwrap();
    assert_eq!(plan["currency"], "eur");
    assert_eq!(plan["prices"]["month"]["amount"], 4990);
    assert_eq!(plan["prices"]["year"]["lookup_key"], "team_yearly");
    assert_eq!(plan["features"]["sso"], true);
    assert_eq!(plan["features"]["projects"], "10");
    assert_eq!(plan["metrics"]["calls"]["included"], "1000");
    assert_eq!(plan["metrics"]["seats"]["included"], "unlimited");
    assert_eq!(plan["metrics"]["calls"]["overage"]["model"], "graduated");
    assert_eq!(plan["metrics"]["calls"]["limit"]["enforcement"], "soft");
}

#[test]
fn reports_coupon_ids_that_differ_only_in_case() {
    let e = errors(
        "[plans.a]\n[coupons.SAVE10]\npercent_off = 10\nduration = \"once\"\n\
         [coupons.save10]\npercent_off = 10\nduration = \"once\"\n",
    );
    assert_eq!(
        e,
        "c.toml:12:10: coupon save10 differs from coupon SAVE10 only in letter case"
    );
}

#[test]
fn low_credit_balance_must_be_positive() {
    let e = errors("[plans.a]\nlow_credit_balance = 0\n");
    assert!(
        e.contains("low_credit_balance must be more than 0 (0)"),
        "{e}"
    );
}

#[test]
fn reads_the_stripe_usage_mode() {
    let c = Catalog::parse(VALID, "acme.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.stripe_usage, StripeUsage::InvoiceItems);
    let meters = VALID.replace(
        "free_plan = \"free\"\n",
        "free_plan = \"free\"\nstripe_usage = \"meters\"\n",
    );
    let c = Catalog::parse(&meters, "acme.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.stripe_usage, StripeUsage::Meters);
    let e = Catalog::parse(
        "[catalog]\nname = \"x\"\ncurrency = \"eur\"\nstripe_usage = \"meter\"\n[plans.free]\n",
        "c.toml",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "c.toml:4:16: stripe_usage must be \"invoice_items\" or \"meters\", not \"meter\""
    );
}
