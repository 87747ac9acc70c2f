//! Verification of the `Stripe-Signature` header of webhook deliveries.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

/// Stripe's default tolerance for the age of a delivery's timestamp.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Why a delivery was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is empty or not `t=…,v1=…`.
    #[error("malformed Stripe-Signature header")]
    Malformed,
    /// No `t=` timestamp.
    #[error("Stripe-Signature has no timestamp")]
    NoTimestamp,
    /// No `v1=` signature (other schemes, such as `v0`, are never accepted).
    #[error("Stripe-Signature has no v1 signature")]
    NoV1Signature,
    /// The timestamp is older than the tolerance.
    #[error("Stripe-Signature timestamp is {age_secs} s old (tolerance {tolerance_secs} s)")]
    TooOld {
        /// Age in seconds.
        age_secs: i64,
        /// Tolerance in seconds.
        tolerance_secs: u64,
    },
    /// No `v1` matches any of the secrets.
    #[error("no Stripe-Signature v1 matches the endpoint secrets")]
    NoMatch,
    /// No secret configured.
    #[error("no webhook secret configured")]
    NoSecret,
}

/// Verifies a delivery: `payload` is the raw request body (never re-serialized), `header` the
/// `Stripe-Signature` value, `secrets` the endpoint secrets in use (several while one is being
/// rolled, each `whsec_…` used whole), `now` the current unix time from Tally's clock.
///
/// Accepts when any `v1` signature equals HMAC-SHA256(secret, "<t>.<payload>") for any secret,
/// compared in constant time, and `t` is at most `tolerance` old. Future timestamps are accepted,
/// as Stripe's SDKs do.
pub fn verify(
    payload: &[u8],
    header: &str,
    secrets: &[&str],
    now: i64,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    if secrets.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let header = header.trim();
    if header.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let mut timestamp: Option<&str> = None;
    let mut v1: Vec<Vec<u8>> = Vec::new();
    let mut saw_v1 = false;
    for part in header.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            return Err(SignatureError::Malformed);
        };
        match k {
            "t" => timestamp = Some(v),
            "v1" => {
                saw_v1 = true;
                // A value that is not hex cannot match; skip it rather than reject the others.
                if let Ok(bytes) = hex::decode(v) {
                    v1.push(bytes);
                }
            }
            _ => {}
        }
    }
    let t_str = timestamp.ok_or(SignatureError::NoTimestamp)?;
    let t: i64 = t_str.parse().map_err(|_| SignatureError::Malformed)?;
    if !saw_v1 {
        return Err(SignatureError::NoV1Signature);
    }
    let tolerance_secs = tolerance.as_secs();
    let age = now.saturating_sub(t);
    if age > i64::try_from(tolerance_secs).unwrap_or(i64::MAX) {
        return Err(SignatureError::TooOld {
            age_secs: age,
            tolerance_secs,
        });
    }
    for secret in secrets {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            continue;
        };
        mac.update(t_str.as_bytes());
        mac.update(b".");
        mac.update(payload);
        for sig in &v1 {
            // verify_slice compares in constant time.
            if mac.clone().verify_slice(sig).is_ok() {
                return Ok(());
            }
        }
    }
    Err(SignatureError::NoMatch)
}

/// The `Stripe-Signature`-style header of a delivery Tally sends: `t=<timestamp>` and one
/// `v1=` HMAC-SHA256(secret, "<t>.<payload>") in hex per secret (several while a secret is being
/// rotated), exactly what [`verify`] and Stripe's SDKs accept.
pub fn signature_header(payload: &[u8], secrets: &[&str], timestamp: i64) -> String {
    let t = timestamp.to_string();
    let mut header = format!("t={t}");
    for secret in secrets {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            continue;
        };
        mac.update(t.as_bytes());
        mac.update(b".");
        mac.update(payload);
        header.push_str(",v1=");
        header.push_str(&hex::encode(mac.finalize().into_bytes()));
    }
    header
}

#[cfg(test)]
mod sign_tests {
    use super::*;

    #[test]
    fn signed_headers_verify_with_each_secret() {
        let h = signature_header(b"{}", &["whsec_a", "whsec_b"], 1_700_000_000);
        assert!(h.starts_with("t=1700000000,v1="));
        assert_eq!(h.matches("v1=").count(), 2);
        for s in ["whsec_a", "whsec_b"] {
            assert_eq!(
                verify(b"{}", &h, &[s], 1_700_000_000, DEFAULT_TOLERANCE),
                Ok(())
            );
        }
        assert_eq!(
            verify(b"{}", &h, &["whsec_c"], 1_700_000_000, DEFAULT_TOLERANCE),
            Err(SignatureError::NoMatch)
        );
    }
}
