//! `tally bench --webhooks`: Stripe webhook ingest (signature verification and the inbox commit
//! before the 2xx) in events per second and latency, beside the HTTP hello-world limit measured
//! with the same connections; and the time from a subscription event's delivery, and from a
//! completed Checkout's (`checkout.session.completed` with its `customer.subscription.created`),
//! until the entitlement check sees the new plan.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Args;

use super::bench_load::{percentile, spawn_child, spawn_child_env, Conn};
use super::common::runtime;

/// Kills a child process when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const KEY: &str = "bench-webhooks-key-0123456789abcdef";
const SECRET: &str = "whsec_bench_webhooks";

/// Arguments of `tally bench --webhooks`.
#[derive(Args, Clone)]
pub struct WebhookBenchArgs {
    /// Run only the webhook benchmark.
    #[arg(long)]
    pub webhooks: bool,
    /// Seconds of the ingest run (and of the hello-world run beside it).
    #[arg(long, default_value_t = 10)]
    pub webhook_seconds: u64,
    /// Concurrent connections delivering events.
    #[arg(long, default_value_t = 16)]
    pub webhook_connections: usize,
    /// Subscription events, and as many completed Checkouts, whose delivery-to-entitlement time
    /// is measured, one at a time.
    #[arg(long, default_value_t = 200)]
    pub plan_changes: u64,
}

fn signature(body: &[u8]) -> String {
    let t = Utc::now().timestamp();
    format!(
        "Stripe-Signature: {}\r\n",
        tally_stripe::webhook::signature_header(body, &[SECRET], t)
    )
}

/// An event of a Stripe customer that is not Tally's: verified, stored, then ignored.
fn foreign_event(n: u64, created: i64) -> Vec<u8> {
    format!(
        r#"{{"id":"evt_bench_{n:012}","object":"event","api_version":"2025-08-27.basil","created":{created},"livemode":false,"pending_webhooks":1,"request":{{"id":null,"idempotency_key":null}},"type":"customer.updated","data":{{"object":{{"id":"cus_bench_{n}","object":"customer","email":"x@example.com","metadata":{{}}}},"previous_attributes":{{"email":"y@example.com"}}}}}}"#
    )
    .into_bytes()
}

/// `customer.subscription.created` of a paid Magic Box Pro subscription for `customer`.
fn subscription_event(n: u64, customer: &str, created: i64) -> Vec<u8> {
    let end = created + 30 * 86_400;
    format!(
        r#"{{"id":"evt_sub_{n:012}","object":"event","api_version":"2025-08-27.basil","created":{created},"livemode":false,"pending_webhooks":1,"request":{{"id":null,"idempotency_key":null}},"type":"customer.subscription.created","data":{{"object":{{"id":"sub_bench_{n}","object":"subscription","customer":"cus_bench_{n}","status":"active","cancel_at_period_end":false,"cancel_at":null,"canceled_at":null,"trial_end":null,"billing_cycle_anchor":{created},"latest_invoice":null,"schedule":null,"pending_update":null,"discounts":[],"metadata":{{"tally_customer_id":"{customer}"}},"items":{{"object":"list","data":[{{"id":"si_bench_{n}","object":"subscription_item","quantity":1,"current_period_start":{created},"current_period_end":{end},"price":{{"id":"price_bench_pro","object":"price","product":"prod_bench","active":true,"currency":"eur","unit_amount":19900,"recurring":{{"interval":"month","interval_count":1}},"lookup_key":"magicbox_pro_monthly","metadata":{{}}}}}}],"has_more":false}}}}}}}}"#
    )
    .into_bytes()
}

/// `checkout.session.completed` of a paid subscription checkout for `customer`, naming the
/// subscription of [`subscription_event`] `n`.
fn checkout_event(n: u64, customer: &str, created: i64) -> Vec<u8> {
    format!(
        r#"{{"id":"evt_cs_{n:012}","object":"event","api_version":"2025-08-27.basil","created":{created},"livemode":false,"pending_webhooks":1,"request":{{"id":null,"idempotency_key":null}},"type":"checkout.session.completed","data":{{"object":{{"id":"cs_bench_{n}","object":"checkout.session","mode":"subscription","status":"complete","payment_status":"paid","customer":"cus_bench_{n}","subscription":"sub_bench_{n}","payment_intent":null,"client_reference_id":"{customer}","amount_total":19900,"currency":"eur","metadata":{{"tally_customer_id":"{customer}"}}}}}}}}"#
    )
    .into_bytes()
}

