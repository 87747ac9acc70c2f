use super::newest_first;
use crate::error::ApiError;
use crate::form::Params;
use crate::sim::{paginate, range_ok, Sim};
use crate::state::{Coupon, Discount, PromotionCode};
use crate::util::{add_months, new_id, random_upper, wall_now, Dec};
use serde_json::{json, Value};

pub fn create_coupon(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "id",
        "name",
        "percent_off",
        "amount_off",
        "currency",
        "duration",
        "duration_in_months",
        "max_redemptions",
        "redeem_by",
        "metadata",
        "applies_to",
    ])?;
    let now = wall_now();
    let id = p
        .str("id")?
        .filter(|x| !x.is_empty())
        .unwrap_or_else(|| random_upper(8));
    if s.w.coupons.get(&id).is_some_and(|c| !c.deleted) {
        return Err(ApiError::invalid_code(
            "resource_already_exists",
            "Coupon already exists.",
            Some("id"),
        ));
    }
    let percent = match p.dec("percent_off")? {
        Some(d) => {
            if d.0 <= 0 || d > Dec::from_int(100) {
                return Err(ApiError::invalid(
                    "Invalid percent_off: must be greater than 0 and at most 100",
                    Some("percent_off".into()),
                ));
            }
            if (d.0 * 100) % crate::util::DEC_SCALE != 0 {
                return Err(ApiError::invalid(
                    "percent_off supports at most two decimal places",
                    Some("percent_off".into()),
                ));
            }
            Some((d.0 * 100 / crate::util::DEC_SCALE) as i64)
        }
        None => None,
    };
    let amount = p.i64("amount_off")?;
    let currency = p.str("currency")?.map(|c| c.to_lowercase());
    match (percent, amount) {
        (None, None) => {
            return Err(ApiError::invalid(
                "You must pass either `percent_off` or `amount_off`.",
                Some("percent_off".into()),
            ))
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "You may only specify one of `percent_off` and `amount_off`.",
                Some("amount_off".into()),
            ))
        }
        (None, Some(_)) if currency.is_none() => {
            return Err(ApiError::invalid(
                "You must pass `currency` when passing `amount_off`.",
                Some("currency".into()),
            ))
        }
        _ => {}
    }
    let duration = p.str("duration")?.unwrap_or_else(|| "once".into());
    if !["once", "repeating", "forever"].contains(&duration.as_str()) {
        return Err(ApiError::invalid(
            "Invalid duration: must be one of forever, once, or repeating",
            Some("duration".into()),
        ));
    }
    let months = p.i64("duration_in_months")?;
    if duration == "repeating" && months.is_none() {
        return Err(ApiError::missing_param("duration_in_months"));
    }
    let seq = s.w.next_seq();
    let c = Coupon {
        id: id.clone(),
        seq,
        created: now,
        name: p.str("name")?,
        percent_off_bp: percent,
        amount_off: amount,
        currency,
        duration,
        duration_in_months: months,
        max_redemptions: p.i64("max_redemptions")?,
        redeem_by: p.i64("redeem_by")?,
        times_redeemed: 0,
        metadata: p.metadata()?,
        deleted: false,
    };
    s.w.coupons.insert(id.clone(), c);
    let v = s.r_coupon(&s.w.coupons[&id], now);
    s.emit("coupon.created", v.clone(), None, now);
    Ok(v)
}

pub fn retrieve_coupon(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    Ok(s.r_coupon(s.coupon(id, "id")?, wall_now()))
}

pub fn update_coupon(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(&["name", "metadata"])?;
    let now = wall_now();
    let before = s.r_coupon(s.coupon(id, "id")?, now);
    if let Some(c) = s.w.coupons.get_mut(id) {
        if let Some(n) = p.opt_str("name")? {
            c.name = n;
        }
        p.apply_metadata(&mut c.metadata)?;
    }
    let after = s.r_coupon(&s.w.coupons[id], now);
    s.emit_updated("coupon.updated", &before, after.clone(), now);
    Ok(after)
}

