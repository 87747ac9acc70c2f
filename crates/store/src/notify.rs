//! The notification outbox and outgoing webhooks.
//!
//! Every moment Tally tells the app about (a usage threshold reached, credits granted, an invoice
//! closed, …) is one row of `notifications`, written in the transaction of the change that causes
//! it where the store makes that change, with a unique `dedup_key` so that the same moment never
//! enqueues twice (a retried request, two processes noticing it, a restart). Its id is derived from
//! that key, so it is stable wherever it is computed.
//!
//! In the same transaction, the notification fans out to one delivery row per enabled webhook
//! endpoint subscribed to its type. The delivery worker claims due deliveries with a lease (so two
//! processes sharing a database deliver each once while both live), only the oldest pending one
//! of each (endpoint, customer) (so an endpoint receives a customer's notifications in order), and
//! records each attempt's outcome.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A notification to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    /// The event type, e.g. `credits.granted`.
    pub kind: String,
    pub customer_id: Option<String>,
    /// The object the event is about (the webhook's `data.object`).
    pub payload: Value,
    /// Unique per moment: a second notification with the same key is not enqueued.
    pub dedup_key: String,
    pub created_at: DateTime<Utc>,
}

impl NewNotification {
    /// The notification's id: `evt_` and 24 hex digits of SHA-256 of its dedup key.
    pub fn id(&self) -> String {
        notification_id(&self.dedup_key)
    }
}

/// The id of the notification whose dedup key is `dedup_key`.
pub fn notification_id(dedup_key: &str) -> String {
    let digest = Sha256::digest(dedup_key.as_bytes());
    format!("evt_{}", hex::encode(&digest[..12]))
}

/// A stored notification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    /// Position in the outbox (orders notifications).
    #[serde(skip)]
    pub seq: i64,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub customer_id: Option<String>,
    pub payload: Value,
    #[serde(skip)]
    pub dedup_key: String,
    pub created_at: DateTime<Utc>,
}

/// Which notifications to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NotificationFilter {
    pub customer_id: Option<String>,
    pub kind: Option<String>,
    /// Only notifications after this position (keyset pagination), oldest first.
    pub after_seq: Option<i64>,
    pub limit: usize,
}

/// A webhook endpoint to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewWebhookEndpoint {
    pub id: String,
    pub url: String,
    /// Event types it receives (`*`: all).
    pub events: Vec<String>,
    pub secret: String,
    pub created_at: DateTime<Utc>,
}

/// A webhook endpoint. Its secrets never serialize (they are shown once, by the API).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookEndpoint {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    /// `enabled` or `disabled` (failing for too long).
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
    /// Since when every attempt failed, if the last one did.
    pub failing_since: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub secret: String,
    #[serde(skip)]
    pub previous_secret: Option<String>,
    /// Until when the previous secret (of the last rotation) signs too.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// `webhook`, or `email` for the channel of customer emails (see [`EMAIL_CHANNEL`]), which
    /// the webhook endpoint API never shows.
    #[serde(skip)]
    pub kind: String,
}

/// The id of the outbox channel that delivers customer emails: an endpoint row of kind `email`,
/// present (not deleted) while SMTP is configured, so that notifications fan out to it as to a
/// webhook endpoint and its deliveries share the claim, order, retry and lag machinery.
pub const EMAIL_CHANNEL: &str = "email";

impl WebhookEndpoint {
    /// The secrets that sign a delivery at `now`: the current one, and the previous one during a
    /// rotation's grace period.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<String> {
        let mut s = vec![self.secret.clone()];
        if let (Some(p), Some(until)) = (&self.previous_secret, self.previous_secret_expires_at) {
            if now < until {
                s.push(p.clone());
            }
        }
        s
    }
}

/// A delivery claimed by a worker: what to send where.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedDelivery {
    pub seq: i64,
    pub endpoint: WebhookEndpoint,
    pub notification: Notification,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryAttempt {
    pub delivery_seq: i64,
    pub endpoint_id: String,
    /// The worker that claimed it (an attempt of a worker whose lease was taken over is ignored).
    pub holder: String,
    pub at: DateTime<Utc>,
    /// The HTTP status, if the endpoint answered.
    pub status_code: Option<u16>,
    /// `None` when delivered; otherwise why not, and when to try again.
    pub failure: Option<(String, DateTime<Utc>)>,
}

/// A delivery as the delivery log shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookDelivery {
    pub id: String,
    pub endpoint_id: String,
    pub notification_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub customer_id: Option<String>,
    /// `pending` or `succeeded`.
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// The delivery log's id of a delivery row.
pub fn delivery_id(seq: i64) -> String {
    format!("whd_{seq}")
}

/// The usage-threshold payload stored for `usage.threshold_reached`.
pub fn usage_payload(n: &crate::UsageNotification) -> Value {
    serde_json::json!({
        "customer": n.customer_id,
        "metric": n.metric,
        "period_start": n.period_start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "threshold": n.threshold,
        "used": n.used.normalize().to_string(),
        "limit": n.limit.normalize().to_string(),
    })
}

/// The dedup key of a usage-threshold notification: once per customer, metric, period and
/// threshold.
pub fn usage_dedup_key(n: &crate::UsageNotification) -> String {
    format!(
        "usage.threshold_reached:{}:{}:{}:{}",
        n.customer_id,
        n.metric,
        n.period_start.timestamp_millis(),
        n.threshold
    )
}

/// Reads a usage-threshold notification back from its outbox row.
pub(crate) fn usage_from_row(
    n: &Notification,
    delivered_at: Option<DateTime<Utc>>,
) -> Option<crate::UsageNotification> {
    let p = &n.payload;
    let dec = |k: &str| p.get(k)?.as_str()?.parse::<rust_decimal::Decimal>().ok();
    Some(crate::UsageNotification {
        id: n.id.clone(),
        customer_id: n.customer_id.clone()?,
        metric: p.get("metric")?.as_str()?.to_owned(),
        period_start: DateTime::parse_from_rfc3339(p.get("period_start")?.as_str()?)
            .ok()?
            .with_timezone(&Utc),
        threshold: u32::try_from(p.get("threshold")?.as_u64()?).ok()?,
        used: dec("used")?,
        limit: dec("limit")?,
        created_at: n.created_at,
        delivered_at,
    })
}

/// The `invoice.closed` notification of an invoice the period closer writes, enqueued in the
/// same transaction (once per invoice).
pub(crate) fn invoice_closed(
    customer_id: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    inv: &crate::NewInvoice,
) -> NewNotification {
    NewNotification {
        kind: "invoice.closed".into(),
        customer_id: Some(customer_id.to_owned()),
        payload: serde_json::json!({
            "id": inv.id,
            "customer": customer_id,
            "plan": inv.plan,
            "interval": inv.interval,
            "period_start": start,
            "period_end": end,
            "currency": inv.currency,
            "subtotal": inv.subtotal,
            "discount": inv.discount,
            "total": inv.total,
        }),
        dedup_key: format!("invoice.closed:{}", inv.id),
        created_at: inv.created_at,
    }
}
