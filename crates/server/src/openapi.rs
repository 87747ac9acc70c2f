//! The OpenAPI document, generated from the handlers' annotations and completed with the answers
//! every operation can give (authentication, scopes, rate limits, payload errors) in one place.

use axum::Json;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::OpenApi;

use crate::api;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tally API",
        description = "Usage-based billing: customers, usage events, invoices."
    ),
    paths(
        api::health::health,
        api::health::metrics,
        api::plans::list,
        api::customers::put,
        api::customers::get,
        api::customers::put_subscription,
        api::customers::get_subscription,
        api::customers::usage,
        api::customers::billing,
        api::events::ingest,
        api::invoices::upcoming,
        api::invoices::list,
        api::transactions::list,
        api::webhooks::stripe,
        api::page_sessions::create,
        api::page_sessions::revoke,
    ),
    components(schemas(
        crate::error::ErrorBody,
        crate::error::ErrorObject,
        crate::error::InvalidItem
    ))
)]
pub struct ApiDoc;

/// The pattern of customer ids: exactly what `tally_store::is_valid_customer_id` accepts.
pub const CUSTOMER_ID_PATTERN: &str = "^[A-Za-z0-9_.:@-]{1,255}$";

/// The whole document.
pub fn build() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(api::credits::CreditsDoc::openapi());
    doc.merge(api::webhook_endpoints::WebhooksDoc::openapi());
    doc.merge(api::checkout::CheckoutDoc::openapi());
    doc.merge(api::subscriptions::SubscriptionsDoc::openapi());
    doc.merge(api::clock::ClockDoc::openapi());
    doc.merge(api::business::BusinessDoc::openapi());
    doc.merge(api::refunds::RefundsDoc::openapi());
    doc.merge(api::topups::TopupsDoc::openapi());
    complete(&mut doc);
    doc
}

/// `GET /openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(build())
}

/// Answers any `/v1` operation can give, besides those its handler declares.
const V1_ERRORS: [(&str, &str); 4] = [
    ("401", "missing, malformed or unknown API key (`invalid_api_key`)"),
    (
        "403",
        "the API key's scopes do not allow this operation (`insufficient_scope`) or this customer (`customer_forbidden`)",
    ),
    (
        "429",
        "a rate limit, or too many failed authentications from this address (`rate_limited`, `too_many_failed_authentications`); see `Retry-After`",
    ),
    ("503", "the server is shutting down (`unavailable`)"),
];

/// Answers of operations with a `{id}` customer path parameter.
const CUSTOMER_ERRORS: [(&str, &str); 2] = [
    (
        "400",
        "the customer id is not 1–255 of [A-Za-z0-9_.:@-] (`invalid_customer_id`) or not readable (`invalid_path_parameter`)",
    ),
    ("404", "no such customer (`customer_not_found`)"),
];

/// Answers of operations with a JSON request body.
const BODY_ERRORS: [(&str, &str); 4] = [
    ("400", "malformed JSON or parameters (`malformed_json`, …)"),
    (
        "408",
        "the body was not received in time (`request_timeout`)",
    ),
    (
        "413",
        "the body is over the server's limit (`body_too_large`)",
    ),
    (
        "415",
        "the body is not `application/json` (`unsupported_content_type`)",
    ),
];

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

fn customer_id_schema() -> utoipa::openapi::schema::Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(CUSTOMER_ID_PATTERN))
        .min_length(Some(1))
        .max_length(Some(255))
        .description(Some(
            "The app's customer id: 1–255 of A–Z a–z 0–9 _ . : - @",
        ))
        .into()
}

/// Adds the common answers and the customer id's pattern to every operation.
fn complete(doc: &mut utoipa::openapi::OpenApi) {
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    for (path, item) in doc.paths.paths.iter_mut() {
        let v1 = path.starts_with("/v1/");
        let customer_path = path.contains("{id}");
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            let mut add: Vec<(&str, &str)> = Vec::new();
            if v1 {
                add.extend(V1_ERRORS);
            }
            if customer_path {
                add.extend(CUSTOMER_ERRORS);
            }
            if op.request_body.is_some() {
                add.extend(BODY_ERRORS);
            }
            let mut customer_param = false;
            for p in op.parameters.iter_mut().flatten() {
                let is_customer = (p.name == "id" && p.parameter_in == ParameterIn::Path)
                    || (p.name == "customer" && p.parameter_in == ParameterIn::Query);
                if is_customer {
                    p.schema = Some(RefOr::T(customer_id_schema()));
                    customer_param = true;
                }
            }
            if customer_param && !customer_path {
                add.push((
                    "400",
                    "the customer id is not 1–255 of [A-Za-z0-9_.:@-] (`invalid_customer_id`)",
                ));
            }
            add_responses(op, &add);
        }
    }
}

fn add_responses(op: &mut Operation, add: &[(&str, &str)]) {
    for (status, description) in add {
        op.responses
            .responses
            .entry((*status).to_owned())
            .or_insert_with(|| error_response(description));
    }
}
