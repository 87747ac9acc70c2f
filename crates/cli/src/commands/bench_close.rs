//! `tally bench --close`: period close for `--close-customers` customers with usage on SQLite,
//! each with a Stripe subscription on the simulator (run in-process). Measured: (a) the closer
//! rating and writing every invoice, (b) the pusher putting every invoice's usage lines on Stripe
//! (a standalone invoice per customer here: no renewal falls on the period's end), with the Stripe
//! calls per customer, and (c) the simulator's own request rate in the same run — cheap GETs on one
//! connection (the pusher's shape: one call after the other) and on several — as the limit beside
//! it. Set-up (customers and subscriptions in the simulator through its API, Tally's side through
//! the store) is not measured.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Args;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tally_server::service::{closer, usage_push};
use tally_server::state::AppState;

use super::common::runtime;

const SK: &str = "sk_test_bench_close";
const CATALOG: &str = include_str!("../../../../catalogs/magicbox.toml");
const PLAN: &str = "pro";
const LOOKUP_KEY: &str = "magicbox_pro_monthly";
/// Events written per store batch.
const EVENT_BATCH: usize = 10_000;

/// Arguments of `tally bench --close`.
#[derive(Args, Clone)]
pub struct CloseBenchArgs {
    /// Run only the period-close benchmark.
    #[arg(long)]
    pub close: bool,
    /// Customers of the period-close benchmark (each with usage and a Stripe subscription).
    #[arg(long, default_value_t = 10_000)]
    pub close_customers: usize,
    /// Concurrent connections seeding the simulator and in its multi-connection request rate.
    #[arg(long, default_value_t = 16)]
    pub close_connections: usize,
}

/// What the run measured.
struct Measured {
    customers: usize,
    seed: Duration,
    invoices: usize,
    close: Duration,
    pushed: usize,
    not_pushed: usize,
    push: Duration,
    push_calls: usize,
    /// The push's calls by endpoint (ids folded), most first.
    call_kinds: Vec<(String, usize)>,
    one_conn: (usize, Duration),
    many_conn: (usize, Duration),
}

/// Runs the benchmark in `dir` and returns its report.
pub fn report(args: &CloseBenchArgs, dir: &Path) -> anyhow::Result<String> {
    anyhow::ensure!(
        args.close_customers > 0,
        "--close-customers must be at least 1"
    );
    anyhow::ensure!(
        args.close_connections > 0,
        "--close-connections must be at least 1"
    );
    let m = runtime()?.block_on(run(args, dir))?;
    Ok(lines(&m, args.close_connections))
}

async fn run(args: &CloseBenchArgs, dir: &Path) -> anyhow::Result<Measured> {
    let n = args.close_customers;
    let sim = stripe_sim::spawn(stripe_sim::Config {
        port: 0,
        ..Default::default()
    })
    .await?;
    let base = sim.base_url();
    let catalog = tally_server::config::parse_catalog(CATALOG, "magicbox.toml")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let client = tally_stripe::Client::new(tally_stripe::Config::new(SK).with_base_url(&base))?;
    tally_stripe::push::push(&client, &catalog, true, Utc::now().timestamp())
        .await
        .map_err(|e| anyhow::anyhow!("catalog push: {e}"))?;
    let price = client
        .prices_by_lookup_keys(&[LOOKUP_KEY.to_owned()])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no price {LOOKUP_KEY} after the push"))?
        .id;

    eprintln!("seeding {n} customers and subscriptions in the simulator …");
    let seed_start = Instant::now();
    let http = reqwest::Client::new();
    let stripe_ids = seed_simulator(&http, &base, &price, n, args.close_connections).await?;
    eprintln!("seeding Tally's SQLite database …");
    let url = format!("sqlite://{}", dir.join("close.db").display());
    let store = tally_store::connect(&url).await?;
    // Customers since 40 days: their first monthly period ended about ten days ago.
    let created = Utc::now() - chrono::Duration::days(40);
    seed_tally(&*store, &stripe_ids, created).await?;
    let seed = seed_start.elapsed();

    let mut config = tally_server::Config::new(url)?;
    config.catalog = Arc::new(catalog);
    config.stripe.api_key = Some(SK.into());
    config.stripe.api_base = Some(base.clone());
    let state = AppState::new(config, store.clone());

    eprintln!("closing the period …");
    let t = Instant::now();
    let invoices = closer::close_due(&state, state.clock.now())
        .await
        .map_err(|e| anyhow::anyhow!("closer: {}", e.message))?;
    let close = t.elapsed();

    eprintln!("pushing {} invoices to the simulator …", invoices.len());
    let calls_before = sim.with(|s| s.faults.log.len()).unwrap_or(0);
    let t = Instant::now();
    usage_push::enqueue(&state)
        .await
        .map_err(|e| anyhow::anyhow!("pusher: {}", e.message))?;
    loop {
        let attempted = usage_push::round(&state)
            .await
            .map_err(|e| anyhow::anyhow!("pusher: {}", e.message))?;
        if attempted == 0 {
            break;
        }
    }
    let push = t.elapsed();
    let log = sim
        .with(|s| {
            s.faults
                .log
                .get(calls_before..)
                .unwrap_or_default()
                .to_vec()
        })
        .unwrap_or_default();
    let push_calls = log.len();
    let call_kinds = by_endpoint(&log);
    let mut pushed = 0;
    for inv in &invoices {
        let done = store.get_push(&inv.id).await?.is_some_and(|p| {
            p.state == tally_store::usage_push::state::PAID
                || p.state == tally_store::usage_push::state::SENT
        });
        if done {
            pushed += 1;
        }
    }

    eprintln!("measuring the simulator's request rate …");
    let ids: Vec<String> = stripe_ids.iter().map(|(c, _)| c.clone()).collect();
    let probe = ids.len().clamp(200, 20_000);
    let one_conn = get_burst(&http, &base, &ids, probe, 1).await?;
    let many_conn = get_burst(&http, &base, &ids, probe, args.close_connections).await?;
    store.close().await;
    sim.shutdown().await;
    Ok(Measured {
        customers: n,
        seed,
        invoices: invoices.len(),
        close,
        pushed,
        not_pushed: invoices.len().saturating_sub(pushed),
        push,
        push_calls,
        call_kinds,
        one_conn,
        many_conn,
    })
}

