//! `tally demo`: the whole product on loopback with no Stripe account. It starts the Stripe
//! simulator and Tally (SQLite in a temporary directory, or `--dir`), pushes the demo catalog
//! (`catalogs/demo.toml`, compiled in) to the simulator, points the simulator's webhooks at Tally
//! with a shared secret, seeds a few customers with three months of history, and prints the
//! admin console's one-time sign-in link, a customer's billing-page link and an API key with a
//! curl line. Ctrl-C stops both servers and exits 0.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tally_server::config::{parse_catalog, StripeConfig};
use tally_server::service::keys::Caller;
use tally_server::service::{self, customers};
use tally_server::{AppState, Config};
use tally_store::clock::Clock;
use tally_store::AuditContext;

use super::common::runtime;

/// The demo's catalog.
pub const DEMO_CATALOG: &str = include_str!("../../../../catalogs/demo.toml");

/// Arguments of `tally demo` (none are needed).
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Keep the database here instead of a temporary directory (removed at exit).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Tally's port on 127.0.0.1 (default: a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

/// A key for the simulator (any `sk_test_…` works there).
const SIM_KEY: &str = "sk_test_tally_demo";

fn secret(prefix: &str) -> String {
    use rand::RngCore;
    let mut b = [0u8; 24];
    rand::rng().fill_bytes(&mut b);
    format!("{prefix}{}", hex::encode(b))
}

