//! A hook for the caller to watch every HTTP request the client makes (metrics, reachability),
//! without this crate depending on how the caller records them.

use std::time::Duration;

/// What one HTTP request to Stripe (one attempt of a call) came to.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord<'a> {
    /// `GET`, `POST` or `DELETE`.
    pub method: &'a str,
    /// The path with ids replaced by `{id}` (see [`endpoint_label`]): a bounded label.
    pub endpoint: &'a str,
    /// Stripe's HTTP status; `None` when Stripe could not be reached (connection error, timeout).
    pub status: Option<u16>,
    /// Why it failed, when it did (an error answer or a network error).
    pub error: Option<String>,
    /// Stripe's `Request-Id`, when it answered.
    pub request_id: Option<&'a str>,
    /// 1 for the first attempt of a call.
    pub attempt: u32,
    /// From sending the request to reading the whole answer (or failing).
    pub took: Duration,
}

impl RequestRecord<'_> {
    /// `ok` (2xx), `error` (any other answer) or `network_error` (no answer).
    pub fn outcome(&self) -> &'static str {
        match self.status {
            Some(s) if (200..300).contains(&s) => "ok",
            Some(_) => "error",
            None => "network_error",
        }
    }
}

/// Told about every HTTP request the client makes, after it ends. Called inline: keep it quick.
pub trait Observer: Send + Sync {
    fn request(&self, record: &RequestRecord<'_>);
}

/// Path segments kept as they are in [`endpoint_label`]: the resource names of the endpoints
/// Tally calls. Any other segment is an id and becomes `{id}`, so labels stay bounded.
const STATIC_SEGMENTS: &[&str] = &[
    "v1",
    "v2",
    "billing",
    "billing_portal",
    "cancel",
    "charges",
    "checkout",
    "configurations",
    "coupons",
    "create_preview",
    "customers",
    "events",
    "finalize",
    "invoiceitems",
    "invoices",
    "items",
    "meter_event_adjustments",
    "meter_event_session",
    "meter_events",
    "meters",
    "pay",
    "payment_intents",
    "prices",
    "products",
    "promotion_codes",
    "refunds",
    "search",
    "sessions",
    "subscription_items",
    "subscriptions",
    "void",
];

/// The bounded label of a request path: `/v1/customers/cus_123` → `/v1/customers/{id}`.
pub fn endpoint_label(path: &str) -> String {
    let path = path.split('?').next().unwrap_or("");
    let mut out = String::with_capacity(path.len());
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        if STATIC_SEGMENTS.contains(&seg) {
            out.push_str(seg);
        } else {
            out.push_str("{id}");
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_placeholders() {
        assert_eq!(endpoint_label("/v1/customers"), "/v1/customers");
        assert_eq!(
            endpoint_label("/v1/customers/cus_Nff12"),
            "/v1/customers/{id}"
        );
        assert_eq!(
            endpoint_label("/v1/customers/search"),
            "/v1/customers/search"
        );
        assert_eq!(
            endpoint_label("/v1/checkout/sessions"),
            "/v1/checkout/sessions"
        );
        assert_eq!(
            endpoint_label("/v1/subscriptions/sub_1/whatever?x=1"),
            "/v1/subscriptions/{id}/{id}"
        );
        assert_eq!(endpoint_label(""), "/");
    }
}
