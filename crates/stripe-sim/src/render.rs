//! JSON shapes of every object, as the current Stripe API returns them.

use crate::sim::Sim;
use crate::state::*;
use serde_json::{json, Value};

pub fn meta(m: &Meta) -> Value {
    json!(m)
}

fn addr_null() -> Value {
    json!({"city": null, "country": null, "line1": null, "line2": null, "postal_code": null, "state": null})
}

/// `price.tiers`, which Stripe includes only when expanded.
pub fn tiers_json(p: &Price) -> Value {
    let dec = |d: &crate::util::Dec| {
        if d.is_whole() {
            json!(d.round())
        } else {
            Value::Null
        }
    };
    Value::Array(
        p.tiers
            .iter()
            .map(|t| {
                json!({"flat_amount": dec(&t.flat_amount), "flat_amount_decimal": t.flat_amount.to_string(),
                    "unit_amount": dec(&t.unit_amount), "unit_amount_decimal": t.unit_amount.to_string(),
                    "up_to": t.up_to})
            })
            .collect(),
    )
}

pub fn list(url: &str, data: Vec<Value>, has_more: bool) -> Value {
    json!({"object": "list", "data": data, "has_more": has_more, "url": url})
}

impl Sim {
    pub fn r_customer(&self, c: &Customer) -> Value {
        if c.deleted {
            return json!({"id": c.id, "object": "customer", "deleted": true});
        }
        json!({
            "id": c.id, "object": "customer", "address": null, "balance": c.balance,
            "created": c.created, "currency": c.currency, "default_source": null,
            "delinquent": self.customer_delinquent(&c.id), "description": c.description,
            "discount": null, "email": c.email, "invoice_prefix": c.invoice_prefix,
            "invoice_settings": {"custom_fields": null, "default_payment_method": c.default_payment_method,
                "footer": null, "rendering_options": null},
            "livemode": false, "metadata": meta(&c.metadata), "name": c.name,
            "next_invoice_sequence": c.next_invoice_sequence, "phone": c.phone,
            "preferred_locales": [], "shipping": null, "tax_exempt": "none", "test_clock": c.test_clock,
        })
    }

    pub fn r_product(&self, p: &Product) -> Value {
        if p.deleted {
            return json!({"id": p.id, "object": "product", "deleted": true});
        }
        json!({
            "id": p.id, "object": "product", "active": p.active, "created": p.created,
            "default_price": p.default_price, "description": p.description, "images": [],
            "livemode": false, "marketing_features": [], "metadata": meta(&p.metadata), "name": p.name,
            "package_dimensions": null, "shippable": null, "statement_descriptor": p.statement_descriptor,
            "tax_code": null, "type": "service", "unit_label": p.unit_label, "updated": p.updated, "url": null,
        })
    }

    pub fn r_price(&self, p: &Price) -> Value {
        let tiered = p.tiers_mode.is_some();
        let scheme = if tiered { "tiered" } else { "per_unit" };
        let unit_decimal = (!tiered).then(|| p.unit_amount.to_string());
        let transform = p
            .transform_quantity
            .as_ref()
            .map(|(d, r)| json!({"divide_by": d, "round": r}));
        let unit_amount = if p.unit_amount.is_whole() && !tiered {
            json!(p.unit_amount.round())
        } else {
            Value::Null
        };
        json!({
            "id": p.id, "object": "price", "active": p.active, "billing_scheme": scheme,
            "created": p.created, "currency": p.currency, "custom_unit_amount": null, "livemode": false,
            "lookup_key": p.lookup_key, "metadata": meta(&p.metadata), "nickname": p.nickname,
            "product": p.product,
            "recurring": p.recurring.as_ref().map(|r| json!({
                "interval": r.interval, "interval_count": r.interval_count, "meter": r.meter,
                "trial_period_days": r.trial_period_days, "usage_type": r.usage_type,
            })),
            "tax_behavior": p.tax_behavior, "tiers_mode": p.tiers_mode, "transform_quantity": transform,
            "type": if p.recurring.is_some() { "recurring" } else { "one_time" },
            "unit_amount": unit_amount, "unit_amount_decimal": unit_decimal,
        })
    }

