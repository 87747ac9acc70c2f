use super::newest_first;
use crate::billing::{ItemChange, NewItem, NewSub};
use crate::error::ApiError;
use crate::form::Params;
use crate::render::list as list_object;
use crate::sim::{paginate, range_ok, Sim};
use crate::util::DAY;
use serde_json::Value;

/// `items[i][price]` or `items[i][price_data]` → a price id.
fn item_price(s: &mut Sim, it: &Params) -> Result<Option<String>, ApiError> {
    if let Some(pd) = it.obj("price_data")? {
        pd.allow(&[
            "currency",
            "product",
            "unit_amount",
            "unit_amount_decimal",
            "recurring",
            "tax_behavior",
        ])?;
        return crate::resources::catalog::price_from(s, &pd, None, false).map(Some);
    }
    it.str("price")
}

pub fn create(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "customer",
        "items",
        "trial_period_days",
        "trial_end",
        "trial_from_plan",
        "default_payment_method",
        "metadata",
        "discounts",
        "cancel_at_period_end",
        "cancel_at",
        "payment_behavior",
        "collection_method",
        "days_until_due",
        "description",
        "proration_behavior",
        "off_session",
        "payment_settings",
        "trial_settings",
        "automatic_tax",
        "currency",
    ])?;
    p.refuse_automatic_tax()?;
    let customer = p.req_str("customer")?;
    s.customer(&customer, "customer")?;
    let now = s.now_for(Some(&customer));
    let mut items = vec![];
    for (i, it) in p.list("items")?.iter().enumerate() {
        it.allow(&[
            "price",
            "price_data",
            "quantity",
            "metadata",
            "discounts",
            "tax_rates",
        ])?;
        let price = item_price(s, it)?
            .ok_or_else(|| ApiError::missing_param(&format!("items[{i}][price]")))?;
        let q = it.i64("quantity")?;
        if q.is_some_and(|q| q < 0) {
            return Err(ApiError::invalid(
                "Invalid quantity: must be non-negative",
                Some(format!("items[{i}][quantity]")),
            ));
        }
        items.push(NewItem {
            price,
            quantity: q,
            metadata: it.metadata()?,
        });
    }
    let trial_end = match p.str("trial_end")?.as_deref() {
        Some("now") => None,
        Some(_) => {
            let t = p.req_i64("trial_end")?;
            if t <= now {
                return Err(ApiError::invalid(
                    "Invalid timestamp: must be an integer Unix timestamp in the future.",
                    Some("trial_end".into()),
                ));
            }
            Some(t)
        }
        None => match p.i64("trial_period_days")? {
            Some(d) if d > 0 => Some(now + d * DAY),
            Some(_) => None,
            None if p.bool("trial_from_plan")? == Some(true) => items
                .first()
                .and_then(|it| s.w.prices.get(&it.price))
                .and_then(|pr| pr.recurring.as_ref())
                .and_then(|r| r.trial_period_days)
                .map(|d| now + d * DAY),
            None => None,
        },
    };
    let pm = crate::resources::payments::param_pm(s, p, "default_payment_method", now)?;
    let behavior = p
        .str("payment_behavior")?
        .unwrap_or_else(|| "allow_incomplete".into());
    if ![
        "allow_incomplete",
        "default_incomplete",
        "error_if_incomplete",
        "pending_if_incomplete",
    ]
    .contains(&behavior.as_str())
    {
        return Err(ApiError::invalid(
            "Invalid payment_behavior",
            Some("payment_behavior".into()),
        ));
    }
    let collection = p
        .str("collection_method")?
        .unwrap_or_else(|| "charge_automatically".into());
    let discounts = crate::resources::discounts::redeem_params(s, p, &customer, i64::MAX, now)?;
    let n = NewSub {
        customer,
        items,
        trial_end,
        default_payment_method: pm,
        metadata: p.metadata()?,
        discounts,
        cancel_at_period_end: p.bool("cancel_at_period_end")?.unwrap_or(false),
        cancel_at: p.i64("cancel_at")?,
        payment_behavior: behavior,
        days_until_due: p
            .i64("days_until_due")?
            .or(if collection == "send_invoice" {
                Some(30)
            } else {
                None
            }),
        collection_method: collection,
        description: p.str("description")?,
    };
    let id = s.create_subscription(n, now)?;
    Ok(s.r_subscription(&s.w.subscriptions[&id]))
}

