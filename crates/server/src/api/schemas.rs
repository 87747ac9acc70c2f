//! OpenAPI schemas of response bodies whose types live in the store crate (which does not depend
//! on utoipa). Documentation only: each mirrors the store type's JSON field for field, and the
//! OpenAPI fuzz test checks real answers against them.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use serde::Serialize;
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
    /// The customer receives no email from Tally (see docs/notifications.md).
    email_opt_out: bool,
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
    /// The API key id (`key_…`, `env_…`) or `cli`.
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

/// A webhook endpoint (its secret is shown only when created or rotated).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEndpoint {
    /// `we_…`.
    pub id: String,
    pub url: String,
    /// Event types it receives (`*`: all), sorted.
    pub events: Vec<String>,
    /// `enabled`, or `disabled` after failing for 3 days.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
    /// Since when every delivery attempt failed, if the last one did.
    pub failing_since: Option<DateTime<Utc>>,
    /// Until when the secret replaced by the last rotation signs too.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

impl From<tally_store::WebhookEndpoint> for WebhookEndpoint {
    fn from(e: tally_store::WebhookEndpoint) -> Self {
        WebhookEndpoint {
            id: e.id,
            url: e.url,
            events: e.events,
            status: e.status,
            created_at: e.created_at,
            disabled_at: e.disabled_at,
            failing_since: e.failing_since,
            previous_secret_expires_at: e.previous_secret_expires_at,
        }
    }
}

/// Body of `GET /v1/webhook-endpoints`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEndpointList {
    /// Oldest first.
    pub data: Vec<WebhookEndpoint>,
}

/// One notification's delivery to one endpoint.
#[derive(ToSchema)]
pub struct WebhookDelivery {
    /// `whd_…`.
    id: String,
    endpoint_id: String,
    /// The event id (`evt_…`), the same at every attempt and replay.
    notification_id: String,
    #[schema(rename = "type")]
    kind: String,
    customer_id: Option<String>,
    /// `pending` or `succeeded`.
    status: String,
    attempts: u32,
    next_attempt_at: Option<DateTime<Utc>>,
    last_status_code: Option<u16>,
    last_error: Option<String>,
    last_attempt_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
}

/// Body of `GET /v1/webhook-endpoints/{endpoint}/deliveries`.
#[derive(ToSchema)]
pub struct WebhookDeliveryList {
    /// Newest first.
    data: Vec<WebhookDelivery>,
}
