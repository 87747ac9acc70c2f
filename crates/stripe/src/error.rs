//! Errors of calls to Stripe, mapped from Stripe's error bodies to our own enum.

use std::fmt;

/// A failed call to Stripe: what went wrong, plus what the caller keeps with the operation
/// (Stripe's `Request-Id` of the last attempt, the HTTP status and how many attempts were made).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct Error {
    /// What went wrong.
    pub kind: ErrorKind,
    /// `Request-Id` of the last response, if one arrived.
    pub request_id: Option<String>,
    /// HTTP status of the last response, if one arrived.
    pub status: Option<u16>,
    /// Attempts made, retries included.
    pub attempts: u32,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(id) = &self.request_id {
            write!(f, " (request {id})")?;
        }
        if self.attempts > 1 {
            write!(f, " after {} attempts", self.attempts)?;
        }
        Ok(())
    }
}

/// What went wrong in a call to Stripe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// 402 `card_error`: the card was declined or could not be charged.
    #[error("card declined: {message} (code {code:?}, decline code {decline_code:?})")]
    CardDeclined {
        /// Stripe's `code`, e.g. `card_declined`, `expired_card`.
        code: Option<String>,
        /// Stripe's `decline_code`, e.g. `insufficient_funds`.
        decline_code: Option<String>,
        /// Stripe's message, safe to show to the customer.
        message: String,
    },
    /// 400 `invalid_request_error` (and other 4xx without a more specific variant).
    #[error("invalid request: {message} (param {param:?}, code {code:?})")]
    InvalidRequest {
        /// The parameter Stripe blames.
        param: Option<String>,
        /// Stripe's `code`, e.g. `resource_already_exists`, `parameter_missing`.
        code: Option<String>,
        /// Stripe's message.
        message: String,
    },
    /// 404: the object does not exist.
    #[error("not found: {message}")]
    NotFound {
        /// The parameter Stripe blames (usually `id`).
        param: Option<String>,
        /// Stripe's message.
        message: String,
    },
    /// 401: the API key is missing, wrong or revoked.
    #[error("authentication failed: {message}")]
    Authentication {
        /// Stripe's message.
        message: String,
    },
    /// 403: the key may not do this.
    #[error("permission denied: {message}")]
    PermissionDenied {
        /// Stripe's message.
        message: String,
    },
    /// `idempotency_error`: the key was used with other parameters.
    #[error("idempotency conflict: {message}")]
    IdempotencyConflict {
        /// Stripe's message.
        message: String,
    },
    /// 429 after the last retry (including `lock_timeout`).
    #[error("rate limited: {message}")]
    RateLimited {
        /// Stripe's message.
        message: String,
    },
    /// 409 (other than an idempotency conflict) after the last retry.
    #[error("conflict: {message}")]
    Conflict {
        /// Stripe's message.
        message: String,
    },
    /// 5xx after the last retry, or a failure Stripe said not to retry.
    #[error("Stripe unavailable (status {status}): {message}")]
    Unavailable {
        /// HTTP status.
        status: u16,
        /// Stripe's message.
        message: String,
    },
    /// No answer within the per-request timeout, after the last retry.
    #[error("timed out")]
    Timeout,
    /// The connection failed, after the last retry.
    #[error("connection failed: {0}")]
    Connection(String),
    /// The answer was not what this client understands.
    #[error("unexpected response: {0}")]
    Decode(String),
    /// The client could not be built or the request could not be formed.
    #[error("client configuration: {0}")]
    Config(String),
}

impl ErrorKind {
    /// Whether the object does not exist (404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ErrorKind::NotFound { .. })
    }

    /// Whether Stripe reports that the object already exists (a create with a taken custom id).
    pub fn is_already_exists(&self) -> bool {
        matches!(self, ErrorKind::InvalidRequest { code: Some(c), .. } if c == "resource_already_exists")
    }
}

/// Maps Stripe's error body and status to an [`ErrorKind`].
pub(crate) fn from_body(status: u16, body: &str) -> ErrorKind {
    let parsed: Option<crate::wire::ErrorBody> = serde_json::from_str(body).ok();
    let Some(e) = parsed.map(|b| b.error) else {
        return match status {
            401 => ErrorKind::Authentication {
                message: body.to_string(),
            },
            s if s >= 500 => ErrorKind::Unavailable {
                status,
                message: body.to_string(),
            },
            _ => ErrorKind::Decode(format!("status {status} with body {body:?}")),
        };
    };
    let message = e.message.unwrap_or_default();
    match (status, e.kind.as_deref()) {
        (_, Some("idempotency_error")) => ErrorKind::IdempotencyConflict { message },
        (402, _) | (_, Some("card_error")) => ErrorKind::CardDeclined {
            code: e.code,
            decline_code: e.decline_code,
            message,
        },
        (401, _) => ErrorKind::Authentication { message },
        (403, _) => ErrorKind::PermissionDenied { message },
        (404, _) => ErrorKind::NotFound {
            param: e.param,
            message,
        },
        (409, _) => ErrorKind::Conflict { message },
        (429, _) => ErrorKind::RateLimited { message },
        (s, _) if s >= 500 => ErrorKind::Unavailable { status, message },
        _ => ErrorKind::InvalidRequest {
            param: e.param,
            code: e.code,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_error_bodies_map_to_kinds() {
        let card = r#"{"error":{"type":"card_error","code":"card_declined","decline_code":"insufficient_funds","message":"Your card has insufficient funds.","param":""}}"#;
        assert_eq!(
            from_body(402, card),
            ErrorKind::CardDeclined {
                code: Some("card_declined".into()),
                decline_code: Some("insufficient_funds".into()),
                message: "Your card has insufficient funds.".into(),
            }
        );
        let invalid = r#"{"error":{"type":"invalid_request_error","code":"resource_already_exists","message":"Coupon already exists.","param":"id"}}"#;
        let k = from_body(400, invalid);
        assert!(k.is_already_exists());
        assert_eq!(
            k,
            ErrorKind::InvalidRequest {
                param: Some("id".into()),
                code: Some("resource_already_exists".into()),
                message: "Coupon already exists.".into(),
            }
        );
        let idem = r#"{"error":{"type":"idempotency_error","message":"Keys for idempotent requests can only be used with the same parameters"}}"#;
        assert!(matches!(
            from_body(400, idem),
            ErrorKind::IdempotencyConflict { .. }
        ));
        let missing = r#"{"error":{"type":"invalid_request_error","code":"resource_missing","message":"No such customer: 'cus_x'","param":"id"}}"#;
        assert!(from_body(404, missing).is_not_found());
        let lock = r#"{"error":{"type":"invalid_request_error","code":"lock_timeout","message":"locked"}}"#;
        assert_eq!(
            from_body(429, lock),
            ErrorKind::RateLimited {
                message: "locked".into()
            }
        );
        assert_eq!(
            from_body(
                401,
                r#"{"error":{"type":"invalid_request_error","message":"Invalid API Key"}}"#
            ),
            ErrorKind::Authentication {
                message: "Invalid API Key".into()
            }
        );
        assert_eq!(
            from_body(
                403,
                r#"{"error":{"type":"invalid_request_error","message":"no"}}"#
            ),
            ErrorKind::PermissionDenied {
                message: "no".into()
            }
        );
        assert_eq!(
            from_body(502, "<html>bad gateway</html>"),
            ErrorKind::Unavailable {
                status: 502,
                message: "<html>bad gateway</html>".into()
            }
        );
    }
}
