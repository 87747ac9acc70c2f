//! Prometheus metrics, kept by `metrics-exporter-prometheus`.
//!
//! Why this library: it renders the Prometheus text format 0.0.4 that `promtool check metrics`,
//! the alert rules and `/metrics`' content type expect, with real histograms, and its recorder is
//! an ordinary value. Tally uses the recorder directly through `metrics::Recorder` instead of
//! installing it as the process-wide recorder: each [`Metrics`] (one per server) counts only its
//! own work, so several servers in one process (the tests) never mix their figures, and no
//! global state outlives a server. (`prometheus-client` renders OpenMetrics, whose `# EOF` and
//! `_created` series the existing scrapers and tests do not expect.)
//!
//! Every label is bounded: methods and routes as [`method_label`] and the router give them, the
//! other labels from fixed lists here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// Upper bounds of the HTTP latency histogram, in seconds.
const HTTP_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// Upper bounds of the Stripe call latency histogram, in seconds (calls cross the internet).
const STRIPE_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Upper bounds of the lag histograms (Stripe events in, deliveries out), in seconds.
const LAG_BUCKETS: [f64; 12] = [
    0.1,
    0.5,
    1.0,
    5.0,
    15.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    6.0 * 3600.0,
    86400.0,
    3.0 * 86400.0,
];

const META: Metadata<'static> = Metadata::new("tally", Level::INFO, Some(module_path!()));

/// Background workers, pre-registered so that their failure counters read 0 before any failure.
const WORKERS: [&str; 8] = [
    "closer",
    "notifier",
    "deliverer",
    "stripe_events",
    "emailer",
    "usage_pusher",
    "reconciler",
    "topups",
];

/// Outcomes of automatic top-ups read as 0 from the start (the others of
/// [`Metrics::add_topup`] appear with their first observation, keeping `/metrics` small).
const TOPUP_OUTCOMES: [&str; 2] = ["succeeded", "failed"];

/// Stripe event types Tally handles: `type` label values; anything else is `other`.
const STRIPE_EVENT_TYPES: [&str; 18] = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.trial_will_end",
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
    "invoice.upcoming",
    "customer.updated",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "charge.refunded",
    "payment_method.attached",
    "setup_intent.succeeded",
];

