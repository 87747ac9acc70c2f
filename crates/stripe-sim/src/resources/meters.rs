use super::newest_first;
use crate::error::ApiError;
use crate::form::Params;
use crate::sim::{paginate, Sim};
use crate::state::{Meter, MeterEvent};
use crate::util::{random_chars, wall_now, Dec, DAY};
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub fn create(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "display_name",
        "event_name",
        "default_aggregation",
        "customer_mapping",
        "value_settings",
        "event_time_window",
    ])?;
    let display_name = p.req_str("display_name")?;
    let event_name = p.req_str("event_name")?;
    let agg = p
        .obj("default_aggregation")?
        .ok_or_else(|| ApiError::missing_param("default_aggregation"))?;
    let formula = agg.req_str("formula")?;
    if !["sum", "count", "last"].contains(&formula.as_str()) {
        return Err(ApiError::invalid(
            "Invalid default_aggregation[formula]: must be one of count, sum, or last",
            Some("default_aggregation[formula]".into()),
        ));
    }
    if s.w
        .meters
        .values()
        .any(|m| m.event_name == event_name && m.status == "active")
    {
        return Err(ApiError::invalid(
            format!("An active meter with event_name `{event_name}` already exists."),
            Some("event_name".into()),
        ));
    }
    let customer_key = match p.obj("customer_mapping")? {
        Some(cm) => {
            if let Some(t) = cm.str("type")? {
                if t != "by_id" {
                    return Err(ApiError::invalid(
                        "Invalid customer_mapping[type]: must be by_id",
                        Some("customer_mapping[type]".into()),
                    ));
                }
            }
            cm.req_str("event_payload_key")?
        }
        None => "stripe_customer_id".into(),
    };
    let value_key = match p.obj("value_settings")? {
        Some(v) => v.req_str("event_payload_key")?,
        None => "value".into(),
    };
    let now = wall_now();
    let id = format!("mtr_test_{}", random_chars(24));
    let seq = s.w.next_seq();
    let m = Meter {
        id: id.clone(),
        seq,
        created: now,
        updated: now,
        display_name,
        event_name,
        formula,
        customer_key,
        value_key,
        status: "active".into(),
        deactivated_at: None,
    };
    s.w.meters.insert(id.clone(), m);
    let v = s.r_meter(&s.w.meters[&id]);
    s.emit("billing.meter.created", v.clone(), None, now);
    Ok(v)
}

fn meter<'a>(s: &'a Sim, id: &str) -> Result<&'a Meter, ApiError> {
    s.w.meters
        .get(id)
        .ok_or_else(|| ApiError::no_such("billing.meter", id, "id"))
}

pub fn retrieve(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    Ok(s.r_meter(meter(s, id)?))
}

pub fn update(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(&["display_name"])?;
    let before = s.r_meter(meter(s, id)?);
    let now = wall_now();
    if let Some(m) = s.w.meters.get_mut(id) {
        if let Some(d) = p.str("display_name")? {
            m.display_name = d;
        }
        m.updated = now;
    }
    let after = s.r_meter(&s.w.meters[id]);
    s.emit_updated("billing.meter.updated", &before, after.clone(), now);
    Ok(after)
}

pub fn set_status(s: &mut Sim, id: &str, status: &str) -> Result<Value, ApiError> {
    let m = meter(s, id)?.clone();
    let now = wall_now();
    if status == "active"
        && s.w
            .meters
            .values()
            .any(|x| x.id != id && x.event_name == m.event_name && x.status == "active")
    {
        return Err(ApiError::invalid(
            "Another active meter uses this event_name.",
            None,
        ));
    }
    if let Some(x) = s.w.meters.get_mut(id) {
        x.status = status.into();
        x.deactivated_at = if status == "inactive" {
            Some(now)
        } else {
            None
        };
        x.updated = now;
    }
    let v = s.r_meter(&s.w.meters[id]);
    s.emit(
        if status == "active" {
            "billing.meter.reactivated"
        } else {
            "billing.meter.deactivated"
        },
        v.clone(),
        None,
        now,
    );
    Ok(v)
}

pub fn list(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    let status = p.str("status")?;
    let v =
        s.w.meters
            .values()
            .filter(|m| status.as_ref().is_none_or(|st| *st == m.status))
            .map(|m| (m.created, m.seq, m.id.clone(), m.clone()))
            .collect();
    paginate(newest_first(v), p, "/v1/billing/meters", |m| s.r_meter(m))
}

