//! API keys: creation (secret shown once, stored hashed), scopes, and request authentication.
//!
//! A key has a scope, like Stripe's restricted keys: `admin` may do everything, `app` what an
//! app's backend needs on its hot path, `read` only `GET`. A key may also be limited to one
//! customer. Which scope each route needs is decided in `api::required_access`.

use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tally_store::{hash_api_secret, ApiKey, AuditContext, NewApiKey, Store, StoreError};

use crate::error::ApiError;
use crate::state::{AppState, KEY_CACHE_TTL};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Prefix of every secret Tally generates, so leaked keys are recognisable.
pub const SECRET_PREFIX: &str = "tly_";

/// Random bytes of a generated secret (hex-encoded after the prefix).
const SECRET_BYTES: usize = 24;

/// Length of every secret Tally generates.
pub const SECRET_LEN: usize = SECRET_PREFIX.len() + 2 * SECRET_BYTES;

/// Shortest accepted `TALLY_API_KEY`.
pub const MIN_ENV_KEY_LEN: usize = 32;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything, including grants, refunds, key and catalog administration.
    Admin,
    /// An app's backend: events, entitlement checks, credit consumption, customer upserts, and
    /// reading customers, usage, invoices, plans and flags.
    App,
    /// `GET` only.
    Read,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Admin, Scope::App, Scope::Read];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::App => "app",
            Scope::Read => "read",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether this scope may call a route that needs `access`.
    pub fn allows(self, access: Access) -> bool {
        match access {
            Access::Read => true,
            Access::App => matches!(self, Scope::Admin | Scope::App),
            Access::Admin => self == Scope::Admin,
        }
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Any key (a `GET`).
    Read,
    /// An `app` or `admin` key.
    App,
    /// An `admin` key.
    Admin,
}

/// Who is calling: the authenticated key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's id (`env_…` for `TALLY_API_KEY`): the actor of the audit log and the ledger.
    pub key_id: String,
    pub scope: Scope,
    /// The one customer the key may act for.
    pub customer: Option<String>,
}

impl Caller {
    /// The caller of `TALLY_API_KEY`: an admin whose id is derived from the key, so the env keys
    /// of different deployments are told apart in the audit log.
    pub fn env(key: &str) -> Caller {
        let digest = hex::encode(Sha256::digest(key.as_bytes()));
        Caller {
            key_id: format!("env_{}", &digest[..12]),
            scope: Scope::Admin,
            customer: None,
        }
    }

    /// 403 `customer_forbidden` unless the key may act for `customer`.
    pub fn check_customer(&self, customer: &str) -> Result<(), ApiError> {
        match &self.customer {
            Some(own) if own != customer => Err(ApiError::customer_forbidden(format!(
                "this API key may only act for customer {own:?}"
            ))),
            _ => Ok(()),
        }
    }

    /// The audit context of a change this caller makes now.
    pub fn audit(&self, idempotency_key: Option<String>, at: DateTime<Utc>) -> AuditContext {
        AuditContext {
            actor: self.key_id.clone(),
            idempotency_key,
            at,
        }
    }

    fn of_key(k: &ApiKey) -> Option<Caller> {
        Some(Caller {
            key_id: k.id.clone(),
            scope: Scope::parse(&k.scope)?,
            customer: k.customer_id.clone(),
        })
    }
}

