use super::newest_first;
use crate::billing::ItemChange;
use crate::error::ApiError;
use crate::form::Params;
use crate::sim::{paginate, range_ok, Sim};
use crate::state::InvoiceItem;
use crate::util::{new_id, Dec, DAY};
use serde_json::Value;

pub fn create_item(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "customer",
        "amount",
        "currency",
        "description",
        "period",
        "invoice",
        "subscription",
        "metadata",
        "discountable",
        "price",
        "pricing",
        "price_data",
        "quantity",
        "unit_amount_decimal",
        "discounts",
        "tax_rates",
        "tax_behavior",
    ])?;
    let customer = p.req_str("customer")?;
    s.customer(&customer, "customer")?;
    let now = s.now_for(Some(&customer));
    let price = match p.obj("pricing")? {
        Some(pr) => pr.str("price")?,
        None => p.str("price")?,
    };
    let price = match (price, p.obj("price_data")?) {
        (Some(x), _) => Some(x),
        (None, Some(pd)) => Some(crate::resources::catalog::price_from(s, &pd, None, false)?),
        _ => None,
    };
    let quantity = p.i64("quantity")?.unwrap_or(1);
    let (amount, unit, currency) = if let Some(pr) = &price {
        let pr = s.price(pr, "pricing[price]")?.clone();
        (
            pr.amount_for(Dec::from_int(quantity)),
            pr.unit_amount,
            pr.currency.clone(),
        )
    } else if let Some(a) = p.i64("amount")? {
        let c = p
            .str("currency")?
            .map(|c| c.to_lowercase())
            .or_else(|| {
                s.w.customers
                    .get(&customer)
                    .and_then(|c| c.currency.clone())
            })
            .ok_or_else(|| ApiError::missing_param("currency"))?;
        (a, Dec::from_int(a), c)
    } else if let Some(u) = p.dec("unit_amount_decimal")? {
        let c = p
            .str("currency")?
            .map(|c| c.to_lowercase())
            .ok_or_else(|| ApiError::missing_param("currency"))?;
        (Dec::from_int(quantity).mul_round(u), u, c)
    } else {
        return Err(ApiError::missing_param("amount"));
    };
    s.same_currency(&customer, &currency)?;
    let invoice = p.str("invoice")?;
    if let Some(i) = &invoice {
        let inv = s.invoice(i, "invoice")?;
        if inv.status != "draft" {
            return Err(ApiError::invalid_code(
                "invoice_not_editable",
                "You can only add invoice items to draft invoices.",
                Some("invoice"),
            ));
        }
    }
    let sub = p.str("subscription")?;
    if let Some(x) = &sub {
        s.subscription(x, "subscription")?;
    }
    let (ps, pe) = match p.obj("period")? {
        Some(per) => (per.req_i64("start")?, per.req_i64("end")?),
        None => (now, now),
    };
    let id = new_id("ii");
    let seq = s.w.next_seq();
    let item = InvoiceItem {
        id: id.clone(),
        seq,
        customer: customer.clone(),
        amount,
        currency,
        description: p.str("description")?.or_else(|| {
            price
                .as_ref()
                .and_then(|x| s.w.prices.get(x))
                .and_then(|x| s.w.products.get(&x.product))
                .map(|x| x.name.clone())
        }),
        date: now,
        period_start: ps,
        period_end: pe,
        proration: false,
        quantity,
        unit_amount: unit,
        price,
        invoice: invoice.clone(),
        subscription: sub,
        subscription_item: None,
        metadata: p.metadata()?,
        discountable: p.bool("discountable")?.unwrap_or(amount > 0),
        test_clock: s.clock_of(&customer),
        deleted: false,
    };
    s.w.invoice_items.insert(id.clone(), item);
    if let Some(i) = &invoice {
        s.add_item_to_draft(i, &id);
    }
    let v = s.r_invoice_item(&s.w.invoice_items[&id]);
    s.emit("invoiceitem.created", v.clone(), None, now);
    Ok(v)
}

pub fn retrieve_item(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    let x =
        s.w.invoice_items
            .get(id)
            .ok_or_else(|| ApiError::no_such("invoiceitem", id, "id"))?;
    Ok(s.r_invoice_item(x))
}

