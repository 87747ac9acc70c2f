use super::newest_first;
use crate::error::ApiError;
use crate::form::Params;
use crate::sim::{paginate, range_ok, Sim};
use crate::state::{Price, Product, Recurring};
use crate::util::{new_id, wall_now, Dec};
use serde_json::{json, Value};

const PRODUCT_FIELDS: &[&str] = &[
    "id",
    "name",
    "description",
    "active",
    "metadata",
    "unit_label",
    "statement_descriptor",
    "default_price_data",
    "tax_code",
    "images",
    "url",
    "marketing_features",
    "shippable",
    "type",
];

pub fn new_product(
    s: &mut Sim,
    id: Option<String>,
    name: String,
    p: Option<&Params>,
) -> Result<String, ApiError> {
    let now = wall_now();
    let id = id.unwrap_or_else(|| new_id("prod"));
    if s.w.products.get(&id).is_some_and(|x| !x.deleted) {
        return Err(ApiError::invalid_code(
            "resource_already_exists",
            "Product already exists.",
            Some("id"),
        ));
    }
    let seq = s.w.next_seq();
    let mut prod = Product {
        id: id.clone(),
        seq,
        created: now,
        updated: now,
        name,
        description: None,
        active: true,
        metadata: Default::default(),
        default_price: None,
        unit_label: None,
        statement_descriptor: None,
        deleted: false,
    };
    if let Some(p) = p {
        prod.description = p.str("description")?.filter(|x| !x.is_empty());
        prod.active = p.bool("active")?.unwrap_or(true);
        prod.metadata = p.metadata()?;
        prod.unit_label = p.str("unit_label")?;
        prod.statement_descriptor = p.str("statement_descriptor")?;
    }
    s.w.products.insert(id.clone(), prod);
    let v = s.r_product(&s.w.products[&id]);
    s.emit("product.created", v, None, now);
    Ok(id)
}

pub fn create_product(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    p.allow(PRODUCT_FIELDS)?;
    let name = p.req_str("name")?;
    let id = new_product(s, p.str("id")?, name, Some(p))?;
    if let Some(dp) = p.obj("default_price_data")? {
        dp.allow(&[
            "currency",
            "unit_amount",
            "unit_amount_decimal",
            "recurring",
            "metadata",
            "tax_behavior",
        ])?;
        let price = price_from(s, &dp, Some(id.clone()), true)?;
        if let Some(x) = s.w.products.get_mut(&id) {
            x.default_price = Some(price);
        }
    }
    Ok(s.r_product(&s.w.products[&id]))
}

pub fn retrieve_product(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    let x =
        s.w.products
            .get(id)
            .filter(|x| !x.deleted)
            .ok_or_else(|| ApiError::no_such("product", id, "id"))?;
    Ok(s.r_product(x))
}

pub fn update_product(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "name",
        "description",
        "active",
        "metadata",
        "unit_label",
        "statement_descriptor",
        "default_price",
        "tax_code",
        "images",
        "url",
        "marketing_features",
        "shippable",
    ])?;
    let x =
        s.w.products
            .get(id)
            .filter(|x| !x.deleted)
            .ok_or_else(|| ApiError::no_such("product", id, "id"))?;
    let before = s.r_product(x);
    if let Some(Some(dp)) = p.opt_str("default_price")? {
        if s.w.prices.get(&dp).is_none_or(|pr| pr.product != id) {
            return Err(ApiError::no_such("price", &dp, "default_price"));
        }
    }
    let Some(x) = s.w.products.get_mut(id) else {
        return Err(ApiError::no_such("product", id, "id"));
    };
    if let Some(n) = p.str("name")? {
        x.name = n;
    }
    if let Some(v) = p.opt_str("description")? {
        x.description = v;
    }
    if let Some(v) = p.bool("active")? {
        x.active = v;
    }
    if let Some(v) = p.opt_str("unit_label")? {
        x.unit_label = v;
    }
    if let Some(v) = p.opt_str("statement_descriptor")? {
        x.statement_descriptor = v;
    }
    if let Some(v) = p.opt_str("default_price")? {
        x.default_price = v;
    }
    p.apply_metadata(&mut x.metadata)?;
    x.updated = wall_now();
    let after = s.r_product(&s.w.products[id]);
    s.emit_updated("product.updated", &before, after.clone(), wall_now());
    Ok(after)
}

