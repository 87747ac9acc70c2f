//! The simulator core: configuration, the world behind a lock, event emission, lookups, lists
//! and `expand[]`.

use crate::error::ApiError;
use crate::form::Params;
use crate::render::list;
use crate::state::*;
use crate::util::{new_id, wall_now};
use crate::webhooks::Delivery;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// Simulator settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to bind; loopback by default.
    pub host: String,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// Base URL written into checkout/portal `url`s; defaults to `http://<bound address>`.
    pub public_url: Option<String>,
    /// Where the world is loaded from at start and saved to on change, if set.
    pub state_file: Option<PathBuf>,
    /// The `api_version` stamped on events.
    pub api_version: String,
    /// First webhook retry delay; doubles per attempt up to `webhook_retry_max`.
    pub webhook_retry_base: Duration,
    pub webhook_retry_max: Duration,
    /// Attempts per delivery before giving up (Stripe retries for three days).
    pub webhook_max_attempts: u32,
    /// How long a receiver may take to answer one delivery.
    pub webhook_timeout: Duration,
    /// Days after the previous failed attempt at which an invoice payment is retried.
    pub retry_schedule_days: Vec<i64>,
    /// Subscription status once every retry has failed.
    pub after_retries: AfterRetries,
    /// How often real-time (clockless) subscriptions are checked for renewals.
    pub tick: Duration,
    /// A webhook endpoint (url, `whsec_…` secret) registered at start for every event type,
    /// so that a local app can know its signing secret in advance.
    pub webhook: Option<(String, String)>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "127.0.0.1".into(),
            port: 12111,
            public_url: None,
            state_file: None,
            api_version: "2025-08-27.basil".into(),
            webhook_retry_base: Duration::from_secs(1),
            webhook_retry_max: Duration::from_secs(3600),
            webhook_max_attempts: 30,
            webhook_timeout: Duration::from_secs(10),
            retry_schedule_days: vec![3, 5, 7],
            after_retries: AfterRetries::Cancel,
            tick: Duration::from_secs(1),
            webhook: None,
        }
    }
}

/// An event collected while events are held: type, object, previous attributes, time.
pub type HeldEvent = (String, Value, Option<Value>, i64);

/// Who caused the current change, for the events' `request` member.
#[derive(Clone, Debug, Default)]
pub struct ReqCtx {
    pub id: Option<String>,
    pub idempotency_key: Option<String>,
}

pub struct Sim {
    pub w: World,
    pub cfg: Arc<Config>,
    pub base_url: String,
    pub tx: Option<UnboundedSender<Delivery>>,
    pub req: ReqCtx,
    pub faults: crate::faults::Faults,
    pub dirty: bool,
    /// While set, events are collected instead of emitted (see `hold_events`).
    pub held: Option<Vec<HeldEvent>>,
}

pub type Shared = Arc<std::sync::Mutex<Sim>>;

/// Which object an id names, by its prefix.
pub fn kind_of(id: &str) -> Option<&'static str> {
    if id.starts_with("sub_sched_") {
        return Some("subscription_schedule");
    }
    let p = id.split('_').next()?;
    Some(match p {
        "cus" => "customer",
        "prod" => "product",
        "price" => "price",
        "sub" => "subscription",
        "si" => "subscription_item",
        "in" => "invoice",
        "ii" => "invoiceitem",
        "pi" => "payment_intent",
        "ch" => "charge",
        "re" => "refund",
        "pm" => "payment_method",
        "cs" => "checkout.session",
        "promo" => "promotion_code",
        "di" => "discount",
        "mtr" => "billing.meter",
        "clock" => "test_helpers.test_clock",
        "bpc" => "billing_portal.configuration",
        _ => return None,
    })
}

impl Sim {
    pub fn new(cfg: Arc<Config>, base_url: String, world: World) -> Sim {
        Sim {
            w: world,
            cfg,
            base_url,
            tx: None,
            req: ReqCtx::default(),
            faults: Default::default(),
            dirty: false,
            held: None,
        }
    }

    // ---- time ----

    pub fn clock_now(&self, clock: Option<&str>) -> i64 {
        clock
            .and_then(|c| self.w.test_clocks.get(c))
            .map(|c| c.frozen_time)
            .unwrap_or_else(wall_now)
    }