fn editable_item(s: &Sim, id: &str) -> Result<InvoiceItem, ApiError> {
    let x =
        s.w.invoice_items
            .get(id)
            .filter(|x| !x.deleted)
            .ok_or_else(|| ApiError::no_such("invoiceitem", id, "id"))?
            .clone();
    if let Some(i) = &x.invoice {
        if s.w.invoices.get(i).is_some_and(|inv| inv.status != "draft") {
            return Err(ApiError::invalid_code(
                "invoice_not_editable",
                "This invoice item is on an invoice that is no longer editable.",
                None,
            ));
        }
    }
    Ok(x)
}

pub fn update_item(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "amount",
        "description",
        "metadata",
        "quantity",
        "period",
        "discountable",
        "unit_amount_decimal",
    ])?;
    let x = editable_item(s, id)?;
    let before = s.r_invoice_item(&x);
    let now = s.now_for(Some(&x.customer));
    if let Some(it) = s.w.invoice_items.get_mut(id) {
        if let Some(a) = p.i64("amount")? {
            it.amount = a;
            it.unit_amount = Dec::from_int(a);
            it.quantity = 1;
        }
        if let Some(q) = p.i64("quantity")? {
            it.quantity = q;
            it.amount = Dec::from_int(q).mul_round(it.unit_amount);
        }
        if let Some(d) = p.opt_str("description")? {
            it.description = d;
        }
        if let Some(d) = p.bool("discountable")? {
            it.discountable = d;
        }
        p.apply_metadata(&mut it.metadata)?;
    }
    if let Some(i) = x.invoice.clone() {
        s.refresh_draft_line(&i, id);
    }
    let after = s.r_invoice_item(&s.w.invoice_items[id]);
    s.emit_updated("invoiceitem.updated", &before, after.clone(), now);
    Ok(after)
}

pub fn delete_item(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    let x = editable_item(s, id)?;
    let now = s.now_for(Some(&x.customer));
    if let Some(i) = &x.invoice {
        if let Some(inv) = s.w.invoices.get_mut(i) {
            inv.lines.retain(|l| l.invoice_item.as_deref() != Some(id));
        }
    }
    let v = s.r_invoice_item(&x);
    if let Some(it) = s.w.invoice_items.get_mut(id) {
        it.deleted = true;
    }
    s.emit("invoiceitem.deleted", v, None, now);
    Ok(serde_json::json!({"id": id, "object": "invoiceitem", "deleted": true}))
}

pub fn list_items(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    let customer = p.str("customer")?;
    let invoice = p.str("invoice")?;
    let pending = p.bool("pending")?;
    let v =
        s.w.invoice_items
            .values()
            .filter(|x| !x.deleted)
            .filter(|x| customer.as_ref().is_none_or(|c| *c == x.customer))
            .filter(|x| invoice.is_none() || x.invoice == invoice)
            .filter(|x| pending.is_none_or(|pd| pd == x.invoice.is_none()))
            .map(|x| (x.date, x.seq, x.id.clone(), x.clone()))
            .collect();
    paginate(newest_first(v), p, "/v1/invoiceitems", |x| {
        s.r_invoice_item(x)
    })
}

