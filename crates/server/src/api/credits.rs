//! Prepaid credits: balance and ledger, grants and adjustments, consumption, audit log and the
//! usage-threshold notification outbox. Also registers the entitlement and flag routes.

use axum::extract::{RawQuery, State};

use super::Path;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use serde::Serialize;
use tally_store::{AuditFilter, AuditRecord, UsageNotification};
use utoipa::{OpenApi, ToSchema};

use super::JsonBody;
use crate::error::{ApiError, ErrorBody};
use crate::ratelimit::Actor;
use crate::service::credits::{
    self, Applied, ConsumeInput, ConsumeResult, CreditFailure, CreditsView, EntryView, GrantInput,
};
use crate::service::customers::check_id;
use crate::service::usage;
use crate::state::AppState;

/// The routes of credits, entitlements and flags (all behind the API key).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/customers/{id}/credits", get(get_credits))
        .route("/v1/customers/{id}/credits/grants", post(grant))
        .route("/v1/customers/{id}/credits/consume", post(consume))
        .route("/v1/customers/{id}/audit", get(audit))
        .route("/v1/customers/{id}/notifications", get(notifications))
        .route("/v1/entitlements/check", post(super::entitlements::check))
        .route("/v1/flags", get(super::flags::list))
        .route(
            "/v1/customers/{id}/flags/{flag}",
            put(super::flags::put_override).delete(super::flags::delete_override),
        )
}

/// The OpenAPI paths of this module and its siblings, merged into the main document.
#[derive(OpenApi)]
#[openapi(
    paths(
        get_credits,
        grant,
        consume,
        audit,
        super::audit::list,
        notifications,
        super::entitlements::check,
        super::flags::list,
        super::flags::put_override,
        super::flags::delete_override,
    ),
    components(schemas(InsufficientBody, InsufficientObject))
)]
pub struct CreditsDoc;

/// Parses `key=value&…` query parameters (values are not percent-decoded; ids never need it).
pub fn query_param<'a>(query: &'a Option<String>, name: &str) -> Option<&'a str> {
    query.as_deref().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    })
}

fn parse_query<T: std::str::FromStr>(
    query: &Option<String>,
    name: &'static str,
) -> Result<Option<T>, ApiError> {
    query_param(query, name)
        .map(|v| {
            v.parse().map_err(|_| {
                ApiError::bad_request("invalid_parameter", format!("{name} must be a number"))
                    .with_param(name)
            })
        })
        .transpose()
}

/// Balance, breakdown by grant (in consumption order) and a page of the ledger, newest first.
#[utoipa::path(get, path = "/v1/customers/{id}/credits", tag = "credits", security(("bearer" = [])),
    params(("id" = String, Path),
        ("limit" = Option<usize>, Query, description = "ledger entries per page, 1–100 (20)"),
        ("before" = Option<i64>, Query, description = "the previous page's next_before")),
    responses((status = 200, body = CreditsView), (status = 404, body = ErrorBody)))]