/// Why a key cannot be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateKeyError {
    #[error("an admin key cannot be limited to one customer: use --scope app or read")]
    AdminForOneCustomer,
    #[error("invalid customer id {0:?}")]
    InvalidCustomer(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates a key; returns the record and the secret, which is not stored and cannot be shown
/// again. With `audit`, the creation is recorded in the audit log.
pub async fn create(
    store: &dyn Store,
    name: &str,
    scope: Scope,
    customer: Option<&str>,
    audit: Option<AuditContext>,
    now: DateTime<Utc>,
) -> Result<(ApiKey, String), CreateKeyError> {
    if let Some(c) = customer {
        if scope == Scope::Admin {
            return Err(CreateKeyError::AdminForOneCustomer);
        }
        if !tally_store::is_valid_customer_id(c) {
            return Err(CreateKeyError::InvalidCustomer(c.to_owned()));
        }
    }
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("{SECRET_PREFIX}{}", hex::encode(bytes));
    let mut id = [0u8; 8];
    rand::rng().fill_bytes(&mut id);
    let key = store
        .create_api_key_audited(
            NewApiKey {
                id: format!("key_{}", hex::encode(id)),
                name: name.to_owned(),
                scope: scope.as_str().to_owned(),
                customer_id: customer.map(str::to_owned),
                secret_hash: hash_api_secret(&secret),
                created_at: now,
            },
            audit,
        )
        .await?;
    Ok((key, secret))
}

/// Whether `secret` has the form of a secret Tally generates: the prefix and lowercase hex of
/// the exact length. Anything else is refused without hashing it or reading the database.
pub fn could_exist(secret: &str) -> bool {
    secret.len() == SECRET_LEN
        && secret.starts_with(SECRET_PREFIX)
        && secret.as_bytes()[SECRET_PREFIX.len()..]
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Why `TALLY_API_KEY` is unusable, if it is.
pub fn env_key_problem(key: &str) -> Option<String> {
    if key.len() < MIN_ENV_KEY_LEN {
        return Some(format!(
            "TALLY_API_KEY must be at least {MIN_ENV_KEY_LEN} characters long (it has {})",
            key.chars().count()
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Some(
            "TALLY_API_KEY must be printable ASCII without whitespace (e.g. `openssl rand -hex 32`)"
                .into(),
        );
    }
    None
}

/// Constant-time comparison of two secrets.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks an `Authorization` header value; returns who is calling.
pub async fn authenticate(state: &AppState, header: Option<&str>) -> Result<Caller, ApiError> {
    let Some(h) = header else {
        return Err(ApiError::unauthorized(
            "missing Authorization: Bearer <api key>",
        ));
    };
    let Some(secret) = h
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
    else {
        return Err(ApiError::unauthorized(
            "the Authorization header must be Bearer <api key>",
        ));
    };
    if let (Some(admin), Some(caller)) = (&state.config.admin_key, &state.env_caller) {
        if same(admin.as_bytes(), secret.as_bytes()) {
            return Ok(caller.clone());
        }
    }
    if !could_exist(secret) {
        return Err(ApiError::unauthorized("invalid API key"));
    }
    let hash = hash_api_secret(secret);
    let fresh = state.key_cache.read().ok().and_then(|c| {
        c.get(&hash)
            .filter(|(at, _)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(_, caller)| caller.clone())
    });
    if let Some(caller) = fresh {
        return Ok(caller);
    }
    state.key_lookups.fetch_add(1, Ordering::Relaxed);
    match state
        .store
        .find_api_key(&hash)
        .await?
        .and_then(|k| Caller::of_key(&k))
    {
        Some(caller) => {
            if let Ok(mut c) = state.key_cache.write() {
                c.retain(|_, (at, _)| at.elapsed() < KEY_CACHE_TTL);
                c.insert(hash, (Instant::now(), caller.clone()));
            }
            Ok(caller)
        }
        None => {
            if let Ok(mut c) = state.key_cache.write() {
                c.remove(&hash);
            }
            Err(ApiError::unauthorized("invalid API key"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_could_exist_and_others_cannot() {
        let ok = format!("{SECRET_PREFIX}{}", "0a".repeat(SECRET_BYTES));
        assert!(could_exist(&ok));
        assert!(!could_exist(&ok[..SECRET_LEN - 1]));
        assert!(!could_exist(&format!("{ok}0")));
        assert!(!could_exist(&ok.replace("tly_", "tlx_")));
        assert!(!could_exist(&ok.to_uppercase()));
        assert!(!could_exist(&format!(
            "{SECRET_PREFIX}{}",
            "zz".repeat(SECRET_BYTES)
        )));
    }

    #[test]
    fn env_keys_are_checked() {
        assert!(env_key_problem(&" ".repeat(20)).is_some());
        assert!(env_key_problem(&" ".repeat(40)).is_some());
        assert!(env_key_problem(&format!("{}\t", "a".repeat(40))).is_some());
        assert!(env_key_problem(&"é".repeat(20)).is_some());
        assert_eq!(env_key_problem(&"a".repeat(32)), None);
    }

    #[test]
    fn env_actor_is_stable_and_distinct() {
        let a = Caller::env(&"a".repeat(32));
        assert_eq!(a, Caller::env(&"a".repeat(32)));
        assert_ne!(a.key_id, Caller::env(&"b".repeat(32)).key_id);
        assert_eq!(a.key_id.len(), "env_".len() + 12);
        assert_eq!(a.scope, Scope::Admin);
    }
}
