//! Schemathesis fuzzes the whole API from its own `/openapi.json` against the real server: no
//! server errors, no status codes the document does not list, bodies and content types as
//! documented. Schemathesis (pinned) is installed once into a virtualenv under the target dir
//! (`scripts/test.sh` does it first; PyPI must be reachable once).

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

/// The Schemathesis release the suite runs.
const SCHEMATHESIS: &str = "4.32.5";

fn schemathesis() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("schemathesis-venv");
    let st = dir.join("bin").join("schemathesis");
    let ready = Command::new(dir.join("bin").join("pip"))
        .args(["show", "--quiet", "schemathesis"])
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l == format!("Version: {SCHEMATHESIS}"))
        });
    if !ready {
        let st = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .unwrap_or_else(|e| panic!("this test needs python3 with venv for Schemathesis: {e}"));
        assert!(st.success(), "python3 -m venv {} failed", dir.display());
        let st = Command::new(dir.join("bin").join("pip"))
            .args([
                "install",
                "--quiet",
                &format!("schemathesis=={SCHEMATHESIS}"),
            ])
            .status()
            .unwrap_or_else(|e| panic!("pip is needed to install Schemathesis: {e}"));
        assert!(
            st.success(),
            "pip install schemathesis=={SCHEMATHESIS} failed (PyPI must be reachable once; the venv is cached in {})",
            dir.display()
        );
    }
    st
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_conforms_to_its_openapi_document() {
    let st = schemathesis();
    // Fuzzing sends many bad requests with the good key too; failed-auth limiting is tested on its
    // own and would only hide operations behind 429s here.
    // The Stripe routes run against the simulator with the example catalog pushed.
    let sim = stripe_sim::spawn(stripe_sim::Config {
        port: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let base = sim.base_url();
    let stripe = tally_stripe::Client::new(
        tally_stripe::Config::new("sk_test_schemathesis").with_base_url(&base),
    )
    .unwrap();
    let catalog = tally_server::config::parse_catalog(
        tally_server::config::EXAMPLE_CATALOG,
        "catalogs/magicbox.toml",
    )
    .unwrap();
    tally_stripe::push::push(&stripe, &catalog, true, chrono::Utc::now().timestamp())
        .await
        .unwrap();
    let app = app_with(|c| {
        c.auth_failures_per_minute = 0;
        c.stripe.api_key = Some("sk_test_schemathesis".into());
        c.stripe.api_base = Some(base.clone());
        c.stripe.success_url = Some("https://app.test/ok".into());
        c.stripe.cancel_url = Some("https://app.test/pricing".into());
        c.stripe.portal_return_url = Some("https://app.test/account".into());
        c.stripe_webhook_secrets = vec!["whsec_schemathesis".into()];
    })
    .await;
    for id in ["0", "c1", "cus_2"] {
        let (s, _) = app.put(&format!("/v1/customers/{id}"), json!({})).await;
        assert_eq!(s, 201);
    }
    let (s, _) = app
        .put("/v1/customers/c1/subscription", json!({"plan": "pro"}))
        .await;
    assert_eq!(s, 200);
    let work = tempfile::tempdir().unwrap();
    // Output goes to a file: a pipe nobody reads while it runs would fill up and stall it.
    let log = work.path().join("schemathesis.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(st)
        .arg("run")
        .arg(app.url("/openapi.json"))
        .args(["-H", &format!("Authorization: Bearer {KEY}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "25",
            "--max-time",
            "75",
            // One worker: CPython 3.11 sometimes fails compiling in parallel threads
            // ("AST constructor recursion depth mismatch"), an error of the tool, not a finding.
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--no-color",
        ])
        .current_dir(work.path())
        .stdout(Stdio::from(log_file.try_clone().unwrap()))
        .stderr(Stdio::from(log_file))
        .spawn()
        .expect("run schemathesis");
    // Schemathesis stops itself after --max-time; this only guards against a hang.
    let deadline = std::time::Instant::now() + Duration::from_secs(115);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("schemathesis did not finish within 115 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "schemathesis found problems:\n{text}");
    assert!(text.contains("Tested: 43"), "{text}");
    assert!(text.contains(" passed"), "{text}");
    app.server.shutdown().await.unwrap();
}
