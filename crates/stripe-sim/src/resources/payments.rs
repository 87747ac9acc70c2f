use super::newest_first;
use crate::error::ApiError;
use crate::form::Params;
use crate::sim::{paginate, range_ok, Sim};
use crate::state::{CardBehavior, Meta, PaymentMethod, Refund};
use crate::util::{new_id, wall_now};
use serde_json::Value;

/// Stripe's test card numbers, by behaviour.
pub fn card_behavior(number: &str) -> Option<(String, CardBehavior)> {
    let n: String = number.chars().filter(|c| c.is_ascii_digit()).collect();
    let declined = |code: &str, decline: &str, msg: &str| CardBehavior::Declines {
        code: code.into(),
        decline_code: decline.into(),
        message: msg.into(),
    };
    let b = match n.as_str() {
        "4242424242424242" | "4000056655665556" => ("visa", CardBehavior::Succeeds),
        "5555555555554444" | "2223003122003222" | "5200828282828210" => {
            ("mastercard", CardBehavior::Succeeds)
        }
        "378282246310005" => ("amex", CardBehavior::Succeeds),
        "4000000000000002" => (
            "visa",
            declined(
                "card_declined",
                "generic_decline",
                "Your card was declined.",
            ),
        ),
        "4000000000009995" => (
            "visa",
            declined(
                "card_declined",
                "insufficient_funds",
                "Your card has insufficient funds.",
            ),
        ),
        "4000000000009987" => (
            "visa",
            declined("card_declined", "lost_card", "Your card was declined."),
        ),
        "4000000000000069" => (
            "visa",
            declined("expired_card", "expired_card", "Your card has expired."),
        ),
        "4000000000000127" => (
            "visa",
            declined(
                "incorrect_cvc",
                "incorrect_cvc",
                "Your card's security code is incorrect.",
            ),
        ),
        "4000000000000341" => ("visa", CardBehavior::ChargeFails),
        _ => return None,
    };
    Some((b.0.to_string(), b.1))
}

/// Test payment method ids and tokens (`pm_card_visa`, `tok_chargeDeclined`, …) → card number.
fn magic_number(id: &str) -> Option<&'static str> {
    Some(match id {
        "pm_card_visa" | "tok_visa" | "pm_card_us" => "4242424242424242",
        "pm_card_mastercard" | "tok_mastercard" => "5555555555554444",
        "pm_card_amex" | "tok_amex" => "378282246310005",
        "pm_card_chargeDeclined"
        | "tok_chargeDeclined"
        | "pm_card_visa_chargeDeclined"
        | "tok_visa_chargeDeclined" => "4000000000000002",
        "pm_card_chargeDeclinedInsufficientFunds"
        | "tok_chargeDeclinedInsufficientFunds"
        | "pm_card_visa_chargeDeclinedInsufficientFunds" => "4000000000009995",
        "pm_card_chargeDeclinedExpiredCard" | "tok_chargeDeclinedExpiredCard" => "4000000000000069",
        "pm_card_chargeCustomerFail" | "tok_chargeCustomerFail" => "4000000000000341",
        _ => return None,
    })
}

/// Stores a card payment method; unknown numbers are refused like an invalid card.
pub fn new_card(
    s: &mut Sim,
    number: &str,
    exp_month: i64,
    exp_year: i64,
    now: i64,
) -> Result<String, ApiError> {
    let digits: String = number.chars().filter(|c| c.is_ascii_digit()).collect();
    let (brand, behavior) = match card_behavior(&digits) {
        Some(b) => b,
        None if luhn(&digits) && digits.len() >= 13 => ("visa".to_string(), CardBehavior::Succeeds),
        None => {
            return Err(ApiError::card(
                "incorrect_number",
                None,
                "Your card number is incorrect.",
            ))
        }
    };
    let id = new_id("pm");
    let seq = s.w.next_seq();
    s.w.payment_methods.insert(
        id.clone(),
        PaymentMethod {
            id: id.clone(),
            seq,
            created: now,
            customer: None,
            brand,
            last4: digits[digits.len() - 4..].to_string(),
            exp_month,
            exp_year,
            behavior,
            metadata: Meta::new(),
        },
    );
    Ok(id)
}