    /// The current time for a customer: its test clock's frozen time, or the wall clock.
    pub fn now_for(&self, customer: Option<&str>) -> i64 {
        let clock = customer
            .and_then(|c| self.w.customers.get(c))
            .and_then(|c| c.test_clock.clone());
        self.clock_now(clock.as_deref())
    }

    pub fn clock_of(&self, customer: &str) -> Option<String> {
        self.w
            .customers
            .get(customer)
            .and_then(|c| c.test_clock.clone())
    }

    // ---- events ----

    /// Records an event and queues it for every endpoint that listens to its type.
    pub fn emit(&mut self, kind: &str, object: Value, previous: Option<Value>, created: i64) {
        if let Some(h) = &mut self.held {
            h.push((kind.to_string(), object, previous, created));
            return;
        }
        let endpoints: Vec<WebhookEndpoint> = self
            .w
            .webhook_endpoints
            .values()
            .filter(|e| e.wants(kind))
            .cloned()
            .collect();
        let seq = self.w.next_seq();
        let ev = Event {
            id: new_id("evt"),
            seq,
            kind: kind.to_string(),
            created,
            object,
            previous_attributes: previous,
            request_id: self.req.id.clone(),
            idempotency_key: self.req.idempotency_key.clone(),
            pending_webhooks: endpoints.len() as i64,
        };
        let payload = serde_json::to_string_pretty(&self.r_event(&ev)).unwrap_or_default();
        let id = ev.id.clone();
        self.w.events.insert(id.clone(), ev);
        self.dirty = true;
        if let Some(tx) = &self.tx {
            for e in endpoints {
                let _ = tx.send(Delivery {
                    endpoint: e.id.clone(),
                    url: e.url.clone(),
                    secret: e.secret.clone(),
                    event_id: id.clone(),
                    payload: payload.clone(),
                });
            }
        }
    }

    /// Starts collecting events, to be released by `release_events`.
    pub fn hold_events(&mut self) {
        self.held = Some(vec![]);
    }

    /// Emits the collected events in order. Objects created during the operation are shown as
    /// they are at its end (Stripe snapshots a synchronous operation's events when it finishes),
    /// so their interim `*.updated` events are dropped.
    pub fn release_events(&mut self, created_kind: &str, id: &str, updated_kind: &str) {
        let Some(held) = self.held.take() else { return };
        let fin = self.render_id(id);
        for (kind, mut obj, prev, t) in held {
            let same = obj.get("id").and_then(Value::as_str) == Some(id);
            if same && kind == updated_kind {
                continue;
            }
            if same && kind == created_kind {
                if let Some(f) = &fin {
                    obj = f.clone();
                }
            }
            self.emit(&kind, obj, prev, t);
        }
    }

    /// Emits `<kind>` with `previous_attributes` holding the top-level members that changed.
    /// Nothing is emitted when nothing changed.
    pub fn emit_updated(&mut self, kind: &str, before: &Value, after: Value, created: i64) {
        if let Some(prev) = diff(before, &after) {
            self.emit(kind, after, Some(prev), created);
        }
    }

    // ---- lookups ----

    pub fn customer(&self, id: &str, param: &str) -> Result<&Customer, ApiError> {
        self.w
            .customers
            .get(id)
            .filter(|c| !c.deleted)
            .ok_or_else(|| ApiError::no_such("customer", id, param))
    }
    pub fn price(&self, id: &str, param: &str) -> Result<&Price, ApiError> {
        self.w
            .prices
            .get(id)
            .ok_or_else(|| ApiError::no_such("price", id, param))
    }
    pub fn subscription(&self, id: &str, param: &str) -> Result<&Subscription, ApiError> {
        self.w
            .subscriptions
            .get(id)
            .ok_or_else(|| ApiError::no_such("subscription", id, param))
    }
    pub fn invoice(&self, id: &str, param: &str) -> Result<&Invoice, ApiError> {
        self.w
            .invoices
            .get(id)
            .ok_or_else(|| ApiError::no_such("invoice", id, param))
    }
    pub fn coupon(&self, id: &str, param: &str) -> Result<&Coupon, ApiError> {
        self.w
            .coupons
            .get(id)
            .filter(|c| !c.deleted)
            .ok_or_else(|| ApiError::no_such("coupon", id, param))
    }
    pub fn payment_method(&self, id: &str, param: &str) -> Result<&PaymentMethod, ApiError> {
        self.w
            .payment_methods
            .get(id)
            .ok_or_else(|| ApiError::no_such("payment_method", id, param))
    }

