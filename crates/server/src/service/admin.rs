//! Admin console sessions: an admin API key, given once in the sign-in form, becomes a session
//! cookie. Sessions live in this process (a restart signs admins out; behind several instances,
//! route `/admin` to one of them or sign in on each). Only hashes of session tokens are kept.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use tally_store::hash_api_secret;

use super::keys::{Caller, Scope};

/// A session ends after this long without a request.
pub const IDLE_TTL: Duration = Duration::minutes(60);
/// … and this long after sign-in.
pub const ABSOLUTE_TTL: Duration = Duration::hours(12);
/// Most sessions kept at once; signing in beyond it drops the oldest.
const MAX_SESSIONS: usize = 1000;

/// A signed-in admin.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminSession {
    /// The API key the admin signed in with: the actor of the console's changes.
    pub key_id: String,
    /// The token every form of this session carries (checked on every `POST`).
    pub csrf: String,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

/// The live sessions, by token hash.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, AdminSession>>);

fn secret() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl Sessions {
    /// Starts a session for an admin caller; `None` for any other scope. Returns the token.
    pub fn start(&self, caller: &Caller, now: DateTime<Utc>) -> Option<String> {
        if caller.scope != Scope::Admin {
            return None;
        }
        let token = secret();
        let mut map = self.0.lock().ok()?;
        map.retain(|_, s| live(s, now));
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.started_at)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            hash_api_secret(&token),
            AdminSession {
                key_id: caller.key_id.clone(),
                csrf: secret(),
                started_at: now,
                last_seen_at: now,
            },
        );
        Some(token)
    }

    /// The live session of `token`, its idle timer restarted.
    pub fn touch(&self, token: &str, now: DateTime<Utc>) -> Option<AdminSession> {
        let mut map = self.0.lock().ok()?;
        let key = hash_api_secret(token);
        let s = map.get_mut(&key)?;
        if !live(s, now) {
            map.remove(&key);
            return None;
        }
        s.last_seen_at = now;
        Some(s.clone())
    }

    /// Signs a session out.
    pub fn end(&self, token: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(&hash_api_secret(token));
        }
    }
}

fn live(s: &AdminSession, now: DateTime<Utc>) -> bool {
    s.last_seen_at > now - IDLE_TTL && s.started_at > now - ABSOLUTE_TTL
}