pub fn retrieve(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    Ok(s.r_subscription(s.subscription(id, "id")?))
}

pub fn update(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "items",
        "proration_behavior",
        "proration_date",
        "cancel_at_period_end",
        "cancel_at",
        "metadata",
        "default_payment_method",
        "description",
        "trial_end",
        "discounts",
        "cancellation_details",
        "payment_behavior",
        "off_session",
        "collection_method",
        "days_until_due",
        "trial_from_plan",
        "payment_settings",
        "billing_cycle_anchor",
    ])?;
    let sub = s.subscription(id, "id")?.clone();
    let now = s.now_for(Some(&sub.customer));
    if let Some(b) = p.str("billing_cycle_anchor")? {
        if b != "unchanged" {
            return Err(ApiError::invalid(
                "The simulator supports only billing_cycle_anchor=unchanged on update.",
                Some("billing_cycle_anchor".into()),
            ));
        }
    }
    if let Some(sc) = &sub.schedule {
        if p.has("cancel_at_period_end") || p.has("cancel_at") {
            return Err(ApiError::invalid(
                format!("The subscription is managed by the subscription schedule `{sc}`, and updating any cancelation behavior directly is not allowed. Please update the schedule instead."),
                None,
            ));
        }
    }
    let behavior = p
        .str("payment_behavior")?
        .unwrap_or_else(|| "allow_incomplete".into());
    if ![
        "allow_incomplete",
        "default_incomplete",
        "error_if_incomplete",
        "pending_if_incomplete",
    ]
    .contains(&behavior.as_str())
    {
        return Err(ApiError::invalid(
            "Invalid payment_behavior",
            Some("payment_behavior".into()),
        ));
    }
    let proration = proration_of(p)?;
    let proration_time = p.i64("proration_date")?.unwrap_or(now);
    let mut changes = vec![];
    for it in p.list("items")?.iter() {
        it.allow(&[
            "id",
            "price",
            "price_data",
            "quantity",
            "deleted",
            "metadata",
            "clear_usage",
            "discounts",
            "tax_rates",
        ])?;
        let price = item_price(s, it)?;
        changes.push(ItemChange {
            id: it.str("id")?,
            price,
            quantity: it.i64("quantity")?,
            deleted: it.bool("deleted")?.unwrap_or(false),
            metadata: if it.has("metadata") {
                Some(it.metadata()?)
            } else {
                None
            },
        });
    }
    if !changes.is_empty() {
        if sub.pending_update.is_some() {
            return Err(ApiError::invalid(
                "This subscription has a pending update: pay or wait for its invoice before updating its items again.",
                Some("items".into()),
            ));
        }
        s.update_items_with(
            id,
            changes,
            &proration,
            proration_time,
            behavior == "pending_if_incomplete",
        )?;
    }
    let sub = s.w.subscriptions[id].clone();
    let before = s.r_subscription(&sub);
    let pm = match p.opt_str("default_payment_method")? {
        Some(Some(x)) => {
            let real =
                crate::resources::payments::resolve_pm(s, &x, "default_payment_method", now)?;
            if s.w.payment_methods[&real].customer.as_deref() != Some(sub.customer.as_str()) {
                return Err(ApiError::invalid(
                    format!("The payment method `{x}` must be attached to the customer."),
                    Some("default_payment_method".into()),
                ));
            }
            Some(Some(real))
        }
        other => other,
    };
    let new_discounts = if p.has("discounts") {
        Some(crate::resources::discounts::redeem_params(
            s,
            p,
            &sub.customer,
            i64::MAX,
            now,
        )?)
    } else {
        None
    };
    let mut end_trial_now = false;
    {
        let Some(x) = s.w.subscriptions.get_mut(id) else {
            return Err(ApiError::no_such("subscription", id, "id"));
        };
        if let Some(c) = p.bool("cancel_at_period_end")? {
            x.cancel_at_period_end = c;
            if c {
                x.canceled_at = Some(now);
                x.cancel_at = x.items.first().map(|i| i.current_period_end);
                x.cancellation_reason = Some("cancellation_requested".into());
            } else {
                x.canceled_at = None;
                x.cancel_at = None;
                x.cancellation_reason = None;
            }
        }
        if p.has("cancel_at") {
            x.cancel_at = p.i64("cancel_at")?;
        }
        if let Some(pm) = pm {
            x.default_payment_method = pm;
        }
        if let Some(d) = p.opt_str("description")? {
            x.description = d;
        }
        if let Some(cd) = p.obj("cancellation_details")? {
            if let Some(c) = cd.opt_str("comment")? {
                x.cancellation_comment = c;
            }
            if let Some(f) = cd.opt_str("feedback")? {
                x.cancellation_feedback = f;
            }
        }
        if let Some(d) = new_discounts {
            x.discounts = d;
        }
        p.apply_metadata(&mut x.metadata)?;
        match p.str("trial_end")?.as_deref() {
            Some("now") if x.status == "trialing" => end_trial_now = true,
            Some(t) if !t.is_empty() && t != "now" => {
                let t: i64 = t.parse().map_err(|_| {
                    ApiError::invalid("Invalid timestamp", Some("trial_end".into()))
                })?;
                if x.status == "trialing" && t > now {
                    x.trial_end = Some(t);
                    for it in x.items.iter_mut() {
                        it.current_period_end = t;
                    }
                    x.billing_cycle_anchor = t;
                }
            }
            _ => {}
        }
    }
    let after = s.r_subscription(&s.w.subscriptions[id]);
    s.emit_updated("customer.subscription.updated", &before, after, now);
    if end_trial_now {
        // Ending a trial early starts the first paid period now.
        if let Some(x) = s.w.subscriptions.get_mut(id) {
            x.trial_end = Some(now);
            x.billing_cycle_anchor = now;
            for it in x.items.iter_mut() {
                it.current_period_end = now;
            }
        }
        let clock = s.w.subscriptions[id].test_clock.clone();
        s.run_until(clock.as_deref(), now);
    }
    Ok(s.r_subscription(&s.w.subscriptions[id]))
}