    /// The legacy `plan` view of a recurring price, still present on subscription items.
    pub fn r_plan(&self, p: &Price) -> Value {
        let r = p.recurring.clone().unwrap_or(Recurring {
            interval: "month".into(),
            interval_count: 1,
            usage_type: "licensed".into(),
            meter: None,
            trial_period_days: None,
        });
        let tiered = p.tiers_mode.is_some();
        let scheme = if tiered { "tiered" } else { "per_unit" };
        let unit_decimal = (!tiered).then(|| p.unit_amount.to_string());
        let transform = p
            .transform_quantity
            .as_ref()
            .map(|(d, r)| json!({"divide_by": d, "round": r}));
        let amount = if p.unit_amount.is_whole() && !tiered {
            json!(p.unit_amount.round())
        } else {
            Value::Null
        };
        json!({
            "id": p.id, "object": "plan", "active": p.active, "amount": amount,
            "amount_decimal": unit_decimal, "billing_scheme": scheme,
            "created": p.created, "currency": p.currency, "interval": r.interval,
            "interval_count": r.interval_count, "livemode": false, "metadata": meta(&p.metadata),
            "meter": r.meter, "nickname": p.nickname, "product": p.product, "tiers_mode": p.tiers_mode,
            "transform_usage": transform, "trial_period_days": r.trial_period_days, "usage_type": r.usage_type,
        })
    }

    pub fn r_meter(&self, m: &Meter) -> Value {
        json!({
            "id": m.id, "object": "billing.meter", "created": m.created,
            "customer_mapping": {"event_payload_key": m.customer_key, "type": "by_id"},
            "default_aggregation": {"formula": m.formula}, "display_name": m.display_name,
            "event_name": m.event_name, "event_time_window": null, "livemode": false,
            "status": m.status, "status_transitions": {"deactivated_at": m.deactivated_at},
            "updated": m.updated, "value_settings": {"event_payload_key": m.value_key},
        })
    }

    pub fn r_meter_event(&self, e: &MeterEvent) -> Value {
        json!({
            "object": "billing.meter_event", "created": e.created, "event_name": e.event_name,
            "identifier": e.identifier, "livemode": false, "payload": e.payload, "timestamp": e.timestamp,
        })
    }

    pub fn r_coupon(&self, c: &Coupon, now: i64) -> Value {
        if c.deleted {
            return json!({"id": c.id, "object": "coupon", "deleted": true});
        }
        json!({
            "id": c.id, "object": "coupon", "amount_off": c.amount_off, "created": c.created,
            "currency": c.currency, "duration": c.duration, "duration_in_months": c.duration_in_months,
            "livemode": false, "max_redemptions": c.max_redemptions, "metadata": meta(&c.metadata),
            "name": c.name,
            "percent_off": c.percent_off_bp.map(|bp| if bp % 100 == 0 { json!(bp / 100) } else { json!(bp as f64 / 100.0) }),
            "redeem_by": c.redeem_by, "times_redeemed": c.times_redeemed, "valid": c.valid_at(now),
        })
    }

    pub fn r_promotion_code(&self, p: &PromotionCode) -> Value {
        json!({
            "id": p.id, "object": "promotion_code", "active": p.active, "code": p.code,
            "created": p.created, "customer": p.customer, "customer_account": null,
            "expires_at": p.expires_at, "livemode": false, "max_redemptions": p.max_redemptions,
            "metadata": meta(&p.metadata),
            "promotion": {"coupon": p.coupon, "type": "coupon"},
            "restrictions": {"currency_options": {}, "first_time_transaction": p.first_time_transaction,
                "minimum_amount": p.minimum_amount, "minimum_amount_currency": p.minimum_amount_currency},
            "times_redeemed": p.times_redeemed,
        })
    }

    pub fn r_discount(&self, d: &Discount) -> Value {
        json!({
            "id": d.id, "object": "discount", "checkout_session": d.checkout_session,
            "customer": d.customer, "customer_account": null, "end": d.end, "invoice": d.invoice,
            "invoice_item": null, "promotion_code": d.promotion_code, "start": d.start,
            "subscription": d.subscription, "subscription_item": null,
            "source": {"coupon": d.coupon, "type": "coupon"},
        })
    }