pub fn create(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "customer",
        "subscription",
        "auto_advance",
        "collection_method",
        "days_until_due",
        "description",
        "metadata",
        "pending_invoice_items_behavior",
        "currency",
        "default_payment_method",
        "discounts",
        "due_date",
        "footer",
    ])?;
    let customer = p.req_str("customer")?;
    s.customer(&customer, "customer")?;
    let now = s.now_for(Some(&customer));
    let sub = p.str("subscription")?;
    if let Some(x) = &sub {
        s.subscription(x, "subscription")?;
    }
    let currency = p
        .str("currency")?
        .map(|c| c.to_lowercase())
        .or_else(|| {
            sub.as_ref()
                .and_then(|x| s.w.subscriptions.get(x))
                .map(|x| x.currency.clone())
        })
        .unwrap_or_else(|| "usd".into());
    let include = match p.str("pending_invoice_items_behavior")?.as_deref() {
        None | Some("exclude") => false,
        Some("include") => true,
        Some(_) => {
            return Err(ApiError::invalid(
                "Invalid pending_invoice_items_behavior: must be one of exclude or include",
                Some("pending_invoice_items_behavior".into()),
            ))
        }
    };
    let discounts = crate::resources::discounts::redeem_params(s, p, &customer, i64::MAX, now)?;
    let id = s.create_invoice(
        &customer,
        sub.as_deref(),
        "manual",
        vec![],
        (now, now),
        &currency,
        include,
        &discounts,
        now,
    );
    let pm = crate::resources::payments::param_pm(s, p, "default_payment_method", now)?;
    let collection = p
        .str("collection_method")?
        .unwrap_or_else(|| "charge_automatically".into());
    // Stripe: a due date (given, or `days_until_due` from creation) only for `send_invoice`
    // invoices; without one, finalization sets the default of 30 days.
    let due_date = p.i64("due_date")?;
    let days_until_due = p.i64("days_until_due")?;
    for (param, set) in [
        ("due_date", due_date.is_some()),
        ("days_until_due", days_until_due.is_some()),
    ] {
        if set && collection != "send_invoice" {
            return Err(ApiError::invalid(
                format!("You can only set `{param}` if `collection_method` is `send_invoice`."),
                Some(param.into()),
            ));
        }
    }
    if let Some(inv) = s.w.invoices.get_mut(&id) {
        inv.due_date = due_date.or(days_until_due.map(|d| now + d * DAY));
        inv.auto_advance = p.bool("auto_advance")?.unwrap_or(false);
        if !inv.auto_advance {
            inv.automatically_finalizes_at = None;
        }
        inv.description = p.str("description")?;
        inv.metadata = p.metadata()?;
        inv.default_payment_method = pm;
        inv.collection_method = collection;
        inv.discounts = discounts;
    }
    Ok(s.r_invoice(&s.w.invoices[&id], false))
}

pub fn retrieve(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    Ok(s.r_invoice(s.invoice(id, "invoice")?, false))
}

pub fn update(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "description",
        "metadata",
        "auto_advance",
        "default_payment_method",
        "footer",
        "collection_method",
        "days_until_due",
        "due_date",
    ])?;
    let inv = s.invoice(id, "invoice")?.clone();
    let before = s.r_invoice(&inv, false);
    let now = s.now_for(Some(&inv.customer));
    if inv.status != "draft"
        && (p.has("description") || p.has("default_payment_method") || p.has("collection_method"))
    {
        return Err(ApiError::invalid_code(
            "invoice_not_editable",
            "Finalized invoices can't be updated in this way",
            None,
        ));
    }
    let pm = match p.opt_str("default_payment_method")? {
        Some(Some(x)) => Some(Some(crate::resources::payments::resolve_pm(
            s,
            &x,
            "default_payment_method",
            now,
        )?)),
        other => other,
    };
    if let Some(x) = s.w.invoices.get_mut(id) {
        if let Some(d) = p.opt_str("description")? {
            x.description = d;
        }
        if let Some(a) = p.bool("auto_advance")? {
            x.auto_advance = a;
            if x.status == "draft" {
                x.automatically_finalizes_at = if a { Some(now + 3600) } else { None };
            }
        }
        if let Some(pm) = pm {
            x.default_payment_method = pm;
        }
        if let Some(c) = p.str("collection_method")? {
            x.collection_method = c;
        }
        p.apply_metadata(&mut x.metadata)?;
    }
    let after = s.r_invoice(&s.w.invoices[id], false);
    s.emit_updated("invoice.updated", &before, after.clone(), now);
    Ok(after)
}

pub fn delete(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    let inv = s.invoice(id, "invoice")?.clone();
    if inv.status != "draft" {
        return Err(ApiError::invalid_code(
            "invoice_not_editable",
            "You can only delete draft invoices.",
            None,
        ));
    }
    let now = s.now_for(Some(&inv.customer));
    for l in &inv.lines {
        if let Some(ii) = &l.invoice_item {
            if let Some(x) = s.w.invoice_items.get_mut(ii) {
                x.invoice = None;
            }
        }
    }
    let v = s.r_invoice(&inv, false);
    s.w.invoices.remove(id);
    s.emit("invoice.deleted", v, None, now);
    Ok(serde_json::json!({"id": id, "object": "invoice", "deleted": true}))
}