pub fn cancel(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(&["invoice_now", "prorate", "cancellation_details"])?;
    let sub = s.subscription(id, "id")?.clone();
    if sub.status == "canceled" {
        return Err(ApiError::invalid_code(
            "resource_missing",
            format!("No such subscription: '{id}'"),
            Some("id"),
        )
        .with_status(404));
    }
    let now = s.now_for(Some(&sub.customer));
    if let Some(cd) = p.obj("cancellation_details")? {
        if let Some(x) = s.w.subscriptions.get_mut(id) {
            x.cancellation_comment = cd.str("comment")?;
            x.cancellation_feedback = cd.str("feedback")?;
        }
    }
    if p.bool("prorate")? == Some(true) && sub.status != "trialing" {
        let changes = sub
            .items
            .iter()
            .map(|it| ItemChange {
                id: Some(it.id.clone()),
                price: None,
                quantity: Some(0),
                deleted: false,
                metadata: None,
            })
            .collect();
        let _ = s.update_items(id, changes, "create_prorations", now);
    }
    if p.bool("invoice_now")? == Some(true) {
        s.final_invoice(id, now);
    }
    s.cancel_subscription(id, now, Some("cancellation_requested"));
    Ok(s.r_subscription(&s.w.subscriptions[id]))
}

pub fn list(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    let customer = p.str("customer")?;
    let status = p.str("status")?;
    let price = p.str("price")?;
    let clock = p.str("test_clock")?;
    let mut v = vec![];
    for x in s.w.subscriptions.values() {
        let st_ok = match status.as_deref() {
            None => x.status != "canceled" && x.status != "incomplete_expired",
            Some("all") => true,
            Some(st) => x.status == st,
        };
        if !st_ok
            || customer.as_ref().is_some_and(|c| *c != x.customer)
            || price
                .as_ref()
                .is_some_and(|pr| !x.items.iter().any(|i| i.price == *pr))
            || clock
                .as_ref()
                .is_some_and(|c| x.test_clock.as_ref() != Some(c))
            || !range_ok(p, "created", x.created)?
        {
            continue;
        }
        v.push((x.created, x.seq, x.id.clone(), x.clone()));
    }
    paginate(newest_first(v), p, "/v1/subscriptions", |x| {
        s.r_subscription(x)
    })
}