    pub fn r_invoice_item(&self, i: &InvoiceItem) -> Value {
        if i.deleted {
            return json!({"id": i.id, "object": "invoiceitem", "deleted": true});
        }
        let product = i
            .price
            .as_ref()
            .and_then(|p| self.w.prices.get(p))
            .map(|p| p.product.clone());
        json!({
            "id": i.id, "object": "invoiceitem", "amount": i.amount, "currency": i.currency,
            "customer": i.customer, "customer_account": null, "date": i.date, "description": i.description,
            "discountable": i.discountable, "discounts": [], "invoice": i.invoice, "livemode": false,
            "metadata": meta(&i.metadata), "net_amount": i.amount,
            "parent": i.subscription.as_ref().map(|s| json!({
                "subscription_details": {"subscription": s, "subscription_item": i.subscription_item},
                "type": "subscription_details"})),
            "period": {"end": i.period_end, "start": i.period_start},
            "pricing": {
                "price_details": i.price.as_ref().map(|p| json!({"price": p, "product": product})),
                "type": "price_details", "unit_amount_decimal": i.unit_amount.to_string()},
            "proration": i.proration, "quantity": i.quantity,
            "quantity_decimal": i.quantity.to_string(),
            "tax_rates": [], "test_clock": i.test_clock,
        })
    }

    pub fn r_sub_item(&self, sub: &Subscription, it: &SubItem) -> Value {
        let price = self.w.prices.get(&it.price);
        json!({
            "id": it.id, "object": "subscription_item", "billing_thresholds": null, "created": it.created,
            "current_period_end": it.current_period_end, "current_period_start": it.current_period_start,
            "discounts": [], "metadata": meta(&it.metadata),
            "plan": price.map(|p| self.r_plan(p)), "price": price.map(|p| self.r_price(p)),
            "quantity": it.quantity, "subscription": sub.id, "tax_rates": [],
        })
    }

    pub fn r_subscription(&self, s: &Subscription) -> Value {
        let items: Vec<Value> = s.items.iter().map(|it| self.r_sub_item(s, it)).collect();
        let n = items.len();
        let mut v = json!({
            "id": s.id, "object": "subscription", "application": null, "application_fee_percent": null,
            "automatic_tax": {"disabled_reason": null, "enabled": false, "liability": null},
            "billing_cycle_anchor": s.billing_cycle_anchor, "billing_cycle_anchor_config": null,
            "billing_mode": {"flexible": null, "type": "classic", "updated_at": null},
            "billing_schedules": [], "billing_thresholds": null, "cancel_at": s.cancel_at, "cancel_at_period_end": s.cancel_at_period_end,
            "canceled_at": s.canceled_at,
            "cancellation_details": {"comment": s.cancellation_comment, "feedback": s.cancellation_feedback,
                "reason": s.cancellation_reason},
            "collection_method": s.collection_method, "created": s.created, "currency": s.currency,
            "customer": s.customer, "customer_account": null, "days_until_due": s.days_until_due,
            "default_payment_method": s.default_payment_method, "default_source": null,
            "default_tax_rates": [], "description": s.description, "discounts": s.discounts,
            "ended_at": s.ended_at,
            "invoice_settings": {"account_tax_ids": null, "issuer": {"type": "self"}},
            "items": {"object": "list", "data": items, "has_more": false, "total_count": n,
                "url": format!("/v1/subscription_items?subscription={}", s.id)},
            "latest_invoice": s.latest_invoice, "livemode": false, "managed_payments": {"enabled": false},
            "metadata": meta(&s.metadata),
            "next_pending_invoice_item_invoice": null, "on_behalf_of": null, "pause_collection": null,
            "payment_settings": {"payment_method_options": null, "payment_method_types": null,
                "save_default_payment_method": "off"},
            "pending_invoice_item_interval": null, "pending_setup_intent": null,
            "pending_update": s.pending_update.as_ref().map(|pu| json!({
                "billing_cycle_anchor": (pu.after.billing_cycle_anchor != s.billing_cycle_anchor).then_some(pu.after.billing_cycle_anchor),
                "expires_at": pu.expires_at,
                "subscription_items": pu.after.items.iter().map(|it| self.r_sub_item(&pu.after, it)).collect::<Vec<_>>(),
                "trial_end": null, "trial_from_plan": null,
            })),
            "schedule": s.schedule, "start_date": s.start_date, "status": s.status, "test_clock": s.test_clock,
            "transfer_data": null, "trial_end": s.trial_end,
            "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
            "trial_start": s.trial_start,
        });
        // Single-item subscriptions still carry the legacy top-level `plan` and `quantity`.
        if let [only] = s.items.as_slice() {
            if let Some(p) = self.w.prices.get(&only.price) {
                v["plan"] = self.r_plan(p);
                v["quantity"] = json!(only.quantity);
            }
        }
        v
    }

