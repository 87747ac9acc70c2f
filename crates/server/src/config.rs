//! The server's configuration: one struct, built by the CLI from flags and environment variables,
//! validated at start with one clear message per mistake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tally_core::catalog::Catalog;
use tally_store::clock::{Clock, SharedClock};

/// The example catalog compiled into the binary, used when no catalog is given.
pub const EXAMPLE_CATALOG: &str = include_str!("../../../catalogs/magicbox.toml");

/// Server configuration.
#[derive(Clone)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:8585` by default; port 0 picks a free one).
    pub listen: SocketAddr,
    /// `sqlite://PATH` or `postgres://…`.
    pub database_url: String,
    /// The validated catalog.
    pub catalog: Arc<Catalog>,
    /// `TALLY_API_KEY`: an admin key accepted besides the keys stored in the database.
    pub admin_key: Option<String>,
    /// Request bodies larger than this get 413.
    pub max_body_bytes: usize,
    /// How long after a period's end its events still count in it before its invoice is written.
    pub grace: Duration,
    /// How often the period closer looks for ended periods.
    pub close_every: Duration,
    /// How long a worker's claim on shared work lasts unless renewed: the period closer's
    /// leadership (at least three closer intervals) and each claimed webhook delivery. A process
    /// that dies holding a claim is replaced within this time.
    pub worker_lease: Duration,
    /// Events whose timestamp is older than `now − dedup_window` are refused
    /// (`timestamp_outside_dedup_window`); ids are deduplicated exactly over this window, and a
    /// SQLite store keeps only its keys in memory. At least 35 days (how long Stripe keeps meter
    /// events).
    pub dedup_window: Duration,
    /// Keys of the deduplication window a SQLite store holds in memory at most (the newest);
    /// older ids are answered by the unique index on disk, so deduplication stays exact. Bounds
    /// the memory the window takes (about 22–45 bytes a key).
    pub dedup_memory_keys: usize,
    /// SQLite page cache of the writer connection, KiB (the rest of the idle memory budget).
    pub sqlite_writer_cache_kib: u32,
    /// SQLite page cache of each reader connection (up to 8 kept), KiB.
    pub sqlite_reader_cache_kib: u32,
    /// The environment feature flags are evaluated in (`production` by default).
    pub environment: String,
    /// How long a past-due subscription keeps its plan's entitlements before falling back to the
    /// free plan's.
    pub past_due_grace: Duration,
    /// Request rate limits (see [`crate::ratelimit`]).
    pub rate_limits: crate::ratelimit::RateLimits,
    /// Where "now" comes from: the system clock, or one that tests and demos move.
    pub clock: SharedClock,
    /// Time allowed for a request's headers.
    pub header_timeout: Duration,
    /// Time allowed for a request's whole body (408 when over).
    pub body_timeout: Duration,
    /// A connection without a request in flight is closed after this long.
    pub idle_timeout: Duration,
    /// Most connections open at once; 0: automatic (below the file-descriptor limit). Always capped
    /// below the descriptor limit (see [`crate::conn`]).
    pub max_connections: usize,
    /// Failed authentications allowed per client address per minute (0: unlimited).
    pub auth_failures_per_minute: u32,
    /// Serve `/metrics` on this address instead of the API's.
    pub metrics_listen: Option<SocketAddr>,
    /// `TALLY_METRICS_TOKEN`: when set, `/metrics` needs `Authorization: Bearer <token>`.
    pub metrics_token: Option<String>,
    /// The address browsers reach this server at, for page-session links
    /// (`http://<listen>` when unset).
    pub public_url: Option<String>,
    /// The `frame-ancestors` sources of the billing page's Content-Security-Policy: who may embed
    /// it in an iframe (`'none'` by default; e.g. `https://app.example.com`).
    pub frame_ancestors: String,
    /// `STRIPE_WEBHOOK_SECRET`: the signing secrets of `POST /webhooks/stripe` (several while one
    /// is rolled); empty: the route answers 503.
    pub stripe_webhook_secrets: Vec<String>,
    /// Webhook deliveries larger than this get 413.
    pub webhook_max_body_bytes: usize,
    /// Stripe: customers, Checkout and the Customer Portal (see [`StripeConfig`]).
    pub stripe: StripeConfig,
    /// `--movable-clock` (implied by `--stripe-test-clocks`): `POST /v1/clock/advance` and
    /// `tally clock advance` may move Tally's clock forward; how far is kept in the database, so
    /// a restart keeps it. For development and tests only.
    pub movable_clock: bool,
    /// Customer emails over SMTP (off unless `TALLY_SMTP_URL` is set).
    pub email: crate::service::email::EmailConfig,
}