pub async fn get_credits(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<CreditsView>, ApiError> {
    let limit = parse_query(&query, "limit")?;
    let before = parse_query(&query, "before")?;
    Ok(Json(credits::get(&state, &id, limit, before).await?))
}

/// The body of a 402 answer.
#[derive(Serialize, ToSchema)]
pub struct InsufficientBody {
    pub error: InsufficientObject,
}

/// `{"type": "insufficient_credits", "code", "message", "balance", "required"}`.
#[derive(Serialize, ToSchema)]
pub struct InsufficientObject {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    /// Credits available.
    pub balance: String,
    /// Credits the request needs.
    pub required: String,
}

fn failure(f: CreditFailure) -> Response {
    match f {
        CreditFailure::Api(e) => e.into_response(),
        CreditFailure::Insufficient(i) => {
            let body = InsufficientBody {
                error: InsufficientObject {
                    kind: "insufficient_credits",
                    code: "insufficient_credits",
                    message: format!(
                        "the balance of {} credits does not cover {}; nothing was debited",
                        i.balance.normalize(),
                        i.required.normalize()
                    ),
                    balance: i.balance.normalize().to_string(),
                    required: i.required.normalize().to_string(),
                },
            };
            (StatusCode::PAYMENT_REQUIRED, Json(body)).into_response()
        }
    }
}

fn applied<T: Serialize>(a: Applied<T>) -> Response {
    match a {
        Applied::New(v) => (StatusCode::OK, Json(v)).into_response(),
        Applied::Replayed(v) => {
            let mut r = (StatusCode::OK, Json(v)).into_response();
            r.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            r
        }
    }
}

/// Admin grant or adjustment: signed `amount`, `reason`, `idempotency_key`; written to the ledger
/// and the audit log with the API key that made it. The same key again returns the first entry.
#[utoipa::path(post, path = "/v1/customers/{id}/credits/grants", tag = "credits", security(("bearer" = [])),
    params(("id" = String, Path)),
    request_body = GrantInput,
    responses((status = 200, body = EntryView),
        (status = 400, body = ErrorBody), (status = 402, body = InsufficientBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn grant(
    State(state): State<AppState>,
    Path(id): Path<String>,
    actor: Option<Extension<Actor>>,
    body: JsonBody,
) -> Response {
    let input: GrantInput = match body.parse() {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    match credits::grant(&state, &id, actor.map(|a| a.0 .0), input).await {
        Ok(a) => applied(a),
        Err(f) => failure(f),
    }
}

/// Atomic check-and-debit of `amount`, or of a metric's credit cost × `quantity` (recording the
/// usage event in the same transaction). 402 when the balance is short; the same
/// `idempotency_key` again returns the first result and debits nothing more.
#[utoipa::path(post, path = "/v1/customers/{id}/credits/consume", tag = "credits", security(("bearer" = [])),
    params(("id" = String, Path)),
    request_body = ConsumeInput,
    responses((status = 200, body = ConsumeResult),
        (status = 400, body = ErrorBody), (status = 402, body = InsufficientBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn consume(
    State(state): State<AppState>,
    Path(id): Path<String>,
    actor: Option<Extension<Actor>>,
    body: JsonBody,
) -> Response {
    let input: ConsumeInput = match body.parse() {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    match credits::consume(&state, &id, actor.map(|a| a.0 .0), input).await {
        Ok(a) => {
            if let Applied::New(r) = &a {
                state
                    .metrics
                    .add_credit_consumption(Some(r.consumed.parse().unwrap_or_default()));
            }
            applied(a)
        }
        Err(f) => {
            if matches!(f, CreditFailure::Insufficient(_)) {
                state.metrics.add_credit_consumption(None);
            }
            failure(f)
        }
    }
}

/// A list answer.
#[derive(Serialize)]
pub struct List<T> {
    pub data: Vec<T>,
}

/// The customer's rows of the audit log, newest first (admin keys only; `GET /v1/audit` filters
/// and pages).
#[utoipa::path(get, path = "/v1/customers/{id}/audit", tag = "credits", security(("bearer" = [])),
    params(("id" = String, Path), ("limit" = Option<usize>, Query, description = "1–1000 (100)")),
    responses((status = 200, body = super::schemas::AuditList), (status = 404, body = ErrorBody)))]
pub async fn audit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<List<AuditRecord>>, ApiError> {
    check_id(&id)?;
    let limit: usize = parse_query(&query, "limit")?.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("invalid_limit", "limit is 1–1000").with_param("limit"));
    }
    usage::customer(&state, &id).await?;
    let page = state
        .store
        .audit_log(AuditFilter {
            customer_id: Some(id),
            limit,
            ..AuditFilter::default()
        })
        .await?;
    Ok(Json(List { data: page.records }))
}

/// Usage-threshold notifications queued for the customer (the outbox), oldest first.
#[utoipa::path(get, path = "/v1/customers/{id}/notifications", tag = "entitlements", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = super::schemas::NotificationList), (status = 404, body = ErrorBody)))]
pub async fn notifications(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<List<UsageNotification>>, ApiError> {
    check_id(&id)?;
    usage::customer(&state, &id).await?;
    Ok(Json(List {
        data: state.store.notifications(&id).await?,
    }))
}
