use super::newest_first;
use crate::billing::{NewItem, NewSub};
use crate::error::ApiError;
use crate::form::Params;
use crate::sim::{paginate, Sim};
use crate::state::{CheckoutLine, CheckoutSession, Meta};
use crate::util::{random_chars, DAY};
use serde_json::Value;

pub fn create(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "mode",
        "line_items",
        "customer",
        "customer_email",
        "customer_creation",
        "client_reference_id",
        "metadata",
        "success_url",
        "cancel_url",
        "allow_promotion_codes",
        "discounts",
        "subscription_data",
        "payment_intent_data",
        "expires_at",
        "payment_method_types",
        "locale",
        "billing_address_collection",
        "ui_mode",
        "currency",
        "invoice_creation",
        "payment_method_collection",
        "automatic_tax",
        "tax_id_collection",
        "saved_payment_method_options",
        "consent_collection",
        "submit_type",
    ])?;
    p.refuse_automatic_tax()?;
    let mode = p.req_str("mode")?;
    if !["subscription", "payment"].contains(&mode.as_str()) {
        return Err(ApiError::invalid(
            "The simulator supports mode=subscription and mode=payment.",
            Some("mode".into()),
        ));
    }
    if p.str("ui_mode")?.is_some_and(|u| u != "hosted") {
        return Err(ApiError::invalid(
            "The simulator supports only ui_mode=hosted.",
            Some("ui_mode".into()),
        ));
    }
    let success_url = p
        .str("success_url")?
        .ok_or_else(|| ApiError::missing_param("success_url"))?;
    let customer = p.str("customer")?;
    if let Some(c) = &customer {
        s.customer(c, "customer")?;
        if p.has("customer_email") {
            return Err(ApiError::invalid(
                "You may only specify one of these parameters: customer, customer_email.",
                Some("customer_email".into()),
            ));
        }
    }
    let now = s.now_for(customer.as_deref());
    if p.bool("allow_promotion_codes")? == Some(true) && p.has("discounts") {
        return Err(ApiError::invalid(
            "You may only specify one of these parameters: allow_promotion_codes, discounts.",
            Some("discounts".into()),
        ));
    }
    let items = p.list("line_items")?;
    if items.is_empty() {
        return Err(ApiError::missing_param("line_items"));
    }
    let mut lines = vec![];
    let mut currency: Option<String> = None;
    let mut any_recurring = false;
    for (i, it) in items.iter().enumerate() {
        it.allow(&[
            "price",
            "price_data",
            "quantity",
            "adjustable_quantity",
            "dynamic_tax_rates",
            "tax_rates",
        ])?;
        let price = if let Some(pd) = it.obj("price_data")? {
            pd.allow(&[
                "currency",
                "product",
                "product_data",
                "unit_amount",
                "unit_amount_decimal",
                "recurring",
                "tax_behavior",
            ])?;
            crate::resources::catalog::price_from(s, &pd, None, false)?
        } else {
            it.str("price")?
                .ok_or_else(|| ApiError::missing_param(&format!("line_items[{i}][price]")))?
        };
        let pr = s.price(&price, &format!("line_items[{i}][price]"))?.clone();
        if !pr.active {
            return Err(ApiError::invalid(
                format!("The price `{price}` is not active."),
                Some(format!("line_items[{i}][price]")),
            ));
        }
        match &currency {
            None => currency = Some(pr.currency.clone()),
            Some(c) if *c != pr.currency => {
                return Err(ApiError::invalid(
                    "All line items must use the same currency.",
                    Some(format!("line_items[{i}][price]")),
                ))
            }
            _ => {}
        }
        if pr.recurring.is_some() {
            any_recurring = true;
            if mode == "payment" {
                return Err(ApiError::invalid("You specified `payment` mode but passed a recurring price. Either switch to `subscription` mode or use only one-time prices.", Some(format!("line_items[{i}][price]"))));
            }
        }
        let quantity = if pr.is_metered() {
            if it.has("quantity") {
                return Err(ApiError::invalid("Quantity should not be specified where usage_type is `metered`. Remove quantity from `line_items[0]`.", Some(format!("line_items[{i}][quantity]"))));
            }
            0
        } else {
            it.i64("quantity")?
                .ok_or_else(|| ApiError::missing_param(&format!("line_items[{i}][quantity]")))?
        };
        lines.push(CheckoutLine {
            id: format!("li_{}", random_chars(24)),
            price,
            quantity,
        });
    }
    if mode == "subscription" && !any_recurring {
        return Err(ApiError::invalid("You must provide at least one recurring price in `subscription` mode when using prices.", Some("line_items".into())));
    }
    let sd = p.obj("subscription_data")?.unwrap_or_default();
    sd.allow(&[
        "trial_period_days",
        "trial_end",
        "metadata",
        "description",
        "default_tax_rates",
        "trial_settings",
        "billing_cycle_anchor",
        "proration_behavior",
    ])?;
    let pid = p.obj("payment_intent_data")?.unwrap_or_default();
    pid.allow(&[
        "metadata",
        "description",
        "setup_future_usage",
        "receipt_email",
        "statement_descriptor",
    ])?;
    let id = format!("cs_test_{}", random_chars(58));
    let mut discounts = vec![];
    for (i, d) in p.list("discounts")?.iter().enumerate() {
        let c = d.str("coupon")?;
        let pc = d.str("promotion_code")?;
        if let Some(c) = &c {
            s.coupon(c, &format!("discounts[{i}][coupon]"))?;
        }
        if let Some(x) = &pc {
            if !s.w.promotion_codes.contains_key(x) {
                return Err(ApiError::no_such(
                    "promotion_code",
                    x,
                    &format!("discounts[{i}][promotion_code]"),
                ));
            }
        }
        discounts.push((c, pc));
    }
    let seq = s.w.next_seq();
    let sess = CheckoutSession {
        id: id.clone(),
        seq,
        created: now,
        expires_at: p.i64("expires_at")?.unwrap_or(now + DAY),
        mode,
        status: "open".into(),
        payment_status: "unpaid".into(),
        lines,
        currency: currency.unwrap_or_else(|| "usd".into()),
        customer,
        customer_email: p.str("customer_email")?,
        customer_creation: p
            .str("customer_creation")?
            .or(Some("if_required".into()))
            .filter(|_| !p.has("customer")),
        client_reference_id: p.str("client_reference_id")?,
        metadata: p.metadata()?,
        success_url: Some(success_url),
        cancel_url: p.str("cancel_url")?,
        allow_promotion_codes: p.bool("allow_promotion_codes")?,
        discounts,
        trial_period_days: sd.i64("trial_period_days")?,
        trial_end: sd.i64("trial_end")?,
        subscription_metadata: sd.metadata()?,
        payment_intent_metadata: pid.metadata()?,
        subscription: None,
        invoice: None,
        payment_intent: None,
        amount_discount: 0,
        customer_details_email: None,
        customer_details_name: None,
        applied_discount: None,
    };
    s.w.checkout_sessions.insert(id.clone(), sess);
    s.dirty = true;
    Ok(s.r_checkout_session(&s.w.checkout_sessions[&id]))
}