/// The metric families: name, type and help text.
const FAMILIES: &[(&str, Kind, &str)] = &[
    ("tally_http_requests_total", Kind::Counter, "HTTP requests by method, route and status."),
    ("tally_http_request_duration_seconds", Kind::Histogram, "HTTP request latency by method and route."),
    ("tally_events_total", Kind::Counter, "Usage events by outcome."),
    ("tally_http_connections_dropped_total", Kind::Counter, "Connections closed at the connection cap: evicted to make room (idle or unfinished) or refused (all busy)."),
    ("tally_worker_failures_total", Kind::Counter, "Items a background worker failed and skipped."),
    ("tally_entitlement_checks_total", Kind::Counter, "Entitlement checks by answer."),
    ("tally_credit_consumptions_total", Kind::Counter, "Credit debits by outcome (insufficient: answered 402)."),
    ("tally_credits_consumed", Kind::Gauge, "Credits debited since the process started (a decimal sum, so a gauge that only grows)."),
    ("tally_stripe_requests_total", Kind::Counter, "HTTP requests to Stripe (each attempt) by endpoint and outcome."),
    ("tally_stripe_request_duration_seconds", Kind::Histogram, "Latency of requests to Stripe by endpoint."),
    ("tally_stripe_reachable", Kind::Gauge, "1 when the last request to Stripe got an answer, 0 when it could not reach Stripe."),
    ("tally_stripe_webhook_events_total", Kind::Counter, "Inbound Stripe webhook events by type and outcome."),
    ("tally_stripe_webhook_processing_lag_seconds", Kind::Histogram, "From an inbound Stripe event's arrival to the end of its processing."),
    ("tally_stripe_webhook_oldest_unprocessed_age_seconds", Kind::Gauge, "Age of the oldest received, unprocessed Stripe event (0 when none)."),
    ("tally_payments_total", Kind::Counter, "Payments Stripe reported, by outcome."),
    (
        "tally_topups_total",
        Kind::Counter,
        "Automatic top-ups, by outcome.",
    ),
    ("tally_payment_failures_consecutive", Kind::Gauge, "Failed payments since the last successful one."),
    ("tally_invoice_payment_failures_total", Kind::Counter, "Failed payment attempts of Stripe invoices."),
    ("tally_revenue_collected_minor_total", Kind::Counter, "Money collected, in minor units of the currency."),
    ("tally_checkout_sessions_total", Kind::Counter, "Stripe Checkout sessions by outcome (conversion: completed over created)."),
    ("tally_period_close_lines_pushed_total", Kind::Counter, "Invoice lines pushed to Stripe at period close."),
    ("tally_stripe_sync_failures_total", Kind::Counter, "Failed pushes of usage or invoices to Stripe."),
    ("tally_reconcile_discrepancies", Kind::Gauge, "Discrepancies found by the last reconciliation with Stripe."),
    ("tally_closer_leader", Kind::Gauge, "1 when this process holds the period closer's lease (one process among those sharing a database)."),
    ("tally_webhook_deliveries_total", Kind::Counter, "Outgoing webhook delivery attempts by outcome."),
    ("tally_webhook_delivery_lag_seconds", Kind::Histogram, "From a notification's creation to its successful delivery to an endpoint."),
    ("tally_webhook_delivery_failures_consecutive", Kind::Gauge, "The most consecutive failed delivery attempts of any webhook endpoint since its last success."),
    ("tally_webhook_endpoints_disabled_total", Kind::Counter, "Webhook endpoints disabled after failing for 3 days."),
    ("tally_email_deliveries_total", Kind::Counter, "Customer email attempts by outcome (skipped: opted out, no address, or a type not emailed)."),
    ("tally_outbox_lag_seconds", Kind::Gauge, "Age of the oldest notification waiting for delivery to an enabled webhook endpoint or by email."),
];

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The server's metrics. Cheap to update from any task.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Consecutive failed attempts per webhook endpoint (reset by a success).
    endpoint_failures: Mutex<HashMap<String, u64>>,
    consecutive_payment_failures: Mutex<u64>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// The `method` label: the standard methods by name, anything else as `other`, so that invented
/// methods cannot add labels without bound.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method as M;
    match *method {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::PATCH => "PATCH",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        M::TRACE => "TRACE",
        M::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// The `type` label of an inbound Stripe event: a handled type, else `other`.
pub fn stripe_event_label(event_type: &str) -> &'static str {
    STRIPE_EVENT_TYPES
        .iter()
        .find(|t| **t == event_type)
        .copied()
        .unwrap_or("other")
}

/// The `currency` label: a lowercase ISO code of three letters, else `other`.
fn currency_label(currency: &str) -> String {
    if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_alphabetic()) {
        currency.to_ascii_lowercase()
    } else {
        "other".into()
    }
}