pub fn list_items(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    let sub_id = p.req_str("subscription")?;
    let sub = s.subscription(&sub_id, "subscription")?.clone();
    let data = sub.items.iter().map(|it| s.r_sub_item(&sub, it)).collect();
    Ok(list_object(
        &format!("/v1/subscription_items?subscription={sub_id}"),
        data,
        false,
    ))
}

pub fn retrieve_item(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    s.render_id(id)
        .filter(|_| id.starts_with("si_"))
        .ok_or_else(|| ApiError::no_such("subscription_item", id, "id"))
}

fn owner(s: &Sim, item: &str) -> Result<String, ApiError> {
    s.w.subscriptions
        .values()
        .find(|x| x.items.iter().any(|i| i.id == item))
        .map(|x| x.id.clone())
        .ok_or_else(|| ApiError::no_such("subscription_item", item, "id"))
}

fn proration_of(p: &Params) -> Result<String, ApiError> {
    let pr = p
        .str("proration_behavior")?
        .unwrap_or_else(|| "create_prorations".into());
    if !["create_prorations", "always_invoice", "none"].contains(&pr.as_str()) {
        return Err(ApiError::invalid(
            "Invalid proration_behavior: must be one of always_invoice, create_prorations, or none",
            Some("proration_behavior".into()),
        ));
    }
    Ok(pr)
}

pub fn create_item(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "subscription",
        "price",
        "price_data",
        "quantity",
        "metadata",
        "proration_behavior",
        "proration_date",
        "payment_behavior",
    ])?;
    let sub = p.req_str("subscription")?;
    let c = s.subscription(&sub, "subscription")?.customer.clone();
    let price = item_price(s, p)?.ok_or_else(|| ApiError::missing_param("price"))?;
    let now = p
        .i64("proration_date")?
        .unwrap_or_else(|| s.now_for(Some(&c)));
    let before: Vec<String> = s.w.subscriptions[&sub]
        .items
        .iter()
        .map(|i| i.id.clone())
        .collect();
    s.update_items(
        &sub,
        vec![ItemChange {
            id: None,
            price: Some(price),
            quantity: p.i64("quantity")?,
            deleted: false,
            metadata: Some(p.metadata()?),
        }],
        &proration_of(p)?,
        now,
    )?;
    let x = s.w.subscriptions[&sub].clone();
    let it = x
        .items
        .iter()
        .find(|i| !before.contains(&i.id))
        .ok_or_else(|| ApiError::new(500, "api_error", None, "item not created"))?;
    Ok(s.r_sub_item(&x, it))
}

pub fn update_item(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "price",
        "price_data",
        "quantity",
        "metadata",
        "proration_behavior",
        "proration_date",
        "payment_behavior",
    ])?;
    let sub = owner(s, id)?;
    let c = s.w.subscriptions[&sub].customer.clone();
    let price = item_price(s, p)?;
    let now = p
        .i64("proration_date")?
        .unwrap_or_else(|| s.now_for(Some(&c)));
    s.update_items(
        &sub,
        vec![ItemChange {
            id: Some(id.to_string()),
            price,
            quantity: p.i64("quantity")?,
            deleted: false,
            metadata: if p.has("metadata") {
                Some(p.metadata()?)
            } else {
                None
            },
        }],
        &proration_of(p)?,
        now,
    )?;
    retrieve_item(s, id)
}

pub fn delete_item(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(&["proration_behavior", "proration_date", "clear_usage"])?;
    let sub = owner(s, id)?;
    let c = s.w.subscriptions[&sub].customer.clone();
    let now = p
        .i64("proration_date")?
        .unwrap_or_else(|| s.now_for(Some(&c)));
    s.update_items(
        &sub,
        vec![ItemChange {
            id: Some(id.to_string()),
            price: None,
            quantity: None,
            deleted: true,
            metadata: None,
        }],
        &proration_of(p)?,
        now,
    )?;
    Ok(serde_json::json!({"id": id, "object": "subscription_item", "deleted": true}))
}
