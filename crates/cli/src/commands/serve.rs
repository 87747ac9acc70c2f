//! `tally serve`: the HTTP API.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use tally_server::config::parse_duration;
use tally_server::Config;

use super::common::{runtime, CatalogArgs, DatabaseArgs};

/// Arguments of `tally serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TALLY_LISTEN", default_value = "127.0.0.1:8585")]
    listen: SocketAddr,
    #[command(flatten)]
    db: DatabaseArgs,
    #[command(flatten)]
    catalog: CatalogArgs,
    /// Request bodies larger than this many bytes get 413.
    #[arg(long, env = "TALLY_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Grace window after a period's end during which its events still count in it, before its
    /// invoice is written (e.g. 30m, 1h, 2d).
    #[arg(long, env = "TALLY_GRACE", default_value = "1h", value_parser = parse_duration)]
    grace: std::time::Duration,
    /// How often the period closer looks for ended periods.
    #[arg(long, env = "TALLY_CLOSE_EVERY", default_value = "60s", value_parser = parse_duration)]
    close_every: std::time::Duration,
    /// How long a worker's claim on shared work (the period closer's leadership, a webhook
    /// delivery) lasts unless renewed; a process that dies holding one is replaced within it.
    #[arg(long, env = "TALLY_WORKER_LEASE", default_value = "60s", value_parser = parse_duration)]
    worker_lease: std::time::Duration,
    /// Events older than this are refused (`timestamp_outside_dedup_window`); ids are
    /// deduplicated exactly over it, and SQLite keeps only its keys in memory. At least 35d.
    #[arg(long, env = "TALLY_DEDUP_WINDOW", default_value = "35d", value_parser = parse_duration)]
    dedup_window: std::time::Duration,
    /// SQLite: keys of the deduplication window held in memory at most (the newest; 22–45 bytes
    /// each); older ids are answered by the unique index on disk, so deduplication stays exact.
    #[arg(long, env = "TALLY_DEDUP_MEMORY_KEYS", default_value_t = tally_store::DEFAULT_DEDUP_MEMORY_KEYS)]
    dedup_memory_keys: usize,
    /// SQLite: page cache of the writer connection, in KiB (filled by the start-up read of the
    /// newest events; part of the idle memory bound).
    #[arg(long, env = "TALLY_SQLITE_WRITER_CACHE_KIB", default_value_t = tally_store::DEFAULT_SQLITE_WRITER_CACHE_KIB)]
    sqlite_writer_cache_kib: u32,
    /// SQLite: page cache of each reader connection (up to 8 are kept), in KiB.
    #[arg(long, env = "TALLY_SQLITE_READER_CACHE_KIB", default_value_t = tally_store::DEFAULT_SQLITE_READER_CACHE_KIB)]
    sqlite_reader_cache_kib: u32,
    /// Environment that feature flags are evaluated in.
    #[arg(long, env = "TALLY_ENVIRONMENT", default_value = "production")]
    environment: String,
    /// How long a past-due subscription keeps its plan's entitlements before the free plan's apply.
    #[arg(long, env = "TALLY_PAST_DUE_GRACE", default_value = "7d", value_parser = parse_duration)]
    past_due_grace: std::time::Duration,
    /// Requests per minute allowed per API key and route (0: unlimited).
    #[arg(long, env = "TALLY_RATE_LIMIT_PER_KEY", default_value_t = 0)]
    rate_limit_per_key: u32,
    /// Requests per minute allowed per customer and route, for routes naming a customer
    /// (0: unlimited).
    #[arg(long, env = "TALLY_RATE_LIMIT_PER_CUSTOMER", default_value_t = 0)]
    rate_limit_per_customer: u32,
    /// A route's own limit, `METHOD PATH=COUNT/WINDOW:key|customer`, e.g.
    /// `POST /v1/checkout-sessions=5/1m:customer` (repeatable; replaces the defaults when given).
    #[arg(long = "rate-limit", env = "TALLY_RATE_LIMITS", value_delimiter = ',')]
    rate_limit: Vec<String>,
    /// Time allowed for a request's headers; slower clients are disconnected.
    #[arg(long, env = "TALLY_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    header_timeout: std::time::Duration,
    /// Time allowed for a request's whole body; slower bodies get 408.
    #[arg(long, env = "TALLY_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    body_timeout: std::time::Duration,
    /// A connection without a request in flight is closed after this long.
    #[arg(long, env = "TALLY_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    idle_timeout: std::time::Duration,
    /// Most connections open at once (0: automatic, below the file-descriptor limit). At the cap
    /// a new connection evicts the longest-waiting one without a request in flight.
    #[arg(long, env = "TALLY_MAX_CONNECTIONS", default_value_t = 0)]
    max_connections: usize,
    /// Failed authentications allowed per client address per minute; more get 429 (0: unlimited).
    #[arg(long, env = "TALLY_AUTH_FAILURE_LIMIT", default_value_t = 20)]
    auth_failure_limit: u32,
    /// Serve /metrics on this address instead of the API's (e.g. 127.0.0.1:9585).
    #[arg(long, env = "TALLY_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,

    // --- Stripe (customers, Checkout, Customer Portal) ---
    /// Stripe's API base: Stripe's by default, the simulator's for local work.
    #[arg(long, env = "STRIPE_API_BASE")]
    stripe_api_base: Option<String>,
    /// Time allowed for one attempt of a Stripe call.
    #[arg(long, env = "TALLY_STRIPE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    stripe_timeout: std::time::Duration,
    /// Default success URL of Checkout Sessions (`{CHECKOUT_SESSION_ID}` is filled in by Stripe).
    #[arg(long, env = "TALLY_CHECKOUT_SUCCESS_URL")]
    checkout_success_url: Option<String>,
    /// Default cancel URL of Checkout Sessions.
    #[arg(long, env = "TALLY_CHECKOUT_CANCEL_URL")]
    checkout_cancel_url: Option<String>,
    /// Default return URL of Customer Portal sessions.
    #[arg(long, env = "TALLY_PORTAL_RETURN_URL")]
    portal_return_url: Option<String>,
    /// How long a Checkout Session stays open (30m to 24h).
    #[arg(long, env = "TALLY_CHECKOUT_EXPIRY", default_value = "1h", value_parser = parse_duration)]
    checkout_expiry: std::time::Duration,
    /// The address browsers reach Tally at, for billing-page links (default: http://<listen>).
    #[arg(long, env = "TALLY_PUBLIC_URL")]
    public_url: Option<String>,
    /// Who may embed the billing page in an iframe: CSP frame-ancestors sources, space-separated
    /// (e.g. "https://app.example.com"); 'none' forbids embedding.
    #[arg(long, env = "TALLY_FRAME_ANCESTORS", default_value = "'none'")]
    frame_ancestors: String,
    /// Webhook deliveries (POST /webhooks/stripe) larger than this many bytes get 413.
    #[arg(long, env = "TALLY_WEBHOOK_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    webhook_max_body_bytes: usize,
    // --- Customer emails (off unless TALLY_SMTP_URL is set in the environment) ---
    /// The sender of customer emails, e.g. "Example Billing <billing@example.com>".
    #[arg(long, env = "TALLY_EMAIL_FROM")]
    email_from: Option<String>,
    /// A directory of <type>.txt email templates replacing the built-in ones.
    #[arg(long, env = "TALLY_EMAIL_TEMPLATES")]
    email_templates: Option<std::path::PathBuf>,
    /// Log lines as text or as JSON objects (one per line, with the request id).
    #[arg(long, env = "TALLY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Development and tests: every Stripe customer Tally creates gets its own test clock, and
    /// `tally clock advance` moves them with Tally's clock (test keys or the simulator only).
    #[arg(long, env = "TALLY_STRIPE_TEST_CLOCKS")]
    stripe_test_clocks: bool,
    /// Development and tests: `tally clock advance` (POST /v1/clock/advance) may move Tally's
    /// clock forward; the offset is kept in the database across restarts.
    #[arg(long, env = "TALLY_MOVABLE_CLOCK")]
    movable_clock: bool,
}

