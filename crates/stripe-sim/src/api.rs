//! The `/v1` HTTP surface: authentication, fault injection, idempotency, parameter parsing,
//! routing and `expand[]`.

use crate::error::ApiError;
use crate::form::{parse, Params};
use crate::sim::{ReqCtx, Shared, Sim};
use crate::state::IdempotentResponse;
use crate::util::{random_chars, wall_now};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

fn respond(status: u16, body: String, request_id: &str, replayed: bool) -> Response {
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    )
        .into_response();
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("request-id", v);
    }
    h.insert(
        "stripe-version",
        HeaderValue::from_static("2025-08-27.basil"),
    );
    if replayed {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    if status == 500 || status == 429 || status == 409 {
        h.insert("stripe-should-retry", HeaderValue::from_static("true"));
    }
    r
}

fn error_response(e: &ApiError, request_id: &str) -> Response {
    respond(e.status, pretty(&e.body()), request_id, false)
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn api_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(raw) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Err(ApiError::unauthorized("You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/."));
    };
    let key = if let Some(k) = raw.strip_prefix("Bearer ") {
        k.trim().to_string()
    } else if let Some(b) = raw.strip_prefix("Basic ") {
        let decoded = base64_decode(b.trim()).unwrap_or_default();
        decoded.split(':').next().unwrap_or_default().to_string()
    } else {
        return Err(ApiError::unauthorized(
            "Invalid authorization header. Use Bearer auth: 'Authorization: Bearer sk_test_…'.",
        ));
    };
    if key.starts_with("sk_test_") || key.starts_with("rk_test_") {
        Ok(key)
    } else {
        let shown: String = key.chars().take(8).collect();
        Err(ApiError::unauthorized(format!(
            "Invalid API Key provided: {shown}****"
        )))
    }
}

fn base64_decode(s: &str) -> Option<String> {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = vec![];
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = T.iter().position(|x| *x == c)? as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Every `/v1/...` request lands here. The work runs in its own task so that a request the
/// client gave up on (a timeout) still completes, as it would on Stripe's side.
pub async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    match tokio::spawn(process(shared, method, uri, headers, body)).await {
        Ok(r) => r,
        Err(_) => error_response(
            &ApiError::new(
                500,
                "api_error",
                None,
                "The request failed inside the simulator.",
            ),
            "req_unknown",
        ),
    }
}

async fn process(
    shared: Shared,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let request_id = format!("req_{}", random_chars(14));
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            let err = ApiError::new(
                e.status().as_u16(),
                "invalid_request_error",
                None,
                format!("Could not read the request body: {}", e.body_text()),
            );
            return error_response(&err, &request_id);
        }
    };
    let path = uri.path().to_string();
    let key = match api_key(&headers) {
        Ok(k) => k,
        Err(e) => return error_response(&e, &request_id),
    };
    // Stripe answers in the version a request names. The simulator speaks one version (the one
    // Tally pins): a request for another is refused clearly instead of answered in a shape it
    // did not ask for. Without the header the account's default (that same version) applies.
    if let Some(asked) = headers.get("stripe-version") {
        let speaks = shared
            .lock()
            .map(|s| s.cfg.api_version.clone())
            .unwrap_or_default();
        let asked = asked.to_str().unwrap_or_default().trim();
        if asked != speaks {
            let e = ApiError::new(
                400,
                "invalid_request_error",
                Some("api_version_unsupported"),
                format!(
                    "This simulator speaks only Stripe API version {speaks}; the request asked for {asked:?} (Stripe-Version header). Send Stripe-Version: {speaks} or omit the header."
                ),
            );
            return error_response(&e, &request_id);
        }
    }
    let idem_header = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let fault = shared.lock().ok().and_then(|mut s| {
        s.faults.log.push(format!("{method} {path}"));
        s.faults.take_http_fault(method.as_str(), &path)
    });
    // A request held by a `timeout` fault owns its idempotency slot until it finishes, so that a
    // client's retry meanwhile gets 409 (as on Stripe) rather than executing a second time.
    let mut holding: Option<String> = None;
    if let Some(f) = fault {
        use crate::faults::HttpFaultKind as K;
        let injected = match f.kind {
            K::RateLimit => {
                let mut e = ApiError::new(429, "invalid_request_error", Some("rate_limit"), "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.");
                e.param = None;
                Some(e)
            }
            K::LockTimeout => Some(ApiError::new(
                429,
                "invalid_request_error",
                Some("lock_timeout"),
                "This object cannot be accessed right now because another API request or Stripe process is currently accessing it.",
            )),
            K::Conflict => Some(ApiError::new(
                409,
                "invalid_request_error",
                None,
                "The request conflicts with another request (injected by the simulator).",
            )),
            K::ServerError => Some(ApiError::new(
                500,
                "api_error",
                None,
                "An unknown error occurred (injected by the simulator).",
            )),
            K::Hang => {
                if let (Some(k), true) = (&idem_header, method == Method::POST) {
                    let slot = format!("{key}\u{0}{k}");
                    if let Ok(mut s) = shared.lock() {
                        s.faults.in_flight.insert(slot.clone());
                    }
                    holding = Some(slot);
                }
                tokio::time::sleep(std::time::Duration::from_millis(f.hang_ms)).await;
                None
            }
        };
        if let Some(e) = injected {
            let mut r = error_response(&e, &request_id);
            if let Some(retry) = f.should_retry {
                r.headers_mut().insert(
                    "stripe-should-retry",
                    HeaderValue::from_static(if retry { "true" } else { "false" }),
                );
            }
            return r;
        }
    }
    let response = execute(
        &shared,
        &method,
        &uri,
        &path,
        &headers,
        &body,
        &key,
        &request_id,
        holding.as_deref(),
    );
    if let Some(slot) = holding {
        if let Ok(mut s) = shared.lock() {
            s.faults.in_flight.remove(&slot);
        }
    }
    response
}

