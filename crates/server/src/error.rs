//! The API's one error type and its JSON shape:
//! `{"error": {"type", "code", "message", "param"?, "invalid"?}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// Why one event of a batch is invalid.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct InvalidItem {
    /// Position of the event in the batch (0-based).
    pub index: usize,
    /// Machine-readable reason, e.g. `unknown_customer`.
    pub code: &'static str,
    /// Human-readable reason.
    pub message: String,
    /// The offending field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<&'static str>,
}

/// An error answered by the API.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    /// `invalid_request_error`, `authentication_error`, `api_error`.
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub invalid: Vec<InvalidItem>,
}

/// The JSON body of an error.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

/// The error object.
#[derive(Serialize, ToSchema)]
pub struct ErrorObject {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// For rejected event batches: every invalid event.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub invalid: Vec<InvalidItem>,
}

impl ApiError {
    /// Any status: e.g. `402` (`invalid_request_error`, `insufficient_credits`), `409`, `429`.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: String,
    ) -> Self {
        ApiError {
            status,
            kind,
            code,
            message,
            param: None,
            invalid: Vec::new(),
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message.into(),
        )
    }

    /// `400 malformed_json`: a body that is not JSON of the shape the request needs.
    pub fn malformed_json(e: &serde_json::Error) -> Self {
        Self::bad_request(
            "malformed_json",
            format!("the body is not valid JSON for this request: {e}"),
        )
    }

    /// 422: well-formed but semantically invalid.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_error",
            code,
            message.into(),
        )
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            code,
            message.into(),
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            message.into(),
        )
    }

    /// 403: the API key's scope does not allow the route.
    pub fn insufficient_scope(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "insufficient_scope",
            message.into(),
        )
    }

    /// 403: the API key is limited to another customer.
    pub fn customer_forbidden(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "customer_forbidden",
            message.into(),
        )
    }

    /// 409: e.g. an idempotency key reused with a different request.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            code,
            message.into(),
        )
    }

    /// 429: a rate limit was exceeded.
    pub fn too_many_requests(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate_limited",
            message.into(),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "internal_error",
            message.into(),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "unavailable",
            message.into(),
        )
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_invalid(mut self, invalid: Vec<InvalidItem>) -> Self {
        self.invalid = invalid;
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl From<tally_store::StoreError> for ApiError {
    fn from(e: tally_store::StoreError) -> Self {
        use tally_store::StoreError as E;
        match e {
            E::Invalid(m) => invalid_in_store(m),
            E::OutOfRange(m) => ApiError::unprocessable("usage_out_of_range", m),
            E::Closed => ApiError::unavailable("the server is shutting down"),
            other => {
                tracing::error!(error = %other, "store error");
                ApiError::internal("a database error occurred; nothing was changed")
            }
        }
    }
}

/// The answer to a request the store refused as invalid. The store says why in words only, so the
/// kinds are told apart by their wording (each one is pinned by a test below).
fn invalid_in_store(m: String) -> ApiError {
    if m.starts_with("no customer ") {
        ApiError::not_found("customer_not_found", m)
    } else if m.contains("cannot ingest")
        || m.contains("cannot change credits")
        || m.contains("in use by another Tally process")
    {
        tracing::error!(error = %m, "the store cannot write");
        ApiError::unavailable(m)
    } else {
        // What remains are credit entries the ledger's rules refuse (zero amounts, wrong sign
        // for the kind, expiring more than expired).
        ApiError::unprocessable("invalid_amount", m).with_param("amount")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorObject {
                kind: self.kind,
                code: self.code,
                message: self.message,
                param: self.param,
                invalid: self.invalid,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_store::StoreError;

    fn answer(m: &str) -> (u16, &'static str) {
        let e = ApiError::from(StoreError::Invalid(m.into()));
        (e.status.as_u16(), e.code)
    }

    #[test]
    fn store_refusals_get_specific_codes() {
        assert_eq!(answer("no customer \"c1\""), (404, "customer_not_found"));
        let e = ApiError::from(StoreError::OutOfRange("usage of api_calls".into()));
        assert_eq!((e.status.as_u16(), e.code), (422, "usage_out_of_range"));
        assert_eq!(
            answer("this store was opened for administration and cannot ingest events"),
            (503, "unavailable")
        );
        assert_eq!(
            answer("this store was opened for administration and cannot change credits"),
            (503, "unavailable")
        );
        assert_eq!(
            answer("the amount must not be zero"),
            (422, "invalid_amount")
        );
        assert_eq!(answer("g1: a grant adds credits"), (422, "invalid_amount"));
        assert_eq!(ApiError::from(StoreError::Closed).code, "unavailable");
    }
}