pub fn delete_product(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    let x =
        s.w.products
            .get(id)
            .filter(|x| !x.deleted)
            .ok_or_else(|| ApiError::no_such("product", id, "id"))?;
    if s.w.prices.values().any(|pr| pr.product == id) {
        return Err(ApiError::invalid(
            "This product cannot be deleted because it has one or more user-created prices.",
            None,
        ));
    }
    let v = s.r_product(x);
    if let Some(x) = s.w.products.get_mut(id) {
        x.deleted = true;
    }
    s.emit("product.deleted", v, None, wall_now());
    Ok(json!({"id": id, "object": "product", "deleted": true}))
}

pub fn list_products(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    let active = p.bool("active")?;
    let ids = p.str_list("ids")?;
    let mut v = vec![];
    for x in s.w.products.values().filter(|x| !x.deleted) {
        if active.is_some_and(|a| a != x.active)
            || (!ids.is_empty() && !ids.contains(&x.id))
            || !range_ok(p, "created", x.created)?
        {
            continue;
        }
        v.push((x.created, x.seq, x.id.clone(), x.clone()));
    }
    paginate(newest_first(v), p, "/v1/products", |x| s.r_product(x))
}

/// Builds a price from `currency`, `unit_amount[_decimal]`, `recurring[...]`, and stores it.
/// `unit_amount` (integer) or `unit_amount_decimal`, exactly one.
fn unit_amount(p: &Params, _ctx: &str) -> Result<Dec, ApiError> {
    match (p.i64("unit_amount")?, p.dec("unit_amount_decimal")?) {
        (Some(a), None) if a < 0 => Err(ApiError::invalid(
            "Invalid integer: unit_amount must be non-negative",
            Some("unit_amount".into()),
        )),
        (Some(a), None) => Ok(Dec::from_int(a)),
        (None, Some(d)) if d.0 < 0 => Err(ApiError::invalid(
            "Invalid decimal: unit_amount_decimal must be non-negative",
            Some("unit_amount_decimal".into()),
        )),
        (None, Some(d)) => Ok(d),
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "You may only specify one of these parameters: unit_amount, unit_amount_decimal.",
            Some("unit_amount".into()),
        )),
        (None, None) => Err(ApiError::missing_param("unit_amount")),
    }
}