    pub fn customer_delinquent(&self, id: &str) -> bool {
        self.w
            .invoices
            .values()
            .any(|i| i.customer == id && i.status == "open" && i.attempt_count > 0)
    }

    /// Renders any object by id (for `expand[]`).
    pub fn render_id(&self, id: &str) -> Option<Value> {
        Some(match kind_of(id)? {
            "customer" => self.r_customer(self.w.customers.get(id)?),
            "product" => self.r_product(self.w.products.get(id)?),
            "price" => self.r_price(self.w.prices.get(id)?),
            "subscription" => self.r_subscription(self.w.subscriptions.get(id)?),
            "subscription_schedule" => self.r_schedule(self.w.subscription_schedules.get(id)?),
            "invoice" => self.r_invoice(self.w.invoices.get(id)?, false),
            "invoiceitem" => self.r_invoice_item(self.w.invoice_items.get(id)?),
            "payment_intent" => self.r_payment_intent(self.w.payment_intents.get(id)?),
            "charge" => self.r_charge(self.w.charges.get(id)?),
            "refund" => self.r_refund(self.w.refunds.get(id)?),
            "payment_method" => self.r_payment_method(self.w.payment_methods.get(id)?),
            "checkout.session" => self.r_checkout_session(self.w.checkout_sessions.get(id)?),
            "promotion_code" => self.r_promotion_code(self.w.promotion_codes.get(id)?),
            "discount" => self.r_discount(self.w.discounts.get(id)?),
            "billing.meter" => self.r_meter(self.w.meters.get(id)?),
            "test_helpers.test_clock" => self.r_test_clock(self.w.test_clocks.get(id)?),
            "billing_portal.configuration" => self.r_portal_config(self.w.portal_configs.get(id)?),
            "subscription_item" => {
                let sub = self
                    .w
                    .subscriptions
                    .values()
                    .find(|s| s.items.iter().any(|i| i.id == id))?;
                self.r_sub_item(sub, sub.items.iter().find(|i| i.id == id)?)
            }
            _ => return None,
        })
    }

    /// Applies `expand[]` paths (`customer`, `latest_invoice`, `data.customer`, `line_items`, …).
    pub fn expand(&self, v: &mut Value, paths: &[String]) -> Result<(), ApiError> {
        for p in paths {
            let segs: Vec<&str> = p.split('.').collect();
            if segs.len() > 4 {
                return Err(ApiError::invalid(
                    format!("You cannot expand more than 4 levels of a property. Property: {p}"),
                    Some("expand".into()),
                ));
            }
            self.expand_path(v, &segs, p)?;
        }
        Ok(())
    }