pub fn lines(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    let inv = s.invoice(id, "invoice")?.clone();
    let items: Vec<(String, crate::state::Line)> = inv
        .lines
        .iter()
        .map(|l| (l.id.clone(), l.clone()))
        .collect();
    paginate(items, p, &format!("/v1/invoices/{id}/lines"), |l| {
        s.r_line(Some(id), l)
    })
}

pub fn finalize(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(&["auto_advance"])?;
    let inv = s.invoice(id, "invoice")?.clone();
    let now = s.now_for(Some(&inv.customer));
    if let Some(a) = p.bool("auto_advance")? {
        if let Some(x) = s.w.invoices.get_mut(id) {
            x.auto_advance = a;
        }
    }
    s.finalize_invoice(id, now)?;
    let x = &s.w.invoices[id];
    if x.auto_advance && x.status == "open" && x.collection_method == "charge_automatically" {
        // Auto-advancing invoices are collected right after finalization.
        let _ = s.pay_invoice(id, now, None, true);
    }
    Ok(s.r_invoice(&s.w.invoices[id], false))
}

pub fn pay(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "payment_method",
        "off_session",
        "paid_out_of_band",
        "forgive",
        "source",
    ])?;
    let inv = s.invoice(id, "invoice")?.clone();
    let now = s.now_for(Some(&inv.customer));
    if inv.status == "draft" {
        s.finalize_invoice(id, now)?;
        if s.w.invoices[id].status == "paid" {
            return Ok(s.r_invoice(&s.w.invoices[id], false));
        }
    }
    if p.bool("paid_out_of_band")? == Some(true) {
        if s.w.invoices[id].status != "open" {
            return Err(ApiError::invalid_code(
                "invoice_not_editable",
                "Only open invoices can be paid out of band.",
                None,
            ));
        }
        s.pay_out_of_band(id, now);
        return Ok(s.r_invoice(&s.w.invoices[id], false));
    }
    let pm = crate::resources::payments::param_pm(s, p, "payment_method", now)?;
    s.pay_invoice(id, now, pm, false)?;
    Ok(s.r_invoice(&s.w.invoices[id], false))
}

pub fn void(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[])?;
    let inv = s.invoice(id, "invoice")?.clone();
    if inv.status != "open" && inv.status != "uncollectible" {
        return Err(ApiError::invalid_code(
            "invoice_not_editable",
            format!(
                "You can only void open or uncollectible invoices. This invoice is {}.",
                inv.status
            ),
            None,
        ));
    }
    let now = s.now_for(Some(&inv.customer));
    if let Some(x) = s.w.invoices.get_mut(id) {
        x.status = "void".into();
        x.voided_at = Some(now);
        x.next_payment_attempt = None;
        x.auto_advance = false;
    }
    // The customer balance applied at finalization is given back.
    if let Some(c) = s.w.customers.get_mut(&inv.customer) {
        c.balance += inv.starting_balance - inv.ending_balance.unwrap_or(inv.starting_balance);
    }
    let after = s.r_invoice(&s.w.invoices[id], false);
    s.emit("invoice.voided", after.clone(), None, now);
    s.after_invoice_settled(id, now);
    Ok(after)
}

pub fn mark_uncollectible(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[])?;
    let inv = s.invoice(id, "invoice")?.clone();
    if inv.status != "open" {
        return Err(ApiError::invalid_code(
            "invoice_not_editable",
            "You can only mark open invoices as uncollectible.",
            None,
        ));
    }
    let now = s.now_for(Some(&inv.customer));
    if let Some(x) = s.w.invoices.get_mut(id) {
        x.status = "uncollectible".into();
        x.marked_uncollectible_at = Some(now);
        x.next_payment_attempt = None;
    }
    let after = s.r_invoice(&s.w.invoices[id], false);
    s.emit("invoice.marked_uncollectible", after.clone(), None, now);
    s.after_invoice_settled(id, now);
    Ok(after)
}

pub fn list(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    let customer = p.str("customer")?;
    let sub = p.str("subscription")?;
    let status = p.str("status")?;
    let mut v = vec![];
    for x in s.w.invoices.values() {
        if customer.as_ref().is_some_and(|c| *c != x.customer)
            || (sub.is_some() && x.subscription != sub)
            || status.as_ref().is_some_and(|st| *st != x.status)
            || !range_ok(p, "created", x.created)?
        {
            continue;
        }
        v.push((x.created, x.seq, x.id.clone(), x.clone()));
    }
    paginate(newest_first(v), p, "/v1/invoices", |x| {
        s.r_invoice(x, false)
    })
}