    pub fn r_line(&self, inv_id: Option<&str>, l: &Line) -> Value {
        let parent = if let Some(ii) = &l.invoice_item {
            json!({"invoice_item_details": {"invoice_item": ii, "proration": l.proration,
                "proration_details": {"credited_items": null}, "subscription": l.subscription},
                "subscription_item_details": null, "type": "invoice_item_details"})
        } else {
            json!({"invoice_item_details": null, "subscription_item_details": {"invoice_item": null,
                "proration": l.proration, "proration_details": {"credited_items": null},
                "subscription": l.subscription, "subscription_item": l.subscription_item},
                "type": "subscription_item_details"})
        };
        json!({
            "id": l.id, "object": "line_item", "amount": l.amount, "currency": l.currency,
            "description": l.description,
            "discount_amounts": l.discount_amounts.iter().map(|(a, d)| json!({"amount": a, "discount": d})).collect::<Vec<_>>(),
            "discountable": l.discountable,
            "discounts": l.discount_amounts.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
            "invoice": inv_id, "livemode": false, "metadata": meta(&l.metadata), "parent": parent,
            "period": {"end": l.period_end, "start": l.period_start}, "pretax_credit_amounts": [],
            "pricing": {"price_details": l.price.as_ref().map(|p| json!({"price": p, "product": l.product})),
                "type": "price_details", "unit_amount_decimal": l.unit_amount.to_string()},
            "quantity": if l.quantity.is_whole() { json!(l.quantity.round()) } else { Value::Null },
            "quantity_decimal": l.quantity.to_string(),
            "subscription": l.subscription, "subtotal": l.amount, "taxes": [],
        })
    }

    /// An invoice; `id` is `None` for previews, which have no id.
    pub fn r_invoice(&self, i: &Invoice, preview: bool) -> Value {
        let inv_id = if preview { None } else { Some(i.id.as_str()) };
        let lines: Vec<Value> = i.lines.iter().map(|l| self.r_line(inv_id, l)).collect();
        let n = lines.len();
        let mut disc: std::collections::BTreeMap<String, i64> = Default::default();
        for l in &i.lines {
            for (a, d) in &l.discount_amounts {
                *disc.entry(d.clone()).or_default() += a;
            }
        }
        let host = &self.base_url;
        let hosted = (!preview && i.status != "draft").then(|| format!("{host}/i/{}", i.id));
        json!({
            "id": inv_id, "object": "invoice", "account_country": "US", "account_name": "Tally Simulator",
            "account_tax_ids": null, "amount_due": i.amount_due(), "amount_overpaid": 0,
            "amount_paid": i.amount_paid, "amount_remaining": i.amount_remaining(), "amount_shipping": 0,
            "application": null, "attempt_count": i.attempt_count, "attempted": i.attempted,
            "auto_advance": i.auto_advance,
            "automatic_tax": {"disabled_reason": null, "enabled": false, "liability": null, "provider": null, "status": null},
            "automatically_finalizes_at": i.automatically_finalizes_at,
            "billing_reason": i.billing_reason, "collection_method": i.collection_method,
            "created": i.created, "currency": i.currency, "custom_fields": null, "customer": i.customer,
            "customer_account": null, "customer_address": null, "customer_email": i.customer_email,
            "customer_name": i.customer_name, "customer_phone": null, "customer_shipping": null,
            "customer_tax_exempt": "none", "customer_tax_ids": [],
            "default_payment_method": i.default_payment_method, "default_source": null,
            "default_tax_rates": [], "description": i.description, "discounts": i.discounts,
            "due_date": i.due_date, "effective_at": i.effective_at, "ending_balance": i.ending_balance,
            "footer": null, "from_invoice": null, "hosted_invoice_url": hosted,
            "invoice_pdf": (!preview && i.status != "draft").then(|| format!("{host}/i/{}/pdf", i.id)),
            "issuer": {"type": "self"}, "last_finalization_error": i.last_finalization_error,
            "latest_revision": null,
            "lines": {"object": "list", "data": lines, "has_more": false, "total_count": n,
                "url": match inv_id { Some(id) => format!("/v1/invoices/{id}/lines"), None => "/v1/invoices/upcoming/lines".into() }},
            "livemode": false, "metadata": meta(&i.metadata), "next_payment_attempt": i.next_payment_attempt,
            "number": i.number, "on_behalf_of": null,
            "parent": i.subscription.as_ref().map(|s| json!({"quote_details": null,
                "subscription_details": {"metadata": i.subscription_metadata, "subscription": s},
                "type": "subscription_details"})),
            "payment_settings": {"default_mandate": null, "payment_method_options": null, "payment_method_types": null},
            "period_end": i.period_end, "period_start": i.period_start,
            "post_payment_credit_notes_amount": 0, "pre_payment_credit_notes_amount": 0,
            "receipt_number": null, "rendering": null, "shipping_cost": null, "shipping_details": null,
            "starting_balance": i.starting_balance, "statement_descriptor": null, "status": i.status,
            "status_transitions": {"finalized_at": i.finalized_at, "marked_uncollectible_at": i.marked_uncollectible_at,
                "paid_at": i.paid_at, "voided_at": i.voided_at},
            "subtotal": i.subtotal(), "subtotal_excluding_tax": i.subtotal(), "test_clock": i.test_clock,
            "total": i.total(),
            "total_discount_amounts": disc.iter().map(|(d, a)| json!({"amount": a, "discount": d})).collect::<Vec<_>>(),
            "total_excluding_tax": i.total(), "total_pretax_credit_amounts": [], "total_taxes": [],
            "webhooks_delivered_at": i.finalized_at.or(Some(i.created)),
        })
    }

