//! `tally sync` with the real binary: exit status 2 for wrong arguments or a commit without
//! Stripe, and a dry run's stable JSON report (the Stripe flows themselves are tested in
//! `crates/server/tests/usage_push.rs`).

use serde_json::{json, Value};

mod common;

use common::tally;

#[test]
fn usage_errors_exit_2_and_a_dry_run_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("tally.db").display());
    let run = |args: &[&str], stripe: bool| {
        let mut c = tally();
        c.arg("sync").args(args).args(["--database-url", &db]);
        c.env_remove("STRIPE_API_KEY");
        if stripe {
            c.env("STRIPE_API_KEY", "sk_test_x");
        }
        c.output().unwrap()
    };
    let bad = run(&["--period", "2026-13"], false);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("YYYY-MM"));
    let no_stripe = run(&["--period", "2026-01", "--commit"], false);
    assert_eq!(no_stripe.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_stripe.stderr).contains("STRIPE_API_KEY"));
    let missing = tally().arg("sync").output().unwrap();
    assert_eq!(
        missing.status.code(),
        Some(2),
        "clap reports a missing --period"
    );

    let dry = run(&["--period", "2026-01", "--json"], false);
    assert_eq!(
        dry.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let v: Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(
        v,
        json!({"period": "2026-01", "dry_run": true, "invoices": [], "totals": [], "failed": 0})
    );
    let text = run(&["--period", "2026-01"], false);
    assert_eq!(text.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&text.stdout).starts_with("2026-01 — DRY RUN"));
}

#[test]
fn reconcile_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("tally.db").display());
    let run = |args: &[&str]| {
        tally()
            .arg("reconcile")
            .args(args)
            .args(["--database-url", &db])
            .env_remove("STRIPE_API_KEY")
            .output()
            .unwrap()
    };
    let bad = run(&["--period", "01-2026"]);
    assert_eq!(bad.status.code(), Some(2));
    let no_stripe = run(&["--period", "2026-01"]);
    assert_eq!(no_stripe.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_stripe.stderr).contains("STRIPE_API_KEY"));
}
