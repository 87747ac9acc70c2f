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

/// The live sessions, by token hash, and unused one-time sign-in links (by code hash: the admin
/// key's id and when the link expires).
#[derive(Default)]
pub struct Sessions(
    Mutex<HashMap<String, AdminSession>>,
    Mutex<HashMap<String, (Caller, DateTime<Utc>)>>,
);

/// How long a one-time sign-in link works.
pub const LINK_TTL: Duration = Duration::minutes(15);

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

    /// A one-time sign-in link's code for an admin caller (`tally demo` prints one); `None` for
    /// any other scope. The code works once, within [`LINK_TTL`].
    pub fn link(&self, caller: &Caller, now: DateTime<Utc>) -> Option<String> {
        if caller.scope != Scope::Admin {
            return None;
        }
        let code = secret();
        let mut links = self.1.lock().ok()?;
        links.retain(|_, (_, until)| *until > now);
        links.insert(hash_api_secret(&code), (caller.clone(), now + LINK_TTL));
        Some(code)
    }

    /// Uses a one-time sign-in link: a new session's token, or `None` for an unknown, used or
    /// expired code.
    pub fn redeem_link(&self, code: &str, now: DateTime<Utc>) -> Option<String> {
        let (caller, until) = self.1.lock().ok()?.remove(&hash_api_secret(code))?;
        if until <= now {
            return None;
        }
        self.start(&caller, now)
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