/// `POST /v1/billing/meter_events`: identifiers are unique for 24 hours; timestamps may be up
/// to 35 days old and at most 5 minutes ahead of the customer's clock.
pub fn create_event(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    p.allow(&["event_name", "payload", "identifier", "timestamp"])?;
    let event_name = p.req_str("event_name")?;
    let payload = p
        .obj("payload")?
        .ok_or_else(|| ApiError::missing_param("payload"))?;
    let m =
        s.w.meters
            .values()
            .find(|m| m.event_name == event_name && m.status == "active")
            .cloned();
    let customer_key = m
        .as_ref()
        .map(|m| m.customer_key.clone())
        .unwrap_or_else(|| "stripe_customer_id".into());
    let value_key = m
        .as_ref()
        .map(|m| m.value_key.clone())
        .unwrap_or_else(|| "value".into());
    let customer = payload
        .str(&customer_key)?
        .ok_or_else(|| ApiError::missing_param(&format!("payload[{customer_key}]")))?;
    let value = match payload.str(&value_key)? {
        Some(raw) => Dec::parse(&raw).ok_or_else(|| ApiError::invalid(format!("Invalid payload[{value_key}]: must be a number with at most 15 significant digits"), Some(format!("payload[{value_key}]"))))?,
        None if m.as_ref().is_some_and(|m| m.formula == "count") => Dec::from_int(1),
        None => return Err(ApiError::missing_param(&format!("payload[{value_key}]"))),
    };
    let now = s.now_for(Some(&customer));
    let ts = p.i64("timestamp")?.unwrap_or(now);
    if ts < now - 35 * DAY {
        return Err(ApiError::invalid_code(
            "timestamp_too_far_in_past",
            "Timestamp must be within the past 35 days.",
            Some("timestamp"),
        ));
    }
    if ts > now + 300 {
        return Err(ApiError::invalid_code(
            "timestamp_in_future",
            "Timestamp must not be more than 5 minutes in the future.",
            Some("timestamp"),
        ));
    }
    let identifier = p
        .str("identifier")?
        .filter(|x| !x.is_empty())
        .unwrap_or_else(|| random_chars(20));
    if s.w
        .meter_events
        .iter()
        .any(|e| e.identifier == identifier && e.created > now - DAY)
    {
        return Err(ApiError::invalid_code(
            "resource_already_exists",
            format!("An event with identifier `{identifier}` already exists."),
            Some("identifier"),
        ));
    }
    let mut pl = BTreeMap::new();
    for (k, v) in &payload.map {
        if let Some(x) = v.as_str() {
            pl.insert(k.clone(), x.to_string());
        }
    }
    let e = MeterEvent {
        identifier,
        event_name,
        meter: m.map(|m| m.id).unwrap_or_default(),
        customer,
        value,
        payload: pl,
        timestamp: ts,
        created: now,
        canceled: false,
    };
    let v = s.r_meter_event(&e);
    s.w.meter_events.push(e);
    s.dirty = true;
    Ok(v)
}

pub fn adjust(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    p.allow(&["event_name", "type", "cancel"])?;
    let event_name = p.req_str("event_name")?;
    let kind = p.str("type")?.unwrap_or_else(|| "cancel".into());
    if kind != "cancel" {
        return Err(ApiError::invalid(
            "Invalid type: must be cancel",
            Some("type".into()),
        ));
    }
    let c = p
        .obj("cancel")?
        .ok_or_else(|| ApiError::missing_param("cancel[identifier]"))?;
    let identifier = c.req_str("identifier")?;
    let Some(e) =
        s.w.meter_events
            .iter_mut()
            .find(|e| e.identifier == identifier && e.event_name == event_name)
    else {
        return Err(ApiError::no_such(
            "meter event",
            &identifier,
            "cancel[identifier]",
        ));
    };
    e.canceled = true;
    s.dirty = true;
    Ok(
        json!({"object": "billing.meter_event_adjustment", "cancel": {"identifier": identifier}, "event_name": event_name, "livemode": false, "status": "pending", "type": "cancel"}),
    )
}

pub fn summaries(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    let m = meter(s, id)?.clone();
    let customer = p.req_str("customer")?;
    let start = p.req_i64("start_time")?;
    let end = p.req_i64("end_time")?;
    if end <= start {
        return Err(ApiError::invalid(
            "end_time must be after start_time",
            Some("end_time".into()),
        ));
    }
    let window = match p.str("value_grouping_window")?.as_deref() {
        None => None,
        Some("hour") => Some(3600),
        Some("day") => Some(DAY),
        Some(_) => {
            return Err(ApiError::invalid(
                "Invalid value_grouping_window: must be one of day or hour",
                Some("value_grouping_window".into()),
            ))
        }
    };
    let mut buckets = vec![];
    match window {
        None => buckets.push((start, end)),
        Some(w) => {
            let mut t = start;
            while t < end {
                buckets.push((t, (t + w).min(end)));
                t += w;
            }
        }
    }
    buckets.reverse();
    let items: Vec<(String, (i64, i64))> = buckets
        .into_iter()
        .map(|b| (format!("mtrusg_{}_{}", b.0, b.1), b))
        .collect();
    let url = format!("/v1/billing/meters/{id}/event_summaries");
    let out = paginate(items, p, &url, |(a, b)| {
        json!({"id": format!("mtrusg_test_{}", random_chars(16)), "object": "billing.meter_event_summary",
            "aggregated_value": s.usage(&m.id, &customer, *a, *b).as_json_number(), "end_time": b,
            "livemode": false, "meter": m.id, "start_time": a})
    })?;
    Ok(out)
}
