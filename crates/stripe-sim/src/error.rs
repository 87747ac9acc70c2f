//! Errors in Stripe's shape: `{"error": {"type", "code", "message", "param", ...}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

/// A Stripe-shaped error. Boxed so that `Result<_, ApiError>` stays small.
#[derive(Clone, Debug)]
pub struct ApiError(Box<ApiErrorBody>);

#[derive(Clone, Debug)]
pub struct ApiErrorBody {
    pub status: u16,
    pub kind: &'static str,
    pub code: Option<String>,
    pub decline_code: Option<String>,
    pub message: String,
    pub param: Option<String>,
    /// Extra members of the error object (e.g. `payment_intent`, `charge`).
    pub extra: Map<String, Value>,
}

impl ApiError {
    pub fn new(
        status: u16,
        kind: &'static str,
        code: Option<&str>,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError(Box::new(ApiErrorBody {
            status,
            kind,
            code: code.map(str::to_string),
            decline_code: None,
            message: message.into(),
            param: None,
            extra: Map::new(),
        }))
    }

    pub fn invalid(message: impl Into<String>, param: Option<String>) -> ApiError {
        let mut e = ApiError::new(400, "invalid_request_error", None, message);
        e.param = param;
        e
    }

    pub fn invalid_code(code: &str, message: impl Into<String>, param: Option<&str>) -> ApiError {
        let mut e = ApiError::new(400, "invalid_request_error", Some(code), message);
        e.param = param.map(str::to_string);
        e
    }

    pub fn missing_param(param: &str) -> ApiError {
        ApiError::invalid_code(
            "parameter_missing",
            format!("Missing required param: {param}."),
            Some(param),
        )
    }

    /// 404 `resource_missing` for an id given in `param` (use "id" for path ids).
    pub fn no_such(kind: &str, id: &str, param: &str) -> ApiError {
        let mut e = ApiError::new(
            404,
            "invalid_request_error",
            Some("resource_missing"),
            format!("No such {kind}: '{id}'"),
        );
        e.param = Some(param.to_string());
        e
    }

    pub fn card(code: &str, decline_code: Option<&str>, message: &str) -> ApiError {
        let mut e = ApiError::new(402, "card_error", Some(code), message);
        e.decline_code = decline_code.map(str::to_string);
        e
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(401, "invalid_request_error", None, message)
    }

    pub fn idempotency(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "idempotency_error", None, message)
    }

    pub fn body(&self) -> Value {
        let mut e = Map::new();
        if let Some(c) = &self.code {
            e.insert("code".into(), json!(c));
            e.insert(
                "doc_url".into(),
                json!(format!(
                    "https://stripe.com/docs/error-codes/{}",
                    c.replace('_', "-")
                )),
            );
        }
        if let Some(d) = &self.decline_code {
            e.insert("decline_code".into(), json!(d));
        }
        e.insert("message".into(), json!(self.message));
        if let Some(p) = &self.param {
            e.insert("param".into(), json!(p));
        }
        e.insert("request_log_url".into(), Value::Null);
        e.insert("type".into(), json!(self.kind));
        for (k, v) in &self.extra {
            e.insert(k.clone(), v.clone());
        }
        json!({ "error": Value::Object(e) })
    }
}

impl std::ops::Deref for ApiError {
    type Target = ApiErrorBody;
    fn deref(&self) -> &ApiErrorBody {
        &self.0
    }
}

impl std::ops::DerefMut for ApiError {
    fn deref_mut(&mut self) -> &mut ApiErrorBody {
        &mut self.0
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.body())).into_response()
    }
}

impl ApiError {
    pub fn with_status(mut self, status: u16) -> ApiError {
        self.status = status;
        self
    }
}