fn session<'a>(s: &'a Sim, id: &str) -> Result<&'a CheckoutSession, ApiError> {
    s.w.checkout_sessions
        .get(id)
        .ok_or_else(|| ApiError::no_such("checkout.session", id, "session"))
}

pub fn retrieve(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    expire_if_due(s, id);
    Ok(s.r_checkout_session(session(s, id)?))
}

pub fn line_items(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    let x = session(s, id)?.clone();
    let items = x.lines.iter().map(|l| (l.id.clone(), l.clone())).collect();
    paginate(
        items,
        p,
        &format!("/v1/checkout/sessions/{id}/line_items"),
        |l| s.r_checkout_line(&x, l),
    )
}

pub fn list(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    let customer = p.str("customer")?;
    let sub = p.str("subscription")?;
    let pi = p.str("payment_intent")?;
    let status = p.str("status")?;
    let v =
        s.w.checkout_sessions
            .values()
            .filter(|x| {
                (customer.is_none() || x.customer == customer)
                    && (sub.is_none() || x.subscription == sub)
                    && (pi.is_none() || x.payment_intent == pi)
                    && status.as_ref().is_none_or(|st| *st == x.status)
            })
            .map(|x| (x.created, x.seq, x.id.clone(), x.clone()))
            .collect();
    paginate(newest_first(v), p, "/v1/checkout/sessions", |x| {
        s.r_checkout_session(x)
    })
}

pub fn expire(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    let x = session(s, id)?.clone();
    if x.status != "open" {
        return Err(ApiError::invalid(format!("Only Checkout Sessions with a status in [\"open\"] can be expired. This Checkout Session has a status of \"{}\".", x.status), None));
    }
    let now = s.now_for(x.customer.as_deref());
    set_expired(s, id, now);
    Ok(s.r_checkout_session(&s.w.checkout_sessions[id]))
}