/// Splits `STRIPE_WEBHOOK_SECRET` (a comma-separated list during a rotation) into its secrets.
pub fn parse_webhook_secrets(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

// --- Stripe ---------------------------------------------------------------------------------

/// How Tally reaches Stripe for customers, Checkout and the Customer Portal. Without an API key
/// the Stripe routes answer 503 and everything else works as before.
#[derive(Clone)]
pub struct StripeConfig {
    /// `STRIPE_API_KEY` (`sk_…` or `rk_…`); never printed.
    pub api_key: Option<String>,
    /// `STRIPE_API_BASE`: Stripe's API (default) or the simulator's address.
    pub api_base: Option<String>,
    /// `--stripe-timeout`: time allowed for one attempt of a Stripe call.
    pub timeout: Duration,
    /// `TALLY_CHECKOUT_SUCCESS_URL`: where Checkout sends a customer after paying, unless the
    /// request names one (`{CHECKOUT_SESSION_ID}` is filled in by Stripe).
    pub success_url: Option<String>,
    /// `TALLY_CHECKOUT_CANCEL_URL`: Checkout's back link, unless the request names one.
    pub cancel_url: Option<String>,
    /// `TALLY_PORTAL_RETURN_URL`: the Customer Portal's back link, unless the request names one.
    pub portal_return_url: Option<String>,
    /// `--checkout-expiry`: how long a Checkout Session stays open (Stripe allows 30 min–24 h).
    pub checkout_expiry: Duration,
    /// `--stripe-test-clocks`: every Stripe customer Tally creates gets its own test clock, which
    /// `tally clock advance` moves with Tally's clock. Test keys (`sk_test_…`) or the simulator
    /// only.
    pub test_clocks: bool,
}

impl Default for StripeConfig {
    fn default() -> Self {
        StripeConfig {
            api_key: None,
            api_base: None,
            timeout: Duration::from_secs(30),
            success_url: None,
            cancel_url: None,
            portal_return_url: None,
            checkout_expiry: Duration::from_secs(3600),
            test_clocks: false,
        }
    }
}

impl std::fmt::Debug for StripeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeConfig")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("api_base", &self.api_base)
            .field("timeout", &self.timeout)
            .field("success_url", &self.success_url)
            .field("cancel_url", &self.cancel_url)
            .field("portal_return_url", &self.portal_return_url)
            .field("checkout_expiry", &self.checkout_expiry)
            .field("test_clocks", &self.test_clocks)
            .finish()
    }
}

impl StripeConfig {
    /// The gateway's configuration, when an API key is set.
    pub fn client_config(&self) -> Option<tally_stripe::Config> {
        let key = self.api_key.as_deref()?;
        let mut cfg = tally_stripe::Config::new(key);
        if let Some(base) = &self.api_base {
            cfg = cfg.with_base_url(base);
        }
        cfg.timeout = self.timeout;
        Some(cfg)
    }

    fn problems(&self, out: &mut Vec<String>) {
        if let Some(k) = &self.api_key {
            if !(k.starts_with("sk_") || k.starts_with("rk_")) || k.trim() != k {
                out.push("STRIPE_API_KEY must be a secret (sk_…) or restricted (rk_…) key".into());
            }
        }
        if let Some(b) = &self.api_base {
            if !(b.starts_with("https://") || b.starts_with("http://")) {
                out.push(format!("STRIPE_API_BASE {b:?} must be an http(s) URL"));
            }
        }
        for (name, url) in [
            ("TALLY_CHECKOUT_SUCCESS_URL", &self.success_url),
            ("TALLY_CHECKOUT_CANCEL_URL", &self.cancel_url),
            ("TALLY_PORTAL_RETURN_URL", &self.portal_return_url),
        ] {
            if url.as_deref().is_some_and(|u| !is_web_url(u)) {
                out.push(format!("{name} must be an absolute http(s) URL"));
            }
        }
        if self.timeout.is_zero() {
            out.push("--stripe-timeout must be positive".into());
        }
        if self.test_clocks {
            let test_key = self
                .api_key
                .as_deref()
                .is_some_and(|k| k.starts_with("sk_test_") || k.starts_with("rk_test_"));
            let simulator = self
                .api_base
                .as_deref()
                .is_some_and(|b| b.trim_end_matches('/') != tally_stripe::DEFAULT_API_BASE);
            if self.api_key.is_none() {
                out.push("--stripe-test-clocks needs STRIPE_API_KEY".into());
            } else if !(test_key || simulator) {
                out.push("--stripe-test-clocks needs a test key (sk_test_…) or the simulator (STRIPE_API_BASE): test clocks do not exist in live mode".into());
            }
        }
        let e = self.checkout_expiry.as_secs();
        if !(1800..=86_400).contains(&e) {
            out.push("--checkout-expiry must be between 30m and 24h (Stripe's limits)".into());
        }
    }
}