/// Runs an API request after authentication and fault injection: idempotency, routing, expansion.
#[allow(clippy::too_many_arguments)]
fn execute(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
    key: &str,
    request_id: &str,
    holding: Option<&str>,
) -> Response {
    let method = method.clone();
    let path = path.to_string();
    let request_id = request_id.to_string();
    let raw = if method == Method::GET || method == Method::DELETE {
        uri.query().unwrap_or("").as_bytes().to_vec()
    } else {
        body.to_vec()
    };
    let map = match parse(&raw) {
        Ok(m) => m,
        Err(e) => return error_response(&e, &request_id),
    };
    let idem_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let fingerprint = format!(
        "{} {} {}",
        method,
        path,
        serde_json::to_string(&map).unwrap_or_default()
    );
    let Ok(mut sim) = shared.lock() else {
        return error_response(
            &ApiError::new(500, "api_error", None, "simulator state poisoned"),
            &request_id,
        );
    };
    let idem_slot = match (&idem_key, method == Method::POST) {
        (Some(k), true) => {
            if k.len() > 255 {
                return error_response(
                    &ApiError::idempotency("Idempotency keys can be at most 255 characters long."),
                    &request_id,
                );
            }
            let slot = format!("{key}\u{0}{k}");
            let cutoff = wall_now() - 24 * 3600;
            sim.w.idempotency.retain(|_, v| v.created > cutoff);
            if holding != Some(slot.as_str()) && sim.faults.in_flight.contains(&slot) {
                let mut e = ApiError::idempotency("There is currently another in-progress request using this Idempotency-Key (that probably means you submitted twice, and the other request is still going through). Please try again later.");
                e.status = 409;
                return error_response(&e, &request_id);
            }
            if let Some(prev) = sim.w.idempotency.get(&slot) {
                if prev.fingerprint != fingerprint {
                    let e = ApiError::idempotency(format!("Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{k}' if you meant to execute a different request."));
                    return error_response(&e, &request_id);
                }
                return respond(prev.status, prev.body.clone(), &request_id, true);
            }
            Some(slot)
        }
        _ => None,
    };
    sim.req = ReqCtx {
        id: Some(request_id.clone()),
        idempotency_key: idem_key.clone(),
    };
    let p = Params::new(map);
    let segs: Vec<&str> = path
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let result = route(&mut sim, &method, &segs, &p).and_then(|mut v| {
        let exp = p.expand();
        if !exp.is_empty() {
            sim.expand(&mut v, &exp)?;
        }
        Ok(v)
    });
    sim.req = ReqCtx::default();
    let (status, body) = match &result {
        Ok(v) => (200, pretty(v)),
        Err(e) => (e.status, pretty(&e.body())),
    };
    if let Some(slot) = idem_slot {
        if !matches!(status, 400 | 401 | 404 | 429) {
            sim.w.idempotency.insert(
                slot,
                IdempotentResponse {
                    fingerprint,
                    status,
                    body: body.clone(),
                    created: wall_now(),
                },
            );
            sim.dirty = true;
        }
    }
    respond(status, body, &request_id, false)
}

fn not_found(method: &Method, segs: &[&str]) -> ApiError {
    let mut e = ApiError::new(404, "invalid_request_error", None, format!("Unrecognized request URL ({method}: /{}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.", segs.join("/")));
    e.param = None;
    e
}