fn luhn(n: &str) -> bool {
    let mut sum = 0;
    for (i, c) in n.chars().rev().enumerate() {
        let mut d = c.to_digit(10).unwrap_or(0);
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    !n.is_empty() && sum % 10 == 0
}

/// A payment method id, instantiating Stripe's magic test ids on first use.
pub fn resolve_pm(s: &mut Sim, id: &str, param: &str, now: i64) -> Result<String, ApiError> {
    if s.w.payment_methods.contains_key(id) {
        return Ok(id.to_string());
    }
    match magic_number(id) {
        Some(n) => new_card(s, n, 12, 2034, now),
        None => Err(ApiError::no_such("PaymentMethod", id, param)),
    }
}

/// The payment method named by the optional parameter `param`, resolved like [`resolve_pm`].
pub fn param_pm(
    s: &mut Sim,
    p: &Params,
    param: &str,
    now: i64,
) -> Result<Option<String>, ApiError> {
    match p.str(param)? {
        Some(x) => Ok(Some(resolve_pm(s, &x, param, now)?)),
        None => Ok(None),
    }
}

/// Attaches a payment method to a customer. Cards that always decline fail here, as in Stripe.
pub fn attach(
    s: &mut Sim,
    pm: &str,
    customer: &str,
    param: &str,
    now: i64,
) -> Result<String, ApiError> {
    s.customer(customer, "customer")?;
    let id = resolve_pm(s, pm, param, now)?;
    let x = s.w.payment_methods[&id].clone();
    if let CardBehavior::Declines {
        code,
        decline_code,
        message,
    } = &x.behavior
    {
        let mut e = ApiError::card(code, Some(decline_code), message);
        e.param = Some(param.to_string());
        return Err(e);
    }
    if x.customer.as_deref() == Some(customer) {
        return Ok(id);
    }
    if x.customer.is_some() {
        return Err(ApiError::invalid(
            "The payment method you provided has already been attached to a customer.",
            Some(param.into()),
        ));
    }
    if let Some(p) = s.w.payment_methods.get_mut(&id) {
        p.customer = Some(customer.to_string());
    }
    let v = s.r_payment_method(&s.w.payment_methods[&id]);
    s.emit("payment_method.attached", v, None, now);
    Ok(id)
}

pub fn create_pm(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    p.allow(&["type", "card", "metadata", "billing_details"])?;
    let t = p.str("type")?.unwrap_or_else(|| "card".into());
    if t != "card" {
        return Err(ApiError::invalid(
            "The simulator supports only type=card.",
            Some("type".into()),
        ));
    }
    let card = p
        .obj("card")?
        .ok_or_else(|| ApiError::missing_param("card"))?;
    let now = wall_now();
    let id = if let Some(tok) = card.str("token")? {
        let n =
            magic_number(&tok).ok_or_else(|| ApiError::no_such("token", &tok, "card[token]"))?;
        new_card(s, n, 12, 2034, now)?
    } else {
        let number = card.req_str("number")?;
        new_card(
            s,
            &number,
            card.i64("exp_month")?.unwrap_or(12),
            card.i64("exp_year")?.unwrap_or(2034),
            now,
        )?
    };
    if let Some(x) = s.w.payment_methods.get_mut(&id) {
        x.metadata = p.metadata()?;
    }
    Ok(s.r_payment_method(&s.w.payment_methods[&id]))
}

pub fn retrieve_pm(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    let id = resolve_pm(s, id, "id", wall_now())?;
    Ok(s.r_payment_method(&s.w.payment_methods[&id]))
}

pub fn attach_pm(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(&["customer"])?;
    let customer = p.req_str("customer")?;
    let now = s.now_for(Some(&customer));
    let id = attach(s, id, &customer, "payment_method", now)?;
    Ok(s.r_payment_method(&s.w.payment_methods[&id]))
}

pub fn detach_pm(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    let x = s.payment_method(id, "id")?.clone();
    let Some(c) = x.customer.clone() else {
        return Err(ApiError::invalid("The payment method you provided is not attached to a customer so detachment is impossible.", None));
    };
    let now = s.now_for(Some(&c));
    if let Some(p) = s.w.payment_methods.get_mut(id) {
        p.customer = None;
    }
    if let Some(cu) = s.w.customers.get_mut(&c) {
        if cu.default_payment_method.as_deref() == Some(id) {
            cu.default_payment_method = None;
        }
    }
    let v = s.r_payment_method(&s.w.payment_methods[id]);
    s.emit("payment_method.detached", v.clone(), None, now);
    Ok(v)
}

pub fn list_pms(s: &mut Sim, p: &Params, customer: Option<&str>) -> Result<Value, ApiError> {
    let customer = match customer {
        Some(c) => Some(c.to_string()),
        None => p.str("customer")?,
    };
    if let Some(c) = &customer {
        s.customer(c, "customer")?;
    }
    let v =
        s.w.payment_methods
            .values()
            .filter(|x| x.customer.is_some() && (customer.is_none() || x.customer == customer))
            .map(|x| (x.created, x.seq, x.id.clone(), x.clone()))
            .collect();
    paginate(newest_first(v), p, "/v1/payment_methods", |x| {
        s.r_payment_method(x)
    })
}

fn new_pi(
    s: &mut Sim,
    amount: i64,
    currency: &str,
    customer: Option<String>,
    p: &Params,
    now: i64,
) -> Result<String, ApiError> {
    let mut pi = s.draft_payment_intent(amount, currency, customer, now);
    pi.description = p.str("description")?;
    pi.metadata = p.metadata()?;
    pi.setup_future_usage = p.str("setup_future_usage")?;
    pi.receipt_email = p.str("receipt_email")?;
    Ok(s.add_payment_intent(pi, now))
}

pub fn create_pi(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "amount",
        "currency",
        "customer",
        "payment_method",
        "confirm",
        "off_session",
        "description",
        "metadata",
        "receipt_email",
        "setup_future_usage",
        "payment_method_types",
        "automatic_payment_methods",
        "capture_method",
        "statement_descriptor",
        "statement_descriptor_suffix",
        "return_url",
        "error_on_requires_action",
    ])?;
    let amount = p.req_i64("amount")?;
    if amount < 50 {
        return Err(ApiError::invalid_code(
            "amount_too_small",
            "Amount must be at least $0.50 usd",
            Some("amount"),
        ));
    }
    let currency = p.req_str("currency")?.to_lowercase();
    if p.str("capture_method")?
        .is_some_and(|c| c != "automatic" && c != "automatic_async")
    {
        return Err(ApiError::invalid(
            "The simulator supports only automatic capture.",
            Some("capture_method".into()),
        ));
    }
    let customer = p.str("customer")?;
    if let Some(c) = &customer {
        s.customer(c, "customer")?;
    }
    let now = s.now_for(customer.as_deref());
    let pm = param_pm(s, p, "payment_method", now)?;
    if let (Some(pm), Some(c)) = (&pm, &customer) {
        let owner = s.w.payment_methods[pm].customer.clone();
        if owner.as_ref().is_some_and(|o| o != c) {
            return Err(ApiError::invalid(
                "The provided PaymentMethod belongs to another customer.",
                Some("payment_method".into()),
            ));
        }
    }
    let id = new_pi(s, amount, &currency, customer.clone(), p, now)?;
    if let Some(x) = s.w.payment_intents.get_mut(&id) {
        x.payment_method = pm.clone();
        if pm.is_some() {
            x.status = "requires_confirmation".into();
        }
    }
    if p.bool("confirm")? == Some(true) {
        return confirm(s, &id, pm, now);
    }
    Ok(s.r_payment_intent(&s.w.payment_intents[&id]))
}

