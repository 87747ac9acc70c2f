//! `tally bench --pages`: the customer billing page's server render time for a customer with 24
//! months of history, beside the hello-world server (same HTTP framework, no work) in the same
//! run, and the page's total weight (HTML plus the stylesheet; the page has no scripts, fonts or
//! images).
//!
//! The history is written in-process into a SQLite file (customers, subscriptions and invoices
//! need instants in the past, which only the injectable clock gives), then a `tally serve` child
//! serves that file and is measured over loopback, one request at a time.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{Months, Utc};
use serde_json::json;
use tally_server::Config;
use tally_store::clock::Clock;
use tally_store::{CustomerUpsert, NewTransaction, SubscriptionUpsert};

use super::bench_load::{percentile, spawn_child, spawn_server, Conn};
use super::common::runtime;

const KEY: &str = "bench-pages-admin-key-0123456789abcd";
/// The customer whose page is measured.
const CUSTOMER: &str = "history";
const MONTHS: u32 = 24;

/// Kills a child when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes 24 months of history for [`CUSTOMER`] on Pro (the example catalog): usage of every
/// metric each day, each month's invoice, a payment per month, monthly credit grants and
/// consumption.
async fn seed(db: &str) -> anyhow::Result<()> {
    let now = Utc::now();
    let start = now
        .checked_sub_months(Months::new(MONTHS))
        .context("no start")?;
    let mut config = Config::new(db.to_owned())?;
    config.listen = "127.0.0.1:0".parse()?;
    config.clock = Clock::frozen(start);
    config.close_every = Duration::from_secs(3600);
    let server = tally_server::spawn(config).await?;
    let state = server.state().clone();
    let store = &state.store;
    store
        .upsert_customer(CustomerUpsert {
            id: CUSTOMER.into(),
            email: Some("billing@history.example".into()),
            name: Some("History GmbH".into()),
            metadata: None,
            email_opt_out: None,
            now: start,
        })
        .await?;
    store
        .put_subscription(SubscriptionUpsert {
            customer_id: CUSTOMER.into(),
            plan: "pro".into(),
            interval: "month".into(),
            status: "active".into(),
            source: "local".into(),
            now: start,
        })
        .await?;
    let days = (now - start).num_days();
    for d in 0..days {
        let t = start + chrono::Duration::days(d) + chrono::Duration::hours(12);
        state.clock.set(t + chrono::Duration::minutes(1));
        let events = json!({"events": [
            {"id": format!("c{d}"), "customer": CUSTOMER, "metric": "compute_hours", "value": "7.5", "timestamp": t.to_rfc3339()},
            {"id": format!("a{d}"), "customer": CUSTOMER, "metric": "api_spend", "value": "1.25", "timestamp": t.to_rfc3339()},
            {"id": format!("v{d}"), "customer": CUSTOMER, "metric": "vms", "value": 3, "timestamp": t.to_rfc3339()},
        ]});
        tally_server::service::events::ingest_body(&state, events.to_string().as_bytes())
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        if d % 30 == 29 {
            tally_server::service::closer::close_due(&state, t)
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        }
    }
    for m in 0..MONTHS {
        let t = start
            .checked_add_months(Months::new(m + 1))
            .context("month")?;
        store
            .record_transaction(NewTransaction {
                id: format!("txn_bench_{m}"),
                key: format!("bench:{m}"),
                customer_id: CUSTOMER.into(),
                kind: "subscription_payment".into(),
                status: "succeeded".into(),
                amount: 19_900,
                currency: "eur".into(),
                description: Some("subscription_cycle".into()),
                stripe_invoice: Some(format!("in_bench_{m}")),
                stripe_payment_intent: None,
                stripe_charge: None,
                stripe_checkout_session: None,
                stripe_subscription: Some("sub_bench".into()),
                occurred_at: t,
                created_at: t,
            })
            .await?;
    }
    state.clock.set(now);
    tally_server::service::closer::close_due(&state, now)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    server.shutdown().await?;
    Ok(())
}

/// `n` requests of `path`, one at a time on one connection, after `warm` unmeasured ones.
async fn sequential(
    base: &str,
    path: &str,
    n: usize,
    warm: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut conn = Conn::open(base, KEY).await?;
    let mut lat = Vec::with_capacity(n);
    for i in 0..n + warm {
        let t = Instant::now();
        let (status, _) = conn.send("GET", path, "").await?;
        let e = t.elapsed();
        if status != 200 {
            bail!("GET {path}: {status}");
        }
        if i >= warm {
            lat.push(e);
        }
    }
    lat.sort();
    Ok(lat)
}

/// Runs the page benchmark and returns the report's lines.
pub fn report(requests: usize) -> anyhow::Result<String> {
    let dir = std::env::temp_dir().join(format!("tally-bench-pages-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = format!("sqlite://{}", dir.join("pages.db").display());
    let out = (|| -> anyhow::Result<String> {
        let rt = runtime()?;
        let t = Instant::now();
        rt.block_on(seed(&db))?;
        let seeded = t.elapsed();
        let (child, base) = spawn_server(&db, KEY)?;
        let _child = Child(child);
        let (hello_child, hello) = spawn_child(&["bench", "--hello-world-server"], KEY)?;
        let _hello = Child(hello_child);
        rt.block_on(async {
            let http = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?;
            let link: serde_json::Value = http
                .post(format!("{base}/v1/customers/{CUSTOMER}/page-sessions"))
                .bearer_auth(KEY)
                .json(&json!({}))
                .send()
                .await?
                .json()
                .await?;
            let url = link["url"].as_str().context("no link")?;
            let r = http.get(url).send().await?;
            let page = r
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .context("the link did not open the page")?
                .to_owned();
            let html = http.get(format!("{base}{page}")).send().await?.bytes().await?;
            let css = http
                .get(format!("{base}/assets/tally.css"))
                .send()
                .await?
                .bytes()
                .await?;
            let listed = String::from_utf8_lossy(&html).matches("/invoices/").count();
            let closed: serde_json::Value = http
                .get(format!("{base}/v1/customers/{CUSTOMER}/invoices"))
                .bearer_auth(KEY)
                .send()
                .await?
                .json()
                .await?;
            let closed = closed["data"].as_array().map_or(0, Vec::len);
            let hello_lat = sequential(&hello, "/", requests, 200).await?;
            let page_lat = sequential(&base, &page, requests, 200).await?;
            let mut out = String::new();
            let _ = writeln!(
                out,
                "billing page: {MONTHS} months of history (seeded in {:.1} s: {} invoices closed, {} listed on the page), {requests} sequential requests each",
                seeded.as_secs_f64(),
                closed,
                listed
            );
            for (name, lat, target) in [
                ("hello-world route (same HTTP stack, no work)", &hello_lat, ""),
                ("GET /billing/s/{token} (server render)", &page_lat, "(target p99 ≤ 20 ms)"),
            ] {
                let _ = writeln!(
                    out,
                    "{:<52} p50 {:>6.2} ms  p99 {:>6.2} ms  {target}",
                    name,
                    percentile(lat, 0.50).as_secs_f64() * 1e3,
                    percentile(lat, 0.99).as_secs_f64() * 1e3,
                );
            }
            let _ = writeln!(
                out,
                "page weight: {} B HTML + {} B stylesheet = {} B (no scripts, fonts or images; target ≤ 100 KB)",
                html.len(),
                css.len(),
                html.len() + css.len()
            );
            anyhow::Ok(out)
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    out
}