/// `POST /v1/invoices/create_preview`: the next invoice of a subscription, optionally with
/// proposed item changes (`subscription_details[items]`) prorated as they would be.
pub fn create_preview(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "customer",
        "subscription",
        "subscription_details",
        "discounts",
        "preview_mode",
        "automatic_tax",
        "currency",
    ])?;
    let sub_id = p.str("subscription")?;
    let customer = match (&sub_id, p.str("customer")?) {
        (_, Some(c)) => c,
        (Some(x), None) => s.subscription(x, "subscription")?.customer.clone(),
        (None, None) => return Err(ApiError::missing_param("customer")),
    };
    s.customer(&customer, "customer")?;
    let now = s.now_for(Some(&customer));
    let Some(sub_id) = sub_id else {
        // Without a subscription: the customer's pending invoice items.
        let items: Vec<InvoiceItem> =
            s.w.invoice_items
                .values()
                .filter(|i| !i.deleted && i.invoice.is_none() && i.customer == customer)
                .cloned()
                .collect();
        if items.is_empty() {
            return Err(ApiError::invalid_code(
                "invoice_upcoming_none",
                "No upcoming invoices for customer",
                None,
            ));
        }
        let currency = items[0].currency.clone();
        let mut shadow = s.shadow();
        let id = shadow.create_invoice(
            &customer,
            None,
            "manual",
            vec![],
            (now, now),
            &currency,
            true,
            &[],
            now,
        );
        let inv = shadow.w.invoices[&id].clone();
        return Ok(s.r_invoice(&inv, true));
    };
    let mut shadow = s.shadow();
    if let Some(sd) = p.obj("subscription_details")? {
        sd.allow(&[
            "items",
            "proration_behavior",
            "proration_date",
            "cancel_at_period_end",
            "trial_end",
            "billing_cycle_anchor",
        ])?;
        let proration = sd
            .str("proration_behavior")?
            .unwrap_or_else(|| "create_prorations".into());
        let at = sd.i64("proration_date")?.unwrap_or(now);
        let mut changes = vec![];
        for it in sd.list("items")? {
            changes.push(ItemChange {
                id: it.str("id")?,
                price: it.str("price")?,
                quantity: it.i64("quantity")?,
                deleted: it.bool("deleted")?.unwrap_or(false),
                metadata: None,
            });
        }
        if let Some(c) = sd.bool("cancel_at_period_end")? {
            if let Some(x) = shadow.w.subscriptions.get_mut(&sub_id) {
                x.cancel_at_period_end = c;
            }
        }
        if !changes.is_empty() {
            let before: Vec<String> = shadow.w.invoices.keys().cloned().collect();
            shadow.update_items(&sub_id, changes, &proration, at)?;
            if proration == "always_invoice" {
                if let Some(inv) = shadow.w.invoices.values().find(|i| !before.contains(&i.id)) {
                    return Ok(s.r_invoice(&inv.clone(), true));
                }
            }
        }
    }
    let inv = shadow.preview_invoice(&sub_id, &customer, 0)?;
    let mut v = s.r_invoice(&inv, true);
    v["billing_reason"] = Value::from("upcoming");
    Ok(v)
}

pub fn list_payments(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    let invoice = p.str("invoice")?;
    let mut v: Vec<(i64, u64, String, Value)> = vec![];
    for i in s.w.invoices.values() {
        if invoice.as_ref().is_some_and(|x| *x != i.id) {
            continue;
        }
        if let Some(ip) = s.r_invoice_payment(i) {
            let id = ip["id"].as_str().unwrap_or_default().to_string();
            v.push((i.created, i.seq, id, ip));
        }
    }
    paginate(newest_first(v), p, "/v1/invoice_payments", |x| x.clone())
}

pub fn retrieve_payment(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    s.w.invoices
        .values()
        .filter_map(|i| s.r_invoice_payment(i))
        .find(|ip| ip["id"] == id)
        .ok_or_else(|| ApiError::no_such("invoice_payment", id, "id"))
}
