use super::newest_first;
use crate::error::ApiError;
use crate::form::Params;
use crate::sim::{paginate, range_ok, Sim};
use crate::state::Customer;
use crate::util::{new_id, random_upper};
use serde_json::{json, Value};

const FIELDS: &[&str] = &[
    "email",
    "name",
    "description",
    "phone",
    "metadata",
    "payment_method",
    "invoice_settings",
    "test_clock",
    "balance",
    "address",
    "preferred_locales",
    "shipping",
    "tax_exempt",
    "invoice_prefix",
    "next_invoice_sequence",
];

pub fn create(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    p.allow(FIELDS)?;
    let clock = p.str("test_clock")?.filter(|c| !c.is_empty());
    if let Some(c) = &clock {
        if s.w.test_clocks.get(c).is_none_or(|x| x.deleted) {
            return Err(ApiError::no_such("test_clock", c, "test_clock"));
        }
    }
    let now = s.clock_now(clock.as_deref());
    let id = new_id("cus");
    let seq = s.w.next_seq();
    let c = Customer {
        id: id.clone(),
        seq,
        created: now,
        email: p.str("email")?.filter(|x| !x.is_empty()),
        name: p.str("name")?.filter(|x| !x.is_empty()),
        description: p.str("description")?.filter(|x| !x.is_empty()),
        phone: p.str("phone")?.filter(|x| !x.is_empty()),
        metadata: p.metadata()?,
        test_clock: clock,
        default_payment_method: None,
        balance: p.i64("balance")?.unwrap_or(0),
        currency: None,
        invoice_prefix: p.str("invoice_prefix")?.unwrap_or_else(|| random_upper(8)),
        next_invoice_sequence: p.i64("next_invoice_sequence")?.unwrap_or(1),
        deleted: false,
    };
    s.w.customers.insert(id.clone(), c);
    let mut attached = None;
    if let Some(pm) = p.str("payment_method")? {
        attached = Some((
            pm.clone(),
            crate::resources::payments::attach(s, &pm, &id, "payment_method", now)?,
        ));
    }
    apply_invoice_settings(s, &id, p, attached)?;
    let v = s.r_customer(&s.w.customers[&id]);
    s.emit("customer.created", v.clone(), None, now);
    Ok(v)
}

/// `attached` is the (given, real) id of a payment method attached by the same request, so a
/// magic test id named in both places means the same card.
fn apply_invoice_settings(
    s: &mut Sim,
    id: &str,
    p: &Params,
    attached: Option<(String, String)>,
) -> Result<(), ApiError> {
    let Some(is) = p.obj("invoice_settings")? else {
        return Ok(());
    };
    is.allow(&[
        "default_payment_method",
        "custom_fields",
        "footer",
        "rendering_options",
    ])?;
    if let Some(pm) = is.opt_str("default_payment_method")? {
        let mut pm = match (pm, attached) {
            (Some(x), Some((given, real))) if x == given => Some(real),
            (pm, _) => pm,
        };
        if let Some(x) = &pm {
            // Stripe's magic test ids are instantiated into a fresh payment method on first use.
            if !s.w.payment_methods.contains_key(x) {
                let now = s.now_for(Some(id));
                let real = crate::resources::payments::attach(
                    s,
                    x,
                    id,
                    "invoice_settings[default_payment_method]",
                    now,
                )?;
                pm = Some(real);
            }
            let pmo = s.payment_method(
                pm.as_deref().unwrap_or_default(),
                "invoice_settings[default_payment_method]",
            )?;
            if pmo.customer.as_deref() != Some(id) {
                return Err(ApiError::invalid(format!("No such PaymentMethod: '{}'; It's possible this PaymentMethod exists on one of your connected accounts, or that it is not attached to this customer.", pmo.id), Some("invoice_settings[default_payment_method]".into())));
            }
        }
        if let Some(c) = s.w.customers.get_mut(id) {
            c.default_payment_method = pm;
        }
    }
    Ok(())
}

pub fn retrieve(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    let c =
        s.w.customers
            .get(id)
            .ok_or_else(|| ApiError::no_such("customer", id, "id"))?;
    Ok(s.r_customer(c))
}

pub fn update(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(FIELDS)?;
    let before = s.r_customer(s.customer(id, "id")?);
    let now = s.now_for(Some(id));
    if p.has("test_clock") {
        return Err(ApiError::invalid(
            "Received unknown parameter: test_clock",
            Some("test_clock".into()),
        ));
    }
    {
        let Some(c) = s.w.customers.get_mut(id) else {
            return Err(ApiError::no_such("customer", id, "id"));
        };
        if let Some(v) = p.opt_str("email")? {
            c.email = v;
        }
        if let Some(v) = p.opt_str("name")? {
            c.name = v;
        }
        if let Some(v) = p.opt_str("description")? {
            c.description = v;
        }
        if let Some(v) = p.opt_str("phone")? {
            c.phone = v;
        }
        if let Some(v) = p.i64("balance")? {
            c.balance = v;
        }
        p.apply_metadata(&mut c.metadata)?;
    }
    let mut attached = None;
    if let Some(pm) = p.str("payment_method")? {
        attached = Some((
            pm.clone(),
            crate::resources::payments::attach(s, &pm, id, "payment_method", now)?,
        ));
    }
    apply_invoice_settings(s, id, p, attached)?;
    let after = s.r_customer(&s.w.customers[id]);
    s.emit_updated("customer.updated", &before, after.clone(), now);
    Ok(after)
}