fn route(s: &mut Sim, m: &Method, segs: &[&str], p: &Params) -> Result<Value, ApiError> {
    use crate::resources::*;
    let g = *m == Method::GET;
    let post = *m == Method::POST;
    let del = *m == Method::DELETE;
    match segs {
        ["v1", "customers"] if post => customers::create(s, p),
        ["v1", "customers"] if g => customers::list(s, p),
        ["v1", "customers", "search"] if g => customers::search(s, p),
        ["v1", "customers", id] if g => customers::retrieve(s, id),
        ["v1", "customers", id] if post => customers::update(s, id, p),
        ["v1", "customers", id] if del => customers::delete(s, id),
        ["v1", "customers", id, "payment_methods"] if g => payments::list_pms(s, p, Some(id)),

        ["v1", "products"] if post => catalog::create_product(s, p),
        ["v1", "products"] if g => catalog::list_products(s, p),
        ["v1", "products", id] if g => catalog::retrieve_product(s, id),
        ["v1", "products", id] if post => catalog::update_product(s, id, p),
        ["v1", "products", id] if del => catalog::delete_product(s, id),

        ["v1", "prices"] if post => catalog::create_price(s, p),
        ["v1", "prices"] if g => catalog::list_prices(s, p),
        ["v1", "prices", id] if g => catalog::retrieve_price(s, id),
        ["v1", "prices", id] if post => catalog::update_price(s, id, p),

        ["v1", "billing", "meters"] if post => meters::create(s, p),
        ["v1", "billing", "meters"] if g => meters::list(s, p),
        ["v1", "billing", "meters", id] if g => meters::retrieve(s, id),
        ["v1", "billing", "meters", id] if post => meters::update(s, id, p),
        ["v1", "billing", "meters", id, "deactivate"] if post => {
            meters::set_status(s, id, "inactive")
        }
        ["v1", "billing", "meters", id, "reactivate"] if post => {
            meters::set_status(s, id, "active")
        }
        ["v1", "billing", "meters", id, "event_summaries"] if g => meters::summaries(s, id, p),
        ["v1", "billing", "meter_events"] if post => meters::create_event(s, p),
        ["v1", "billing", "meter_event_adjustments"] if post => meters::adjust(s, p),

        ["v1", "coupons"] if post => discounts::create_coupon(s, p),
        ["v1", "coupons"] if g => discounts::list_coupons(s, p),
        ["v1", "coupons", id] if g => discounts::retrieve_coupon(s, id),
        ["v1", "coupons", id] if post => discounts::update_coupon(s, id, p),
        ["v1", "coupons", id] if del => discounts::delete_coupon(s, id),
        ["v1", "promotion_codes"] if post => discounts::create_promo(s, p),
        ["v1", "promotion_codes"] if g => discounts::list_promos(s, p),
        ["v1", "promotion_codes", id] if g => discounts::retrieve_promo(s, id),
        ["v1", "promotion_codes", id] if post => discounts::update_promo(s, id, p),

        ["v1", "invoiceitems"] if post => invoices::create_item(s, p),
        ["v1", "invoiceitems"] if g => invoices::list_items(s, p),
        ["v1", "invoiceitems", id] if g => invoices::retrieve_item(s, id),
        ["v1", "invoiceitems", id] if post => invoices::update_item(s, id, p),
        ["v1", "invoiceitems", id] if del => invoices::delete_item(s, id),

        ["v1", "invoices"] if post => invoices::create(s, p),
        ["v1", "invoices"] if g => invoices::list(s, p),
        ["v1", "invoices", "create_preview"] if post => invoices::create_preview(s, p),
        ["v1", "invoices", id] if g => invoices::retrieve(s, id),
        ["v1", "invoices", id] if post => invoices::update(s, id, p),
        ["v1", "invoices", id] if del => invoices::delete(s, id),
        ["v1", "invoices", id, "lines"] if g => invoices::lines(s, id, p),
        ["v1", "invoices", id, "finalize"] if post => invoices::finalize(s, id, p),
        ["v1", "invoices", id, "pay"] if post => invoices::pay(s, id, p),
        ["v1", "invoices", id, "void"] if post => invoices::void(s, id, p),
        ["v1", "invoices", id, "mark_uncollectible"] if post => {
            invoices::mark_uncollectible(s, id, p)
        }

        ["v1", "invoice_payments"] if g => invoices::list_payments(s, p),
        ["v1", "invoice_payments", id] if g => invoices::retrieve_payment(s, id),

        ["v1", "subscriptions"] if post => subscriptions::create(s, p),
        ["v1", "subscriptions"] if g => subscriptions::list(s, p),
        ["v1", "subscriptions", id] if g => subscriptions::retrieve(s, id),
        ["v1", "subscriptions", id] if post => subscriptions::update(s, id, p),
        ["v1", "subscriptions", id] if del => subscriptions::cancel(s, id, p),
        ["v1", "subscription_schedules"] if post => schedules::create(s, p),
        ["v1", "subscription_schedules"] if g => schedules::list(s, p),
        ["v1", "subscription_schedules", id] if g => schedules::retrieve(s, id),
        ["v1", "subscription_schedules", id] if post => schedules::update(s, id, p),
        ["v1", "subscription_schedules", id, "release"] if post => schedules::release(s, id, p),
        ["v1", "subscription_schedules", id, "cancel"] if post => schedules::cancel(s, id, p),
        ["v1", "subscription_items"] if g => subscriptions::list_items(s, p),
        ["v1", "subscription_items"] if post => subscriptions::create_item(s, p),
        ["v1", "subscription_items", id] if g => subscriptions::retrieve_item(s, id),
        ["v1", "subscription_items", id] if post => subscriptions::update_item(s, id, p),
        ["v1", "subscription_items", id] if del => subscriptions::delete_item(s, id, p),

        ["v1", "payment_methods"] if post => payments::create_pm(s, p),
        ["v1", "payment_methods"] if g => payments::list_pms(s, p, None),
        ["v1", "payment_methods", id] if g => payments::retrieve_pm(s, id),
        ["v1", "payment_methods", id, "attach"] if post => payments::attach_pm(s, id, p),
        ["v1", "payment_methods", id, "detach"] if post => payments::detach_pm(s, id),
        ["v1", "payment_intents"] if post => payments::create_pi(s, p),
        ["v1", "payment_intents"] if g => payments::list_pis(s, p),
        ["v1", "payment_intents", id] if g => payments::retrieve_pi(s, id),
        ["v1", "payment_intents", id] if post => payments::update_pi(s, id, p),
        ["v1", "payment_intents", id, "confirm"] if post => payments::confirm_pi(s, id, p),
        ["v1", "payment_intents", id, "cancel"] if post => payments::cancel_pi(s, id, p),
        ["v1", "charges"] if g => payments::list_charges(s, p),
        ["v1", "charges", id] if g => payments::retrieve_charge(s, id),
        ["v1", "refunds"] if post => payments::create_refund(s, p),
        ["v1", "refunds"] if g => payments::list_refunds(s, p),
        ["v1", "refunds", id] if g => payments::retrieve_refund(s, id),

        ["v1", "checkout", "sessions"] if post => checkout::create(s, p),
        ["v1", "checkout", "sessions"] if g => checkout::list(s, p),
        ["v1", "checkout", "sessions", id] if g => checkout::retrieve(s, id),
        ["v1", "checkout", "sessions", id, "line_items"] if g => checkout::line_items(s, id, p),
        ["v1", "checkout", "sessions", id, "expire"] if post => checkout::expire(s, id),

        ["v1", "billing_portal", "configurations"] if post => portal::create_config(s, p),
        ["v1", "billing_portal", "configurations"] if g => portal::list_configs(s, p),
        ["v1", "billing_portal", "configurations", id] if g => portal::retrieve_config(s, id),
        ["v1", "billing_portal", "configurations", id] if post => portal::update_config(s, id, p),
        ["v1", "billing_portal", "sessions"] if post => portal::create_session(s, p),

        ["v1", "test_helpers", "test_clocks"] if post => clocks::create(s, p),
        ["v1", "test_helpers", "test_clocks"] if g => clocks::list(s, p),
        ["v1", "test_helpers", "test_clocks", id] if g => clocks::retrieve(s, id),
        ["v1", "test_helpers", "test_clocks", id] if del => clocks::delete(s, id),
        ["v1", "test_helpers", "test_clocks", id, "advance"] if post => clocks::advance(s, id, p),

        ["v1", "webhook_endpoints"] if post => endpoints::create(s, p),
        ["v1", "webhook_endpoints"] if g => endpoints::list(s, p),
        ["v1", "webhook_endpoints", id] if g => endpoints::retrieve(s, id),
        ["v1", "webhook_endpoints", id] if post => endpoints::update(s, id, p),
        ["v1", "webhook_endpoints", id] if del => endpoints::delete(s, id),
        ["v1", "events"] if g => endpoints::list_events(s, p),
        ["v1", "events", id] if g => endpoints::retrieve_event(s, id),
        _ => Err(not_found(m, segs)),
    }
}
