//! Usage event ingestion: parse and validate a batch completely before it reaches the store, so a
//! batch with any invalid event stores nothing and every invalid index is explained.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tally_core::catalog::{Aggregation, Catalog};
use tally_core::period::allowance_period;
use tally_store::{IngestOutcome, NewEvent, MAX_ID_LEN};

use crate::config::MAX_EVENTS_PER_BATCH;
use crate::error::{ApiError, InvalidItem};
use crate::state::AppState;

/// How far in the future an event's timestamp may be.
pub const MAX_FUTURE: Duration = Duration::minutes(5);

/// One event as sent, before validation. Fields are optional so that each missing one is
/// reported for its index rather than failing the whole body.
#[derive(Deserialize)]
struct WireEvent<'a> {
    id: Option<String>,
    customer: Option<String>,
    metric: Option<String>,
    #[serde(borrow)]
    value: Option<&'a RawValue>,
    timestamp: Option<String>,
    properties: Option<Value>,
}

/// An event that passed the checks that need no database.
pub struct CheckedEvent {
    pub id: String,
    pub customer: String,
    pub metric: String,
    pub value: Decimal,
    pub timestamp: DateTime<Utc>,
    pub properties: Option<Value>,
    pub unique_key: Option<String>,
}

/// Parses a decimal from a JSON number's text or a JSON string, never through a float.
pub fn parse_decimal(raw: &RawValue) -> Result<Decimal, String> {
    let text = raw.get().trim();
    let s: String = if text.starts_with('"') {
        serde_json::from_str::<String>(text).map_err(|e| e.to_string())?
    } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        text.to_owned()
    } else {
        return Err(format!(
            "value must be a number or a numeric string, got {text}"
        ));
    };
    let s = s.trim();
    let parsed = if s.contains(['e', 'E']) {
        Decimal::from_scientific(s)
    } else {
        Decimal::from_str(s)
    };
    parsed.map_err(|_| format!("value {s:?} is not a finite decimal number"))
}

fn invalid(index: usize, code: &'static str, param: &'static str, message: String) -> InvalidItem {
    InvalidItem {
        index,
        code,
        message,
        param: Some(param),
    }
}

/// Checks one event against the catalog and the clock.
fn check(
    index: usize,
    raw: &RawValue,
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> Result<CheckedEvent, InvalidItem> {
    let w: WireEvent<'_> = serde_json::from_str(raw.get()).map_err(|e| InvalidItem {
        index,
        code: "malformed_event",
        message: format!("the event is not an object of the documented fields: {e}"),
        param: None,
    })?;
    let id = match w.id {
        Some(id) if !id.is_empty() && id.len() <= MAX_ID_LEN => id,
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
        Some(c) if tally_store::is_valid_customer_id(&c) => c,
        Some(c) => {
            return Err(invalid(
                index,
                "unknown_customer",
                "customer",
                format!("{c:?} is not a valid customer id"),
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
    let Some(metric_id) = w.metric else {
        return Err(invalid(
            index,
            "missing_metric",
            "metric",
            "metric is required".into(),
        ));
    };
    let Some(metric) = catalog.metric(&metric_id) else {
        return Err(invalid(
            index,
            "unknown_metric",
            "metric",
            format!("the catalog has no metric {metric_id:?}"),
        ));
    };
    // Count metrics need no value; one event counts one.
    let value = match w.value {
        Some(raw) => parse_decimal(raw).map_err(|m| invalid(index, "invalid_value", "value", m))?,
        None => Decimal::ONE,
    };
    if value.is_sign_negative() && !value.is_zero() && !metric.allow_negative {
        return Err(invalid(
            index,
            "negative_value",
            "value",
            format!("metric {metric_id:?} does not allow negative values"),
        ));
    }
    let timestamp = match w.timestamp {
        Some(t) => DateTime::parse_from_rfc3339(&t)
            .map_err(|_| {
                invalid(
                    index,
                    "invalid_timestamp",
                    "timestamp",
                    format!("{t:?} is not an RFC 3339 timestamp"),
                )
            })?
            .with_timezone(&Utc),
        None => now,
    };
    if timestamp > now + MAX_FUTURE {
        return Err(invalid(
            index,
            "timestamp_in_future",
            "timestamp",
            "timestamp is more than 5 minutes in the future".into(),
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
                        format!("metric {metric_id:?} counts distinct values of property {prop:?}, which is missing"),
                    ))
                }
            }
        }
        _ => None,
    };
    Ok(CheckedEvent {
        id,
        customer,
        metric: metric_id,
        value,
        timestamp,
        properties: w.properties,
        unique_key,
    })
}