async fn sim_post(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    form: &[(&str, &str)],
) -> anyhow::Result<Value> {
    let r = http
        .post(format!("{base}{path}"))
        .bearer_auth(SK)
        .form(form)
        .send()
        .await?;
    let status = r.status();
    let body: Value = r.json().await?;
    anyhow::ensure!(status.is_success(), "{path}: {status} {body}");
    Ok(body)
}

/// A Stripe customer (card on file) and a monthly Pro subscription per Tally customer `c{i}`,
/// through the simulator's API on `conns` connections. Returns (customer, subscription) by index.
async fn seed_simulator(
    http: &reqwest::Client,
    base: &str,
    price: &str,
    n: usize,
    conns: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..conns.min(n) {
        let (http, base, price) = (http.clone(), base.to_owned(), price.to_owned());
        tasks.spawn(async move {
            let mut out = Vec::new();
            for i in (k..n).step_by(conns) {
                let tally_id = format!("c{i}");
                let cus = sim_post(
                    &http,
                    &base,
                    "/v1/customers",
                    &[
                        ("metadata[tally_customer_id]", tally_id.as_str()),
                        ("payment_method", "pm_card_visa"),
                        ("invoice_settings[default_payment_method]", "pm_card_visa"),
                    ],
                )
                .await?;
                let cus = cus["id"].as_str().unwrap_or_default().to_owned();
                let sub = sim_post(
                    &http,
                    &base,
                    "/v1/subscriptions",
                    &[
                        ("customer", cus.as_str()),
                        ("items[0][price]", price.as_str()),
                        ("metadata[tally_customer_id]", tally_id.as_str()),
                    ],
                )
                .await?;
                let sub = sub["id"].as_str().unwrap_or_default().to_owned();
                out.push((i, cus, sub));
            }
            Ok::<_, anyhow::Error>(out)
        });
    }
    let mut ids = vec![(String::new(), String::new()); n];
    while let Some(done) = tasks.join_next().await {
        for (i, cus, sub) in done?? {
            if let Some(slot) = ids.get_mut(i) {
                *slot = (cus, sub);
            }
        }
    }
    Ok(ids)
}

