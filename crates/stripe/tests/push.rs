//! Catalog push against the simulator: idempotent reruns, price changes, a crash half-way and two
//! pushes at once, with exact object counts.

use serde_json::json;
use std::time::Duration;
use stripe_sim::SimHandle;
use tally_core::catalog::Catalog;
use tally_stripe::push::{push, Change, Report};
use tally_stripe::{Client, Config, RetryPolicy};

/// 2026-12-01T00:00:00Z: LAUNCH2025 (redeemable until 2026-01-01) has expired.
const NOW: i64 = 1_796_083_200;

fn catalog(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../../catalogs/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn parse(src: &str) -> Catalog {
    Catalog::parse(src, "test.toml").unwrap()
}

async fn sim() -> SimHandle {
    stripe_sim::spawn(stripe_sim::Config {
        port: 0,
        ..Default::default()
    })
    .await
    .unwrap()
}

fn client(sim: &SimHandle) -> Client {
    let mut cfg = Config::new("sk_test_push").with_base_url(sim.base_url());
    cfg.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    };
    Client::new(cfg).unwrap()
}

/// (products, prices, active prices, coupons, promotion codes, portal configurations).
fn counts(sim: &SimHandle) -> (usize, usize, usize, usize, usize, usize) {
    sim.with(|s| {
        let w = &s.w;
        (
            w.products.values().filter(|p| !p.deleted).count(),
            w.prices.len(),
            w.prices.values().filter(|p| p.active).count(),
            w.coupons.values().filter(|c| !c.deleted).count(),
            w.promotion_codes.len(),
            w.portal_configs.len(),
        )
    })
    .unwrap()
}

fn writes(sim: &SimHandle) -> usize {
    sim.with(|s| {
        s.faults
            .log
            .iter()
            .filter(|l| l.starts_with("POST "))
            .count()
    })
    .unwrap()
}

fn creates(r: &Report) -> usize {
    r.changes.len()
}

#[tokio::test]
async fn dry_run_changes_nothing_then_commit_then_a_second_push_is_a_no_op() {
    let sim = sim().await;
    let c = client(&sim);
    let cat = parse(&catalog("magicbox.toml"));

    let dry = push(&c, &cat, false, NOW).await.unwrap();
    assert!(!dry.committed);
    // 3 products, 6 prices, 1 coupon, 1 promotion code, 1 portal configuration.
    assert_eq!(creates(&dry), 12, "{:#?}", dry.changes);
    assert_eq!(writes(&sim), 0);
    assert_eq!(counts(&sim), (0, 0, 0, 0, 0, 0));
    assert_eq!(dry.warnings.len(), 1);
    assert_eq!(dry.warnings[0].object, "coupon LAUNCH2025");

    let first = push(&c, &cat, true, NOW).await.unwrap();
    assert_eq!(creates(&first), 12);
    assert_eq!(first.unchanged, 0);
    assert_eq!(counts(&sim), (3, 6, 6, 1, 1, 1));
    assert!(first.changes.contains(&Change::CreateProduct {
        id: "tally_magic_box_plan_pro".into(),
        name: "Pro".into()
    }));
    let pro = sim
        .with(|s| {
            s.w.prices
                .values()
                .find(|p| p.lookup_key.as_deref() == Some("magicbox_pro_monthly"))
                .map(|p| p.product.clone())
        })
        .unwrap();
    assert_eq!(pro.as_deref(), Some("tally_magic_box_plan_pro"));
    let pro = c
        .prices_by_lookup_keys(&["magicbox_pro_monthly".into()])
        .await
        .unwrap();
    assert_eq!(pro.len(), 1);
    assert_eq!(pro[0].unit_amount, Some(19900));
    assert_eq!(pro[0].currency, "eur");

    let before = writes(&sim);
    let second = push(&c, &cat, true, NOW).await.unwrap();
    assert_eq!(second.changes, vec![]);
    assert_eq!(second.unchanged, 12);
    assert_eq!(writes(&sim), before);
    assert_eq!(counts(&sim), (3, 6, 6, 1, 1, 1));
}

