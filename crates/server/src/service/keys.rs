//! API keys: creation (secret shown once, stored hashed) and request authentication.

use chrono::Utc;
use rand::RngCore;
use tally_store::{hash_api_secret, ApiKey, NewApiKey, Store};

use crate::error::ApiError;
use crate::state::{AppState, KEY_CACHE_TTL};
use std::time::Instant;

/// Prefix of every secret Tally generates, so leaked keys are recognisable.
pub const SECRET_PREFIX: &str = "tly_";

/// Creates an admin key; returns the record and the secret, which is not stored and cannot be
/// shown again.
pub async fn create(
    store: &dyn Store,
    name: &str,
) -> Result<(ApiKey, String), tally_store::StoreError> {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("{SECRET_PREFIX}{}", hex::encode(bytes));
    let mut id = [0u8; 8];
    rand::rng().fill_bytes(&mut id);
    let key = store
        .create_api_key(NewApiKey {
            id: format!("key_{}", hex::encode(id)),
            name: name.to_owned(),
            role: "admin".into(),
            secret_hash: hash_api_secret(&secret),
            created_at: Utc::now(),
        })
        .await?;
    Ok((key, secret))
}

/// Constant-time comparison of two secrets.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks an `Authorization` header value; returns who is calling: the key's id, or `env` for
/// `TALLY_API_KEY`.
pub async fn authenticate(state: &AppState, header: Option<&str>) -> Result<String, ApiError> {
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
    if let Some(admin) = &state.config.admin_key {
        if same(admin.as_bytes(), secret.as_bytes()) {
            return Ok("env".to_owned());
        }
    }
    let hash = hash_api_secret(secret);
    let fresh = state.key_cache.read().ok().and_then(|c| {
        c.get(&hash)
            .filter(|(at, _)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(_, id)| id.clone())
    });
    if let Some(id) = fresh {
        return Ok(id);
    }
    match state.store.find_api_key(&hash).await? {
        Some(k) => {
            if let Ok(mut c) = state.key_cache.write() {
                c.retain(|_, (at, _)| at.elapsed() < KEY_CACHE_TTL);
                c.insert(hash, (Instant::now(), k.id.clone()));
            }
            Ok(k.id)
        }
        None => {
            if let Ok(mut c) = state.key_cache.write() {
                c.remove(&hash);
            }
            Err(ApiError::unauthorized("invalid API key"))
        }
    }
}