    /// The `invoice_payment` linking an invoice to its payment intent (basil's replacement for
    /// `invoice.payment_intent`).
    pub fn r_invoice_payment(&self, i: &Invoice) -> Option<Value> {
        let pi = self.w.payment_intents.get(i.payment_intent.as_ref()?)?;
        let status = match pi.status.as_str() {
            "succeeded" => "paid",
            "canceled" => "canceled",
            _ => "open",
        };
        Some(json!({
            "id": format!("inpay_{}", pi.id.trim_start_matches("pi_")), "object": "invoice_payment",
            "amount_paid": if status == "paid" { Some(pi.amount_received) } else { None },
            "amount_requested": pi.amount, "created": pi.created, "currency": pi.currency,
            "invoice": i.id, "is_default": true, "livemode": false,
            "payment": {"type": "payment_intent", "payment_intent": pi.id},
            "status": status,
            "status_transitions": {"canceled_at": pi.canceled_at, "paid_at": if status == "paid" { i.paid_at } else { None }},
        }))
    }

    pub fn r_payment_method(&self, p: &PaymentMethod) -> Value {
        json!({
            "id": p.id, "object": "payment_method", "allow_redisplay": "unspecified",
            "billing_details": {"address": addr_null(), "email": null, "name": null, "phone": null, "tax_id": null},
            "card": {"brand": p.brand, "checks": {"address_line1_check": null, "address_postal_code_check": null, "cvc_check": "pass"},
                "country": "US", "display_brand": p.brand, "exp_month": p.exp_month, "exp_year": p.exp_year,
                "fingerprint": format!("fp{}", p.last4), "funding": "credit", "generated_from": null,
                "last4": p.last4, "networks": {"available": [p.brand], "preferred": null},
                "regulated_status": "unregulated", "three_d_secure_usage": {"supported": true}, "wallet": null},
            "created": p.created, "customer": p.customer, "customer_account": null, "livemode": false,
            "metadata": meta(&p.metadata), "type": "card",
        })
    }

    pub fn r_payment_intent(&self, p: &PaymentIntent) -> Value {
        json!({
            "id": p.id, "object": "payment_intent", "amount": p.amount, "amount_capturable": 0,
            "amount_details": {"tip": {}}, "amount_received": p.amount_received, "application": null,
            "application_fee_amount": null, "automatic_payment_methods": null,
            "canceled_at": p.canceled_at, "cancellation_reason": p.cancellation_reason,
            "capture_method": "automatic", "client_secret": p.client_secret,
            "confirmation_method": "automatic", "created": p.created, "currency": p.currency,
            "customer": p.customer, "customer_account": null, "description": p.description,
            "excluded_payment_method_types": null, "last_payment_error": p.last_payment_error,
            "latest_charge": p.latest_charge, "livemode": false, "managed_payments": {"enabled": false},
            "metadata": meta(&p.metadata),
            "next_action": null, "on_behalf_of": null, "payment_method": p.payment_method,
            "payment_method_configuration_details": null,
            "payment_method_options": {"card": {"installments": null, "mandate_options": null, "network": null,
                "request_three_d_secure": "automatic"}},
            "payment_method_types": ["card"], "processing": null, "receipt_email": p.receipt_email,
            "review": null, "setup_future_usage": p.setup_future_usage, "shipping": null, "source": null,
            "statement_descriptor": null, "statement_descriptor_suffix": null, "status": p.status,
            "transfer_data": null, "transfer_group": null,
        })
    }