#[tokio::test]
async fn a_changed_amount_makes_a_new_price_with_the_lookup_key_and_archives_the_old_one() {
    let sim = sim().await;
    let c = client(&sim);
    push(&c, &parse(&catalog("magicbox.toml")), true, NOW)
        .await
        .unwrap();
    let old = sim
        .with(|s| {
            s.w.prices
                .values()
                .find(|p| p.lookup_key.as_deref() == Some("magicbox_pro_monthly"))
                .unwrap()
                .id
                .clone()
        })
        .unwrap();

    let changed = parse(&catalog("magicbox.toml").replace("\"199.00\"", "\"249.00\""));
    let dry = push(&c, &changed, false, NOW).await.unwrap();
    assert_eq!(
        dry.changes,
        vec![
            Change::CreatePrice {
                lookup_key: "magicbox_pro_monthly".into(),
                amount: 24900,
                currency: "eur".into(),
                interval: Some("month".into()),
                id: None,
                replaces: Some(old.clone()),
            },
            Change::ArchivePrice {
                id: old.clone(),
                lookup_key: Some("magicbox_pro_monthly".into())
            },
            Change::UpdatePortalConfiguration {
                id: sim
                    .with(|s| s.w.portal_configs.keys().next().unwrap().clone())
                    .unwrap()
            },
        ]
    );
    let r = push(&c, &changed, true, NOW).await.unwrap();
    assert_eq!(r.changes.len(), 3, "{:#?}", r.changes);
    assert_eq!(counts(&sim), (3, 7, 6, 1, 1, 1));
    let (new_amount, old_active, old_key) = sim
        .with(|s| {
            let new =
                s.w.prices
                    .values()
                    .find(|p| p.lookup_key.as_deref() == Some("magicbox_pro_monthly"))
                    .unwrap();
            let o = &s.w.prices[&old];
            (new.id.clone(), o.active, o.lookup_key.clone())
        })
        .unwrap();
    let new = c
        .prices_by_lookup_keys(&["magicbox_pro_monthly".into()])
        .await
        .unwrap();
    assert_eq!(new.len(), 1);
    assert_eq!(
        (new[0].id.clone(), new[0].unit_amount),
        (new_amount, Some(24900))
    );
    assert!(!old_active);
    assert_eq!(old_key, None);

    // Back to the first amount: yet another new price (prices are immutable), not a replay.
    let r = push(&c, &parse(&catalog("magicbox.toml")), true, NOW)
        .await
        .unwrap();
    assert_eq!(r.changes.len(), 3, "{:#?}", r.changes);
    assert_eq!(counts(&sim), (3, 8, 6, 1, 1, 1));
    let again = push(&c, &parse(&catalog("magicbox.toml")), true, NOW)
        .await
        .unwrap();
    assert_eq!(again.changes, vec![]);
}

