//! Usage event ingestion: parse and validate a batch completely before it reaches the store, so a
//! batch with any invalid event stores nothing and every invalid index is explained.
//!
//! A batch is read in one pass into events that borrow their text from the body. Only when that
//! fails is the body read again as a list of raw values, each parsed on its own, so that every
//! malformed event is reported at its index exactly as before.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tally_core::catalog::{Aggregation, Catalog, Metric};
use tally_core::decimal::{self, DecimalError, EVENT_VALUE};
use tally_core::period::Period;
use tally_store::{IngestOutcome, NewEvent, MAX_ID_LEN};

use crate::config::MAX_EVENTS_PER_BATCH;
use crate::error::{ApiError, InvalidItem};
use crate::state::{AppState, CustomerAnchor};

use super::rfc3339;

mod common_shape;

/// How far in the future an event's timestamp may be.
pub const MAX_FUTURE: Duration = Duration::minutes(5);

/// A string field as sent: borrowed from the body, or owned when it had escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            // The same words as `String`'s, so that error messages do not change.
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_string(V)
    }
}

/// A JSON value's text as sent (a `value` is read as a decimal from its text, never through a
/// float).
struct RawText<'a>(&'a str);

impl<'de: 'a, 'a> Deserialize<'de> for RawText<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(d).map(|r| RawText(r.get()))
    }
}

/// A field that is there, whatever its JSON value (serde reads `null` as a missing `Option`).
fn present<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<RawText<'a>>, D::Error> {
    RawText::deserialize(d).map(Some)
}

/// One event as sent, before validation. Fields are optional so that each missing one is
/// reported for its index rather than failing the whole body.
#[derive(Deserialize)]
struct WireEvent<'a> {
    #[serde(borrow)]
    id: Option<Text<'a>>,
    #[serde(borrow)]
    customer: Option<Text<'a>>,
    #[serde(borrow)]
    metric: Option<Text<'a>>,
    /// Present (even as `null`, which is then an invalid value) or left out (one).
    #[serde(borrow, default, deserialize_with = "present")]
    value: Option<RawText<'a>>,
    #[serde(borrow)]
    timestamp: Option<Text<'a>>,
    properties: Option<Value>,
}

/// An event that passed the checks that need no database.
struct CheckedEvent<'a, 'c> {
    id: Cow<'a, str>,
    customer: Cow<'a, str>,
    metric: &'c Metric,
    value: Decimal,
    timestamp: DateTime<Utc>,
    properties: Option<Value>,
    unique_key: Option<String>,
}

/// Parses an event's `value` from its JSON text (a number, or a string holding one) by the one
/// decimal grammar of [`tally_core::decimal`], within [`EVENT_VALUE`]'s limits. Never goes through
/// a float; allocates only to describe an error.
fn parse_value(text: &str) -> Result<Decimal, String> {
    let text = text.trim_matches([' ', '\n', '\t', '\r']);
    let parsed = match text.strip_prefix('"') {
        // No character of the grammar needs an escape: a string with one is not a number.
        Some(s) => match s.strip_suffix('"') {
            Some(inner) if !inner.contains('\\') => decimal::parse(inner, &EVENT_VALUE),
            _ => Err(DecimalError::Syntax),
        },
        None if text == "null" => {
            return Err("value must not be null (leave it out to count one)".into());
        }
        None => decimal::parse_json_number(text, &EVENT_VALUE),
    };
    parsed.map_err(|e| format!("value {text} {e}"))
}

fn invalid(index: usize, code: &'static str, param: &'static str, message: String) -> InvalidItem {
    InvalidItem {
        index,
        code,
        message,
        param: Some(param),
    }
}

/// An event from before its customer existed: no allowance period of the customer holds it, so
/// it would be stored and never billed.
fn before_customer(index: usize, created: DateTime<Utc>) -> InvalidItem {
    invalid(
        index,
        "timestamp_before_customer",
        "timestamp",
        format!(
            "timestamp is before the customer was created ({})",
            created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ),
    )
}