pub fn price_from(
    s: &mut Sim,
    p: &Params,
    product: Option<String>,
    emit: bool,
) -> Result<String, ApiError> {
    let currency = p.req_str("currency")?.to_lowercase();
    let scheme = p
        .str("billing_scheme")?
        .unwrap_or_else(|| "per_unit".into());
    let (unit, tiers_mode, tiers) = match scheme.as_str() {
        "per_unit" => (unit_amount(p, "")?, None, vec![]),
        "tiered" => {
            if p.has("unit_amount") || p.has("unit_amount_decimal") {
                return Err(ApiError::invalid(
                    "Tiered prices take their amounts from `tiers`, not `unit_amount`.",
                    Some("unit_amount".into()),
                ));
            }
            let mode = p
                .str("tiers_mode")?
                .ok_or_else(|| ApiError::missing_param("tiers_mode"))?;
            if mode != "graduated" && mode != "volume" {
                return Err(ApiError::invalid(
                    "Invalid tiers_mode: must be one of graduated or volume",
                    Some("tiers_mode".into()),
                ));
            }
            let list = p.list("tiers")?;
            if list.is_empty() {
                return Err(ApiError::missing_param("tiers"));
            }
            let mut tiers = vec![];
            let mut last: i64 = 0;
            for (i, t) in list.iter().enumerate() {
                t.allow(&[
                    "up_to",
                    "unit_amount",
                    "unit_amount_decimal",
                    "flat_amount",
                    "flat_amount_decimal",
                ])?;
                let up_to = match t.str("up_to")?.as_deref() {
                    Some("inf") => None,
                    Some(_) => Some(t.req_i64("up_to")?),
                    None => return Err(ApiError::missing_param(&format!("tiers[{i}][up_to]"))),
                };
                if up_to.is_some_and(|u| u <= last)
                    || (up_to.is_none() && i + 1 != list.len())
                    || (up_to.is_some() && i + 1 == list.len())
                {
                    return Err(ApiError::invalid(
                        "Tiers must have increasing `up_to` values and end with `up_to=inf`.",
                        Some(format!("tiers[{i}][up_to]")),
                    ));
                }
                last = up_to.unwrap_or(i64::MAX);
                let unit = if t.has("unit_amount") || t.has("unit_amount_decimal") {
                    unit_amount(t, "")?
                } else {
                    Dec::default()
                };
                let flat = match (t.i64("flat_amount")?, t.dec("flat_amount_decimal")?) {
                    (Some(a), _) => Dec::from_int(a),
                    (None, Some(d)) => d,
                    _ => Dec::default(),
                };
                tiers.push(crate::state::Tier {
                    up_to,
                    unit_amount: unit,
                    flat_amount: flat,
                });
            }
            (Dec::default(), Some(mode), tiers)
        }
        _ => {
            return Err(ApiError::invalid(
                "Invalid billing_scheme: must be one of per_unit or tiered",
                Some("billing_scheme".into()),
            ))
        }
    };
    let transform_quantity = match p.obj("transform_quantity")? {
        None => None,
        Some(t) => {
            if tiers_mode.is_some() {
                return Err(ApiError::invalid(
                    "`transform_quantity` cannot be combined with tiered pricing.",
                    Some("transform_quantity".into()),
                ));
            }
            let d = t.req_i64("divide_by")?;
            if d <= 0 {
                return Err(ApiError::invalid(
                    "transform_quantity[divide_by] must be positive",
                    Some("transform_quantity[divide_by]".into()),
                ));
            }
            let round = t.req_str("round")?;
            if round != "up" && round != "down" {
                return Err(ApiError::invalid(
                    "Invalid transform_quantity[round]: must be one of down or up",
                    Some("transform_quantity[round]".into()),
                ));
            }
            Some((d, round))
        }
    };
    let recurring = match p.obj("recurring")? {
        None => None,
        Some(r) => {
            r.allow(&[
                "interval",
                "interval_count",
                "usage_type",
                "meter",
                "trial_period_days",
                "aggregate_usage",
            ])?;
            if r.has("aggregate_usage") {
                return Err(ApiError::invalid(
                    "Received unknown parameter: recurring[aggregate_usage]",
                    Some("recurring[aggregate_usage]".into()),
                ));
            }
            let interval = r.req_str("interval")?;
            if !["day", "week", "month", "year"].contains(&interval.as_str()) {
                return Err(ApiError::invalid(
                    "Invalid recurring[interval]: must be one of day, week, month, or year"
                        .to_string(),
                    Some("recurring[interval]".into()),
                ));
            }
            let usage = r.str("usage_type")?.unwrap_or_else(|| "licensed".into());
            let meter = r.str("meter")?;
            if usage == "metered" {
                let Some(m) = &meter else {
                    return Err(ApiError::invalid(
                        "Metered prices must be backed by a meter. Set `recurring[meter]`.",
                        Some("recurring[meter]".into()),
                    ));
                };
                if !s.w.meters.contains_key(m) {
                    return Err(ApiError::no_such("billing.meter", m, "recurring[meter]"));
                }
            } else if usage != "licensed" {
                return Err(ApiError::invalid(
                    "Invalid recurring[usage_type]: must be one of licensed or metered",
                    Some("recurring[usage_type]".into()),
                ));
            }
            Some(Recurring {
                interval,
                interval_count: r.i64("interval_count")?.unwrap_or(1),
                usage_type: usage,
                meter,
                trial_period_days: r.i64("trial_period_days")?,
            })
        }
    };
    let product = match product {
        Some(x) => x,
        None => {
            if let Some(pd) = p.obj("product_data")? {
                pd.allow(&[
                    "name",
                    "active",
                    "metadata",
                    "unit_label",
                    "statement_descriptor",
                    "description",
                    "tax_code",
                    "id",
                    "images",
                ])?;
                let name = pd.req_str("name")?;
                new_product(s, pd.str("id")?, name, Some(&pd))?
            } else {
                let id = p.req_str("product")?;
                if s.w.products.get(&id).is_none_or(|x| x.deleted) {
                    return Err(ApiError::no_such("product", &id, "product"));
                }
                id
            }
        }
    };
    let lookup_key = p.str("lookup_key")?.filter(|x| !x.is_empty());
    let now = wall_now();
    if let Some(k) = &lookup_key {
        let holder =
            s.w.prices
                .values()
                .find(|x| x.lookup_key.as_ref() == Some(k))
                .map(|x| x.id.clone());
        if let Some(h) = holder {
            if p.bool("transfer_lookup_key")? != Some(true) {
                return Err(ApiError::invalid(
                    format!("A price (`{h}`) already uses that lookup key."),
                    Some("lookup_key".into()),
                ));
            }
            transfer_from(s, &h, now);
        }
    }
    let id = new_id("price");
    let seq = s.w.next_seq();
    let price = Price {
        id: id.clone(),
        seq,
        created: now,
        product,
        currency,
        unit_amount: unit,
        active: p.bool("active")?.unwrap_or(true),
        lookup_key,
        nickname: p.str("nickname")?,
        metadata: p.metadata()?,
        recurring,
        tax_behavior: p
            .str("tax_behavior")?
            .unwrap_or_else(|| "unspecified".into()),
        tiers_mode,
        tiers,
        transform_quantity,
    };
    s.w.prices.insert(id.clone(), price);
    if emit {
        let v = s.r_price(&s.w.prices[&id]);
        s.emit("price.created", v, None, now);
        if s.w.prices[&id].recurring.is_some() {
            let pv = s.r_plan(&s.w.prices[&id]);
            s.emit("plan.created", pv, None, now);
        }
    }
    Ok(id)
}