pub fn delete_coupon(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    let now = wall_now();
    let v = s.r_coupon(s.coupon(id, "id")?, now);
    if let Some(c) = s.w.coupons.get_mut(id) {
        c.deleted = true;
    }
    s.emit("coupon.deleted", v, None, now);
    Ok(json!({"id": id, "object": "coupon", "deleted": true}))
}

pub fn list_coupons(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    let now = wall_now();
    let mut v = vec![];
    for c in s.w.coupons.values().filter(|c| !c.deleted) {
        if range_ok(p, "created", c.created)? {
            v.push((c.created, c.seq, c.id.clone(), c.clone()));
        }
    }
    paginate(newest_first(v), p, "/v1/coupons", |c| s.r_coupon(c, now))
}

pub fn create_promo(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "promotion",
        "coupon",
        "code",
        "active",
        "customer",
        "expires_at",
        "max_redemptions",
        "restrictions",
        "metadata",
    ])?;
    let coupon = match p.obj("promotion")? {
        Some(pr) => {
            if pr.str("type")?.as_deref().is_some_and(|t| t != "coupon") {
                return Err(ApiError::invalid(
                    "Invalid promotion[type]: must be coupon",
                    Some("promotion[type]".into()),
                ));
            }
            pr.req_str("coupon")?
        }
        None => p
            .str("coupon")?
            .ok_or_else(|| ApiError::missing_param("promotion[coupon]"))?,
    };
    s.coupon(&coupon, "promotion[coupon]")?;
    let code = p
        .str("code")?
        .filter(|x| !x.is_empty())
        .unwrap_or_else(|| random_upper(8));
    if s.w
        .promotion_codes
        .values()
        .any(|x| x.active && x.code.eq_ignore_ascii_case(&code))
    {
        return Err(ApiError::invalid(
            "An active promotion code with `code` already exists.",
            Some("code".into()),
        ));
    }
    if let Some(c) = p.str("customer")? {
        s.customer(&c, "customer")?;
    }
    let r = p.obj("restrictions")?.unwrap_or_default();
    let now = wall_now();
    let id = new_id("promo");
    let seq = s.w.next_seq();
    let x = PromotionCode {
        id: id.clone(),
        seq,
        created: now,
        code,
        coupon,
        active: p.bool("active")?.unwrap_or(true),
        customer: p.str("customer")?,
        expires_at: p.i64("expires_at")?,
        max_redemptions: p.i64("max_redemptions")?,
        times_redeemed: 0,
        first_time_transaction: r.bool("first_time_transaction")?.unwrap_or(false),
        minimum_amount: r.i64("minimum_amount")?,
        minimum_amount_currency: r.str("minimum_amount_currency")?,
        metadata: p.metadata()?,
    };
    s.w.promotion_codes.insert(id.clone(), x);
    let v = s.r_promotion_code(&s.w.promotion_codes[&id]);
    s.emit("promotion_code.created", v.clone(), None, now);
    Ok(v)
}

pub fn retrieve_promo(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    let x =
        s.w.promotion_codes
            .get(id)
            .ok_or_else(|| ApiError::no_such("promotion_code", id, "id"))?;
    Ok(s.r_promotion_code(x))
}

pub fn update_promo(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(&["active", "metadata", "restrictions"])?;
    let x =
        s.w.promotion_codes
            .get(id)
            .ok_or_else(|| ApiError::no_such("promotion_code", id, "id"))?;
    let before = s.r_promotion_code(x);
    if let Some(x) = s.w.promotion_codes.get_mut(id) {
        if let Some(a) = p.bool("active")? {
            x.active = a;
        }
        p.apply_metadata(&mut x.metadata)?;
    }
    let after = s.r_promotion_code(&s.w.promotion_codes[id]);
    s.emit_updated("promotion_code.updated", &before, after.clone(), wall_now());
    Ok(after)
}

pub fn list_promos(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    let code = p.str("code")?;
    let active = p.bool("active")?;
    let coupon = p.str("coupon")?;
    let customer = p.str("customer")?;
    let v =
        s.w.promotion_codes
            .values()
            .filter(|x| code.as_ref().is_none_or(|c| x.code.eq_ignore_ascii_case(c)))
            .filter(|x| active.is_none_or(|a| a == x.active))
            .filter(|x| coupon.as_ref().is_none_or(|c| *c == x.coupon))
            .filter(|x| {
                customer
                    .as_ref()
                    .is_none_or(|c| x.customer.as_ref() == Some(c))
            })
            .map(|x| (x.created, x.seq, x.id.clone(), x.clone()))
            .collect();
    paginate(newest_first(v), p, "/v1/promotion_codes", |x| {
        s.r_promotion_code(x)
    })
}