/// What the previous event of a batch had: a batch nearly always names one or two metrics (which
/// the catalog looks up by scanning), and often one timestamp for all its events.
struct Memo<'a> {
    catalog: &'a Catalog,
    metric: Option<&'a Metric>,
    timestamp: Option<(&'a str, DateTime<Utc>)>,
}

impl<'a> Memo<'a> {
    fn metric(&mut self, id: &str) -> Option<&'a Metric> {
        match self.metric {
            Some(m) if m.id == id => Some(m),
            _ => {
                let m = self.catalog.metric(id);
                if m.is_some() {
                    self.metric = m;
                }
                m
            }
        }
    }

    fn timestamp(&mut self, text: &'a str) -> Option<DateTime<Utc>> {
        if let Some((t, at)) = self.timestamp {
            if t == text {
                return Some(at);
            }
        }
        let at = rfc3339::parse_utc(text)?;
        self.timestamp = Some((text, at));
        Some(at)
    }
}

/// One event of a body that is not an array of well-formed events, parsed on its own.
fn parse_event(index: usize, raw: &RawValue) -> Result<WireEvent<'_>, InvalidItem> {
    serde_json::from_str(raw.get()).map_err(|e| InvalidItem {
        index,
        code: "malformed_event",
        message: format!("the event is not an object of the documented fields: {e}"),
        param: None,
    })
}

/// The first and last timestamps an event may have (both allowed).
#[derive(Clone, Copy)]
struct Bounds {
    /// `now − the deduplication window`.
    earliest: DateTime<Utc>,
    /// `now + MAX_FUTURE`.
    latest: DateTime<Utc>,
    window_days: i64,
}

/// Checks one event against the catalog and the clock.
fn check<'a>(
    index: usize,
    w: WireEvent<'a>,
    memo: &mut Memo<'a>,
    now: DateTime<Utc>,
    bounds: Bounds,
) -> Result<CheckedEvent<'a, 'a>, InvalidItem> {
    let latest = bounds.latest;
    let id = match w.id {
        Some(Text(id)) if !id.is_empty() && id.len() <= MAX_ID_LEN => id,
        Some(_) => {
            return Err(invalid(
                index,
                "invalid_id",
                "id",
                "id must be 1–255 characters".into(),
            ))
        }
        None => return Err(invalid(index, "missing_id", "id", "id is required".into())),
    };
    let customer = match w.customer {
        Some(Text(c)) if tally_store::is_valid_customer_id(&c) => c,
        Some(Text(c)) => {
            return Err(invalid(
                index,
                "unknown_customer",
                "customer",
                format!("{:?} is not a valid customer id", &*c),
            ))
        }
        None => {
            return Err(invalid(
                index,
                "missing_customer",
                "customer",
                "customer is required".into(),
            ))
        }
    };
    let Some(Text(metric_id)) = w.metric else {
        return Err(invalid(
            index,
            "missing_metric",
            "metric",
            "metric is required".into(),
        ));
    };
    let Some(metric) = memo.metric(&metric_id) else {
        return Err(invalid(
            index,
            "unknown_metric",
            "metric",
            format!("the catalog has no metric {:?}", &*metric_id),
        ));
    };
    // Count metrics need no value; one event counts one.
    let value = match w.value {
        Some(RawText(raw)) => {
            parse_value(raw).map_err(|m| invalid(index, "invalid_value", "value", m))?
        }
        None => Decimal::ONE,
    };
    if value.is_sign_negative() && !value.is_zero() && !metric.allow_negative {
        return Err(invalid(
            index,
            "negative_value",
            "value",
            format!("metric {:?} does not allow negative values", &*metric_id),
        ));
    }
    let timestamp = match w.timestamp {
        Some(Text(t)) => match &t {
            Cow::Borrowed(b) => memo.timestamp(b),
            Cow::Owned(o) => rfc3339::parse_utc(o),
        }
        .ok_or_else(|| {
            invalid(
                index,
                "invalid_timestamp",
                "timestamp",
                format!("{:?} is not an RFC 3339 timestamp", &*t),
            )
        })?,
        None => now,
    };
    if timestamp > latest {
        return Err(invalid(
            index,
            "timestamp_in_future",
            "timestamp",
            "timestamp is more than 5 minutes in the future".into(),
        ));
    }
    // Ids are deduplicated over the window: an older event could be a copy of one whose key is
    // no longer kept in memory, so it is refused rather than risk answering from a partial set.
    if timestamp < bounds.earliest {
        return Err(invalid(
            index,
            "timestamp_outside_dedup_window",
            "timestamp",
            format!(
                "timestamp is older than the deduplication window ({} days)",
                bounds.window_days
            ),
        ));
    }
    if let Some(p) = &w.properties {
        if !p.is_object() {
            return Err(invalid(
                index,
                "invalid_properties",
                "properties",
                "properties must be an object".into(),
            ));
        }
    }
    let unique_key = match (metric.aggregation, &metric.unique_property) {
        (Aggregation::UniqueCount, Some(prop)) => {
            match w.properties.as_ref().and_then(|p| p.get(prop)) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => Some(v.to_string()),
                _ => {
                    return Err(invalid(
                        index,
                        "missing_property",
                        "properties",
                        format!(
                        "metric {:?} counts distinct values of property {prop:?}, which is missing",
                        &*metric_id
                    ),
                    ))
                }
            }
        }
        _ => None,
    };
    Ok(CheckedEvent {
        id,
        customer,
        metric,
        value,
        timestamp,
        properties: w.properties,
        unique_key,
    })
}

