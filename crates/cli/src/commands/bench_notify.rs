//! The notification part of `tally bench`:
//!
//! - outbox delivery throughput: notifications of many customers are enqueued on a fresh SQLite
//!   store, then a server (in this process) delivers them to a local receiver; beside it, the same
//!   receiver's
//!   hello-world limit (the same POSTs, the same concurrency, from a client doing no other work),
//!   measured in the same run;
//! - the cost of the outbox row on a credit consumption, A/B on the store: the same consumption
//!   (1 credit from a large balance) without a notification (A) and writing one `credits.low`
//!   notification and its delivery row to one endpoint in its transaction (B), runs alternated.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use rust_decimal::Decimal;
use tally_store::{CreditNotify, CreditRequest, CustomerUpsert, Store};

use super::bench_load::Conn;

/// Options of the notification part of `tally bench`.
#[derive(clap::Args)]
pub struct NotifyBenchArgs {
    /// Run only the notification benchmarks.
    #[arg(long)]
    pub notify_only: bool,
    /// Notifications delivered in the outbox throughput run.
    #[arg(long, default_value_t = 50_000)]
    pub notifications: u64,
    /// Customers the notifications are spread over (deliveries keep each customer's order).
    #[arg(long, default_value_t = 1000)]
    pub notify_customers: u64,
    /// Credit consumptions in each A/B run of the outbox row's cost.
    #[arg(long, default_value_t = 20_000)]
    pub ab_consumptions: u64,
}