fn labels(pairs: &[(&'static str, &str)]) -> Vec<Label> {
    pairs
        .iter()
        .map(|(k, v)| Label::new(*k, (*v).to_owned()))
        .collect()
}

impl Metrics {
    pub fn new() -> Metrics {
        let builder = PrometheusBuilder::new();
        let builder = [
            ("tally_http_request_duration_seconds", &HTTP_BUCKETS[..]),
            ("tally_stripe_request_duration_seconds", &STRIPE_BUCKETS[..]),
            (
                "tally_stripe_webhook_processing_lag_seconds",
                &LAG_BUCKETS[..],
            ),
            ("tally_webhook_delivery_lag_seconds", &LAG_BUCKETS[..]),
        ]
        .into_iter()
        .fold(builder, |b, (name, buckets)| {
            // Only fails on empty buckets, which these are not.
            b.set_buckets_for_metric(Matcher::Full(name.into()), buckets)
                .unwrap_or_else(|_| PrometheusBuilder::new())
        });
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let m = Metrics {
            recorder,
            handle,
            endpoint_failures: Mutex::default(),
            consecutive_payment_failures: Mutex::default(),
        };
        for (name, kind, help) in FAMILIES {
            let key = KeyName::from_const_str(name);
            match kind {
                Kind::Counter => m.recorder.describe_counter(key, None, (*help).into()),
                Kind::Gauge => m.recorder.describe_gauge(key, None, (*help).into()),
                Kind::Histogram => m.recorder.describe_histogram(key, None, (*help).into()),
            }
        }
        // Series that read 0 before anything happens, so that rates and alerts see them.
        for outcome in ["accepted", "duplicate", "rejected"] {
            m.counter("tally_events_total", &[("outcome", outcome)])
                .increment(0);
        }
        for reason in ["evicted", "refused"] {
            m.counter(
                "tally_http_connections_dropped_total",
                &[("reason", reason)],
            )
            .increment(0);
        }
        for worker in WORKERS {
            m.counter("tally_worker_failures_total", &[("worker", worker)])
                .increment(0);
        }
        for outcome in ["allowed", "denied"] {
            m.counter("tally_entitlement_checks_total", &[("outcome", outcome)])
                .increment(0);
        }
        for outcome in ["consumed", "insufficient"] {
            m.counter("tally_credit_consumptions_total", &[("outcome", outcome)])
                .increment(0);
        }
        m.gauge("tally_credits_consumed", &[]).set(0.0);
        for outcome in TOPUP_OUTCOMES {
            m.counter("tally_topups_total", &[("outcome", outcome)])
                .increment(0);
        }
        for outcome in ["succeeded", "failed"] {
            m.counter("tally_payments_total", &[("outcome", outcome)])
                .increment(0);
            m.counter("tally_webhook_deliveries_total", &[("outcome", outcome)])
                .increment(0);
        }
        for outcome in ["sent", "failed", "skipped"] {
            m.counter("tally_email_deliveries_total", &[("outcome", outcome)])
                .increment(0);
        }
        for outcome in ["created", "completed"] {
            m.counter("tally_checkout_sessions_total", &[("outcome", outcome)])
                .increment(0);
        }
        m.gauge("tally_payment_failures_consecutive", &[]).set(0.0);
        m.gauge("tally_reconcile_discrepancies", &[]).set(0.0);
        m.gauge("tally_webhook_delivery_failures_consecutive", &[])
            .set(0.0);
        for name in [
            "tally_invoice_payment_failures_total",
            "tally_period_close_lines_pushed_total",
            "tally_stripe_sync_failures_total",
            "tally_webhook_endpoints_disabled_total",
        ] {
            m.counter(name, &[]).increment(0);
        }
        m
    }

    fn counter(&self, name: &'static str, l: &[(&'static str, &str)]) -> Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels(l)), &META)
    }

    fn gauge(&self, name: &'static str, l: &[(&'static str, &str)]) -> Gauge {
        self.recorder
            .register_gauge(&Key::from_parts(name, labels(l)), &META)
    }

    fn histogram(&self, name: &'static str, l: &[(&'static str, &str)]) -> Histogram {
        self.recorder
            .register_histogram(&Key::from_parts(name, labels(l)), &META)
    }

    /// Records one request to `route` (the matched path pattern or `unmatched`); `method` comes
    /// from [`method_label`], `status` from the server's own answers: every label is bounded.
    pub fn record(&self, method: &'static str, route: &str, status: u16, took: Duration) {
        let status = status.to_string();
        self.counter(
            "tally_http_requests_total",
            &[("method", method), ("route", route), ("status", &status)],
        )
        .increment(1);
        self.histogram(
            "tally_http_request_duration_seconds",
            &[("method", method), ("route", route)],
        )
        .record(took.as_secs_f64());
    }

    pub fn add_events(&self, accepted: u64, duplicates: u64) {
        self.counter("tally_events_total", &[("outcome", "accepted")])
            .increment(accepted);
        self.counter("tally_events_total", &[("outcome", "duplicate")])
            .increment(duplicates);
    }

    pub fn add_rejected(&self, n: u64) {
        self.counter("tally_events_total", &[("outcome", "rejected")])
            .increment(n);
    }

    /// A connection closed at the connection cap: `evicted` or `refused`.
    pub fn add_connection_dropped(&self, reason: &'static str) {
        self.counter(
            "tally_http_connections_dropped_total",
            &[("reason", reason)],
        )
        .increment(1);
    }

    pub fn add_worker_failure(&self, worker: &'static str) {
        self.counter("tally_worker_failures_total", &[("worker", worker)])
            .increment(1);
    }

    /// One entitlement check's answer.
    pub fn add_entitlement_check(&self, allowed: bool) {
        let outcome = if allowed { "allowed" } else { "denied" };
        self.counter("tally_entitlement_checks_total", &[("outcome", outcome)])
            .increment(1);
    }

    /// A credit debit: `amount` consumed, or `None` when the balance was short (402).
    pub fn add_credit_consumption(&self, amount: Option<rust_decimal::Decimal>) {
        use rust_decimal::prelude::ToPrimitive;
        match amount {
            Some(a) => {
                self.counter(
                    "tally_credit_consumptions_total",
                    &[("outcome", "consumed")],
                )
                .increment(1);
                self.gauge("tally_credits_consumed", &[])
                    .increment(a.to_f64().unwrap_or(0.0));
            }
            None => self
                .counter(
                    "tally_credit_consumptions_total",
                    &[("outcome", "insufficient")],
                )
                .increment(1),
        }
    }

    /// One HTTP request to Stripe (see [`StripeObserver`]).
    pub fn add_stripe_request(&self, endpoint: &str, outcome: &'static str, took: Duration) {
        self.counter(
            "tally_stripe_requests_total",
            &[("endpoint", endpoint), ("outcome", outcome)],
        )
        .increment(1);
        self.histogram(
            "tally_stripe_request_duration_seconds",
            &[("endpoint", endpoint)],
        )
        .record(took.as_secs_f64());
        self.gauge("tally_stripe_reachable", &[])
            .set(if outcome == "network_error" { 0.0 } else { 1.0 });
    }

    /// An inbound Stripe event: `processed`, `duplicate` or `failed`.
    pub fn add_stripe_event(&self, event_type: &str, outcome: &'static str) {
        self.counter(
            "tally_stripe_webhook_events_total",
            &[
                ("type", stripe_event_label(event_type)),
                ("outcome", outcome),
            ],
        )
        .increment(1);
    }

    /// An inbound Stripe event finished processing `lag` after it arrived.
    pub fn observe_stripe_event_lag(&self, lag: Duration) {
        self.histogram("tally_stripe_webhook_processing_lag_seconds", &[])
            .record(lag.as_secs_f64());
    }

    /// Sets the age of the oldest unprocessed inbound Stripe event (read at scrape time).
    pub fn set_stripe_inbox_age(&self, seconds: i64) {
        self.gauge("tally_stripe_webhook_oldest_unprocessed_age_seconds", &[])
            .set(seconds as f64);
    }

    /// A payment Stripe reported, once per payment: its amount collected counts as revenue.
    pub fn add_payment_succeeded(&self, amount_minor: i64, currency: &str) {
        self.counter("tally_payments_total", &[("outcome", "succeeded")])
            .increment(1);
        if let Ok(a) = u64::try_from(amount_minor) {
            let c = currency_label(currency);
            self.counter("tally_revenue_collected_minor_total", &[("currency", &c)])
                .increment(a);
        }
        if let Ok(mut n) = self.consecutive_payment_failures.lock() {
            *n = 0;
        }
        self.gauge("tally_payment_failures_consecutive", &[])
            .set(0.0);
    }

    /// A failed payment Stripe reported, once per attempt; `invoice` when of an invoice.
    pub fn add_payment_failed(&self, invoice: bool) {
        self.counter("tally_payments_total", &[("outcome", "failed")])
            .increment(1);
        if invoice {
            self.counter("tally_invoice_payment_failures_total", &[])
                .increment(1);
        }
        if let Ok(mut n) = self.consecutive_payment_failures.lock() {
            *n = n.saturating_add(1);
            self.gauge("tally_payment_failures_consecutive", &[])
                .set(*n as f64);
        }
    }

    /// An automatic top-up `requested`, `succeeded`, `failed`, `retried` (Stripe did not
    /// answer), `stopped` (the breaker opened) or `capped` (refused by the monthly cap).
    pub fn add_topup(&self, outcome: &'static str) {
        self.counter("tally_topups_total", &[("outcome", outcome)])
            .increment(1);
    }

    /// A Checkout Session `created` (by Tally) or `completed` (reported by Stripe).
    pub fn add_checkout_session(&self, outcome: &'static str) {
        self.counter("tally_checkout_sessions_total", &[("outcome", outcome)])
            .increment(1);
    }

    /// Invoice lines pushed to Stripe at period close.
    pub fn add_lines_pushed(&self, n: u64) {
        self.counter("tally_period_close_lines_pushed_total", &[])
            .increment(n);
    }

    /// A failed push of usage or invoices to Stripe.
    pub fn add_sync_failure(&self) {
        self.counter("tally_stripe_sync_failures_total", &[])
            .increment(1);
    }

    /// Whether this process held the period closer's lease at its last tick.
    pub fn set_closer_leader(&self, leader: bool) {
        self.gauge("tally_closer_leader", &[])
            .set(f64::from(u8::from(leader)));
    }

    /// Discrepancies found by the last reconciliation.
    pub fn set_reconcile_discrepancies(&self, n: u64) {
        self.gauge("tally_reconcile_discrepancies", &[])
            .set(n as f64);
    }

    /// One webhook delivery attempt to `endpoint`; `lag` (from the notification's creation) when
    /// it succeeded.
    pub fn add_delivery(&self, endpoint: &str, lag: Option<Duration>) {
        let outcome = if lag.is_some() { "succeeded" } else { "failed" };
        self.counter("tally_webhook_deliveries_total", &[("outcome", outcome)])
            .increment(1);
        if let Some(l) = lag {
            self.histogram("tally_webhook_delivery_lag_seconds", &[])
                .record(l.as_secs_f64());
        }
        if let Ok(mut f) = self.endpoint_failures.lock() {
            if lag.is_some() {
                f.remove(endpoint);
            } else {
                let n = f.entry(endpoint.to_owned()).or_default();
                *n = n.saturating_add(1);
            }
            let worst = f.values().copied().max().unwrap_or(0);
            self.gauge("tally_webhook_delivery_failures_consecutive", &[])
                .set(worst as f64);
        }
    }

    /// An endpoint was disabled: its failures no longer count as consecutive ones.
    pub fn add_endpoint_disabled(&self, endpoint: &str) {
        self.counter("tally_webhook_endpoints_disabled_total", &[])
            .increment(1);
        if let Ok(mut f) = self.endpoint_failures.lock() {
            f.remove(endpoint);
            let worst = f.values().copied().max().unwrap_or(0);
            self.gauge("tally_webhook_delivery_failures_consecutive", &[])
                .set(worst as f64);
        }
    }

    /// One customer email: `sent`, `failed` or `skipped`.
    pub fn add_email(&self, outcome: &'static str) {
        self.counter("tally_email_deliveries_total", &[("outcome", outcome)])
            .increment(1);
    }

    /// Sets the outbox lag (read at scrape time).
    pub fn set_outbox_lag(&self, seconds: i64) {
        self.gauge("tally_outbox_lag_seconds", &[])
            .set(seconds as f64);
    }

    /// Failed items of `worker` so far.
    pub fn worker_failures(&self, worker: &str) -> u64 {
        self.value(&format!(
            "tally_worker_failures_total{{worker=\"{worker}\"}}"
        ))
        .map_or(0, |v| v as u64)
    }

    /// The current value of one series, written as in the exposition text (e.g.
    /// `tally_events_total{outcome="accepted"}`), if it exists.
    pub fn value(&self, series: &str) -> Option<f64> {
        let text = self.handle.render();
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
            rest.trim().parse().ok()
        })
    }

    /// Folds recorded histogram samples into their buckets; run periodically so that samples do
    /// not pile up between scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// Counts Tally's requests to Stripe and remembers the last answer and failure for `/health`,