fn set_expired(s: &mut Sim, id: &str, now: i64) {
    if let Some(x) = s.w.checkout_sessions.get_mut(id) {
        x.status = "expired".into();
    }
    let v = s.r_checkout_session(&s.w.checkout_sessions[id]);
    s.emit("checkout.session.expired", v, None, now);
}

/// Expires every open session whose `expires_at` has passed.
pub fn expire_due(s: &mut Sim) {
    let open: Vec<String> =
        s.w.checkout_sessions
            .values()
            .filter(|x| x.status == "open")
            .map(|x| x.id.clone())
            .collect();
    for id in open {
        expire_if_due(s, &id);
    }
}

pub fn expire_if_due(s: &mut Sim, id: &str) {
    let Some(x) = s.w.checkout_sessions.get(id) else {
        return;
    };
    let now = s.now_for(x.customer.as_deref());
    if x.status == "open" && now >= x.expires_at {
        set_expired(s, id, now);
    }
}

/// What a person typed into the hosted checkout page.
pub struct CardForm {
    pub email: Option<String>,
    pub name: Option<String>,
    pub number: String,
    pub exp_month: i64,
    pub exp_year: i64,
    pub promotion_code: Option<String>,
}

/// Completes an open session with the card from the hosted page. On success returns the
/// success URL (with `{CHECKOUT_SESSION_ID}` substituted); on failure the message to show.
pub fn complete(s: &mut Sim, id: &str, f: CardForm) -> Result<String, String> {
    expire_if_due(s, id);
    let sess =
        s.w.checkout_sessions
            .get(id)
            .cloned()
            .ok_or("This checkout session does not exist.")?;
    if sess.status != "open" {
        return Err(format!("This checkout session is {}.", sess.status));
    }
    let now = s.now_for(sess.customer.as_deref());
    let email = f
        .email
        .clone()
        .filter(|e| !e.is_empty())
        .or(sess.customer_email.clone());
    // Card first: a declined card leaves nothing behind.
    let pm = crate::resources::payments::new_card(s, &f.number, f.exp_month, f.exp_year, now)
        .map_err(|e| e.message.clone())?;
    if let crate::state::CardBehavior::Declines { message, .. } = &s.w.payment_methods[&pm].behavior
    {
        return Err(message.clone());
    }
    let mut promo = None;
    if let Some(code) = f.promotion_code.filter(|c| !c.trim().is_empty()) {
        if sess.allow_promotion_codes != Some(true) {
            return Err("Promotion codes are not enabled for this session.".into());
        }
        promo = Some(
            crate::resources::discounts::promo_by_code(s, code.trim())
                .ok_or("This code is invalid.")?,
        );
    }
    let customer = match &sess.customer {
        Some(c) => c.clone(),
        None => {
            let mut p = Params::default();
            if let Some(e) = &email {
                p.map.insert("email".into(), Value::String(e.clone()));
            }
            if let Some(n) = f.name.clone().filter(|n| !n.is_empty()) {
                p.map.insert("name".into(), Value::String(n));
            }
            let v = crate::resources::customers::create(s, &p).map_err(|e| e.message.clone())?;
            v["id"].as_str().unwrap_or_default().to_string()
        }
    };
    let (subtotal, _) = s.checkout_amounts(&sess);
    let mut discount_ids = vec![];
    if let Some(pid) = promo {
        discount_ids.push(
            crate::resources::discounts::redeem(
                s,
                None,
                Some(pid),
                &customer,
                subtotal,
                "promotion_code",
                now,
            )
            .map_err(|e| e.message.clone())?,
        );
    }
    for (c, pc) in &sess.discounts {
        discount_ids.push(
            crate::resources::discounts::redeem(
                s,
                c.clone(),
                pc.clone(),
                &customer,
                subtotal,
                "discounts",
                now,
            )
            .map_err(|e| e.message.clone())?,
        );
    }
    for d in &discount_ids {
        if let Some(x) = s.w.discounts.get_mut(d) {
            x.checkout_session = Some(id.to_string());
        }
    }
    crate::resources::payments::attach(s, &pm, &customer, "payment_method", now)
        .map_err(|e| e.message.clone())?;
    let mut out = sess.clone();
    out.customer = Some(customer.clone());
    out.customer_details_email = email
        .clone()
        .or_else(|| s.w.customers.get(&customer).and_then(|c| c.email.clone()));
    out.customer_details_name = f.name.clone().filter(|n| !n.is_empty());
    out.applied_discount = discount_ids.first().cloned();
    if sess.mode == "subscription" {
        // One-time prices in a subscription checkout are billed on the first invoice.
        let mut items = vec![];
        for l in &sess.lines {
            let pr = s.w.prices[&l.price].clone();
            if pr.recurring.is_some() {
                items.push(NewItem {
                    price: l.price.clone(),
                    quantity: if pr.is_metered() {
                        None
                    } else {
                        Some(l.quantity)
                    },
                    metadata: Meta::new(),
                });
            } else {
                let mut p = Params::default();
                p.map
                    .insert("customer".into(), Value::String(customer.clone()));
                p.map.insert("price".into(), Value::String(l.price.clone()));
                p.map
                    .insert("quantity".into(), Value::String(l.quantity.to_string()));
                crate::resources::invoices::create_item(s, &p).map_err(|e| e.message.clone())?;
            }
        }
        let trial_end = sess
            .trial_end
            .or(sess.trial_period_days.map(|d| now + d * DAY));
        let n = NewSub {
            customer: customer.clone(),
            items,
            trial_end,
            default_payment_method: Some(pm.clone()),
            metadata: sess.subscription_metadata.clone(),
            discounts: discount_ids.clone(),
            cancel_at_period_end: false,
            cancel_at: None,
            // The hosted page confirms the payment itself, at once.
            payment_behavior: "allow_incomplete".into(),
            collection_method: "charge_automatically".into(),
            days_until_due: None,
            description: None,
        };
        let sub = s
            .create_subscription(n, now)
            .map_err(|e| e.message.clone())?;
        let sub_o = s.w.subscriptions[&sub].clone();
        let inv = sub_o
            .latest_invoice
            .clone()
            .and_then(|i| s.w.invoices.get(&i).cloned());
        if sub_o.status == "incomplete" {
            let msg = inv
                .as_ref()
                .and_then(|i| i.payment_intent.as_ref())
                .and_then(|p| s.w.payment_intents.get(p))
                .and_then(|p| p.last_payment_error.as_ref())
                .and_then(|e| e["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| "Your card was declined.".into());
            // Checkout does not leave an incomplete subscription behind after a failed payment.
            s.cancel_subscription(&sub, now, Some("payment_failed"));
            if let Some(x) = s.w.subscriptions.get_mut(&sub) {
                x.status = "incomplete_expired".into();
            }
            return Err(msg);
        }
        out.subscription = Some(sub);
        out.invoice = inv.as_ref().map(|i| i.id.clone());
        out.amount_discount = inv.as_ref().map(|i| i.discount_total()).unwrap_or(0);
        out.payment_status = if inv.as_ref().is_some_and(|i| i.amount_paid > 0) {
            "paid".into()
        } else {
            "no_payment_required".into()
        };
    } else {
        let total = {
            let mut t = subtotal;
            for d in &discount_ids {
                let c =
                    s.w.discounts
                        .get(d)
                        .and_then(|d| s.w.coupons.get(&d.coupon))
                        .cloned();
                if let Some(c) = c {
                    let off = match (c.percent_off_bp, c.amount_off) {
                        (Some(bp), _) => {
                            crate::util::div_round(t as i128 * bp as i128, 10_000) as i64
                        }
                        (None, Some(a)) => a.min(t),
                        _ => 0,
                    };
                    out.amount_discount += off;
                    t -= off;
                }
            }
            t
        };
        let (pi, res) = s.charge(
            None,
            Some(&customer),
            Some(&pm),
            total,
            &sess.currency,
            None,
            None,
            sess.payment_intent_metadata.clone(),
            now,
        );
        out.payment_intent = Some(pi);
        if let Err(e) = res {
            s.w.checkout_sessions.insert(
                id.to_string(),
                CheckoutSession {
                    payment_intent: out.payment_intent.clone(),
                    ..sess
                },
            );
            return Err(e.message.clone());
        }
        out.payment_status = "paid".into();
    }
    out.status = "complete".into();
    s.w.checkout_sessions.insert(id.to_string(), out.clone());
    let v = s.r_checkout_session(&out);
    s.emit("checkout.session.completed", v, None, now);
    Ok(out
        .success_url
        .unwrap_or_default()
        .replace("{CHECKOUT_SESSION_ID}", id))
}