/// The body of `POST /v1/events` as a list of raw values, each parsed on its own.
#[derive(Deserialize)]
struct WireBatch<'a> {
    #[serde(borrow)]
    events: Option<Vec<&'a RawValue>>,
}

/// The body of `POST /v1/events` read by serde_json in one pass.
#[derive(Deserialize)]
struct ParsedBody<'a> {
    #[serde(borrow)]
    events: Option<Events<'a>>,
}

/// The events of a body, in a list with room for a typical batch from the start (JSON arrays do
/// not tell their length, and growing the list one doubling at a time copies every event).
struct Events<'a>(Vec<WireEvent<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for Events<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Events<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Events<'a>, A::Error> {
                let mut events = Vec::with_capacity(seq.size_hint().unwrap_or(0).max(128));
                while let Some(e) = seq.next_element()? {
                    events.push(e);
                }
                Ok(Events(events))
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

/// The events of a request body, read by serde_json.
enum Batch<'a> {
    /// Every event was a well-formed object of the documented fields.
    Parsed(Vec<WireEvent<'a>>),
    /// Anything else: each event is parsed on its own during validation.
    Raw(Vec<&'a RawValue>),
}

impl<'a> Batch<'a> {
    /// Reads a body `{"events": [...]}` (400 when it is not JSON or has no `events`).
    fn from_body(body: &'a [u8]) -> Result<Batch<'a>, ApiError> {
        // Checking UTF-8 once for the whole body is much cheaper than string by string.
        let parsed = std::str::from_utf8(body)
            .ok()
            .and_then(|text| serde_json::from_str::<ParsedBody<'a>>(text).ok());
        let batch = match parsed {
            Some(b) => b.events.map(|e| Batch::Parsed(e.0)),
            None => serde_json::from_slice::<WireBatch<'a>>(body)
                .map_err(|e| ApiError::malformed_json(&e))?
                .events
                .map(Batch::Raw),
        };
        batch.ok_or_else(|| {
            ApiError::bad_request("missing_events", "the body must be {\"events\": [...]}")
                .with_param("events")
        })
    }

    fn len(&self) -> usize {
        match self {
            Batch::Parsed(v) => v.len(),
            Batch::Raw(v) => v.len(),
        }
    }
}

/// A valid batch, ready for the store.
pub struct ValidBatch<'a> {
    pub events: Vec<NewEvent>,
    /// Each event's customer and metric, borrowed from the body and the catalog, so that what
    /// changed can be told after `events` went to the store.
    pub usage: Vec<(Cow<'a, str>, &'a str)>,
}

fn check_size(n: usize) -> Result<(), ApiError> {
    if n == 0 {
        return Err(
            ApiError::bad_request("empty_batch", "events must contain at least one event")
                .with_param("events"),
        );
    }
    if n > MAX_EVENTS_PER_BATCH {
        return Err(ApiError::bad_request(
            "batch_too_large",
            format!("a batch holds at most {MAX_EVENTS_PER_BATCH} events, this one has {n}"),
        )
        .with_param("events"));
    }
    Ok(())
}

/// Validates a batch completely: every invalid event is reported, or every event is returned with
/// its allowance period.
pub async fn validate(
    state: &AppState,
    events: &[&RawValue],
    now: DateTime<Utc>,
) -> Result<Vec<NewEvent>, ApiError> {
    let b = read_batch(state, Batch::Raw(events.to_vec()), now)?;
    Ok(b.finish(state, events.len()).await?.events)
}

/// Validates the body of `POST /v1/events`, `{"events": [...]}`, as [`validate`] does.
///
/// A body of the common shape is validated while it is read (see [`common_shape`]); any other
/// is read by serde_json first.
pub async fn validate_body<'a>(
    state: &'a AppState,
    body: &'a [u8],
    now: DateTime<Utc>,
) -> Result<ValidBatch<'a>, ApiError> {
    let common = std::str::from_utf8(body)
        .ok()
        .and_then(|text| read_common(state, text, now));
    let (b, n) = match common {
        Some((b, n)) => {
            check_size(n)?;
            (b, n)
        }
        None => {
            let batch = Batch::from_body(body)?;
            let n = batch.len();
            (read_batch(state, batch, now)?, n)
        }
    };
    b.finish(state, n).await
}

/// Reads and checks a body of the common shape, or `None` when it is not of that shape (or the
/// anchor cache is unusable: the general path reports that, after the body's own errors).
fn read_common<'a>(
    state: &'a AppState,
    text: &'a str,
    now: DateTime<Utc>,
) -> Option<(Builder<'a>, usize)> {
    let mut b = Builder::new(state, now);
    let cache = state.anchors.read().ok()?;
    let n = common_shape::parse(text, |i, w| b.add(i, Ok(w), &cache))?;
    Some((b, n))
}