fn transfer_from(s: &mut Sim, holder: &str, now: i64) {
    let before = s.r_price(&s.w.prices[holder]);
    if let Some(x) = s.w.prices.get_mut(holder) {
        x.lookup_key = None;
    }
    let after = s.r_price(&s.w.prices[holder]);
    s.emit_updated("price.updated", &before, after, now);
}

pub fn create_price(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "currency",
        "unit_amount",
        "unit_amount_decimal",
        "recurring",
        "product",
        "product_data",
        "lookup_key",
        "transfer_lookup_key",
        "nickname",
        "metadata",
        "active",
        "tax_behavior",
        "billing_scheme",
        "tiers_mode",
        "tiers",
        "transform_quantity",
    ])?;
    let id = price_from(s, p, None, true)?;
    Ok(s.r_price(&s.w.prices[&id]))
}

pub fn retrieve_price(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    Ok(s.r_price(s.price(id, "id")?))
}

pub fn update_price(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "lookup_key",
        "transfer_lookup_key",
        "active",
        "metadata",
        "nickname",
        "tax_behavior",
    ])?;
    let before = s.r_price(s.price(id, "id")?);
    let now = wall_now();
    if let Some(k) = p.opt_str("lookup_key")? {
        if let Some(k) = &k {
            let holder =
                s.w.prices
                    .values()
                    .find(|x| x.lookup_key.as_ref() == Some(k) && x.id != id)
                    .map(|x| x.id.clone());
            if let Some(h) = holder {
                if p.bool("transfer_lookup_key")? != Some(true) {
                    return Err(ApiError::invalid(
                        format!("A price (`{h}`) already uses that lookup key."),
                        Some("lookup_key".into()),
                    ));
                }
                transfer_from(s, &h, now);
            }
        }
        if let Some(x) = s.w.prices.get_mut(id) {
            x.lookup_key = k;
        }
    }
    let Some(x) = s.w.prices.get_mut(id) else {
        return Err(ApiError::no_such("price", id, "id"));
    };
    if let Some(a) = p.bool("active")? {
        x.active = a;
    }
    if let Some(n) = p.opt_str("nickname")? {
        x.nickname = n;
    }
    if let Some(t) = p.str("tax_behavior")? {
        x.tax_behavior = t;
    }
    p.apply_metadata(&mut x.metadata)?;
    let after = s.r_price(&s.w.prices[id]);
    s.emit_updated("price.updated", &before, after.clone(), now);
    Ok(after)
}

pub fn list_prices(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    let active = p.bool("active")?;
    let product = p.str("product")?;
    let kind = p.str("type")?;
    let currency = p.str("currency")?;
    let keys = p.str_list("lookup_keys")?;
    let interval = p
        .obj("recurring")?
        .map(|r| r.str("interval"))
        .transpose()?
        .flatten();
    let mut v = vec![];
    for x in s.w.prices.values() {
        let t = if x.recurring.is_some() {
            "recurring"
        } else {
            "one_time"
        };
        if active.is_some_and(|a| a != x.active)
            || product.as_ref().is_some_and(|pp| *pp != x.product)
            || kind.as_ref().is_some_and(|k| k != t)
            || currency.as_ref().is_some_and(|c| *c != x.currency)
            || (!keys.is_empty() && !x.lookup_key.as_ref().is_some_and(|k| keys.contains(k)))
            || interval
                .as_ref()
                .is_some_and(|i| x.recurring.as_ref().map(|r| &r.interval) != Some(i))
            || !range_ok(p, "created", x.created)?
        {
            continue;
        }
        v.push((x.created, x.seq, x.id.clone(), x.clone()));
    }
    paginate(newest_first(v), p, "/v1/prices", |x| s.r_price(x))
}
