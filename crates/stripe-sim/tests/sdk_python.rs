//! Stripe's official Python SDK (its typed `StripeClient` methods, not raw HTTP) drives the
//! simulator through every flow Tally uses: prices by lookup key, customers created once and
//! searched, a Checkout Session, an upgrade with proration and `pending_if_incomplete` (paid, then
//! declined into `pending_update`), an invoice preview, a subscription schedule, a portal session,
//! refunds, events, and a test clock advanced past a renewal. The SDK pins a newer API version, so
//! the client is set to the one the simulator (and Tally) speak. Needs python3 with venv, and PyPI
//! once (the virtualenv is shared with `webhooks_python.rs`).

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;

fn venv_python() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("stripe-python-venv");
    let py = dir.join("bin").join("python");
    let ready = py.exists()
        && Command::new(&py)
            .args(["-c", "import stripe"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if !ready {
        let st = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .unwrap_or_else(|e| {
                panic!("this test needs python3 with venv to run Stripe's Python SDK: {e}")
            });
        assert!(st.success(), "python3 -m venv {} failed", dir.display());
        let st = Command::new(dir.join("bin").join("pip"))
            .args(["install", "--quiet", "stripe"])
            .status()
            .unwrap_or_else(|e| panic!("pip is needed to install Stripe's Python SDK: {e}"));
        assert!(
            st.success(),
            "pip install stripe failed (PyPI must be reachable once; the venv is cached in {})",
            dir.display()
        );
    }
    py
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flow_tally_uses_through_the_official_python_sdk() {
    let py = venv_python();
    let env = start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk_python.py");
    let base = env.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&py)
            .args([script, &base, "2025-08-27.basil"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        got,
        serde_json::json!({
            "prices_by_lookup_key": ["sdk_pro_monthly", "sdk_scale_monthly"],
            "idempotent_replay_same_customer": true,
            "search_ids_match": true,
            "checkout": {"mode": "subscription", "status": "open", "url_set": true,
                "client_reference_id": "c1"},
            "subscription_status": "active",
            "upgrade": {"price": "sdk_scale_monthly", "pending_update": false,
                "invoice_status": "paid", "proration_lines": [true, true]},
            "failed_upgrade": {"price": true, "pending_price": true, "status": "active"},
            "preview_object": "invoice",
            "schedule": {"phases": 2, "status": "active", "next_starts_at_period_end": true},
            "schedule_released": "released",
            "portal_url_set": true,
            "refunds": [100],
            "events_all_of_type": true,
            "clock": {"status": "ready", "frozen_time_moved": true,
                "invoices": ["subscription_create", "subscription_cycle"],
                "paid": [3000, 3000]},
            "meters": {"event_names": ["sdk_compute"],
                "price": ["metered", "tiered", "graduated"],
                "event": "tally:c1:compute:1", "duplicate": "resource_already_exists"},
        })
    );
}