/// so that a probe never calls Stripe itself.
pub struct StripeObserver {
    pub metrics: std::sync::Arc<Metrics>,
    pub status: std::sync::Arc<StripeStatus>,
    pub clock: tally_store::clock::SharedClock,
}

impl tally_stripe::Observer for StripeObserver {
    fn request(&self, r: &tally_stripe::RequestRecord<'_>) {
        let outcome = r.outcome();
        self.metrics.add_stripe_request(r.endpoint, outcome, r.took);
        let at = self.clock.now();
        let what = || {
            format!(
                "{} {}: {}",
                r.method,
                r.endpoint,
                r.error.as_deref().unwrap_or("failed")
            )
        };
        match outcome {
            "ok" => self.status.record(at, Ok(())),
            "network_error" => self.status.record(at, Err(what())),
            _ => self.status.record_error_answer(at, what()),
        }
    }
}

/// What the last requests to Stripe said about its reachability.
#[derive(Default)]
pub struct StripeStatus {
    inner: Mutex<StripeStatusInner>,
    /// When the last request ended (monotonic: the ping's schedule does not follow the
    /// injectable clock, which tests freeze).
    last_request: Mutex<Option<std::time::Instant>>,
}

#[derive(Default, Clone)]
struct StripeStatusInner {
    last_ok: Option<chrono::DateTime<chrono::Utc>>,
    last_error: Option<(chrono::DateTime<chrono::Utc>, String)>,
    reachable: Option<bool>,
}