    fn expand_path(&self, v: &mut Value, segs: &[&str], full: &str) -> Result<(), ApiError> {
        let Some((head, rest)) = segs.split_first() else {
            return Ok(());
        };
        if let Value::Array(items) = v {
            for it in items {
                self.expand_path(it, segs, full)?;
            }
            return Ok(());
        }
        let Some(obj) = v.as_object_mut() else {
            return Ok(());
        };
        if *head == "line_items" && obj.get("object") == Some(&json!("checkout.session")) {
            let id = obj
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if let Some(s) = self.w.checkout_sessions.get(&id) {
                let data = s.lines.iter().map(|l| self.r_checkout_line(s, l)).collect();
                obj.insert(
                    "line_items".into(),
                    list(
                        &format!("/v1/checkout/sessions/{id}/line_items"),
                        data,
                        false,
                    ),
                );
            }
        }
        if *head == "tiers"
            && matches!(
                obj.get("object").and_then(Value::as_str),
                Some("price" | "plan")
            )
        {
            let id = obj
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if let Some(p) = self.w.prices.get(&id) {
                obj.insert("tiers".into(), crate::render::tiers_json(p));
            }
        }
        if *head == "payments" && obj.get("object") == Some(&json!("invoice")) {
            let id = obj
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let data: Vec<Value> = self
                .w
                .invoices
                .get(&id)
                .and_then(|i| self.r_invoice_payment(i))
                .into_iter()
                .collect();
            obj.insert(
                "payments".into(),
                list(&format!("/v1/invoice_payments?invoice={id}"), data, false),
            );
        }
        let Some(child) = obj.get_mut(*head) else {
            return Err(ApiError::invalid(
                format!("This property cannot be expanded ({full})."),
                Some("expand".into()),
            ));
        };
        match child {
            Value::String(id) => {
                let id = id.clone();
                if let Some(r) = self.render_id(&id) {
                    *child = r;
                } else {
                    return Err(ApiError::invalid(
                        format!("This property cannot be expanded ({full})."),
                        Some("expand".into()),
                    ));
                }
            }
            Value::Array(items) => {
                for it in items.iter_mut() {
                    if let Value::String(id) = it {
                        if let Some(r) = self.render_id(&id.clone()) {
                            *it = r;
                        }
                    }
                }
            }
            _ => {}
        }
        if !rest.is_empty() {
            self.expand_path(child, rest, full)?;
        }
        Ok(())
    }
}

/// `previous_attributes`: the earlier values of what changed. Nested objects are compared key by
/// key (a key that did not exist before shows as null); lists and scalars are given whole.
pub fn diff(before: &Value, after: &Value) -> Option<Value> {
    let (Some(b), Some(a)) = (before.as_object(), after.as_object()) else {
        return (before != after).then(|| before.clone());
    };
    let mut prev = serde_json::Map::new();
    for (k, bv) in b {
        match a.get(k) {
            Some(av) if av == bv => {}
            Some(av) if av.is_object() && bv.is_object() => {
                if let Some(d) = diff(bv, av) {
                    prev.insert(k.clone(), d);
                }
            }
            _ => {
                prev.insert(k.clone(), bv.clone());
            }
        }
    }
    for k in a.keys() {
        if !b.contains_key(k) {
            prev.insert(k.clone(), Value::Null);
        }
    }
    (!prev.is_empty()).then_some(Value::Object(prev))
}

/// Cursor pagination over objects already ordered newest first.
pub fn paginate<T, F>(
    items: Vec<(String, T)>,
    p: &Params,
    url: &str,
    render: F,
) -> Result<Value, ApiError>
where
    F: Fn(&T) -> Value,
{
    let limit = p.i64("limit")?.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid(
            "Invalid limit: must be between 1 and 100",
            Some("limit".into()),
        ));
    }
    let limit = limit as usize;
    let start = if let Some(after) = p.str("starting_after")? {
        let pos = items
            .iter()
            .position(|(id, _)| *id == after)
            .ok_or_else(|| ApiError::no_such("object", &after, "starting_after"))?;
        pos + 1
    } else if let Some(before) = p.str("ending_before")? {
        let pos = items
            .iter()
            .position(|(id, _)| *id == before)
            .ok_or_else(|| ApiError::no_such("object", &before, "ending_before"))?;
        let from = pos.saturating_sub(limit);
        let data: Vec<Value> = items[from..pos].iter().map(|(_, t)| render(t)).collect();
        return Ok(list(url, data, from > 0));
    } else {
        0
    };
    let end = (start + limit).min(items.len());
    let data: Vec<Value> = items[start.min(end)..end]
        .iter()
        .map(|(_, t)| render(t))
        .collect();
    Ok(list(url, data, end < items.len()))
}

/// `created[gte]=…` style filters (and plain `created=…`).
pub fn range_ok(p: &Params, key: &str, value: i64) -> Result<bool, ApiError> {
    if let Some(r) = p.obj(key)? {
        for op in ["gt", "gte", "lt", "lte"] {
            if let Some(b) = r.i64(op)? {
                let pass = match op {
                    "gt" => value > b,
                    "gte" => value >= b,
                    "lt" => value < b,
                    _ => value <= b,
                };
                if !pass {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    } else if let Some(x) = p.i64(key)? {
        Ok(value == x)
    } else {
        Ok(true)
    }
}