fn confirm(s: &mut Sim, id: &str, pm: Option<String>, now: i64) -> Result<Value, ApiError> {
    let pi = s.w.payment_intents[id].clone();
    let pm = pm.or(pi.payment_method.clone());
    if pm.is_none() {
        return Err(ApiError::invalid_code("payment_intent_unexpected_state", "You cannot confirm this PaymentIntent because it's missing a payment method. To confirm the PaymentIntent with cus, specify a payment method attached to this customer along with the customer ID.", None));
    }
    if let Some(inv) = pi.invoice.clone() {
        // An invoice's payment intent pays the invoice (and so activates its subscription).
        s.pay_invoice(&inv, now, pm, false)?;
        return Ok(s.r_payment_intent(&s.w.payment_intents[id]));
    }
    let (_, res) = s.charge(
        Some(id.to_string()),
        pi.customer.as_deref(),
        pm.as_deref(),
        pi.amount,
        &pi.currency,
        pi.description.clone(),
        None,
        pi.metadata.clone(),
        now,
    );
    match res {
        Ok(_) => Ok(s.r_payment_intent(&s.w.payment_intents[id])),
        Err(e) => Err(e),
    }
}

pub fn confirm_pi(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "payment_method",
        "off_session",
        "return_url",
        "setup_future_usage",
        "error_on_requires_action",
    ])?;
    let pi =
        s.w.payment_intents
            .get(id)
            .ok_or_else(|| ApiError::no_such("payment_intent", id, "intent"))?
            .clone();
    if !matches!(
        pi.status.as_str(),
        "requires_payment_method" | "requires_confirmation"
    ) {
        return Err(ApiError::invalid_code(
            "payment_intent_unexpected_state",
            format!(
                "This PaymentIntent's status is {}, so it cannot be confirmed.",
                pi.status
            ),
            None,
        ));
    }
    let now = s.now_for(pi.customer.as_deref());
    let pm = param_pm(s, p, "payment_method", now)?;
    confirm(s, id, pm, now)
}

