//! The audit log: one row per mutation an operator or API key makes, written in the same
//! transaction as the change (so a failed change records nothing and a change that changes nothing,
//! such as a retried request, records nothing either).
//!
//! High-volume writes of the hot path (usage events, credit consumption) are not audited here:
//! their own ledgers (the events table, the credit ledger with its `actor`) record them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

/// Who makes a change, passed to the store's audited writes.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditContext {
    /// The API key id (`env_…` for `TALLY_API_KEY`, `cli` for operator commands).
    pub actor: String,
    /// The request's idempotency key, if it had one.
    pub idempotency_key: Option<String>,
    pub at: DateTime<Utc>,
}

/// A row to write.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// What happened, as `<target type>.<verb>` (e.g. `customer.updated`).
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub customer_id: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub context: AuditContext,
}

impl AuditEntry {
    /// The entry of a change of `target` from `before` to `after`, or `None` when nothing but
    /// `updated_at` differs (a repeated request changes nothing and records nothing).
    pub fn of_change(
        context: AuditContext,
        target_type: &str,
        target_id: &str,
        customer_id: Option<&str>,
        before: Option<Value>,
        after: Option<Value>,
    ) -> Option<AuditEntry> {
        if without_updated_at(before.as_ref()) == without_updated_at(after.as_ref()) {
            return None;
        }
        let verb = match (&before, &after) {
            (None, _) => "created",
            (Some(_), None) => "deleted",
            (Some(_), Some(_)) => "updated",
        };
        Some(AuditEntry {
            action: format!("{target_type}.{verb}"),
            target_type: target_type.to_owned(),
            target_id: target_id.to_owned(),
            customer_id: customer_id.map(str::to_owned),
            before,
            after,
            context,
        })
    }
}

fn without_updated_at(v: Option<&Value>) -> Option<Value> {
    v.map(|v| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("updated_at");
        }
        v
    })
}

/// What a row is about.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditTarget {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: Option<String>,
}

/// A stored audit row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    /// `aud_<sequence number>`: ascending with time.
    pub id: String,
    pub at: DateTime<Utc>,
    pub actor: Option<String>,
    pub action: String,
    pub target: AuditTarget,
    #[serde(rename = "customer")]
    pub customer_id: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub idempotency_key: Option<String>,
}

/// The prefix of audit row ids.
pub const AUDIT_ID_PREFIX: &str = "aud_";

/// The id of the row with sequence number `seq`.
pub fn audit_id(seq: i64) -> String {
    format!("{AUDIT_ID_PREFIX}{seq}")
}

/// The sequence number of an audit row id, if it is one.
pub fn audit_seq(id: &str) -> Option<i64> {
    id.strip_prefix(AUDIT_ID_PREFIX)?
        .parse()
        .ok()
        .filter(|s| *s > 0)
}

/// Which rows to list, newest first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuditFilter {
    pub customer_id: Option<String>,
    pub actor: Option<String>,
    /// Rows at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Rows older than the row with this sequence number (the previous page's last row).
    pub before_seq: Option<i64>,
    pub limit: usize,
}

/// A page of rows, newest first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuditPage {
    pub records: Vec<AuditRecord>,
    /// Whether older rows match beyond this page.
    pub has_more: bool,
}