/// Checks every event of a batch read by serde_json.
fn read_batch<'a>(
    state: &'a AppState,
    batch: Batch<'a>,
    now: DateTime<Utc>,
) -> Result<Builder<'a>, ApiError> {
    check_size(batch.len())?;
    let mut b = Builder::new(state, now);
    let cache = state
        .anchors
        .read()
        .map_err(|_| ApiError::internal("anchor cache poisoned"))?;
    match batch {
        Batch::Parsed(events) => {
            for (i, w) in events.into_iter().enumerate() {
                b.add(i, Ok(w), &cache);
            }
        }
        Batch::Raw(events) => {
            for (i, raw) in events.into_iter().enumerate() {
                b.add(i, parse_event(i, raw), &cache);
            }
        }
    }
    Ok(b)
}

/// A batch being validated, event by event, in order.
struct Builder<'a> {
    memo: Memo<'a>,
    now: DateTime<Utc>,
    bounds: Bounds,
    out: ValidBatch<'a>,
    problems: Vec<InvalidItem>,
    /// `(index, position in out)` of events whose customer is not in the anchor cache: their
    /// period is filled in once the store has answered.
    unanchored: Vec<(usize, usize)>,
    /// `(position in out, period)`: customers whose current period is newer than the cached one.
    current: Vec<(usize, Period)>,
}

