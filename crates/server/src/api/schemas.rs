//! OpenAPI schemas of response bodies whose types live in the store crate (which does not depend
//! on utoipa). Documentation only: each mirrors the store type's JSON field for field, and the
//! OpenAPI fuzz test checks real answers against them.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use utoipa::ToSchema;

/// A customer.
#[derive(ToSchema)]
pub struct Customer {
    id: String,
    email: Option<String>,
    name: Option<String>,
    /// String values chosen by the app.
    #[schema(value_type = Object)]
    metadata: serde_json::Value,
    /// The instant usage allowances are anchored on (monthly from here).
    billing_anchor: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// A customer's subscription.
#[derive(ToSchema)]
pub struct Subscription {
    id: String,
    customer_id: String,
    plan: String,
    /// `month` or `year`.
    interval: String,
    /// trialing, active, past_due, canceled, unpaid, incomplete, paused.
    status: String,
    /// `local` or `stripe`.
    source: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// A per-customer feature-flag override.
#[derive(ToSchema)]
pub struct FlagOverride {
    customer_id: String,
    flag: String,
    enabled: bool,
    updated_at: DateTime<Utc>,
}

/// An audit log record: what changed (`target`), its state before and after, who changed it.
#[derive(ToSchema)]
pub struct AuditRecord {
    /// `aud_<sequence number>`: ascending with time.
    id: String,
    at: DateTime<Utc>,
    actor: Option<String>,
    /// `<target type>.<verb>`, e.g. `customer.updated`.
    action: String,
    target: AuditTargetSchema,
    customer: Option<String>,
    #[schema(value_type = Option<Object>)]
    before: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    after: Option<serde_json::Value>,
    idempotency_key: Option<String>,
}

/// What an audit row is about.
#[derive(ToSchema)]
#[schema(as = AuditTarget)]
pub struct AuditTargetSchema {
    #[schema(rename = "type")]
    kind: String,
    id: Option<String>,
}

/// Body of `GET /v1/customers/{id}/audit`.
#[derive(ToSchema)]
pub struct AuditList {
    /// Newest first.
    data: Vec<AuditRecord>,
}

/// Body of `GET /v1/audit`.
#[derive(ToSchema)]
pub struct AuditPage {
    /// Newest first.
    data: Vec<AuditRecord>,
    /// Whether older rows follow (ask again with `starting_after`).
    has_more: bool,
}

/// A usage-threshold notification in the outbox.
#[derive(ToSchema)]
pub struct UsageNotification {
    id: String,
    customer_id: String,
    metric: String,
    period_start: DateTime<Utc>,
    /// Percent of the limit crossed (e.g. 80, 95, 100).
    threshold: u32,
    /// A decimal.
    used: String,
    /// A decimal.
    limit: String,
    created_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
}

/// Body of `GET /v1/customers/{id}/notifications`.
#[derive(ToSchema)]
pub struct NotificationList {
    /// Oldest first.
    data: Vec<UsageNotification>,
}