#[tokio::test]
async fn a_push_stopped_half_way_is_finished_by_a_rerun_without_duplicates() {
    let sim = sim().await;
    let c = client(&sim);
    let cat = parse(&catalog("localboxs.toml"));
    // The fourth price create fails for good (Stripe says not to retry).
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/faults", sim.base_url()))
        .json(&json!({"path": "/v1/prices", "method": "POST", "kind": "500", "after": 3, "count": 1, "should_retry": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let e = push(&c, &cat, true, NOW).await.unwrap_err();
    assert_eq!(e.source.attempts, 1);
    assert!(e.step.starts_with("create price"), "{}", e.step);
    // 6 products and 3 prices were made before the failure.
    assert_eq!(counts(&sim), (6, 3, 3, 0, 0, 0));
    assert_eq!(e.report.changes.len(), 9);

    let r = push(&c, &cat, true, NOW).await.unwrap();
    // The rest: 3 prices and the portal configuration.
    assert_eq!(r.changes.len(), 4, "{:#?}", r.changes);
    assert_eq!(counts(&sim), (6, 6, 6, 0, 0, 1));
    assert_eq!(push(&c, &cat, true, NOW).await.unwrap().changes, vec![]);
}

#[tokio::test]
async fn a_crash_between_the_new_price_and_the_archive_is_repaired() {
    let sim = sim().await;
    let c = client(&sim);
    push(&c, &parse(&catalog("magicbox.toml")), true, NOW)
        .await
        .unwrap();
    // Archiving fails: the new price holds the key, the old one stays active.
    reqwest::Client::new()
        .post(format!("{}/_sim/faults", sim.base_url()))
        .json(&json!({"path": "/v1/prices/", "method": "POST", "kind": "500", "count": 1, "should_retry": false}))
        .send()
        .await
        .unwrap();
    let changed = parse(&catalog("magicbox.toml").replace("\"199.00\"", "\"249.00\""));
    let e = push(&c, &changed, true, NOW).await.unwrap_err();
    assert!(e.step.starts_with("archive price"), "{}", e.step);
    assert_eq!(counts(&sim), (3, 7, 7, 1, 1, 1));
    let r = push(&c, &changed, true, NOW).await.unwrap();
    assert!(
        matches!(
            r.changes[0],
            Change::ArchivePrice {
                lookup_key: None,
                ..
            }
        ),
        "{:#?}",
        r.changes
    );
    assert_eq!(counts(&sim), (3, 7, 6, 1, 1, 1));
}

#[tokio::test]
async fn two_pushes_at_once_make_one_set_of_objects() {
    let sim = sim().await;
    let c = client(&sim);
    let cat = parse(&catalog("magicbox.toml"));
    let (a, b) = tokio::join!(push(&c, &cat, true, NOW), push(&c, &cat, true, NOW));
    a.unwrap();
    b.unwrap();
    assert_eq!(counts(&sim), (3, 6, 6, 1, 1, 1));
    assert_eq!(push(&c, &cat, true, NOW).await.unwrap().changes, vec![]);

    let sim2 = stripe_sim::spawn(stripe_sim::Config {
        port: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let c2 = client(&sim2);
    let cat = parse(&catalog("localboxs.toml"));
    let (a, b, d) = tokio::join!(
        push(&c2, &cat, true, NOW),
        push(&c2, &cat, true, NOW),
        push(&c2, &cat, true, NOW)
    );
    a.unwrap();
    b.unwrap();
    d.unwrap();
    assert_eq!(counts(&sim2), (6, 6, 6, 0, 0, 1));
}

fn meter_mode(src: &str) -> String {
    src.replace(
        "currency = \"eur\"\n",
        "currency = \"eur\"\nstripe_usage = \"meters\"\n",
    )
}

#[tokio::test]
async fn meter_mode_makes_meters_and_metered_prices_once() {
    let sim = sim().await;
    let c = client(&sim);
    let cat = parse(&meter_mode(&catalog("magicbox.toml")));
    let dry = push(&c, &cat, false, NOW).await.unwrap();
    let meters: Vec<&Change> = dry
        .changes
        .iter()
        .filter(|ch| matches!(ch, Change::CreateMeter { .. }))
        .collect();
    assert_eq!(
        meters,
        vec![
            &Change::CreateMeter {
                event_name: "tally_magic_box_compute_hours".into(),
                id: None
            },
            &Change::CreateMeter {
                event_name: "tally_magic_box_api_spend".into(),
                id: None
            },
        ]
    );
    assert_eq!(writes(&sim), 0);
    push(&c, &cat, true, NOW).await.unwrap();
    // Two meters (enterprise compute is unlimited: no price); five metered prices, monthly only.
    let (meters, metered) = sim
        .with(|s| {
            let m: Vec<(String, String, String, String)> =
                s.w.meters
                    .values()
                    .map(|m| {
                        (
                            m.event_name.clone(),
                            m.formula.clone(),
                            m.customer_key.clone(),
                            m.value_key.clone(),
                        )
                    })
                    .collect();
            let mut p: Vec<(String, String, usize, String)> =
                s.w.prices
                    .values()
                    .filter(|p| p.is_metered())
                    .map(|p| {
                        (
                            p.lookup_key.clone().unwrap_or_default(),
                            p.recurring.as_ref().unwrap().interval.clone(),
                            p.tiers.len(),
                            p.tiers_mode.clone().unwrap_or_default(),
                        )
                    })
                    .collect();
            p.sort();
            (m.len(), p)
        })
        .unwrap();
    assert_eq!(meters, 2);
    assert_eq!(
        metered,
        vec![
            (
                "magicbox_enterprise_monthly_api_spend".into(),
                "month".into(),
                2,
                "graduated".into()
            ),
            (
                "magicbox_pro_monthly_api_spend".into(),
                "month".into(),
                2,
                "graduated".into()
            ),
            (
                "magicbox_pro_monthly_compute_hours".into(),
                "month".into(),
                2,
                "graduated".into()
            ),
            (
                "magicbox_starter_monthly_api_spend".into(),
                "month".into(),
                2,
                "graduated".into()
            ),
            (
                "magicbox_starter_monthly_compute_hours".into(),
                "month".into(),
                2,
                "graduated".into()
            ),
        ]
    );
    let before = writes(&sim);
    let again = push(&c, &cat, true, NOW).await.unwrap();
    assert_eq!(again.changes, vec![], "{again:?}");
    assert_eq!(writes(&sim), before);
}

#[tokio::test]
async fn meter_mode_refuses_charges_stripe_cannot_rate() {
    let sim = sim().await;
    let c = client(&sim);
    let src = meter_mode(&catalog("magicbox.toml")).replace(
        "overage = { model = \"per_unit\", unit_price = \"0.04\" }",
        "overage = { model = \"package\", size = 10, price = \"0.40\" }",
    );
    let cat = parse(&src);
    let e = push(&c, &cat, true, NOW).await.unwrap_err();
    assert_eq!(e.step, "meter mode");
    assert_eq!(
        e.source.to_string(),
        "client configuration: the package charge of Compute hours on plan pro cannot be expressed as a \
         Stripe metered price (meter mode supports per_unit, graduated and pass_through \
         charges); bill this catalog with stripe_usage = \"invoice_items\""
    );
    assert_eq!(writes(&sim), 0);
}