/// Finds an active promotion code by its customer-facing code.
pub fn promo_by_code(s: &Sim, code: &str) -> Option<String> {
    s.w.promotion_codes
        .values()
        .find(|x| x.active && x.code.eq_ignore_ascii_case(code))
        .map(|x| x.id.clone())
}

/// Redeems a coupon or promotion code for a customer, creating a `discount`.
pub fn redeem(
    s: &mut Sim,
    coupon: Option<String>,
    promo: Option<String>,
    customer: &str,
    amount: i64,
    param: &str,
    now: i64,
) -> Result<String, ApiError> {
    let (coupon_id, promo_id) = match (coupon, promo) {
        (Some(c), None) => (c, None),
        (None, Some(pid)) => {
            let x =
                s.w.promotion_codes
                    .get(&pid)
                    .ok_or_else(|| ApiError::no_such("promotion_code", &pid, param))?
                    .clone();
            let bad = |m: &str| {
                ApiError::invalid_code("promotion_code_invalid", m.to_string(), Some(param))
            };
            if !x.active
                || x.expires_at.is_some_and(|e| now > e)
                || x.max_redemptions.is_some_and(|m| x.times_redeemed >= m)
            {
                return Err(bad("This promotion code cannot be redeemed."));
            }
            if x.customer.as_ref().is_some_and(|c| c != customer) {
                return Err(bad(
                    "This promotion code cannot be redeemed by this customer.",
                ));
            }
            if x.first_time_transaction
                && s.w
                    .invoices
                    .values()
                    .any(|i| i.customer == customer && i.status == "paid" && i.amount_paid > 0)
            {
                return Err(bad(
                    "This promotion code is only valid for first-time transactions.",
                ));
            }
            if x.minimum_amount.is_some_and(|m| amount < m) {
                return Err(bad("This promotion code requires a higher order amount."));
            }
            (x.coupon.clone(), Some(pid))
        }
        _ => {
            return Err(ApiError::invalid(
                "Each discount must have exactly one of `coupon` or `promotion_code`.",
                Some(param.into()),
            ))
        }
    };
    let c = s.coupon(&coupon_id, param)?.clone();
    if !c.valid_at(now) {
        return Err(ApiError::invalid_code(
            "coupon_expired",
            format!("Coupon expired: {coupon_id}"),
            Some(param),
        ));
    }
    if let Some(x) = s.w.coupons.get_mut(&coupon_id) {
        x.times_redeemed += 1;
    }
    if let Some(pid) = &promo_id {
        if let Some(x) = s.w.promotion_codes.get_mut(pid) {
            x.times_redeemed += 1;
        }
    }
    let id = new_id("di");
    let end = match c.duration.as_str() {
        "repeating" => Some(add_months(now, c.duration_in_months.unwrap_or(1))),
        _ => None,
    };
    s.w.discounts.insert(
        id.clone(),
        Discount {
            id: id.clone(),
            coupon: coupon_id,
            promotion_code: promo_id,
            customer: Some(customer.to_string()),
            subscription: None,
            invoice: None,
            checkout_session: None,
            start: now,
            end,
            spent: false,
        },
    );
    Ok(id)
}

/// `discounts[i][coupon|promotion_code]` parameters redeemed for a customer.
pub fn redeem_params(
    s: &mut Sim,
    p: &Params,
    customer: &str,
    amount: i64,
    now: i64,
) -> Result<Vec<String>, ApiError> {
    let mut out = vec![];
    for (i, d) in p.list("discounts")?.iter().enumerate() {
        d.allow(&["coupon", "promotion_code", "discount"])?;
        out.push(redeem(
            s,
            d.str("coupon")?,
            d.str("promotion_code")?,
            customer,
            amount,
            &format!("discounts[{i}]"),
            now,
        )?);
    }
    Ok(out)
}
