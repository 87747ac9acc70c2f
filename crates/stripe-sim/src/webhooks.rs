//! Webhook signing and delivery: one worker delivering in emission order, failed deliveries
//! retried with exponential backoff until the receiver answers 2xx.

use crate::sim::Shared;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

#[derive(Clone, Debug)]
pub struct Delivery {
    pub endpoint: String,
    pub url: String,
    pub secret: String,
    pub event_id: String,
    pub payload: String,
}

/// `t=<ts>,v1=<hex hmac-sha256 of "<ts>.<payload>" keyed with the whole whsec_ secret>`.
pub fn signature_header(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    format!("t={timestamp},v1={}", sign(secret, timestamp, payload))
}

pub fn sign(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    hex::encode(mac.finalize().into_bytes())
}

/// Delivers one attempt; true on a 2xx answer.
async fn attempt(client: &reqwest::Client, d: &Delivery, timeout: Duration) -> bool {
    let ts = crate::util::wall_now();
    let header = signature_header(&d.secret, ts, d.payload.as_bytes());
    let res = client
        .post(&d.url)
        .timeout(timeout)
        .header("Content-Type", "application/json; charset=utf-8")
        .header(
            "User-Agent",
            "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        )
        .header("Stripe-Signature", header)
        .body(d.payload.clone())
        .send()
        .await;
    matches!(res, Ok(r) if r.status().is_success())
}

fn delivered(shared: &Shared, d: &Delivery) {
    if let Ok(mut s) = shared.lock() {
        if let Some(e) = s.w.events.get_mut(&d.event_id) {
            e.pending_webhooks = (e.pending_webhooks - 1).max(0);
        }
        s.dirty = true;
    }
}

async fn deliver_with_retries(
    shared: Shared,
    client: reqwest::Client,
    d: Delivery,
    first_done: bool,
) {
    let cfg = match shared.lock() {
        Ok(s) => s.cfg.clone(),
        Err(_) => return,
    };
    let mut n: u32 = if first_done { 1 } else { 0 };
    loop {
        if n > 0 {
            if n >= cfg.webhook_max_attempts {
                return;
            }
            let factor = 2u32.saturating_pow(n - 1);
            let delay = cfg
                .webhook_retry_base
                .saturating_mul(factor)
                .min(cfg.webhook_retry_max);
            tokio::time::sleep(delay).await;
        }
        n += 1;
        let endpoint_live = shared
            .lock()
            .map(|s| {
                s.w.webhook_endpoints
                    .get(&d.endpoint)
                    .is_some_and(|e| e.status == "enabled")
            })
            .unwrap_or(false);
        if !endpoint_live {
            return;
        }
        if attempt(&client, &d, cfg.webhook_timeout).await {
            delivered(&shared, &d);
            return;
        }
    }
}

/// The delivery worker. Deliveries are attempted in order; a failed one is retried in the
/// background so it does not hold up the others. Webhook faults (drop, duplicate, reorder)
/// are applied here.
pub async fn worker(shared: Shared, mut rx: UnboundedReceiver<Delivery>) {
    let client = reqwest::Client::new();
    let mut held: Option<Delivery> = None;
    while let Some(d) = rx.recv().await {
        let fault = shared
            .lock()
            .ok()
            .and_then(|mut s| s.faults.take_webhook_fault());
        let mut batch = vec![];
        match fault.as_deref() {
            Some("drop") => continue,
            Some("duplicate") => {
                batch.push(d.clone());
                batch.push(d);
            }
            Some("reorder") => {
                if held.is_none() {
                    held = Some(d);
                    continue;
                }
                batch.push(d);
            }
            _ => batch.push(d),
        }
        if let Some(h) = held.take() {
            batch.push(h);
        }
        for d in batch {
            let timeout = shared
                .lock()
                .map(|s| s.cfg.webhook_timeout)
                .unwrap_or(Duration::from_secs(10));
            if attempt(&client, &d, timeout).await {
                delivered(&shared, &d);
            } else {
                tokio::spawn(deliver_with_retries(
                    shared.clone(),
                    client.clone(),
                    d,
                    true,
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_real_vector() {
        let v: serde_json::Value = serde_json::from_str(include_str!(
            "../tests/fixtures/real_signed/invoice.payment_succeeded.basil.vector.json"
        ))
        .unwrap();
        let payload = include_bytes!(
            "../tests/fixtures/real_signed/invoice.payment_succeeded.basil.payload.json"
        );
        let secret = v["secret"].as_str().unwrap();
        let ts = v["timestamp"].as_i64().unwrap();
        assert_eq!(
            sign(secret, ts, payload),
            v["expected_v1"].as_str().unwrap()
        );
    }
}
