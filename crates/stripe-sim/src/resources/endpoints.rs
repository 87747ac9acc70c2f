use crate::error::ApiError;
use crate::form::Params;
use crate::sim::{paginate, range_ok, Sim};
use crate::state::WebhookEndpoint;
use crate::util::{new_id, random_chars, wall_now};
use serde_json::{json, Value};

pub fn create(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "url",
        "enabled_events",
        "description",
        "metadata",
        "api_version",
        "connect",
        "disabled",
    ])?;
    let url = p.req_str("url")?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ApiError::invalid(
            "Invalid URL: must be an http or https URL",
            Some("url".into()),
        ));
    }
    let events = p.str_list("enabled_events")?;
    if events.is_empty() {
        return Err(ApiError::missing_param("enabled_events"));
    }
    let id = new_id("we");
    let seq = s.w.next_seq();
    let e = WebhookEndpoint {
        id: id.clone(),
        seq,
        created: wall_now(),
        url,
        enabled_events: events,
        secret: format!("whsec_{}", random_chars(32)),
        status: "enabled".into(),
        description: p.str("description")?,
        metadata: p.metadata()?,
        api_version: p.str("api_version")?,
    };
    s.w.webhook_endpoints.insert(id.clone(), e);
    s.dirty = true;
    Ok(s.r_webhook_endpoint(&s.w.webhook_endpoints[&id], true))
}

fn endpoint<'a>(s: &'a Sim, id: &str) -> Result<&'a WebhookEndpoint, ApiError> {
    s.w.webhook_endpoints
        .get(id)
        .ok_or_else(|| ApiError::no_such("webhook_endpoint", id, "id"))
}

pub fn retrieve(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    Ok(s.r_webhook_endpoint(endpoint(s, id)?, false))
}

pub fn update(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "url",
        "enabled_events",
        "description",
        "metadata",
        "disabled",
    ])?;
    endpoint(s, id)?;
    let events = p.str_list("enabled_events")?;
    let Some(e) = s.w.webhook_endpoints.get_mut(id) else {
        return Err(ApiError::no_such("webhook_endpoint", id, "id"));
    };
    if let Some(u) = p.str("url")? {
        e.url = u;
    }
    if !events.is_empty() {
        e.enabled_events = events;
    }
    if let Some(d) = p.opt_str("description")? {
        e.description = d;
    }
    if let Some(d) = p.bool("disabled")? {
        e.status = if d {
            "disabled".into()
        } else {
            "enabled".into()
        };
    }
    p.apply_metadata(&mut e.metadata)?;
    s.dirty = true;
    Ok(s.r_webhook_endpoint(&s.w.webhook_endpoints[id], false))
}

pub fn delete(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    endpoint(s, id)?;
    s.w.webhook_endpoints.remove(id);
    s.dirty = true;
    Ok(json!({"id": id, "object": "webhook_endpoint", "deleted": true}))
}

pub fn list(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    let mut v: Vec<&WebhookEndpoint> = s.w.webhook_endpoints.values().collect();
    v.sort_by_key(|e| std::cmp::Reverse((e.created, e.seq)));
    let items = v.into_iter().map(|e| (e.id.clone(), e.clone())).collect();
    paginate(items, p, "/v1/webhook_endpoints", |e| {
        s.r_webhook_endpoint(e, false)
    })
}

/// Events newest first (by emission order, which is also time order per clock).
pub fn list_events(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    let kind = p.str("type")?;
    let kinds = p.str_list("types")?;
    let mut v = vec![];
    for e in s.w.events.values() {
        let type_ok = match &kind {
            Some(k) if k.ends_with(".*") => e.kind.starts_with(&k[..k.len() - 1]),
            Some(k) => *k == e.kind,
            None => true,
        };
        if !type_ok
            || (!kinds.is_empty() && !kinds.contains(&e.kind))
            || !range_ok(p, "created", e.created)?
        {
            continue;
        }
        v.push(e.clone());
    }
    v.sort_by_key(|e| std::cmp::Reverse(e.seq));
    let items = v.into_iter().map(|e| (e.id.clone(), e)).collect();
    paginate(items, p, "/v1/events", |e| s.r_event(e))
}

pub fn retrieve_event(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    let e =
        s.w.events
            .get(id)
            .ok_or_else(|| ApiError::no_such("event", id, "id"))?;
    Ok(s.r_event(e))
}