/// Whether `u` is an absolute http(s) URL with a host (what Stripe accepts as a redirect).
pub fn is_web_url(u: &str) -> bool {
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"));
    rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or("");
        !host.is_empty() && u.len() <= 2048 && !u.chars().any(char::is_whitespace)
    })
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &self.database_url)
            .field("catalog", &self.catalog.name)
            .field("admin_key", &self.admin_key.as_ref().map(|_| "<redacted>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("grace", &self.grace)
            .field("close_every", &self.close_every)
            .field("worker_lease", &self.worker_lease)
            .field("dedup_window", &self.dedup_window)
            .field("environment", &self.environment)
            .field("past_due_grace", &self.past_due_grace)
            .field("rate_limits", &self.rate_limits)
            .field("clock_offset", &self.clock.offset())
            .field("header_timeout", &self.header_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connections", &self.max_connections)
            .field("auth_failures_per_minute", &self.auth_failures_per_minute)
            .field("metrics_listen", &self.metrics_listen)
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| "<redacted>"),
            )
            .field("stripe_webhook_secrets", &self.stripe_webhook_secrets.len())
            .field("webhook_max_body_bytes", &self.webhook_max_body_bytes)
            .field("public_url", &self.public_url)
            .field("frame_ancestors", &self.frame_ancestors)
            .field("stripe", &self.stripe)
            .finish()
    }
}

/// Largest number of events in one `POST /v1/events`.
pub const MAX_EVENTS_PER_BATCH: usize = 1000;

/// A configuration mistake.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error("the catalog is invalid:\n{0}")]
    Catalog(String),
}

impl Config {
    /// A config for `database_url` with the example catalog and defaults for everything else.
    pub fn new(database_url: impl Into<String>) -> Result<Config, ConfigError> {
        Ok(Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8585)),
            database_url: database_url.into(),
            catalog: Arc::new(parse_catalog(EXAMPLE_CATALOG, "catalogs/magicbox.toml")?),
            admin_key: None,
            max_body_bytes: 1 << 20,
            grace: Duration::from_secs(3600),
            close_every: Duration::from_secs(60),
            worker_lease: Duration::from_secs(60),
            dedup_window: Duration::from_secs(35 * 86_400),
            dedup_memory_keys: tally_store::DEFAULT_DEDUP_MEMORY_KEYS,
            sqlite_writer_cache_kib: tally_store::DEFAULT_SQLITE_WRITER_CACHE_KIB,
            sqlite_reader_cache_kib: tally_store::DEFAULT_SQLITE_READER_CACHE_KIB,
            environment: "production".into(),
            past_due_grace: Duration::from_secs(7 * 86_400),
            rate_limits: crate::ratelimit::RateLimits::default(),
            clock: Clock::system(),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 0,
            auth_failures_per_minute: 20,
            metrics_listen: None,
            metrics_token: None,
            stripe_webhook_secrets: Vec::new(),
            webhook_max_body_bytes: 1 << 20,
            public_url: None,
            frame_ancestors: "'none'".into(),
            stripe: StripeConfig::default(),
            movable_clock: false,
            email: Default::default(),
        })
    }

    /// Checks every field; the error lists all mistakes, one per line.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let url = self.database_url.as_str();
        if !(url.starts_with("sqlite://")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            problems.push(format!(
                "--database-url / TALLY_DATABASE_URL {url:?} must start with sqlite:// or postgres://"
            ));
        } else if url == "sqlite://" {
            problems
                .push("--database-url sqlite:// needs a file path, e.g. sqlite://tally.db".into());
        }
        if let Some(problem) = self
            .admin_key
            .as_deref()
            .and_then(crate::service::keys::env_key_problem)
        {
            problems.push(problem);
        }
        if self.max_body_bytes < 1024 {
            problems.push(format!(
                "--max-body-bytes {} is too small: at least 1024",
                self.max_body_bytes
            ));
        }
        if self.environment.trim().is_empty() {
            problems.push("--environment / TALLY_ENVIRONMENT must not be empty".into());
        }
        if self.close_every.is_zero() {
            problems.push("the period closer interval must be positive".into());
        }
        if self.worker_lease < Duration::from_secs(1) {
            problems.push("--worker-lease must be at least 1s".into());
        }
        if self.dedup_window < Duration::from_secs(35 * 86_400) {
            problems.push(
                "--dedup-window must be at least 35d (Stripe keeps meter events 35 days)".into(),
            );
        }
        for (name, d) in [
            ("--header-timeout", self.header_timeout),
            ("--body-timeout", self.body_timeout),
            ("--idle-timeout", self.idle_timeout),
        ] {
            if d.is_zero() {
                problems.push(format!("{name} must be positive"));
            }
        }
        if let Some(t) = &self.metrics_token {
            if t.len() < 16 {
                problems.push("TALLY_METRICS_TOKEN must be at least 16 characters long".into());
            }
        }
        if self
            .metrics_listen
            .is_some_and(|m| m == self.listen && m.port() != 0)
        {
            problems.push("--metrics-listen must differ from --listen".into());
        }
        if let Some(u) = &self.public_url {
            if !(u.starts_with("http://") || u.starts_with("https://"))
                || u.contains(char::is_whitespace)
            {
                problems.push(format!(
                    "--public-url {u:?} must be an http:// or https:// URL, e.g. https://billing.example.com"
                ));
            }
        }
        if let Some(problem) = frame_ancestors_problem(&self.frame_ancestors) {
            problems.push(problem);
        }
        self.stripe.problems(&mut problems);
        self.email.problems(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems.join("\n")))
        }
    }
}