/// A free loopback port (bound and released: the demo's two servers must know each other's
/// address before either starts).
fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(l.local_addr()?.port())
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TALLY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    runtime()?.block_on(demo(args))
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let temp = match &args.dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("cannot create a temporary directory")?),
    };
    let dir = match (&args.dir, &temp) {
        (Some(d), _) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            d.clone()
        }
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => bail!("no directory"),
    };
    let port = if args.port == 0 {
        free_port()?
    } else {
        args.port
    };
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let webhook_secret = secret("whsec_");
    let admin_key = secret("tally_demo_");

    let sim = stripe_sim::spawn(stripe_sim::Config {
        port: 0,
        webhook: Some((
            format!("http://{listen}/webhooks/stripe"),
            webhook_secret.clone(),
        )),
        ..Default::default()
    })
    .await
    .context("cannot start the Stripe simulator")?;
    let sim_base = sim.base_url();

    let catalog = parse_catalog(DEMO_CATALOG, "catalogs/demo.toml")?;
    let stripe =
        tally_stripe::Client::new(tally_stripe::Config::new(SIM_KEY).with_base_url(&sim_base))?;
    tally_stripe::push::push(&stripe, &catalog, true, Utc::now().timestamp())
        .await
        .context("cannot push the catalog to the simulator")?;

    let db = dir.join("tally.db");
    let mut config = Config::new(format!("sqlite://{}", db.display()))?;
    config.listen = listen;
    config.catalog = Arc::new(catalog);
    config.admin_key = Some(admin_key.clone());
    config.clock = Clock::starting_at(Utc::now());
    config.stripe_webhook_secrets = vec![webhook_secret];
    config.stripe = StripeConfig {
        api_key: Some(SIM_KEY.into()),
        api_base: Some(sim_base.clone()),
        ..config.stripe
    };
    config.validate()?;
    let server = tally_server::spawn(config)
        .await
        .context("cannot start Tally")?;
    let state = server.state().clone();

    seed(&state, &sim_base)
        .await
        .context("cannot seed the demo customers")?;

    let caller = Caller::env(&admin_key);
    let now = state.clock.now();
    let sign_in = state
        .admin_sessions
        .link(&caller, now)
        .context("cannot make a sign-in link")?;
    let page = service::pages::mint(
        &state,
        "initech",
        service::pages::PageSessionInput::default(),
        caller.audit(None, now),
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot mint the billing-page link: {}", e.message))?;
    let base = format!("http://{listen}");
    println!(
        "Tally demo is running (Stripe simulator at {sim_base}, data in {}).",
        dir.display()
    );
    println!();
    println!("Admin console (one-time sign-in, 15 minutes): {base}/admin/sign-in/{sign_in}");
    println!(
        "Billing page of the customer Initech (one-time link): {}",
        page.url
    );
    println!("API key: {admin_key}");
    println!("curl -s {base}/v1/metrics/business -H \"Authorization: Bearer {admin_key}\"");
    println!();
    println!("On the billing page, click Upgrade on Pro and pay with 4242 4242 4242 4242 (any future expiry, any CVC):");
    println!("the simulator's checkout sends you back to the billing page, on Pro. Ctrl-C stops everything.");

    let stop = server.stop_handle();
    wait_for_signal().await;
    eprintln!("stopping");
    let _ = stop.send(true);
    let waited = tokio::time::timeout(Duration::from_secs(10), server.wait()).await;
    sim.shutdown().await;
    drop(temp);
    match waited {
        Ok(Ok(())) => Ok(ExitCode::SUCCESS),
        Ok(Err(e)) => Err(e).context("Tally failed"),
        Err(_) => bail!("Tally did not stop within 10 s"),
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let ctrl_c = tokio::signal::ctrl_c();
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn err(e: tally_server::error::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", e.code, e.message)
}

fn seeding(at: DateTime<Utc>) -> AuditContext {
    AuditContext {
        actor: "demo".into(),
        idempotency_key: None,
        at,
    }
}

async fn customer(state: &AppState, id: &str, name: &str, at: DateTime<Utc>) -> anyhow::Result<()> {
    state.clock.set(at);
    customers::put(
        state,
        id,
        customers::CustomerInput {
            email: Some(format!("billing@{id}.example")),
            name: Some(name.into()),
            metadata: None,
            email_opt_out: None,
        },
        seeding(at),
    )
    .await
    .map_err(err)?;
    Ok(())
}

async fn plan(
    state: &AppState,
    id: &str,
    plan: &str,
    interval: &str,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    state.clock.set(at);
    customers::put_subscription(
        state,
        id,
        customers::SubscriptionInput {
            plan: plan.into(),
            interval: Some(interval.into()),
            coupon: None,
        },
        seeding(at),
    )
    .await
    .map_err(err)?;
    Ok(())
}

/// Usage reported at `at` (one event of `calls` API calls).
async fn usage(
    state: &AppState,
    id: &str,
    n: usize,
    calls: u64,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    state.clock.set(at + chrono::Duration::minutes(1));
    let body = json!({"events": [{
        "id": format!("demo-{id}-{n}"), "customer": id, "metric": "api_calls",
        "value": calls, "timestamp": at.to_rfc3339(),
    }]});
    service::events::ingest_body(state, body.to_string().as_bytes())
        .await
        .map_err(err)?;
    Ok(())
}

/// A Stripe subscription through the simulator's API, as the customer's own Checkout would
/// make it: `pm` pays (or fails). With `past_due`, the customer is on a test clock, starts a
/// one-day trial that ends at once, and the clock moves past the draft hour so the first charge
/// fails.
async fn stripe_subscription(
    state: &AppState,
    sim: &str,
    id: &str,
    lookup_key: &str,
    pm: &str,
    past_due: bool,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let post = |path: String, form: Vec<(&'static str, String)>| {
        let http = http.clone();
        async move {
            let r = http
                .post(format!("{sim}{path}"))
                .bearer_auth(SIM_KEY)
                .form(&form)
                .send()
                .await?;
            let status = r.status();
            let v: Value = r.json().await?;
            if !status.is_success() {
                bail!("simulator {path}: {status} {v}");
            }
            anyhow::Ok(v)
        }
    };
    let now = Utc::now();
    let start = now - chrono::Duration::hours(3);
    let clock = if past_due {
        let c = post(
            "/v1/test_helpers/test_clocks".into(),
            vec![("frozen_time", start.timestamp().to_string())],
        )
        .await?;
        c["id"].as_str().map(str::to_owned)
    } else {
        None
    };
    let mut form = vec![
        ("email", format!("billing@{id}.example")),
        ("metadata[tally_customer_id]", id.to_owned()),
        ("payment_method", pm.to_owned()),
    ];
    if let Some(c) = &clock {
        form.push(("test_clock", c.clone()));
    }
    let cus = post("/v1/customers".into(), form).await?;
    let cus_id = cus["id"].as_str().context("no customer id")?.to_owned();
    let link_at = state.clock.now();
    state.store.claim_stripe_customer(id, link_at).await?;
    state
        .store
        .set_stripe_customer(id, &cus_id, link_at)
        .await?;
    let pms: Value = http
        .get(format!("{sim}/v1/customers/{cus_id}/payment_methods"))
        .bearer_auth(SIM_KEY)
        .send()
        .await?
        .json()
        .await?;
    let pm_id = pms["data"][0]["id"]
        .as_str()
        .context("no payment method")?
        .to_owned();
    let price = state
        .stripe
        .as_ref()
        .context("no Stripe client")?
        .prices_by_lookup_keys(&[lookup_key.to_owned()])
        .await?
        .into_iter()
        .next()
        .context("the catalog is not pushed")?
        .id;
    let mut form = vec![
        ("customer", cus_id),
        ("items[0][price]", price),
        ("default_payment_method", pm_id),
        ("metadata[tally_customer_id]", id.to_owned()),
    ];
    if past_due {
        form.push(("trial_period_days", "1".into()));
    }
    let sub = post("/v1/subscriptions".into(), form).await?;
    if let (true, Some(c), Some(sub_id)) = (past_due, &clock, sub["id"].as_str()) {
        post(
            format!("/v1/subscriptions/{sub_id}"),
            vec![("trial_end", "now".into())],
        )
        .await?;
        post(
            format!("/v1/test_helpers/test_clocks/{c}/advance"),
            vec![(
                "frozen_time",
                (start + chrono::Duration::hours(2)).timestamp().to_string(),
            )],
        )
        .await?;
    }
    Ok(())
}

/// Five customers with about three months of history: local subscriptions with usage and closed
/// invoices (one upgraded, one churned), a paying Stripe customer, a past-due one, and Initech
/// on the free plan near its limit (the billing page the demo prints).
async fn seed(state: &AppState, sim: &str) -> anyhow::Result<()> {
    let now = Utc::now();
    let day = |d: i64| now - chrono::Duration::days(d);
    customer(state, "northwind", "Northwind Traders", day(95)).await?;
    plan(state, "northwind", "starter", "month", day(95)).await?;
    customer(state, "hooli", "Hooli", day(90)).await?;
    plan(state, "hooli", "starter", "month", day(90)).await?;
    customer(state, "globex", "Globex", day(80)).await?;
    plan(state, "globex", "starter", "month", day(80)).await?;
    customer(state, "initech", "Initech", day(70)).await?;
    plan(state, "initech", "free", "month", day(70)).await?;
    let mut n = 0;
    for d in (2..95).step_by(3) {
        n += 1;
        usage(state, "northwind", n, 5_400 + (d as u64 % 7) * 90, day(d)).await?;
        if d < 80 {
            usage(state, "globex", n, 2_600 + (d as u64 % 5) * 90, day(d)).await?;
        }
        if d > 40 && d < 88 {
            usage(state, "hooli", n, 600, day(d)).await?;
        }
    }
    plan(state, "globex", "pro", "month", day(45)).await?;
    plan(state, "hooli", "free", "month", day(40)).await?;
    for (i, d) in [25i64, 18, 11, 6, 2].iter().enumerate() {
        usage(state, "initech", i, 170, day(*d)).await?;
    }
    // The periods that ended are invoiced when they ended, as the closer does every minute.
    for d in (0..=90).rev().step_by(5) {
        let t = day(d);
        state.clock.set(t);
        service::closer::close_due(state, t).await.map_err(err)?;
    }
    state.clock.set(Utc::now());

    customer(state, "acme", "Acme Corp", Utc::now()).await?;
    stripe_subscription(
        state,
        sim,
        "acme",
        "acme_pro_monthly",
        "pm_card_visa",
        false,
    )
    .await?;
    customer(state, "umbrella", "Umbrella", Utc::now()).await?;
    stripe_subscription(
        state,
        sim,
        "umbrella",
        "acme_starter_monthly",
        "pm_card_chargeCustomerFail",
        true,
    )
    .await?;
    // Wait (20 s at most) for the simulator's webhooks to be applied.
    for _ in 0..400 {
        let acme = state.store.get_subscription("acme").await?;
        let umbrella = state.store.get_subscription("umbrella").await?;
        // The failed payment is its own event (`invoice.payment_failed`), applied apart from
        // the subscription's move to past due: the dashboard shows both.
        let failed = state
            .store
            .transactions("umbrella", 10, None)
            .await?
            .iter()
            .any(|t| t.kind == "payment_failed");
        if acme.is_some_and(|s| s.source == "stripe")
            && umbrella.is_some_and(|s| s.status == "past_due")
            && failed
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