impl<'a> Builder<'a> {
    fn new(state: &'a AppState, now: DateTime<Utc>) -> Self {
        Builder {
            memo: Memo {
                catalog: &state.catalog,
                metric: None,
                timestamp: None,
            },
            now,
            bounds: {
                let window = chrono::Duration::from_std(state.config.dedup_window)
                    .unwrap_or(tally_store::DEFAULT_DEDUP_WINDOW);
                Bounds {
                    earliest: now.checked_sub_signed(window).unwrap_or(now),
                    latest: now + MAX_FUTURE,
                    window_days: window.num_days(),
                }
            },
            out: ValidBatch {
                events: Vec::new(),
                usage: Vec::new(),
            },
            problems: Vec::new(),
            unanchored: Vec::new(),
            current: Vec::new(),
        }
    }

    /// Checks event `i` and, when valid, adds it with its allowance period.
    fn add(
        &mut self,
        i: usize,
        w: Result<WireEvent<'a>, InvalidItem>,
        cache: &HashMap<String, CustomerAnchor>,
    ) {
        let e = match w.and_then(|w| check(i, w, &mut self.memo, self.now, self.bounds)) {
            Ok(e) => e,
            Err(p) => return self.problems.push(p),
        };
        if self.out.events.capacity() == 0 {
            self.out.events.reserve(128);
            self.out.usage.reserve(128);
        }
        let k = self.out.events.len();
        let period_start = match cache.get(&*e.customer) {
            Some(a) if e.timestamp < a.at => {
                return self.problems.push(before_customer(i, a.at));
            }
            Some(a) if a.period.contains(e.timestamp) => a.period.start,
            Some(a) => {
                let p = a.allowance.period(e.timestamp);
                if p.contains(self.now) {
                    self.current.push((k, p));
                }
                p.start
            }
            None => {
                self.unanchored.push((i, k));
                // Replaced once the anchor is known (or the batch is refused).
                DateTime::UNIX_EPOCH
            }
        };
        self.out.events.push(NewEvent {
            period_start,
            customer_id: e.customer.to_string(),
            event_id: e.id.into_owned(),
            metric: e.metric.id.clone(),
            value: e.value,
            timestamp: e.timestamp,
            properties: e.properties,
            unique_key: e.unique_key,
        });
        self.out.usage.push((e.customer, &e.metric.id));
    }