    pub fn r_charge(&self, c: &Charge) -> Value {
        let refunds: Vec<Value> = self
            .w
            .refunds
            .values()
            .filter(|r| r.charge == c.id)
            .map(|r| self.r_refund(r))
            .collect();
        let n = refunds.len();
        let pm = c
            .payment_method
            .as_ref()
            .and_then(|p| self.w.payment_methods.get(p));
        json!({
            "id": c.id, "object": "charge", "amount": c.amount, "amount_captured": if c.status == "succeeded" { c.amount } else { 0 },
            "amount_refunded": c.amount_refunded, "application": null, "application_fee": null,
            "application_fee_amount": null, "balance_transaction": null,
            "billing_details": {"address": addr_null(), "email": null, "name": null, "phone": null, "tax_id": null},
            "calculated_statement_descriptor": "TALLY SIM", "captured": c.status == "succeeded",
            "created": c.created, "currency": c.currency, "customer": c.customer, "description": c.description,
            "disputed": false, "failure_balance_transaction": null, "failure_code": c.failure_code,
            "failure_message": c.failure_message, "fraud_details": {}, "livemode": false,
            "metadata": meta(&c.metadata), "on_behalf_of": null,
            "outcome": {"advice_code": null, "network_advice_code": null, "network_decline_code": null,
                "network_status": if c.status == "succeeded" { "approved_by_network" } else { "declined_by_network" },
                "reason": c.decline_code, "risk_level": "normal", "risk_score": 20, "rule": null,
                "seller_message": if c.status == "succeeded" { "Payment complete." } else { "The bank did not return any further details with this decline." },
                "type": if c.status == "succeeded" { "authorized" } else { "issuer_declined" }},
            "paid": c.status == "succeeded", "payment_intent": c.payment_intent,
            "payment_method": c.payment_method,
            "payment_method_details": pm.map(|p| json!({"type": "card", "card": {"brand": p.brand, "last4": p.last4,
                "exp_month": p.exp_month, "exp_year": p.exp_year, "country": "US", "funding": "credit",
                "network": p.brand, "checks": null, "fingerprint": null, "three_d_secure": null, "wallet": null}})),
            "receipt_email": null, "receipt_number": null, "receipt_url": null,
            "refunded": c.amount_refunded >= c.amount && c.amount > 0,
            "refunds": {"object": "list", "data": refunds, "has_more": false, "total_count": n,
                "url": format!("/v1/charges/{}/refunds", c.id)},
            "review": null, "shipping": null, "source_transfer": null, "statement_descriptor": null,
            "statement_descriptor_suffix": null, "status": c.status, "transfer_data": null, "transfer_group": null,
        })
    }

    pub fn r_refund(&self, r: &Refund) -> Value {
        json!({
            "id": r.id, "object": "refund", "amount": r.amount, "balance_transaction": null,
            "charge": r.charge, "created": r.created, "currency": r.currency,
            "destination_details": null, "metadata": meta(&r.metadata), "payment_intent": r.payment_intent,
            "reason": r.reason, "receipt_number": null, "source_transfer_reversal": null,
            "status": "succeeded", "transfer_reversal": null,
        })
    }

    pub fn checkout_amounts(&self, s: &CheckoutSession) -> (i64, i64) {
        let subtotal: i64 = s
            .lines
            .iter()
            .filter_map(|l| self.w.prices.get(&l.price).map(|p| (p, l.quantity)))
            .filter(|(p, _)| !p.is_metered())
            .map(|(p, q)| p.amount_for(crate::util::Dec::from_int(q)))
            .sum();
        (subtotal, (subtotal - s.amount_discount).max(0))
    }

