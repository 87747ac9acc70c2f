//! State shared by handlers and workers.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tally_core::catalog::Catalog;
use tally_store::Store;

use crate::config::Config;
use crate::metrics::Metrics;

/// Shared state: cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub catalog: Arc<Catalog>,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// Customer id → allowance anchor. Customers are never deleted and anchors never change, so
    /// entries never go stale; misses go to the store (other processes may create customers).
    pub anchors: Arc<RwLock<HashMap<String, DateTime<Utc>>>>,
    /// In-memory state of credits, entitlements and rate limits.
    pub credits: Arc<crate::service::credits::Shared>,
    /// Hashes of stored API keys recently found valid, with when they were checked and the key's
    /// id: a key is looked up in the database at most every [`KEY_CACHE_TTL`], so a revoked key
    /// stops working within that time.
    pub key_cache: Arc<RwLock<HashMap<String, (Instant, String)>>>,
}

/// How long a stored key's validity is cached.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(10);

impl AppState {
    pub fn new(config: Config, store: Arc<dyn Store>) -> AppState {
        AppState {
            store,
            catalog: config.catalog.clone(),
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            anchors: Arc::new(RwLock::new(HashMap::new())),
            credits: Arc::default(),
            key_cache: Arc::new(RwLock::new(HashMap::new())),
        }
    }
}