/// Tally's side through the store: customer `c{i}` since `created`, its Stripe subscription
/// mirrored, and a month of Magic Box usage in its first period (350 compute hours and EUR 180
/// of API spend: 2.00 and 34.50 of overage on Pro).
async fn seed_tally(
    store: &dyn tally_store::Store,
    ids: &[(String, String)],
    created: chrono::DateTime<Utc>,
) -> anyhow::Result<()> {
    use tally_store::{CustomerUpsert, NewEvent, StripeSubscriptionUpsert};
    let period = tally_core::period::allowance_period(created, created);
    let mut events = Vec::with_capacity(EVENT_BATCH);
    for (i, (cus, sub)) in ids.iter().enumerate() {
        let id = format!("c{i}");
        store
            .upsert_customer(CustomerUpsert {
                id: id.clone(),
                email: None,
                name: None,
                metadata: None,
                email_opt_out: None,
                now: created,
            })
            .await?;
        store
            .put_stripe_subscription(StripeSubscriptionUpsert {
                customer_id: id.clone(),
                plan: PLAN.into(),
                interval: "month".into(),
                status: "active".into(),
                stripe: json!({
                    "subscription": sub,
                    "customer": cus,
                    "status": "active",
                    "lookup_key": LOOKUP_KEY,
                    "current_period_start": period.start,
                    "current_period_end": period.end,
                }),
                past_due_at: None,
                changed_at: created,
                now: created,
                // The subscription is anchored where the customer is: periods stay as they are.
                allowance_anchor: None,
            })
            .await?;
        for (n, (metric, value)) in [("compute_hours", 350), ("api_spend", 180)]
            .into_iter()
            .enumerate()
        {
            events.push(NewEvent {
                customer_id: id.clone(),
                event_id: format!("usage-{i}-{n}"),
                metric: metric.into(),
                value: Decimal::from(value),
                timestamp: period.start + chrono::Duration::days(1),
                properties: None,
                period_start: period.start,
                unique_key: None,
            });
        }
        if events.len() >= EVENT_BATCH {
            store.ingest(std::mem::take(&mut events)).await?;
        }
    }
    if !events.is_empty() {
        store.ingest(events).await?;
    }
    Ok(())
}

/// `total` GETs of customers from `conns` connections, each one after the other. Returns the
/// requests answered 200 and the time.
async fn get_burst(
    http: &reqwest::Client,
    base: &str,
    ids: &[String],
    total: usize,
    conns: usize,
) -> anyhow::Result<(usize, Duration)> {
    let ids: Arc<Vec<String>> = Arc::new(ids.to_vec());
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..conns {
        let (http, base, ids) = (http.clone(), base.to_owned(), ids.clone());
        tasks.spawn(async move {
            let mut ok = 0usize;
            for i in (k..total).step_by(conns) {
                let id = &ids[i % ids.len()];
                let r = http
                    .get(format!("{base}/v1/customers/{id}"))
                    .bearer_auth(SK)
                    .send()
                    .await?;
                if r.status().is_success() {
                    ok += 1;
                }
                r.bytes().await?;
            }
            Ok::<_, anyhow::Error>(ok)
        });
    }
    let mut ok = 0;
    while let Some(done) = tasks.join_next().await {
        ok += done??;
    }
    Ok((ok, t.elapsed()))
}

/// Counts of `METHOD /path` log lines with ids folded into `{id}` (an id is a segment with an
/// underscore followed by a digit or a capital, like `in_1AbC…`), most frequent first.
fn by_endpoint(log: &[String]) -> Vec<(String, usize)> {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for line in log {
        let path = line.split('?').next().unwrap_or(line);
        let folded: Vec<&str> = path
            .split('/')
            .map(|seg| match seg.split_once('_') {
                Some((_, rest))
                    if rest
                        .chars()
                        .any(|c| c.is_ascii_digit() || c.is_ascii_uppercase()) =>
                {
                    "{id}"
                }
                _ => seg,
            })
            .collect();
        *counts.entry(folded.join("/")).or_default() += 1;
    }
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

fn lines(m: &Measured, conns: usize) -> String {
    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "period close, {} customers with usage (SQLite), Stripe on the simulator (set-up {:.1} s, not measured)",
        m.customers,
        m.seed.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "  (a) closer: rate and write {} invoices           {:>9.2} s  {:>9.0} invoices/s",
        m.invoices,
        m.close.as_secs_f64(),
        rate(m.invoices, m.close)
    );
    let _ = writeln!(
        out,
        "  (b) pusher: {} invoices on Stripe ({} not)        {:>9.2} s  {:>9.0} invoices/s",
        m.pushed,
        m.not_pushed,
        m.push.as_secs_f64(),
        rate(m.pushed, m.push)
    );
    let _ = writeln!(
        out,
        "      Stripe calls: {} ({:.2} per customer), {:.0} calls/s",
        m.push_calls,
        m.push_calls as f64 / m.customers as f64,
        rate(m.push_calls, m.push)
    );
    for (kind, count) in &m.call_kinds {
        let _ = writeln!(
            out,
            "        {kind:<44} {:>6.2} per customer",
            *count as f64 / m.customers as f64
        );
    }
    let _ = writeln!(
        out,
        "  (c) simulator limit: GET /v1/customers/{{id}}, 1 connection {:>9.0} req/s ({} requests)",
        rate(m.one_conn.0, m.one_conn.1),
        m.one_conn.0
    );
    let _ = writeln!(
        out,
        "      simulator limit: GET /v1/customers/{{id}}, {conns} connections {:>9.0} req/s ({} requests)",
        rate(m.many_conn.0, m.many_conn.1),
        m.many_conn.0
    );
    out
}