    pub fn r_checkout_session(&self, s: &CheckoutSession) -> Value {
        let (subtotal, total) = self.checkout_amounts(s);
        json!({
            "id": s.id, "object": "checkout.session", "adaptive_pricing": null, "after_expiration": null,
            "allow_promotion_codes": s.allow_promotion_codes, "amount_subtotal": subtotal,
            "amount_total": total,
            "automatic_tax": {"enabled": false, "liability": null, "provider": null, "status": null},
            "billing_address_collection": null, "cancel_url": s.cancel_url,
            "client_reference_id": s.client_reference_id, "client_secret": null,
            "collected_information": null, "consent": null, "consent_collection": null,
            "created": s.created, "currency": s.currency, "currency_conversion": null, "custom_fields": [],
            "custom_text": {"after_submit": null, "shipping_address": null, "submit": null, "terms_of_service_acceptance": null},
            "customer": s.customer, "customer_account": null, "customer_creation": s.customer_creation,
            "customer_details": if s.status == "complete" {
                json!({"address": addr_null(), "email": s.customer_details_email, "name": s.customer_details_name,
                    "phone": null, "tax_exempt": "none", "tax_ids": [], "business_name": null, "individual_name": null})
            } else { Value::Null },
            "customer_email": s.customer_email,
            "discounts": s.applied_discount.as_ref().map(|d| {
                let dd = self.w.discounts.get(d);
                vec![json!({"coupon": dd.map(|x| x.coupon.clone()), "promotion_code": dd.and_then(|x| x.promotion_code.clone())})]
            }).unwrap_or_default(),
            "expires_at": s.expires_at, "integration_identifier": null, "invoice": s.invoice,
            "invoice_creation": if s.mode == "payment" {
                json!({"enabled": false, "invoice_data": {"account_tax_ids": null, "custom_fields": null,
                    "description": null, "footer": null, "issuer": null, "metadata": {}, "rendering_options": null}})
            } else { Value::Null },
            "livemode": false, "locale": null, "managed_payments": {"enabled": false},
            "metadata": meta(&s.metadata), "mode": s.mode,
            "origin_context": null, "payment_intent": s.payment_intent, "payment_link": null,
            "payment_method_collection": if s.mode == "subscription" { json!("always") } else { Value::Null },
            "payment_method_configuration_details": null, "payment_method_options": {},
            "payment_method_types": ["card"], "payment_status": s.payment_status,
            "permissions": null, "phone_number_collection": {"enabled": false},
            "recovered_from": null, "saved_payment_method_options": null, "setup_intent": null,
            "shipping_address_collection": null, "shipping_cost": null, "shipping_options": [],
            "status": s.status, "submit_type": null, "subscription": s.subscription,
            "success_url": s.success_url,
            "total_details": {"amount_discount": s.amount_discount, "amount_shipping": 0, "amount_tax": 0},
            "ui_mode": "hosted",
            "url": if s.status == "open" { Some(format!("{}/c/pay/{}", self.base_url, s.id)) } else { None },
            "wallet_options": null,
        })
    }

    pub fn r_checkout_line(&self, s: &CheckoutSession, l: &CheckoutLine) -> Value {
        let price = self.w.prices.get(&l.price);
        let amount = match price {
            Some(p) if !p.is_metered() => p.amount_for(crate::util::Dec::from_int(l.quantity)),
            _ => 0,
        };
        let desc = price
            .and_then(|p| self.w.products.get(&p.product))
            .map(|p| p.name.clone());
        json!({
            "id": l.id, "object": "item", "adjustable_quantity": null, "amount_discount": 0,
            "amount_subtotal": amount, "amount_tax": 0, "amount_total": amount, "currency": s.currency,
            "description": desc, "discounts": [], "metadata": {}, "price": price.map(|p| self.r_price(p)),
            "quantity": l.quantity, "taxes": [],
        })
    }

    pub fn r_portal_config(&self, c: &PortalConfig) -> Value {
        json!({
            "id": c.id, "object": "billing_portal.configuration", "active": c.active, "application": null,
            "business_profile": {"headline": null, "privacy_policy_url": null, "terms_of_service_url": null},
            "created": c.created, "default_return_url": c.default_return_url,
            "features": {
                "customer_update": {"allowed_updates": ["email"], "enabled": true},
                "invoice_history": {"enabled": c.invoice_history},
                "payment_method_update": {"enabled": c.payment_method_update, "payment_method_configuration": null},
                "subscription_cancel": {"cancellation_reason": {"enabled": false, "options": []},
                    "enabled": c.cancel_enabled, "mode": c.cancel_mode, "proration_behavior": "none"},
                "subscription_update": {"billing_cycle_anchor": null, "default_allowed_updates": ["price"],
                    "enabled": c.update_enabled,
                    "products": c.update_products.iter().map(|(p, prices)| json!({"adjustable_quantity": {"enabled": false, "maximum": null, "minimum": 1}, "prices": prices, "product": p})).collect::<Vec<_>>(),
                    "proration_behavior": c.update_proration, "schedule_at_period_end": {"conditions": []},
                    "trial_update_behavior": "end_trial"},
            },
            "is_default": c.is_default, "livemode": false, "login_page": {"enabled": false, "url": null},
            "metadata": meta(&c.metadata), "name": c.name, "updated": c.updated,
        })
    }

