//! Runs the real `tally` binary: crash safety of ingestion (kill -9), import and usage summary.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;

use common::{put, serve, tally, KEY};

/// Event ids of a batch that got a 2xx, and the batch.
type Acked = (Vec<String>, Value);

fn batch(worker: usize, n: usize, size: usize) -> (Vec<String>, Value) {
    let ids: Vec<String> = (0..size).map(|i| format!("w{worker}-b{n}-e{i}")).collect();
    let events: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "customer": "c1", "metric": "compute_hours", "value": 1}))
        .collect();
    (ids, json!({ "events": events }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_survive_kill_9_and_count_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("tally.db").display());
    let (mut child, base) = serve(&db);
    let http = reqwest::Client::new();
    put(&http, format!("{base}/v1/customers/c1"), json!({})).await;
    put(
        &http,
        format!("{base}/v1/customers/c1/subscription"),
        json!({"plan": "pro"}),
    )
    .await;

    // Four clients ingest batches of 50 until the server dies; record what got a 2xx.
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..4 {
        let acked = acked.clone();
        let http = http.clone();
        let url = format!("{base}/v1/events");
        workers.push(tokio::spawn(async move {
            for n in 0.. {
                let (ids, body) = batch(w, n, 50);
                match http.post(&url).bearer_auth(KEY).json(&body).send().await {
                    Ok(r) if r.status().is_success() => acked.lock().unwrap().push((ids, body)),
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => return,
                }
            }
        }));
    }
    let start = Instant::now();
    while acked.lock().unwrap().len() < 200 && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().expect("SIGKILL"); // SIGKILL on Unix: no shutdown code runs.
    child.wait().unwrap();
    for w in workers {
        w.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let acked_ids: HashSet<String> = acked
        .iter()
        .flat_map(|(ids, _)| ids.iter().cloned())
        .collect();
    assert!(
        acked_ids.len() >= 200 * 50,
        "only {} acknowledged",
        acked_ids.len()
    );

    // Every acknowledged event is stored, none twice, and the rollup agrees with the events.
    {
        let store = tally_store::connect(&db).await.unwrap();
        let stored = store.event_ids("c1").await.unwrap();
        let unique: HashSet<&String> = stored.iter().collect();
        assert_eq!(unique.len(), stored.len(), "an event is stored twice");
        let missing: Vec<&String> = acked_ids.iter().filter(|id| !unique.contains(id)).collect();
        assert!(
            missing.is_empty(),
            "{} acknowledged events lost, e.g. {:?}",
            missing.len(),
            missing.first()
        );
        let customer = store.get_customer("c1").await.unwrap().unwrap();
        let period =
            tally_core::period::allowance_period(customer.billing_anchor, chrono::Utc::now());
        let usage = store.usage("c1", period.start).await.unwrap();
        assert_eq!(usage[0].count as usize, stored.len());
        store.close().await;
    }

    // After a restart, resending every acknowledged batch stores nothing new.
    let (mut child, base) = serve(&db);
    let mut accepted = 0;
    let mut duplicates = 0;
    for (_, body) in &acked {
        let r: Value = http
            .post(format!("{base}/v1/events"))
            .bearer_auth(KEY)
            .json(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        accepted += r["accepted"].as_u64().unwrap();
        duplicates += r["duplicates"].as_u64().unwrap();
    }
    assert_eq!(accepted, 0);
    assert_eq!(duplicates as usize, acked_ids.len());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn import_is_validated_deduplicated_and_summarised() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("tally.db").display());
    {
        let store = tally_store::connect(&db).await.unwrap();
        store
            .upsert_customer(tally_store::CustomerUpsert {
                email_opt_out: None,
                id: "c1".into(),
                email: None,
                name: None,
                metadata: None,
                now: chrono::Utc::now(),
            })
            .await
            .unwrap();
        store.close().await;
    }
    let now = chrono::Utc::now().to_rfc3339();
    let jsonl = dir.path().join("events.jsonl");
    std::fs::write(
        &jsonl,
        format!(
            "{{\"id\":\"j1\",\"customer\":\"c1\",\"metric\":\"compute_hours\",\"value\":2.5,\"timestamp\":\"{now}\"}}\n\n\
             {{\"id\":\"j2\",\"customer\":\"c1\",\"metric\":\"compute_hours\",\"value\":\"1.25\",\"timestamp\":\"{now}\"}}\n"
        ),
    )
    .unwrap();
    let csv = dir.path().join("events.csv");
    std::fs::write(
        &csv,
        format!("id,customer,metric,value,timestamp\nc1,c1,api_spend,10.50,{now}\nj1,c1,compute_hours,2.5,{now}\n"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = tally()
            .args(args)
            .args(["--database-url", &db])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&["events", "import", jsonl.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "imported 2 events: 2 new, 0 duplicates");
    let (ok, out, _) = run(&["events", "import", jsonl.to_str().unwrap()]);
    assert!(ok);
    assert_eq!(out.trim(), "imported 2 events: 0 new, 2 duplicates");
    let (ok, out, err) = run(&["events", "import", csv.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "imported 2 events: 1 new, 1 duplicates");

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"id\":\"b1\",\"customer\":\"ghost\",\"metric\":\"compute_hours\"}\n",
    )
    .unwrap();
    let (ok, _, err) = run(&["events", "import", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("line 1: no customer \"ghost\""), "{err}");

    // Values follow the one decimal grammar and its limits, in CSV and JSON lines alike; a file
    // with an invalid one stores nothing.
    let strict_csv = dir.path().join("strict.csv");
    std::fs::write(
        &strict_csv,
        format!("id,customer,metric,value,timestamp\ns1,c1,compute_hours,1_000,{now}\n"),
    )
    .unwrap();
    let (ok, _, err) = run(&["events", "import", strict_csv.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("value \"1_000\" is not a decimal number"),
        "{err}"
    );
    let strict_jsonl = dir.path().join("strict.jsonl");
    std::fs::write(
        &strict_jsonl,
        "{\"id\":\"s2\",\"customer\":\"c1\",\"metric\":\"compute_hours\",\"value\":null}\n\
         {\"id\":\"s3\",\"customer\":\"c1\",\"metric\":\"compute_hours\",\"value\":0.1234567890}\n",
    )
    .unwrap();
    let (ok, _, err) = run(&["events", "import", strict_jsonl.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("line 1: value must not be null (leave it out to count one)"),
        "{err}"
    );
    assert!(
        err.contains("line 2: value 0.1234567890 has too many decimal places: at most 9"),
        "{err}"
    );

    let (ok, out, err) = run(&["usage", "summary", "--customer", "c1", "--json"]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let used: Vec<(String, String)> = report["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["metric"].as_str().unwrap().to_owned(),
                m["used"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        used,
        vec![
            ("compute_hours".into(), "3.75".into()),
            ("api_spend".into(), "10.50".into())
        ]
    );
    let (ok, out, _) = run(&["usage", "summary", "--customer", "c1"]);
    assert!(ok);
    assert!(out.contains("compute_hours"), "{out}");
}

#[tokio::test]
async fn magic_box_upcoming_invoice_equals_invoice_preview() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("tally.db").display());
    let (mut child, base) = serve(&db);
    let http = reqwest::Client::new();
    put(
        &http,
        format!("{base}/v1/customers/mb_pro"),
        json!({"name": "Magic Box customer"}),
    )
    .await;
    put(
        &http,
        format!("{base}/v1/customers/mb_pro/subscription"),
        json!({"plan": "pro", "interval": "month"}),
    )
    .await;
    // 350 compute hours and EUR 180 of API spend, as the app would report them.
    let mut events: Vec<Value> = (0..14)
        .map(|i| json!({"id": format!("vm-{i}"), "customer": "mb_pro", "metric": "compute_hours", "value": "25"}))
        .collect();
    events
        .push(json!({"id": "llm-1", "customer": "mb_pro", "metric": "api_spend", "value": 120.25}));
    events.push(
        json!({"id": "llm-2", "customer": "mb_pro", "metric": "api_spend", "value": "59.75"}),
    );
    let r = http
        .post(format!("{base}/v1/events"))
        .bearer_auth(KEY)
        .json(&json!({ "events": events }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut upcoming: Value = http
        .get(format!("{base}/v1/customers/mb_pro/invoices/upcoming"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();

    let catalog = concat!(env!("CARGO_MANIFEST_DIR"), "/../../catalogs/magicbox.toml");
    let out = tally()
        .args([
            "invoice",
            "preview",
            "--catalog",
            catalog,
            "--plan",
            "pro",
            "--usage",
            "compute_hours=350",
            "--usage",
            "api_spend=180",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let preview: Value = serde_json::from_slice(&out.stdout).unwrap();
    let obj = upcoming.as_object_mut().unwrap();
    assert_eq!(obj.remove("customer"), Some(json!("mb_pro")));
    assert!(obj.remove("period").is_some());
    assert_eq!(upcoming, preview);
    assert_eq!(preview["total"], 19900 + 200 + 3450);
}
