//! Outgoing webhooks: endpoint management and the delivery worker.
//!
//! Notifications are enqueued by the store in the transaction of the change that causes them (see
//! [`tally_store::notify`]); [`enqueue`] is the one call for moments outside the store. The
//! worker claims due deliveries with a lease, POSTs each as a Stripe-shaped event signed with
//! `Tally-Signature` (Stripe's scheme), and records the outcome: a 2xx delivers, anything else is
//! retried with exponential backoff; an endpoint failing for [`DISABLE_AFTER`] is disabled,
//! logged, counted and announced by a `webhook_endpoint.disabled` notification.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tally_store::{
    AuditContext, ClaimedDelivery, DeliveryAttempt, NewNotification, NewWebhookEndpoint,
    WebhookEndpoint,
};
use tokio::sync::watch;
use utoipa::ToSchema;

use super::worker;
use crate::error::ApiError;
use crate::state::AppState;

/// Every event type Tally sends (endpoints subscribe to these or to `*`).
pub const EVENT_TYPES: &[&str] = &[
    "credits.depleted",
    "credits.granted",
    "credits.low",
    "credits.purchased",
    "invoice.closed",
    "invoice.paid",
    "invoice.payment_failed",
    "payment.action_required",
    "subscription.canceled",
    "subscription.created",
    "subscription.trial_will_end",
    "subscription.updated",
    "topup.failed",
    "topup.succeeded",
    "usage.threshold_reached",
    "webhook_endpoint.disabled",
];

/// An endpoint failing for this long is disabled.
pub const DISABLE_AFTER: chrono::Duration = chrono::Duration::days(3);
/// The first retry waits this long; each next one twice as long, up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY: i64 = 30;
const MAX_RETRY_DELAY: i64 = 6 * 3600;
/// Deliveries claimed per round (each the worker's for `--worker-lease`: a worker that dies loses
/// them after it).
const BATCH: usize = 256;
/// How often an idle worker looks for due deliveries.
const POLL: Duration = Duration::from_millis(200);
/// Per-request limits of a delivery.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default grace period of a rotation, in seconds.
pub const DEFAULT_ROTATION_GRACE: i64 = 24 * 3600;

/// Enqueues a notification for a moment outside the store's own writes (the Stripe services,
/// the period closer): `kind` is one of [`EVENT_TYPES`], `dedup_key` names the moment (e.g.
/// `invoice.paid:in_123`) so that enqueuing it again does nothing. Returns whether it was new.
pub async fn enqueue(
    state: &AppState,
    kind: &str,
    customer_id: Option<&str>,
    payload: serde_json::Value,
    dedup_key: String,
) -> Result<bool, ApiError> {
    Ok(state
        .store
        .enqueue_notification(NewNotification {
            kind: kind.to_owned(),
            customer_id: customer_id.map(str::to_owned),
            payload,
            dedup_key,
            created_at: state.clock.now(),
        })
        .await?)
}

/// Body of `POST /v1/webhook-endpoints`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointInput {
    /// Where to POST events: an `http://` or `https://` URL.
    pub url: String,
    /// Event types to receive, or `["*"]` for all.
    pub events: Vec<String>,
}

/// Body of `POST /v1/webhook-endpoints/{endpoint}/rotate`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateInput {
    /// How long the previous secret keeps signing, in seconds (0–604800; default 86400).
    pub expires_in: Option<i64>,
}

/// An endpoint with its signing secret, answered once (on creation and rotation).
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointWithSecret {
    #[serde(flatten)]
    #[schema(inline)]
    pub endpoint: crate::api::schemas::WebhookEndpoint,
    /// `whsec_…`: verify `Tally-Signature` with it. Shown only now.
    pub secret: String,
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn check_url(url: &str) -> Result<(), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_webhook_url",
            "url must be an absolute http:// or https:// URL",
        )
        .with_param("url")
    };
    let parsed = reqwest::Url::parse(url).map_err(|_| bad())?;
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.host_str().is_none()
        || url.len() > 2048
    {
        return Err(bad());
    }
    Ok(())
}

fn check_events(events: &[String]) -> Result<(), ApiError> {
    if events.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_webhook_events",
            "events must name at least one event type, or \"*\"",
        )
        .with_param("events"));
    }
    for e in events {
        if e != "*" && !EVENT_TYPES.contains(&e.as_str()) {
            return Err(ApiError::bad_request(
                "invalid_webhook_events",
                format!("unknown event type {e:?}; see docs/notifications.md for the list"),
            )
            .with_param("events"));
        }
    }
    Ok(())
}

