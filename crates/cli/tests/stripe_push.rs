//! `tally stripe push` against the Stripe simulator.

use std::process::{Command, Output};

async fn tally(args: &[&str], base: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally"));
    cmd.args(args)
        .env_remove("STRIPE_API_KEY")
        .env_remove("STRIPE_API_BASE");
    if let Some(b) = base {
        cmd.env("STRIPE_API_KEY", "sk_test_cli")
            .env("STRIPE_API_BASE", b);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn catalog() -> String {
    format!(
        "{}/../../catalogs/magicbox.toml",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn dry_run_then_commit_then_nothing_to_do() {
    let sim = stripe_sim::spawn(stripe_sim::Config {
        port: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let base = sim.base_url();
    let cat = catalog();

    let o = tally(&["stripe", "push", "--catalog", &cat], Some(&base)).await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("would create product tally_magic_box_plan_pro (Pro)\n"),
        "{out}"
    );
    assert!(
        out.contains("would create price magicbox_pro_monthly: 19900 eur minor units per month\n"),
        "{out}"
    );
    assert!(
        out.contains("warning: coupon LAUNCH2025: its redeem_by has passed; not created\n"),
        "{out}"
    );
    assert!(
        out.ends_with(
            "12 changes to make, 0 objects unchanged. Dry run: run again with --commit to apply.\n"
        ),
        "{out}"
    );
    assert_eq!(sim.with(|s| s.w.products.len()).unwrap(), 0);

    let o = tally(
        &["stripe", "push", "--catalog", &cat, "--commit", "--json"],
        Some(&base),
    )
    .await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["committed"], true);
    assert_eq!(v["changes"].as_array().unwrap().len(), 12);
    assert_eq!(v["changes"][0]["action"], "create_product");
    assert_eq!(v["unchanged"], 0);
    assert_eq!(
        sim.with(|s| (s.w.products.len(), s.w.prices.len()))
            .unwrap(),
        (3, 6)
    );

    let o = tally(
        &["stripe", "push", "--catalog", &cat, "--commit"],
        Some(&base),
    )
    .await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "warning: coupon LAUNCH2025: its redeem_by has passed; not created\n\
         Stripe matches the catalog (12 objects unchanged).\n"
    );
    assert_eq!(
        sim.with(|s| (s.w.products.len(), s.w.prices.len()))
            .unwrap(),
        (3, 6)
    );
}

#[tokio::test]
async fn a_missing_api_key_is_explained() {
    let o = tally(&["stripe", "push", "--catalog", &catalog()], None).await;
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        "error: STRIPE_API_KEY is not set (a secret key, sk_live_… or sk_test_…)\n"
    );
}