pub fn update_pi(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "amount",
        "metadata",
        "description",
        "payment_method",
        "receipt_email",
        "customer",
        "setup_future_usage",
    ])?;
    let pi =
        s.w.payment_intents
            .get(id)
            .ok_or_else(|| ApiError::no_such("payment_intent", id, "intent"))?
            .clone();
    let now = s.now_for(pi.customer.as_deref());
    let pm = param_pm(s, p, "payment_method", now)?;
    let Some(x) = s.w.payment_intents.get_mut(id) else {
        return Err(ApiError::no_such("payment_intent", id, "intent"));
    };
    if let Some(a) = p.i64("amount")? {
        x.amount = a;
    }
    if let Some(d) = p.opt_str("description")? {
        x.description = d;
    }
    if pm.is_some() {
        x.payment_method = pm;
        x.status = "requires_confirmation".into();
    }
    p.apply_metadata(&mut x.metadata)?;
    Ok(s.r_payment_intent(&s.w.payment_intents[id]))
}

pub fn cancel_pi(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(&["cancellation_reason"])?;
    let pi =
        s.w.payment_intents
            .get(id)
            .ok_or_else(|| ApiError::no_such("payment_intent", id, "intent"))?
            .clone();
    if pi.status == "succeeded" || pi.status == "canceled" {
        return Err(ApiError::invalid_code(
            "payment_intent_unexpected_state",
            format!(
                "You cannot cancel this PaymentIntent because it has a status of {}.",
                pi.status
            ),
            None,
        ));
    }
    let now = s.now_for(pi.customer.as_deref());
    if let Some(x) = s.w.payment_intents.get_mut(id) {
        x.status = "canceled".into();
        x.canceled_at = Some(now);
        x.cancellation_reason = Some(
            p.str("cancellation_reason")?
                .unwrap_or_else(|| "requested_by_customer".into()),
        );
    }
    let v = s.r_payment_intent(&s.w.payment_intents[id]);
    s.emit("payment_intent.canceled", v.clone(), None, now);
    Ok(v)
}

pub fn retrieve_pi(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    let x =
        s.w.payment_intents
            .get(id)
            .ok_or_else(|| ApiError::no_such("payment_intent", id, "intent"))?;
    Ok(s.r_payment_intent(x))
}

pub fn list_pis(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    let customer = p.str("customer")?;
    let v =
        s.w.payment_intents
            .values()
            .filter(|x| customer.is_none() || x.customer == customer)
            .map(|x| (x.created, x.seq, x.id.clone(), x.clone()))
            .collect();
    paginate(newest_first(v), p, "/v1/payment_intents", |x| {
        s.r_payment_intent(x)
    })
}

pub fn retrieve_charge(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    let x =
        s.w.charges
            .get(id)
            .ok_or_else(|| ApiError::no_such("charge", id, "id"))?;
    Ok(s.r_charge(x))
}