/// A new signing secret: `whsec_` and 48 hex digits (192 random bits).
pub fn new_secret() -> String {
    format!("whsec_{}", random_hex(24))
}

/// Validates an endpoint to register and gives it an id and a secret.
pub fn new_endpoint(
    input: EndpointInput,
    now: DateTime<Utc>,
) -> Result<NewWebhookEndpoint, ApiError> {
    check_url(&input.url)?;
    check_events(&input.events)?;
    Ok(NewWebhookEndpoint {
        id: format!("we_{}", random_hex(12)),
        url: input.url,
        events: input.events,
        secret: new_secret(),
        created_at: now,
    })
}

/// Registers an endpoint; its secret is answered once.
pub async fn create_endpoint(
    state: &AppState,
    input: EndpointInput,
    audit: AuditContext,
) -> Result<EndpointWithSecret, ApiError> {
    let new = new_endpoint(input, state.clock.now())?;
    let secret = new.secret.clone();
    let endpoint = state
        .store
        .create_webhook_endpoint_audited(new, Some(audit))
        .await?;
    tracing::info!(endpoint = %endpoint.id, url = %endpoint.url, "webhook endpoint created");
    Ok(EndpointWithSecret {
        endpoint: endpoint.into(),
        secret,
    })
}

fn no_endpoint(id: &str) -> ApiError {
    ApiError::not_found(
        "webhook_endpoint_not_found",
        format!("no webhook endpoint {id:?}"),
    )
    .with_param("endpoint")
}

/// Replaces an endpoint's secret; the previous one keeps signing for the grace period.
pub async fn rotate(
    state: &AppState,
    id: &str,
    input: RotateInput,
    audit: AuditContext,
) -> Result<EndpointWithSecret, ApiError> {
    let until = rotation_grace_end(input.expires_in, state.clock.now())?;
    let secret = new_secret();
    let endpoint = state
        .store
        .rotate_webhook_endpoint_secret_audited(id, &secret, until, Some(audit))
        .await?
        .ok_or_else(|| no_endpoint(id))?;
    Ok(EndpointWithSecret {
        endpoint: endpoint.into(),
        secret,
    })
}