/// Runs the notification benchmarks in a temporary directory (deleted afterwards) and returns
/// the report's lines.
pub fn report(args: &NotifyBenchArgs) -> anyhow::Result<String> {
    let dir = std::env::temp_dir().join(format!("tally-bench-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let out = run_in(args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn run_in(args: &NotifyBenchArgs, dir: &Path) -> anyhow::Result<String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut out = String::new();
    let d = rt.block_on(delivery(args, dir))?;
    let _ = writeln!(
        out,
        "{:<60} {:>9.0} req/s  ({} POSTs, {} concurrent)",
        "HTTP POST to the local receiver (hello-world limit)", d.limit, d.n, d.concurrency
    );
    let _ = writeln!(
        out,
        "{:<60} {:>9.0} /s     (enqueued before, at {:.0}/s by 16 tasks)",
        format!(
            "outbox delivery, SQLite, {} notifications, {} customers",
            d.n, args.notify_customers
        ),
        d.delivered,
        d.enqueued
    );
    let _ = writeln!(
        out,
        "{:<60} {:>9.2} of the limit (target ≥ 5,000/s: {})",
        "",
        d.delivered / d.limit,
        if d.delivered >= 5000.0 {
            "met"
        } else {
            "not met"
        }
    );
    let ab = rt.block_on(outbox_row_ab(args, dir))?;
    for (label, runs) in [("A: no notification", &ab.a), ("B: + outbox row", &ab.b)] {
        let rates: Vec<String> = runs.iter().map(|r| format!("{r:.0}")).collect();
        let _ = writeln!(
            out,
            "{:<60} {}/s",
            format!("credit consumption on the store, 32 tasks, {label}"),
            rates.join(" / ")
        );
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (a, b) = (mean(&ab.a), mean(&ab.b));
    let _ = writeln!(
        out,
        "{:<60} {:+.1} % time per consumption ({:.1} µs → {:.1} µs)",
        "added cost of the outbox row",
        (a / b - 1.0) * 100.0,
        1e6 / a,
        1e6 / b
    );
    Ok(out)
}

struct Delivery {
    n: u64,
    concurrency: usize,
    limit: f64,
    enqueued: f64,
    delivered: f64,
}

/// The receiver: answers 200 to every POST and counts them.
async fn receiver() -> anyhow::Result<(String, Arc<AtomicU64>)> {
    let got = Arc::new(AtomicU64::new(0));
    let count = got.clone();
    let app = axum::Router::new().fallback(move || {
        let count = count.clone();
        async move {
            count.fetch_add(1, Ordering::Relaxed);
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((base, got))
}

async fn delivery(args: &NotifyBenchArgs, dir: &Path) -> anyhow::Result<Delivery> {
    let n = args.notifications;
    // As many requests in flight as the delivery worker sends at once (one claimed batch).
    let concurrency = 256;
    let (base, got) = receiver().await?;
    let body = sample_body();
    eprintln!("hello-world limit: {n} POSTs to the receiver over {concurrency} connections …");
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (base, body, next) = (base.clone(), body.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&base, "unused").await?;
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let (s, _) = conn.send("POST", "/hooks", &body).await?;
                if s != 200 {
                    bail!("the receiver answered {s}");
                }
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let limit = n as f64 / start.elapsed().as_secs_f64();
    got.store(0, Ordering::SeqCst);

    // Enqueued first, on the store alone: the delivery run then measures delivery only.
    let db = format!("sqlite://{}", dir.join("notify.db").display());
    let store = tally_store::connect(&db).await?;
    let new = tally_server::service::notify::new_endpoint(
        tally_server::service::notify::EndpointInput {
            url: format!("{base}/hooks"),
            events: vec!["*".into()],
        },
        chrono::Utc::now(),
    )
    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    store.create_webhook_endpoint_audited(new, None).await?;
    eprintln!(
        "outbox: enqueueing {n} notifications of {} customers …",
        args.notify_customers
    );
    let start = Instant::now();
    let tasks = 16u64;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        let customers = args.notify_customers.max(1);
        handles.push(tokio::spawn(async move {
            let mut i = t;
            while i < n {
                let customer = format!("bench_{}", i % customers);
                store
                    .enqueue_notification(tally_store::NewNotification {
                        kind: "credits.purchased".into(),
                        customer_id: Some(customer.clone()),
                        payload: serde_json::json!({"customer": customer, "n": i}),
                        dedup_key: format!("bench:{i}"),
                        created_at: chrono::Utc::now(),
                    })
                    .await?;
                i += tasks;
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for h in handles {
        h.await??;
    }
    let enqueued = n as f64 / start.elapsed().as_secs_f64();
    store.close().await;
    eprintln!("outbox delivery: a server delivers them …");
    let mut config = tally_server::Config::new(db)?;
    config.listen = "127.0.0.1:0".parse()?;
    let start = Instant::now();
    let server = tally_server::spawn(config).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while got.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} notifications delivered in 10 minutes",
                got.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let delivered = n as f64 / start.elapsed().as_secs_f64();
    server.shutdown().await?;
    Ok(Delivery {
        n,
        concurrency,
        limit,
        enqueued,
        delivered,
    })
}

/// A delivery's body as the worker sends it (the receiver's limit is measured with the same size).
fn sample_body() -> String {
    serde_json::json!({
        "id": "evt_0123456789abcdef01234567",
        "object": "event",
        "type": "credits.purchased",
        "created": 1_767_225_600,
        "customer": "bench_1",
        "data": {"object": {"customer": "bench_1", "n": 1}},
    })
    .to_string()
}

struct Ab {
    a: Vec<f64>,
    b: Vec<f64>,
}

/// Consumptions of 1 credit on the store by 32 tasks (one customer each, so each task knows its
/// balance): with `row`, the request's low-balance threshold is the balance before, so each
/// consumption crosses it and writes one `credits.low` notification (and its delivery row to the
/// one endpoint) in its transaction; without, nothing is notified. Otherwise the same work.
async fn consume_run(store: &Arc<dyn Store>, run: &str, n: u64, row: bool) -> anyhow::Result<f64> {
    let tasks = 32u64;
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        let run = run.to_owned();
        handles.push(tokio::spawn(async move {
            let customer = format!("ab_{t}");
            let mut balance = store
                .credit_account(&customer, 1, None)
                .await?
                .balance(chrono::Utc::now());
            let mut i = t;
            while i < n {
                let req = CreditRequest {
                    entry_id: format!("ce_{run}_{i}"),
                    customer_id: customer.clone(),
                    kind: tally_core::credits::EntryKind::Consume,
                    amount: -Decimal::ONE,
                    expires_at: None,
                    reason: None,
                    idempotency_key: None,
                    fingerprint: String::new(),
                    actor: None,
                    audit: false,
                    event: None,
                    quantity: None,
                    now: chrono::Utc::now(),
                    notify: Some(CreditNotify {
                        low_balance: row.then_some(balance),
                    }),
                };
                store.credit_apply(req).await?;
                balance -= Decimal::ONE;
                i += tasks;
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

async fn outbox_row_ab(args: &NotifyBenchArgs, dir: &Path) -> anyhow::Result<Ab> {
    let db = format!("sqlite://{}", dir.join("outbox_ab.db").display());
    let store = tally_store::connect(&db).await?;
    let now = chrono::Utc::now();
    for t in 0..32 {
        let id = format!("ab_{t}");
        store
            .upsert_customer(CustomerUpsert {
                id: id.clone(),
                email: None,
                name: None,
                metadata: None,
                email_opt_out: None,
                now,
            })
            .await?;
        store
            .credit_apply(CreditRequest {
                entry_id: format!("grant_{t}"),
                customer_id: id,
                kind: tally_core::credits::EntryKind::Grant,
                amount: Decimal::from(1_000_000_000u64),
                expires_at: None,
                reason: None,
                idempotency_key: None,
                fingerprint: String::new(),
                actor: None,
                audit: false,
                event: None,
                quantity: None,
                now,
                notify: None,
            })
            .await?;
    }
    let endpoint = tally_server::service::notify::new_endpoint(
        tally_server::service::notify::EndpointInput {
            url: "http://127.0.0.1:9/unused".into(),
            events: vec!["*".into()],
        },
        now,
    )
    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    store
        .create_webhook_endpoint_audited(endpoint, None)
        .await?;
    let n = args.ab_consumptions;
    eprintln!("outbox row A/B: {n} credit consumptions a run, runs alternated A, B, A, B …");
    let mut ab = Ab {
        a: Vec::new(),
        b: Vec::new(),
    };
    for round in 0..2 {
        ab.a.push(consume_run(&store, &format!("a{round}"), n, false).await?);
        ab.b.push(consume_run(&store, &format!("b{round}"), n, true).await?);
    }
    store.close().await;
    Ok(ab)
}