/// Why a `--frame-ancestors` value cannot go into a Content-Security-Policy header, if it cannot:
/// it must be one or more space-separated sources, without the `;` and `,` that would end the
/// directive or the policy.
fn frame_ancestors_problem(v: &str) -> Option<String> {
    let bad = v.trim().is_empty()
        || v.chars()
            .any(|c| c == ';' || c == ',' || (c.is_control() && c != ' ') || !c.is_ascii());
    bad.then(|| {
        format!(
            "--frame-ancestors {v:?} must be space-separated CSP sources, e.g. \"'self' https://app.example.com\""
        )
    })
}

impl Config {
    /// The base URL of page links: `--public-url` without a trailing `/`, or `http://<listen>`
    /// (the server sets the bound address at start when `--public-url` is not given).
    pub fn public_base(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }
}

/// Parses a catalog file's text, with every error located.
pub fn parse_catalog(src: &str, file: &str) -> Result<Catalog, ConfigError> {
    Catalog::parse(src, file).map_err(|e| ConfigError::Catalog(e.to_string()))
}

/// Parses durations like `90s`, `15m`, `1h`, `2d` (and plain seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 15m, 1h or 2d"))?;
    let per_unit: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?} has an unknown unit: use s, m, h or d")),
    };
    n.checked_mul(per_unit)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999d").is_err());
    }

    #[test]
    fn every_mistake_is_reported() {
        let mut c = Config::new("mysql://x").unwrap();
        c.admin_key = Some("short".into());
        c.max_body_bytes = 10;
        c.header_timeout = Duration::ZERO;
        c.metrics_token = Some("short".into());
        let msg = c.validate().unwrap_err().to_string();
        assert_eq!(msg.lines().count(), 5, "{msg}");
        assert!(msg.contains("--header-timeout must be positive"));
        assert!(msg.contains("TALLY_METRICS_TOKEN"));
        assert!(msg.contains("sqlite://"));
        assert!(msg.contains("TALLY_API_KEY"));
        assert!(msg.contains("--max-body-bytes"));
    }

    #[test]
    fn an_env_key_that_is_short_or_has_whitespace_is_refused() {
        let mut c = Config::new("sqlite://tally.db").unwrap();
        for bad in [
            " ".repeat(20),
            " ".repeat(40),
            format!("{} x", "k".repeat(31)),
        ] {
            c.admin_key = Some(bad.clone());
            let msg = c.validate().unwrap_err().to_string();
            assert!(msg.starts_with("TALLY_API_KEY must be"), "{bad:?}: {msg}");
        }
        c.admin_key = Some("k".repeat(32));
        assert!(c.validate().is_ok());
    }
}