/// Until when the previous secret of a rotation at `now` signs, from `expires_in` seconds.
pub fn rotation_grace_end(
    expires_in: Option<i64>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, ApiError> {
    let grace = expires_in.unwrap_or(DEFAULT_ROTATION_GRACE);
    if !(0..=7 * 24 * 3600).contains(&grace) {
        return Err(ApiError::bad_request(
            "invalid_expires_in",
            "expires_in must be 0–604800 seconds",
        )
        .with_param("expires_in"));
    }
    Ok(now + chrono::Duration::seconds(grace))
}

/// Deletes an endpoint.
pub async fn delete_endpoint(
    state: &AppState,
    id: &str,
    audit: AuditContext,
) -> Result<(), ApiError> {
    if state
        .store
        .delete_webhook_endpoint_audited(id, state.clock.now(), Some(audit))
        .await?
    {
        Ok(())
    } else {
        Err(no_endpoint(id))
    }
}

/// An endpoint, or 404.
pub async fn endpoint(state: &AppState, id: &str) -> Result<WebhookEndpoint, ApiError> {
    state
        .store
        .get_webhook_endpoint(id)
        .await?
        .ok_or_else(|| no_endpoint(id))
}

/// The body of a delivery: a Stripe-shaped event, the same bytes at every attempt.
pub fn event_body(n: &tally_store::Notification) -> Vec<u8> {
    serde_json::json!({
        "id": n.id,
        "object": "event",
        "type": n.kind,
        "created": n.created_at.timestamp(),
        "customer": n.customer_id,
        "data": { "object": n.payload },
    })
    .to_string()
    .into_bytes()
}

/// The wait before the retry that follows the `attempts`-th failed attempt.
pub fn retry_delay(attempts: u32) -> chrono::Duration {
    let exp = attempts.saturating_sub(1).min(20);
    let secs = FIRST_RETRY
        .saturating_mul(1_i64 << exp)
        .min(MAX_RETRY_DELAY);
    chrono::Duration::seconds(secs)
}

/// Runs the delivery worker until `stop` turns true.
pub fn spawn_deliverer(state: AppState, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let client = match reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the webhook HTTP client; no deliveries");
                return;
            }
        };
        loop {
            let round = deliver_due(&state, &client);
            let busy = worker::run_item(&state, worker::DELIVERER, "round", round)
                .await
                .unwrap_or(0)
                > 0;
            if busy && !*stop.borrow() {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
}

/// Claims and delivers one batch of due deliveries; returns how many were claimed.
pub async fn deliver_due(state: &AppState, client: &reqwest::Client) -> Result<usize, ApiError> {
    let now = state.clock.now();
    let lease = chrono::Duration::from_std(state.config.worker_lease)
        .unwrap_or(chrono::Duration::seconds(60));
    let claimed = state
        .store
        .claim_deliveries(&state.instance_id, now, now + lease, BATCH)
        .await?;
    let n = claimed.len();
    let attempts = claimed.into_iter().map(|d| async move {
        let id = d.notification.id.clone();
        if d.endpoint.kind == "email" {
            let work = super::email::deliver(state, d);
            worker::run_item(state, worker::EMAILER, &id, work).await;
        } else {
            let work = deliver_one(state, client, d);
            worker::run_item(state, worker::DELIVERER, &id, work).await;
        }
    });
    futures_util::future::join_all(attempts).await;
    Ok(n)
}

async fn deliver_one(
    state: &AppState,
    client: &reqwest::Client,
    d: ClaimedDelivery,
) -> Result<(), ApiError> {
    let now = state.clock.now();
    let body = event_body(&d.notification);
    let secrets = d.endpoint.signing_secrets(now);
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let signature = tally_stripe::webhook::signature_header(&body, &secrets, now.timestamp());
    let sent = client
        .post(&d.endpoint.url)
        .header("content-type", "application/json")
        .header("tally-signature", signature)
        .header("user-agent", "Tally-Webhooks/1")
        .body(body)
        .send()
        .await;
    let at = state.clock.now();
    let (status_code, error) = match sent {
        Ok(res) if res.status().is_success() => (Some(res.status().as_u16()), None),
        Ok(res) => (
            Some(res.status().as_u16()),
            Some(format!("HTTP {}", res.status().as_u16())),
        ),
        Err(e) => (None, Some(without_url(&e))),
    };
    let lag = match error {
        Some(_) => None,
        None => Some(
            (at - d.notification.created_at)
                .to_std()
                .unwrap_or_default(),
        ),
    };
    state.metrics.add_delivery(&d.endpoint.id, lag);
    let failure = error.map(|e| (e, at + retry_delay(d.attempts.saturating_add(1))));
    let failed = failure.is_some();
    let recorded = state
        .store
        .finish_delivery(DeliveryAttempt {
            delivery_seq: d.seq,
            endpoint_id: d.endpoint.id.clone(),
            holder: state.instance_id.to_string(),
            at,
            status_code,
            failure,
        })
        .await?;
    if let Some(Some(since)) = recorded {
        if failed && at - since >= DISABLE_AFTER {
            disable(state, &d.endpoint, since, at).await?;
        }
    }
    Ok(())
}

fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    kind.to_owned()
}

async fn disable(
    state: &AppState,
    e: &WebhookEndpoint,
    since: DateTime<Utc>,
    at: DateTime<Utc>,
) -> Result<(), ApiError> {
    let notice = NewNotification {
        kind: "webhook_endpoint.disabled".into(),
        customer_id: None,
        payload: serde_json::json!({
            "id": e.id,
            "url": e.url,
            "failing_since": since,
            "disabled_at": at,
        }),
        dedup_key: format!(
            "webhook_endpoint.disabled:{}:{}",
            e.id,
            since.timestamp_millis()
        ),
        created_at: at,
    };
    if state
        .store
        .disable_webhook_endpoint(&e.id, at, notice)
        .await?
    {
        state.metrics.add_endpoint_disabled(&e.id);
        tracing::error!(
            endpoint = %e.id,
            url = %e.url,
            failing_since = %since,
            "webhook endpoint disabled: every delivery failed for 3 days"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_six_hours() {
        assert_eq!(retry_delay(1).num_seconds(), 30);
        assert_eq!(retry_delay(2).num_seconds(), 60);
        assert_eq!(retry_delay(5).num_seconds(), 480);
        assert_eq!(retry_delay(11).num_seconds(), 6 * 3600);
        assert_eq!(retry_delay(u32::MAX).num_seconds(), 6 * 3600);
    }
}