/// How `tally serve` writes its logs.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TALLY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.init(),
        // One JSON object per line, with the request's span (its request_id) on every line.
        LogFormat::Json => logs.json().with_current_span(true).init(),
    }
    let config = Config {
        listen: args.listen,
        database_url: args.db.database_url,
        catalog: args.catalog.load()?,
        admin_key: std::env::var("TALLY_API_KEY")
            .ok()
            .filter(|k| !k.is_empty()),
        max_body_bytes: args.max_body_bytes,
        grace: args.grace,
        close_every: args.close_every,
        worker_lease: args.worker_lease,
        dedup_window: args.dedup_window,
        dedup_memory_keys: args.dedup_memory_keys,
        sqlite_writer_cache_kib: args.sqlite_writer_cache_kib,
        sqlite_reader_cache_kib: args.sqlite_reader_cache_kib,
        environment: args.environment,
        past_due_grace: args.past_due_grace,
        rate_limits: tally_server::ratelimit::RateLimits::from_args(
            args.rate_limit_per_key,
            args.rate_limit_per_customer,
            &args.rate_limit,
        )
        .map_err(anyhow::Error::msg)?,
        clock: tally_store::clock::Clock::system(),
        header_timeout: args.header_timeout,
        body_timeout: args.body_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections,
        auth_failures_per_minute: args.auth_failure_limit,
        metrics_listen: args.metrics_listen,
        metrics_token: std::env::var("TALLY_METRICS_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        // Secrets come from the environment only, never from flags (which `ps` shows).
        stripe_webhook_secrets: std::env::var("STRIPE_WEBHOOK_SECRET")
            .map(|v| tally_server::config::parse_webhook_secrets(&v))
            .unwrap_or_default(),
        webhook_max_body_bytes: args.webhook_max_body_bytes,
        public_url: args.public_url,
        frame_ancestors: args.frame_ancestors,
        // The secret key only from the environment, never from a flag (flags show in `ps`).
        stripe: tally_server::config::StripeConfig {
            api_key: std::env::var("STRIPE_API_KEY")
                .ok()
                .filter(|k| !k.is_empty()),
            api_base: args.stripe_api_base.filter(|b| !b.is_empty()),
            timeout: args.stripe_timeout,
            success_url: args.checkout_success_url,
            cancel_url: args.checkout_cancel_url,
            portal_return_url: args.portal_return_url,
            checkout_expiry: args.checkout_expiry,
            test_clocks: args.stripe_test_clocks,
        },
        movable_clock: args.movable_clock || args.stripe_test_clocks,
        // The SMTP URL may hold a password: from the environment only.
        email: tally_server::service::email::EmailConfig {
            smtp_url: std::env::var("TALLY_SMTP_URL")
                .ok()
                .filter(|u| !u.is_empty()),
            from: args.email_from.filter(|f| !f.is_empty()),
            templates_dir: args.email_templates,
        },
    };
    config.validate()?;
    if config.stripe_webhook_secrets.is_empty() {
        tracing::warn!("STRIPE_WEBHOOK_SECRET is not set; POST /webhooks/stripe answers 503");
    }
    if config.admin_key.is_none() {
        tracing::warn!(
            "TALLY_API_KEY is not set; only keys made with `tally keys create` are accepted"
        );
    }
    runtime()?.block_on(async move {
        let server = tally_server::spawn(config).await?;
        println!("tally listening on http://{}", server.addr());
        if let Some(m) = server.metrics_addr() {
            println!("metrics on http://{m}/metrics");
        }
        let stop = server.stop_handle();
        tokio::spawn(async move {
            shutdown_signal().await;
            eprintln!("shutting down: finishing in-flight requests and committing queued writes");
            let _ = stop.send(true);
        });
        server.wait().await.context("the server failed")?;
        Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