/// Delivers `events` in turn on `conn`, then polls the entitlement check of `customer` until it
/// answers the paid plan; returns the time from the first delivery.
async fn until_entitled(
    conn: &mut Conn,
    customer: &str,
    events: &[Vec<u8>],
) -> anyhow::Result<Duration> {
    let check = format!(r#"{{"customer":"{customer}","feature":"priority_support"}}"#);
    let t = Instant::now();
    for body in events {
        let (s, _) = conn
            .send_with("POST", "/webhooks/stripe", &signature(body), body)
            .await?;
        anyhow::ensure!(s == 200, "the webhook answered {s}");
    }
    loop {
        let (s, b) = conn.send("POST", "/v1/entitlements/check", &check).await?;
        if s == 200 && b.windows(14).any(|w| w == b"\"allowed\":true") {
            return Ok(t.elapsed());
        }
        anyhow::ensure!(t.elapsed() < Duration::from_secs(10), "never entitled");
    }
}

/// Closed-loop load: `conns` connections send `body(n)` to `path` for `seconds`. Returns the
/// latencies of the 2xx answers and the elapsed time.
async fn load(
    base: &str,
    path: &'static str,
    conns: usize,
    seconds: u64,
    signed: bool,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let stop = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let mut conn = Conn::open(base, KEY).await?;
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let created = Utc::now().timestamp();
            while Instant::now() < stop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let body = foreign_event(n, created);
                let extra = if signed {
                    signature(&body)
                } else {
                    String::new()
                };
                let t = Instant::now();
                let (status, _) = conn.send_with("POST", path, &extra, &body).await?;
                if (200..300).contains(&status) {
                    lat.push(t.elapsed());
                } else {
                    anyhow::bail!("{path} answered {status}");
                }
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = start.elapsed();
    all.sort();
    Ok((all, elapsed))
}

/// The figures, as printed lines.
pub fn report(args: &WebhookBenchArgs, dir: &std::path::Path) -> anyhow::Result<String> {
    let db = format!("sqlite://{}", dir.join("webhooks.db").display());
    let (hello, hello_base) = spawn_child(&["bench", "--hello-world-server"], KEY)?;
    let hello = KillOnDrop(hello);
    let rt = runtime()?;
    let (hello_lat, hello_time) = rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        load(
            &hello_base,
            "/webhooks/stripe",
            args.webhook_connections,
            args.webhook_seconds,
            true,
        )
        .await
    })?;
    drop(hello);
    let (server, base) = spawn_child_env(
        &["serve", "--listen", "127.0.0.1:0", "--database-url", &db],
        KEY,
        &[("STRIPE_WEBHOOK_SECRET", SECRET)],
    )?;
    let server = KillOnDrop(server);
    let result = rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (lat, time) = load(
            &base,
            "/webhooks/stripe",
            args.webhook_connections,
            args.webhook_seconds,
            true,
        )
        .await?;
        Ok::<_, anyhow::Error>((lat, time))
    });
    drop(server);
    let (lat, time) = result?;
    // Delivery → entitlement on a fresh server, so that the ingest run's backlog (its events are
    // applied after their 2xx) does not queue ahead.
    let db2 = format!("sqlite://{}", dir.join("webhooks-plans.db").display());
    let (server, base) = spawn_child_env(
        &["serve", "--listen", "127.0.0.1:0", "--database-url", &db2],
        KEY,
        &[("STRIPE_WEBHOOK_SECRET", SECRET)],
    )?;
    let server = KillOnDrop(server);
    let result = rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // One customer at a time, the entitlement polled without pause.
        let mut conn = Conn::open(&base, KEY).await?;
        let (mut seen, mut checkouts) = (Vec::new(), Vec::new());
        for i in 0..args.plan_changes.saturating_mul(2) {
            let customer = format!("bench_sub_{i}");
            let (s, _) = conn
                .send("PUT", &format!("/v1/customers/{customer}"), "{}")
                .await?;
            anyhow::ensure!(s == 201 || s == 200, "PUT customer answered {s}");
            let now = Utc::now().timestamp();
            let sub = subscription_event(i, &customer, now);
            if i % 2 == 0 {
                seen.push(until_entitled(&mut conn, &customer, &[sub]).await?);
            } else {
                // A Checkout as Stripe reports it: the session completed, and the subscription
                // it created (without an API key Tally mirrors the latter).
                let cs = checkout_event(i, &customer, now);
                checkouts.push(until_entitled(&mut conn, &customer, &[cs, sub]).await?);
            }
        }
        seen.sort();
        checkouts.sort();
        Ok::<_, anyhow::Error>((seen, checkouts))
    });
    drop(server);
    let (seen, checkouts) = result?;
    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<56} {:>14} {:>10} {:>10}",
        "webhooks (SQLite)", "value", "p50 ms", "p99 ms"
    );
    let _ = writeln!(
        out,
        "{:<56} {:>9.0} ev/s {:>10.2} {:>10.2}",
        format!(
            "HTTP hello-world, {} connections (limit)",
            args.webhook_connections
        ),
        rate(hello_lat.len(), hello_time),
        ms(percentile(&hello_lat, 0.5)),
        ms(percentile(&hello_lat, 0.99))
    );
    let _ = writeln!(
        out,
        "{:<56} {:>9.0} ev/s {:>10.2} {:>10.2}",
        format!(
            "webhook ingest (verify + inbox commit), {} conns",
            args.webhook_connections
        ),
        rate(lat.len(), time),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99))
    );
    let _ = writeln!(
        out,
        "{:<56} {:>14} {:>10.2} {:>10.2}",
        "subscription event delivered → entitlement sees the plan",
        format!("{} runs", seen.len()),
        ms(percentile(&seen, 0.5)),
        ms(percentile(&seen, 0.99))
    );
    let _ = writeln!(
        out,
        "{:<56} {:>14} {:>10.2} {:>10.2}",
        "checkout.session.completed delivered → entitlement",
        format!("{} runs", checkouts.len()),
        ms(percentile(&checkouts, 0.5)),
        ms(percentile(&checkouts, 0.99))
    );
    Ok(out)
}