/// The body of `POST /v1/events`.
#[derive(Deserialize)]
pub struct WireBatch<'a> {
    #[serde(borrow)]
    pub events: Option<Vec<&'a RawValue>>,
}

/// Validates a batch completely: every invalid event is reported, or every event is returned with
/// its allowance period.
pub async fn validate(
    state: &AppState,
    events: &[&RawValue],
    now: DateTime<Utc>,
) -> Result<Vec<NewEvent>, ApiError> {
    if events.is_empty() {
        return Err(
            ApiError::bad_request("empty_batch", "events must contain at least one event")
                .with_param("events"),
        );
    }
    if events.len() > MAX_EVENTS_PER_BATCH {
        return Err(ApiError::bad_request(
            "batch_too_large",
            format!(
                "a batch holds at most {MAX_EVENTS_PER_BATCH} events, this one has {}",
                events.len()
            ),
        )
        .with_param("events"));
    }
    let mut problems = Vec::new();
    let mut checked = Vec::with_capacity(events.len());
    for (i, raw) in events.iter().enumerate() {
        match check(i, raw, &state.catalog, now) {
            Ok(e) => checked.push((i, e)),
            Err(p) => problems.push(p),
        }
    }
    let wanted: BTreeSet<&str> = checked.iter().map(|(_, e)| e.customer.as_str()).collect();
    let anchors = anchors(state, wanted.into_iter()).await?;
    let mut out = Vec::with_capacity(checked.len());
    for (i, e) in checked {
        let Some(anchor) = anchors.get(&e.customer) else {
            problems.push(invalid(
                i,
                "unknown_customer",
                "customer",
                format!(
                    "no customer {:?}: create it with PUT /v1/customers/{{id}} first",
                    e.customer
                ),
            ));
            continue;
        };
        out.push(NewEvent {
            period_start: allowance_period(*anchor, e.timestamp).start,
            customer_id: e.customer,
            event_id: e.id,
            metric: e.metric,
            value: e.value,
            timestamp: e.timestamp,
            properties: e.properties,
            unique_key: e.unique_key,
        });
    }
    if !problems.is_empty() {
        problems.sort_by_key(|p| p.index);
        state.metrics.add_rejected(events.len() as u64);
        return Err(ApiError::unprocessable(
            "invalid_events",
            format!(
                "{} of {} events are invalid; nothing was stored",
                problems.len(),
                events.len()
            ),
        )
        .with_param("events")
        .with_invalid(problems));
    }
    Ok(out)
}

/// Allowance anchors of the given customers that exist (cached; see [`AppState::anchors`]).
pub async fn anchors<'a>(
    state: &AppState,
    ids: impl Iterator<Item = &'a str>,
) -> Result<HashMap<String, DateTime<Utc>>, ApiError> {
    let mut found = HashMap::new();
    let mut missing = Vec::new();
    {
        let cache = state
            .anchors
            .read()
            .map_err(|_| ApiError::internal("anchor cache poisoned"))?;
        for id in ids {
            match cache.get(id) {
                Some(a) => {
                    found.insert(id.to_owned(), *a);
                }
                None => missing.push(id.to_owned()),
            }
        }
    }
    if !missing.is_empty() {
        let fetched = state.store.customer_anchors(&missing).await?;
        if let Ok(mut cache) = state.anchors.write() {
            for (id, a) in &fetched {
                cache.insert(id.clone(), *a);
            }
        }
        found.extend(fetched);
    }
    Ok(found)
}

/// Validates and stores a batch; answers once it is durable.
pub async fn ingest(state: &AppState, events: &[&RawValue]) -> Result<IngestOutcome, ApiError> {
    let batch = validate(state, events, Utc::now()).await?;
    let touched = super::entitlements::touched(state, &batch);
    let outcome = state.store.ingest(batch).await?;
    super::entitlements::usage_changed(state, touched);
    state
        .metrics
        .add_events(outcome.accepted, outcome.duplicates);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn decimals_never_go_through_floats() {
        assert_eq!(parse_decimal(&raw("0.1")).unwrap().to_string(), "0.1");
        assert_eq!(
            parse_decimal(&raw("\"12345678901234567.891\""))
                .unwrap()
                .to_string(),
            "12345678901234567.891"
        );
        assert_eq!(parse_decimal(&raw("1e3")).unwrap(), Decimal::from(1000));
        assert_eq!(parse_decimal(&raw("-2.50")).unwrap().to_string(), "-2.50");
        for bad in [
            "\"NaN\"",
            "\"Infinity\"",
            "\"abc\"",
            "true",
            "null",
            "[1]",
            "\"\"",
        ] {
            assert!(parse_decimal(&raw(bad)).is_err(), "{bad}");
        }
    }
}