    /// Looks up the customers not in the anchor cache, and answers the valid batch or every
    /// problem of the `n` events.
    async fn finish(self, state: &AppState, n: usize) -> Result<ValidBatch<'a>, ApiError> {
        let Builder {
            mut out,
            mut problems,
            unanchored,
            current,
            now,
            ..
        } = self;
        if !unanchored.is_empty() {
            let ids: Vec<&str> = unanchored.iter().map(|(_, k)| &*out.usage[*k].0).collect();
            let found = anchors(state, &ids, now).await?;
            for ((i, k), anchor) in unanchored.into_iter().zip(found) {
                let e = &mut out.events[k];
                match anchor {
                    Some(a) if e.timestamp < a.at => problems.push(before_customer(i, a.at)),
                    Some(a) if a.period.contains(e.timestamp) => e.period_start = a.period.start,
                    Some(a) => e.period_start = a.allowance.period(e.timestamp).start,
                    None => problems.push(invalid(
                        i,
                        "unknown_customer",
                        "customer",
                        format!(
                            "no customer {:?}: create it with PUT /v1/customers/{{id}} first",
                            e.customer_id
                        ),
                    )),
                }
            }
        }
        if !problems.is_empty() {
            problems.sort_by_key(|p| p.index);
            state.metrics.add_rejected(n as u64);
            return Err(ApiError::unprocessable(
                "invalid_events",
                format!(
                    "{} of {n} events are invalid; nothing was stored",
                    problems.len(),
                ),
            )
            .with_param("events")
            .with_invalid(problems));
        }
        if !current.is_empty() {
            // A customer's period turned over since it was cached.
            if let Ok(mut cache) = state.anchors.write() {
                for (k, p) in current {
                    if let Some(a) = cache.get_mut(&*out.usage[k].0) {
                        a.period = p;
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Allowance anchors of the given customers, `None` for those that do not exist (cached; see
/// [`AppState::anchors`]).
async fn anchors(
    state: &AppState,
    ids: &[&str],
    now: DateTime<Utc>,
) -> Result<Vec<Option<CustomerAnchor>>, ApiError> {
    let mut missing = Vec::new();
    let mut found = {
        let cache = state
            .anchors
            .read()
            .map_err(|_| ApiError::internal("anchor cache poisoned"))?;
        ids.iter()
            .map(|id| {
                let a = cache.get(*id).copied();
                if a.is_none() {
                    missing.push(*id);
                }
                a
            })
            .collect::<Vec<_>>()
    };
    if !missing.is_empty() {
        missing.sort_unstable();
        missing.dedup();
        let missing: Vec<String> = missing.into_iter().map(str::to_owned).collect();
        let fetched: HashMap<String, CustomerAnchor> = state
            .store
            .customer_anchors(&missing)
            .await?
            .into_iter()
            .map(|(id, at, allowance)| {
                let period = allowance.period(now);
                (
                    id,
                    CustomerAnchor {
                        at,
                        allowance,
                        period,
                    },
                )
            })
            .collect();
        if let Ok(mut cache) = state.anchors.write() {
            for (id, a) in &fetched {
                cache.entry(id.clone()).or_insert(*a);
            }
        }
        for (slot, id) in found.iter_mut().zip(ids) {
            if slot.is_none() {
                *slot = fetched.get(*id).copied();
            }
        }
    }
    Ok(found)
}

/// Validates and stores a batch; answers once it is durable.
pub async fn ingest(state: &AppState, events: &[&RawValue]) -> Result<IngestOutcome, ApiError> {
    let now = state.clock.now();
    let batch = read_batch(state, Batch::Raw(events.to_vec()), now)?
        .finish(state, events.len())
        .await?;
    store(state, batch).await
}

/// [`ingest`] of the body of `POST /v1/events` (see [`validate_body`]).
pub async fn ingest_body(state: &AppState, body: &[u8]) -> Result<IngestOutcome, ApiError> {
    let batch = validate_body(state, body, state.clock.now()).await?;
    store(state, batch).await
}

async fn store(state: &AppState, batch: ValidBatch<'_>) -> Result<IngestOutcome, ApiError> {
    let touched = super::entitlements::touched(state, &batch.usage);
    let outcome = state.store.ingest(batch.events).await?;
    super::entitlements::usage_changed(state, &touched);
    state
        .metrics
        .add_events(outcome.accepted, outcome.duplicates);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_follow_the_one_decimal_grammar() {
        let ok = |t: &str| parse_value(t).map(|v| v.to_string());
        assert_eq!(ok("0.1"), Ok("0.1".into()));
        assert_eq!(
            ok("\"123456789.123456789\""),
            Ok("123456789.123456789".into())
        );
        assert_eq!(ok("-2.50"), Ok("-2.50".into()));
        assert_eq!(ok("1e3"), Ok("1000".into()));
        for bad in [
            "\"NaN\"",
            "\"Infinity\"",
            "\"abc\"",
            "true",
            "null",
            "[1]",
            "\"\"",
            "\"1e3\"",
            "\"1_000\"",
            "\"+5\"",
            "\" 5 \"",
            "\"5.\"",
            "\"\\u0035\"",
            "{}",
            "79228162514264337593543950335",
            "0.123456789012345678901234567890",
        ] {
            assert!(parse_value(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_value("null"),
            Err("value must not be null (leave it out to count one)".into())
        );
    }
}