pub fn delete(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    let c = s.customer(id, "id")?.clone();
    let now = s.now_for(Some(id));
    let subs: Vec<String> = s
        .w
        .subscriptions
        .values()
        .filter(|x| x.customer == id && x.status != "canceled" && x.status != "incomplete_expired")
        .map(|x| x.id.clone())
        .collect();
    for sub in subs {
        s.cancel_subscription(&sub, now, Some("cancellation_requested"));
    }
    let v = s.r_customer(&c);
    if let Some(c) = s.w.customers.get_mut(id) {
        c.deleted = true;
    }
    s.emit("customer.deleted", v, None, now);
    Ok(json!({"id": id, "object": "customer", "deleted": true}))
}

pub fn list(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    let email = p.str("email")?;
    let clock = p.str("test_clock")?;
    let mut v = vec![];
    for c in s.w.customers.values().filter(|c| !c.deleted) {
        if email.as_ref().is_some_and(|e| c.email.as_ref() != Some(e))
            || clock
                .as_ref()
                .is_some_and(|t| c.test_clock.as_ref() != Some(t))
            || !range_ok(p, "created", c.created)?
        {
            continue;
        }
        v.push((c.created, c.seq, c.id.clone(), c.clone()));
    }
    paginate(newest_first(v), p, "/v1/customers", |c| s.r_customer(c))
}

/// A clause of Stripe's search query language as far as customers need it:
/// `email:'x'`, `name:'x'`, `metadata['k']:'v'`, `email~'x'` joined with AND / OR.
fn clause_matches(c: &Customer, clause: &str) -> Result<bool, ApiError> {
    let bad = || {
        ApiError::invalid(
            format!("Invalid search query: {clause}"),
            Some("query".into()),
        )
    };
    let (field, op, value) = if let Some(i) = clause.find(':') {
        (&clause[..i], ':', &clause[i + 1..])
    } else if let Some(i) = clause.find('~') {
        (&clause[..i], '~', &clause[i + 1..])
    } else {
        return Err(bad());
    };
    let (neg, field) = match field.trim().strip_prefix('-') {
        Some(f) => (true, f.trim()),
        None => (false, field.trim()),
    };
    let value = value
        .trim()
        .trim_matches('"')
        .trim_matches('\'')
        .to_string();
    let actual: Option<String> = if let Some(k) = field
        .strip_prefix("metadata[")
        .and_then(|r| r.strip_suffix(']'))
    {
        let k = k.trim_matches('"').trim_matches('\'');
        c.metadata.get(k).cloned()
    } else {
        match field {
            "email" => c.email.clone(),
            "name" => c.name.clone(),
            "phone" => c.phone.clone(),
            "description" => c.description.clone(),
            "created" => Some(c.created.to_string()),
            _ => return Err(bad()),
        }
    };
    let m = match (op, actual) {
        (':', Some(a)) => a == value,
        ('~', Some(a)) => a.to_lowercase().contains(&value.to_lowercase()),
        _ => false,
    };
    Ok(m != neg)
}

pub fn search(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    let q = p.req_str("query")?;
    let limit = p.i64("limit")?.unwrap_or(10).clamp(1, 100) as usize;
    let or_groups: Vec<&str> = q.split(" OR ").collect();
    let mut out = vec![];
    let mut v: Vec<&Customer> = s.w.customers.values().filter(|c| !c.deleted).collect();
    v.sort_by_key(|c| std::cmp::Reverse((c.created, c.seq)));
    let skip: usize = p.str("page")?.and_then(|x| x.parse().ok()).unwrap_or(0);
    for c in v {
        let mut any = false;
        for g in &or_groups {
            let mut all = true;
            for clause in g.split(" AND ") {
                if !clause_matches(c, clause)? {
                    all = false;
                }
            }
            any |= all;
        }
        if any {
            out.push(c.clone());
        }
    }
    let total = out.len();
    let page: Vec<Value> = out
        .iter()
        .skip(skip)
        .take(limit)
        .map(|c| s.r_customer(c))
        .collect();
    let has_more = skip + limit < total;
    Ok(
        json!({"object": "search_result", "data": page, "has_more": has_more,
        "next_page": if has_more { Some((skip + limit).to_string()) } else { None },
        "url": "/v1/customers/search"}),
    )
}