/// A snapshot of [`StripeStatus`].
#[derive(Debug, Clone, PartialEq)]
pub struct StripeReachability {
    /// `None` before the first request.
    pub reachable: Option<bool>,
    pub last_ok: Option<chrono::DateTime<chrono::Utc>>,
    pub last_error: Option<(chrono::DateTime<chrono::Utc>, String)>,
}

impl StripeStatus {
    /// Records one request's result at `at`: `Ok` when Stripe answered (any status), `Err`
    /// with why not when it could not be reached.
    pub fn record(&self, at: chrono::DateTime<chrono::Utc>, result: Result<(), String>) {
        self.touch();
        if let Ok(mut s) = self.inner.lock() {
            match result {
                Ok(()) => {
                    s.last_ok = Some(at);
                    s.reachable = Some(true);
                }
                Err(e) => {
                    s.last_error = Some((at, e));
                    s.reachable = Some(false);
                }
            }
        }
    }

    /// Records an answer of Stripe that was an error (reachable, but the request failed).
    pub fn record_error_answer(&self, at: chrono::DateTime<chrono::Utc>, error: String) {
        self.touch();
        if let Ok(mut s) = self.inner.lock() {
            s.last_error = Some((at, error));
            s.reachable = Some(true);
        }
    }

    fn touch(&self) {
        if let Ok(mut t) = self.last_request.lock() {
            *t = Some(std::time::Instant::now());
        }
    }

    /// How long since the last request to Stripe ended (`None` before the first).
    pub fn since_last_request(&self) -> Option<Duration> {
        self.last_request
            .lock()
            .ok()
            .and_then(|t| t.map(|i| i.elapsed()))
    }

    pub fn snapshot(&self) -> StripeReachability {
        let s = self.inner.lock().map(|s| s.clone()).unwrap_or_default();
        StripeReachability {
            reachable: s.reachable,
            last_ok: s.last_ok,
            last_error: s.last_error,
        }
    }
}