pub fn list_charges(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    let customer = p.str("customer")?;
    let pi = p.str("payment_intent")?;
    let mut v = vec![];
    for x in s.w.charges.values() {
        if (customer.is_none() || x.customer == customer)
            && (pi.is_none() || x.payment_intent == pi)
            && range_ok(p, "created", x.created)?
        {
            v.push((x.created, x.seq, x.id.clone(), x.clone()));
        }
    }
    paginate(newest_first(v), p, "/v1/charges", |x| s.r_charge(x))
}

pub fn create_refund(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    p.allow(&["payment_intent", "charge", "amount", "reason", "metadata"])?;
    let charge_id = match (p.str("charge")?, p.str("payment_intent")?) {
        (Some(c), _) => c,
        (None, Some(pi)) => {
            let x =
                s.w.payment_intents
                    .get(&pi)
                    .ok_or_else(|| ApiError::no_such("payment_intent", &pi, "payment_intent"))?;
            if x.status != "succeeded" {
                return Err(ApiError::invalid_code(
                    "charge_already_refunded",
                    "This PaymentIntent does not have a successful charge to refund.",
                    Some("payment_intent"),
                ));
            }
            x.latest_charge.clone().ok_or_else(|| {
                ApiError::invalid(
                    "This PaymentIntent has no charge.",
                    Some("payment_intent".into()),
                )
            })?
        }
        (None, None) => return Err(ApiError::missing_param("charge")),
    };
    let ch =
        s.w.charges
            .get(&charge_id)
            .ok_or_else(|| ApiError::no_such("charge", &charge_id, "charge"))?
            .clone();
    if ch.status != "succeeded" {
        return Err(ApiError::invalid(
            "This charge cannot be refunded because it failed.",
            Some("charge".into()),
        ));
    }
    let left = ch.amount - ch.amount_refunded;
    if left <= 0 {
        return Err(ApiError::invalid_code(
            "charge_already_refunded",
            format!("Charge {charge_id} has already been refunded."),
            None,
        ));
    }
    let amount = p.i64("amount")?.unwrap_or(left);
    if amount <= 0 || amount > left {
        return Err(ApiError::invalid_code(
            "amount_too_large",
            format!(
                "Refund amount ({amount}) is greater than unrefunded amount on charge ({left})"
            ),
            Some("amount"),
        ));
    }
    if let Some(r) = p.str("reason")? {
        if !["duplicate", "fraudulent", "requested_by_customer"].contains(&r.as_str()) {
            return Err(ApiError::invalid(
                "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer",
                Some("reason".into()),
            ));
        }
    }
    let now = s.now_for(ch.customer.as_deref());
    let id = new_id("re");
    let seq = s.w.next_seq();
    s.w.refunds.insert(
        id.clone(),
        Refund {
            id: id.clone(),
            seq,
            created: now,
            amount,
            charge: charge_id.clone(),
            payment_intent: ch.payment_intent.clone(),
            currency: ch.currency.clone(),
            reason: p.str("reason")?,
            metadata: p.metadata()?,
        },
    );
    let before = s.r_charge(&ch);
    if let Some(c) = s.w.charges.get_mut(&charge_id) {
        c.amount_refunded += amount;
    }
    let rv = s.r_refund(&s.w.refunds[&id]);
    s.emit("refund.created", rv.clone(), None, now);
    let after = s.r_charge(&s.w.charges[&charge_id]);
    let mut prev = serde_json::Map::new();
    for k in ["amount_refunded", "refunded", "refunds"] {
        prev.insert(k.into(), before[k].clone());
    }
    s.emit("charge.refunded", after, Some(Value::Object(prev)), now);
    Ok(rv)
}

pub fn retrieve_refund(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    let x =
        s.w.refunds
            .get(id)
            .ok_or_else(|| ApiError::no_such("refund", id, "id"))?;
    Ok(s.r_refund(x))
}

pub fn list_refunds(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    let charge = p.str("charge")?;
    let pi = p.str("payment_intent")?;
    let v =
        s.w.refunds
            .values()
            .filter(|x| {
                charge.as_ref().is_none_or(|c| *c == x.charge)
                    && (pi.is_none() || x.payment_intent == pi)
            })
            .map(|x| (x.created, x.seq, x.id.clone(), x.clone()))
            .collect();
    paginate(newest_first(v), p, "/v1/refunds", |x| s.r_refund(x))
}
