//! State shared by handlers and workers.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tally_core::catalog::Catalog;
use tally_core::period::Period;
use tally_store::clock::SharedClock;
use tally_store::Store;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::service::keys::Caller;

/// Shared state: cheap to clone (one reference count: handlers and middleware clone it several
/// times per request).
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

impl std::ops::Deref for AppState {
    type Target = SharedState;
    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct SharedState {
    pub store: Arc<dyn Store>,
    pub catalog: Arc<Catalog>,
    pub config: Arc<Config>,
    /// The one clock "now" is read from (see [`tally_store::clock`]).
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    /// Customer id → allowance anchor. Customers are never deleted; an anchor changes only when
    /// a Stripe subscription is mirrored, which moves the store's anchor version, and every
    /// process drops this cache when it sees the version move (see [`crate::service::sync`]).
    /// Misses go to the store (other processes may create customers).
    pub anchors: Arc<RwLock<HashMap<String, CustomerAnchor>>>,
    /// In-memory state of credits, entitlements and rate limits.
    pub credits: Arc<crate::service::credits::Shared>,
    /// Automatic top-ups' settings cache and worker wake-up.
    pub topups: Arc<crate::service::topups::Shared>,
    /// Hashes of stored API keys recently found valid, with when they were checked and the key's
    /// id, scope and customer: a key is looked up in the database at most every
    /// [`KEY_CACHE_TTL`], so a revoked key stops working within that time.
    pub key_cache: Arc<RwLock<HashMap<String, (Instant, Caller)>>>,
    /// Database lookups of API keys so far (cache misses of well-formed secrets).
    pub key_lookups: Arc<AtomicU64>,
    /// The caller of `TALLY_API_KEY`, when it is set.
    pub env_caller: Option<Caller>,
    /// Signed-in admins of the console.
    pub admin_sessions: Arc<crate::service::admin::Sessions>,
    /// This process's id among the processes sharing a database (for leases).
    pub instance_id: Arc<str>,
    /// Wakes the Stripe event worker when the webhook route stores a new event.
    pub stripe_inbox: Arc<tokio::sync::Notify>,
    /// Tally's Stripe client, when `STRIPE_API_KEY` is set.
    pub stripe: Option<tally_stripe::Client>,
    /// The last answer and failure of Stripe, as Tally's own requests found them (`/health`).
    pub stripe_status: Arc<crate::metrics::StripeStatus>,
    /// Sends customer emails, when SMTP is configured.
    pub mailer: Option<Arc<crate::service::email::Mailer>>,
}

/// A customer's allowance anchor, with its current allowance period so that events of that
/// period need no calendar arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomerAnchor {
    /// When the customer was created: earlier events are refused.
    pub at: DateTime<Utc>,
    /// Where its allowance periods are anchored.
    pub allowance: tally_core::period::AllowanceAnchor,
    /// The allowance period (of `at`) containing the time it was computed, updated when a batch
    /// finds that the current period has moved on.
    pub period: Period,
}

/// How long a stored key's validity is cached.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(10);

impl AppState {
    pub fn new(config: Config, store: Arc<dyn Store>) -> AppState {
        let env_caller = config.admin_key.as_deref().map(Caller::env);
        let metrics = Arc::new(Metrics::default());
        let stripe_status = Arc::new(crate::metrics::StripeStatus::default());
        let observer = Arc::new(crate::metrics::StripeObserver {
            metrics: metrics.clone(),
            status: stripe_status.clone(),
            clock: config.clock.clone(),
        });
        let stripe = config.stripe.client_config().and_then(|cfg| {
            tally_stripe::Client::new(cfg)
                .map(|c| c.with_observer(observer))
                .map_err(|e| tracing::error!(error = %e, "the Stripe client cannot be built"))
                .ok()
        });
        let mailer = crate::service::email::Mailer::from_config(&config.email)
            .map_err(|e| tracing::error!(error = %e, "customer emails cannot be sent"))
            .ok()
            .flatten()
            .map(Arc::new);
        AppState(Arc::new(SharedState {
            mailer,
            env_caller,
            store,
            catalog: config.catalog.clone(),
            clock: config.clock.clone(),
            config: Arc::new(config),
            metrics,
            stripe_status,
            anchors: Arc::new(RwLock::new(HashMap::new())),
            credits: Arc::default(),
            topups: Arc::default(),
            key_cache: Arc::new(RwLock::new(HashMap::new())),
            key_lookups: Arc::default(),
            instance_id: instance_id().into(),
            stripe_inbox: Arc::default(),
            stripe,
            admin_sessions: Arc::default(),
        }))
    }
}

/// A random id for this process.
fn instance_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 8];
    rand::rng().fill_bytes(&mut b);
    format!("tally_{}_{}", std::process::id(), hex::encode(b))
}
