//! Page sessions: the one-time links an app's backend mints for a customer's billing page, and the
//! sessions they become. Only SHA-256 hashes of the link's code and of the session token are stored.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// A page session to create (its link not yet used).
#[derive(Debug, Clone)]
pub struct NewPageSession {
    /// `ps_…`, the id the app revokes it by.
    pub id: String,
    pub customer_id: String,
    /// Hash of the link's one-time code.
    pub code_hash: String,
    /// The locale money and dates are shown in (`en`, `de`, …).
    pub locale: String,
    /// Where the page's "back" link goes.
    pub return_url: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The link must be used before this instant.
    pub code_expires_at: DateTime<Utc>,
}

/// A page session as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PageSession {
    pub id: String,
    pub customer_id: String,
    pub locale: String,
    pub return_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub code_expires_at: DateTime<Utc>,
    /// When the link was used (the session started); `None` while the link is unused.
    pub redeemed_at: Option<DateTime<Utc>>,
    /// The session's last request.
    pub last_seen_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The limits a session is checked against when it is used.
#[derive(Debug, Clone, Copy)]
pub struct PageSessionCheck {
    pub now: DateTime<Utc>,
    /// The session's previous request must be after this (idle expiry).
    pub idle_after: DateTime<Utc>,
    /// The session must have started after this (absolute expiry).
    pub started_after: DateTime<Utc>,
}
