//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;

#[derive(OpenApi)]
#[openapi(
    info(title = "Tally API", description = "Usage-based billing: customers, usage events, invoices."),
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
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorObject, crate::error::InvalidItem)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// `GET /openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    let mut doc = ApiDoc::openapi();
    doc.merge(api::credits::CreditsDoc::openapi());
    Json(doc)
}
