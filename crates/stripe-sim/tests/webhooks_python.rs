//! Webhook deliveries verify with Stripe's official Python SDK
//! (`stripe.Webhook.construct_event`), installed into a virtualenv cached under the target dir.

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

const SCRIPT: &str = r#"
import json, sys, stripe
data = json.load(open(sys.argv[1], encoding="utf-8"))
out = {"verified": [], "rejected_tampered": 0, "rejected_wrong_secret": 0}
for d in data["deliveries"]:
    ev = stripe.Webhook.construct_event(d["payload"], d["signature"], data["secret"])
    out["verified"].append([ev["id"], ev["type"]])
    try:
        stripe.Webhook.construct_event(d["payload"].replace('"livemode": false', '"livemode": true', 1), d["signature"], data["secret"])
    except stripe.SignatureVerificationError:
        out["rejected_tampered"] += 1
    try:
        stripe.Webhook.construct_event(d["payload"], d["signature"], data["secret"] + "x")
    except stripe.SignatureVerificationError:
        out["rejected_wrong_secret"] += 1
print(json.dumps(out))
"#;

#[tokio::test]
async fn deliveries_verify_with_the_official_python_sdk() {
    let py = venv_python();
    let env = start().await;
    // The receiver refuses the first two deliveries: they must be retried, re-signed, and verify.
    let rx = Receiver::start(2).await;
    let ep = env
        .webhook_endpoint(
            &rx,
            &[
                "customer.created",
                "customer.updated",
                "checkout.session.completed",
                "invoice.paid",
                "customer.subscription.created",
            ],
        )
        .await;
    let secret = ep["secret"].as_str().unwrap().to_string();
    let cus = env
        .post(
            "/v1/customers",
            &[("email", "py@example.com"), ("name", "Zoë Ünicode")],
        )
        .await;
    env.post(
        &format!("/v1/customers/{}", cus["id"].as_str().unwrap()),
        &[("metadata[plan]", "pro")],
    )
    .await;
    let price = env
        .post(
            "/v1/prices",
            &[
                ("product_data[name]", "Pro × 2"),
                ("currency", "eur"),
                ("unit_amount", "1999"),
                ("recurring[interval]", "month"),
            ],
        )
        .await;
    let cs = env
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("line_items[0][price]", price["id"].as_str().unwrap()),
                ("line_items[0][quantity]", "2"),
                ("success_url", "https://x.example/ok"),
            ],
        )
        .await;
    let (st, _, _) =
        pay_checkout(&env, cs["url"].as_str().unwrap(), "4242424242424242", None).await;
    assert_eq!(st, 303);
    // customer.created ×2, customer.updated, customer.subscription.created, invoice.paid, checkout.session.completed
    let got = rx.wait_for(6).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let got = if rx.deliveries().len() > got.len() {
        rx.deliveries()
    } else {
        got
    };
    assert_eq!(got.len(), 6, "no duplicates expected");
    let mut types: Vec<String> = got
        .iter()
        .map(|d| d.json()["type"].as_str().unwrap().to_string())
        .collect();
    types.sort();
    assert_eq!(
        types,
        vec![
            "checkout.session.completed",
            "customer.created",
            "customer.created",
            "customer.subscription.created",
            "customer.updated",
            "invoice.paid"
        ]
    );
    for d in &got {
        assert!(
            d.signature.starts_with("t=") && d.signature.contains(",v1="),
            "{}",
            d.signature
        );
    }
    let updated = got
        .iter()
        .map(|d| d.json())
        .find(|e| e["type"] == "customer.updated")
        .unwrap();
    assert_eq!(
        updated["data"]["previous_attributes"],
        serde_json::json!({"metadata": {"plan": null}})
    );
    assert!(updated["request"]["id"]
        .as_str()
        .unwrap()
        .starts_with("req_"));

    let file =
        std::env::temp_dir().join(format!("stripe-sim-deliveries-{}.json", std::process::id()));
    let deliveries: Vec<serde_json::Value> = got.iter().map(|d| serde_json::json!({"payload": String::from_utf8(d.body.clone()).unwrap(), "signature": d.signature})).collect();
    std::fs::write(
        &file,
        serde_json::to_vec(&serde_json::json!({"secret": secret, "deliveries": deliveries}))
            .unwrap(),
    )
    .unwrap();
    let out = Command::new(&py)
        .args(["-c", SCRIPT])
        .arg(&file)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python verification failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let res: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(res["verified"].as_array().unwrap().len(), 6, "{res}");
    assert_eq!(res["rejected_tampered"], 6);
    assert_eq!(res["rejected_wrong_secret"], 6);
    let _ = std::fs::remove_file(file);
}
