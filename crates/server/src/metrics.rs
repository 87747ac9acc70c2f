//! Prometheus metrics in the text exposition format, kept by hand (a few counters and one
//! histogram do not need an exporter crate).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Counters and latency by route.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, String, u16), u64>>,
    latency: Mutex<BTreeMap<(&'static str, String), Histogram>>,
    pub events_accepted: AtomicU64,
    pub events_duplicate: AtomicU64,
    pub events_rejected: AtomicU64,
    /// Failed items of background workers (see `service::worker`), by worker.
    worker_failures: Mutex<BTreeMap<&'static str, u64>>,
    /// Connections closed to make room for a new one at the connection cap.
    pub connections_evicted: AtomicU64,
    /// Connections refused at the cap because every open one had a request in flight.
    pub connections_refused: AtomicU64,
    pub deliveries_succeeded: AtomicU64,
    pub deliveries_failed: AtomicU64,
    pub endpoints_disabled: AtomicU64,
    /// Usage lines put on Stripe invoices by the pusher.
    pub lines_pushed: AtomicU64,
    /// Usage push attempts that failed (retried later).
    pub sync_failures: AtomicU64,
    /// Discrepancies found by the last daily reconciliation.
    reconcile_discrepancies: AtomicU64,
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

impl Metrics {
    /// Records one request to `route` (the matched path pattern or `unmatched`); `method` comes
    /// from [`method_label`], `status` from the server's own answers: every label is bounded.
    pub fn record(&self, method: &'static str, route: &str, status: u16, took: Duration) {
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((method, route.to_owned(), status)).or_default() += 1;
        }
        if let Ok(mut l) = self.latency.lock() {
            let h = l.entry((method, route.to_owned())).or_default();
            let secs = took.as_secs_f64();
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    h.counts[i] += 1;
                }
            }
            h.count += 1;
            h.sum += secs;
        }
    }

    pub fn add_events(&self, accepted: u64, duplicates: u64) {
        self.events_accepted.fetch_add(accepted, Ordering::Relaxed);
        self.events_duplicate
            .fetch_add(duplicates, Ordering::Relaxed);
    }

    pub fn add_rejected(&self, n: u64) {
        self.events_rejected.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_worker_failure(&self, worker: &'static str) {
        if let Ok(mut w) = self.worker_failures.lock() {
            *w.entry(worker).or_default() += 1;
        }
    }

    /// One webhook delivery attempt, `succeeded` or `failed`.
    pub fn add_delivery(&self, outcome: &'static str) {
        let c = if outcome == "succeeded" {
            &self.deliveries_succeeded
        } else {
            &self.deliveries_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_endpoint_disabled(&self) {
        self.endpoints_disabled.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_reconcile_discrepancies(&self, n: u64) {
        self.reconcile_discrepancies.store(n, Ordering::Relaxed);
    }

    /// Failed items of `worker` so far.
    pub fn worker_failures(&self, worker: &str) -> u64 {
        self.worker_failures
            .lock()
            .map_or(0, |w| w.get(worker).copied().unwrap_or(0))
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP tally_http_requests_total HTTP requests by method, route and status.\n",
        );
        out.push_str("# TYPE tally_http_requests_total counter\n");
        if let Ok(r) = self.requests.lock() {
            for ((method, route, status), n) in r.iter() {
                let _ = writeln!(
                    out,
                    "tally_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str(
            "# HELP tally_http_request_duration_seconds HTTP request latency by method and route.\n",
        );
        out.push_str("# TYPE tally_http_request_duration_seconds histogram\n");
        if let Ok(l) = self.latency.lock() {
            for ((method, route), h) in l.iter() {
                let labels = format!("method=\"{method}\",route=\"{route}\"");
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "tally_http_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "tally_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "tally_http_request_duration_seconds_sum{{{labels}}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "tally_http_request_duration_seconds_count{{{labels}}} {}",
                    h.count
                );
            }
        }
        out.push_str("# HELP tally_events_total Usage events by outcome.\n");
        out.push_str("# TYPE tally_events_total counter\n");
        for (outcome, c) in [
            ("accepted", &self.events_accepted),
            ("duplicate", &self.events_duplicate),
            ("rejected", &self.events_rejected),
        ] {
            let _ = writeln!(
                out,
                "tally_events_total{{outcome=\"{outcome}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        out.push_str(
            "# HELP tally_http_connections_dropped_total Connections closed at the connection cap: evicted to make room (idle or unfinished) or refused (all busy).\n",
        );
        out.push_str("# TYPE tally_http_connections_dropped_total counter\n");
        for (reason, c) in [
            ("evicted", &self.connections_evicted),
            ("refused", &self.connections_refused),
        ] {
            let _ = writeln!(
                out,
                "tally_http_connections_dropped_total{{reason=\"{reason}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        out.push_str(
            "# HELP tally_worker_failures_total Items a background worker failed and skipped.\n",
        );
        out.push_str("# TYPE tally_worker_failures_total counter\n");
        for worker in [
            "closer",
            "notifier",
            "deliverer",
            "usage_pusher",
            "reconciler",
        ] {
            let _ = writeln!(
                out,
                "tally_worker_failures_total{{worker=\"{worker}\"}} {}",
                self.worker_failures(worker)
            );
        }
        out.push_str(
            "# HELP tally_webhook_deliveries_total Outgoing webhook delivery attempts by outcome.\n",
        );
        out.push_str("# TYPE tally_webhook_deliveries_total counter\n");
        for (outcome, c) in [
            ("succeeded", &self.deliveries_succeeded),
            ("failed", &self.deliveries_failed),
        ] {
            let _ = writeln!(
                out,
                "tally_webhook_deliveries_total{{outcome=\"{outcome}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        out.push_str(
            "# HELP tally_webhook_endpoints_disabled_total Webhook endpoints disabled after failing for 3 days.\n",
        );
        out.push_str("# TYPE tally_webhook_endpoints_disabled_total counter\n");
        let _ = writeln!(
            out,
            "tally_webhook_endpoints_disabled_total {}",
            self.endpoints_disabled.load(Ordering::Relaxed)
        );
        for (name, help, kind, v) in [
            (
                "tally_period_close_lines_pushed_total",
                "Usage lines put on Stripe invoices at period close.",
                "counter",
                &self.lines_pushed,
            ),
            (
                "tally_stripe_sync_failures_total",
                "Usage push attempts to Stripe that failed (retried later).",
                "counter",
                &self.sync_failures,
            ),
            (
                "tally_reconcile_discrepancies",
                "Discrepancies between Tally and Stripe found by the last daily reconciliation.",
                "gauge",
                &self.reconcile_discrepancies,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
        out
    }
}