    pub fn r_portal_session(&self, s: &PortalSession) -> Value {
        json!({
            "id": s.id, "object": "billing_portal.session", "configuration": s.configuration,
            "created": s.created, "customer": s.customer, "customer_account": null, "flow": null,
            "livemode": false, "locale": s.locale, "on_behalf_of": null, "return_url": s.return_url,
            "url": format!("{}/p/session/{}", self.base_url, s.id),
        })
    }

    pub fn r_schedule(&self, sc: &SubscriptionSchedule) -> Value {
        let now = self.clock_now(sc.test_clock.as_deref());
        let current = if sc.status == "active" {
            sc.phases
                .iter()
                .find(|p| p.start_date <= now && now < p.end_date)
                .map(|p| json!({"start_date": p.start_date, "end_date": p.end_date}))
        } else {
            None
        };
        let currency = sc
            .phases
            .first()
            .and_then(|p| p.items.first())
            .and_then(|(pr, _)| self.w.prices.get(pr))
            .map(|p| p.currency.clone());
        let phases: Vec<Value> = sc
            .phases
            .iter()
            .map(|p| {
                json!({
                    "add_invoice_items": [], "application_fee_percent": null,
                    "automatic_tax": {"disabled_reason": null, "enabled": false, "liability": null},
                    "billing_cycle_anchor": null, "billing_thresholds": null,
                    "collection_method": null, "currency": currency,
                    "default_payment_method": null, "default_tax_rates": [], "description": null,
                    "discounts": [], "end_date": p.end_date, "invoice_settings": null,
                    "items": p.items.iter().map(|(pr, q)| json!({
                        "billing_thresholds": null, "discounts": [], "metadata": {},
                        "plan": pr, "price": pr, "quantity": q, "tax_rates": [],
                    })).collect::<Vec<_>>(),
                    "metadata": meta(&p.metadata), "on_behalf_of": null,
                    "proration_behavior": p.proration_behavior, "start_date": p.start_date,
                    "transfer_data": null, "trial_end": null,
                })
            })
            .collect();
        json!({
            "id": sc.id, "object": "subscription_schedule", "application": null,
            "billing_mode": {"flexible": null, "type": "classic", "updated_at": null},
            "canceled_at": sc.canceled_at, "completed_at": sc.completed_at, "created": sc.created,
            "current_phase": current, "customer": sc.customer, "customer_account": null,
            "default_settings": {"application_fee_percent": null,
                "automatic_tax": {"disabled_reason": null, "enabled": false, "liability": null},
                "billing_cycle_anchor": "automatic", "billing_thresholds": null,
                "collection_method": "charge_automatically", "default_payment_method": null,
                "description": null, "invoice_settings": {"account_tax_ids": null, "days_until_due": null, "issuer": {"type": "self"}},
                "on_behalf_of": null, "transfer_data": null},
            "end_behavior": sc.end_behavior, "livemode": false, "metadata": meta(&sc.metadata),
            "phases": phases, "released_at": sc.released_at,
            "released_subscription": sc.released_subscription, "status": sc.status,
            "subscription": sc.subscription, "test_clock": sc.test_clock,
        })
    }

    pub fn r_test_clock(&self, c: &TestClock) -> Value {
        if c.deleted {
            return json!({"id": c.id, "object": "test_helpers.test_clock", "deleted": true});
        }
        json!({
            "id": c.id, "object": "test_helpers.test_clock", "created": c.created,
            "deletes_after": c.created + 30 * crate::util::DAY, "frozen_time": c.frozen_time,
            "livemode": false, "name": c.name, "status": c.status,
            "status_details": {"advancing": null},
        })
    }

    pub fn r_webhook_endpoint(&self, e: &WebhookEndpoint, with_secret: bool) -> Value {
        let mut v = json!({
            "id": e.id, "object": "webhook_endpoint", "api_version": e.api_version, "application": null,
            "created": e.created, "description": e.description, "enabled_events": e.enabled_events,
            "livemode": false, "metadata": meta(&e.metadata), "status": e.status, "url": e.url,
        });
        if with_secret {
            v["secret"] = json!(e.secret);
        }
        v
    }

    pub fn r_event(&self, e: &Event) -> Value {
        let mut data = json!({"object": e.object});
        if let Some(p) = &e.previous_attributes {
            data["previous_attributes"] = p.clone();
        }
        json!({
            "id": e.id, "object": "event", "api_version": self.cfg.api_version, "created": e.created,
            "data": data, "livemode": false, "pending_webhooks": e.pending_webhooks,
            "request": {"id": e.request_id, "idempotency_key": e.idempotency_key}, "type": e.kind,
        })
    }
}
