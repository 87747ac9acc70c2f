use super::newest_first;
use crate::error::ApiError;
use crate::form::Params;
use crate::sim::{paginate, Sim};
use crate::state::{PortalConfig, PortalSession};
use crate::util::{new_id, random_chars, wall_now};
use serde_json::Value;

fn apply(s: &Sim, c: &mut PortalConfig, p: &Params) -> Result<(), ApiError> {
    if let Some(u) = p.opt_str("default_return_url")? {
        c.default_return_url = u;
    }
    if let Some(n) = p.opt_str("name")? {
        c.name = n;
    }
    if let Some(a) = p.bool("active")? {
        c.active = a;
    }
    p.apply_metadata(&mut c.metadata)?;
    let Some(f) = p.obj("features")? else {
        return Ok(());
    };
    if let Some(x) = f.obj("subscription_cancel")? {
        if let Some(e) = x.bool("enabled")? {
            c.cancel_enabled = e;
        }
        if let Some(m) = x.str("mode")? {
            if m != "at_period_end" && m != "immediately" {
                return Err(ApiError::invalid("Invalid features[subscription_cancel][mode]: must be one of at_period_end or immediately", Some("features[subscription_cancel][mode]".into())));
            }
            c.cancel_mode = m;
        }
    }
    if let Some(x) = f.obj("subscription_update")? {
        if let Some(e) = x.bool("enabled")? {
            c.update_enabled = e;
        }
        if let Some(pb) = x.str("proration_behavior")? {
            c.update_proration = pb;
        }
        if x.has("products") {
            let mut out = vec![];
            for (i, pr) in x.list("products")?.iter().enumerate() {
                let product = pr.req_str("product")?;
                let prices = pr.str_list("prices")?;
                for price in &prices {
                    let pp = s.price(
                        price,
                        &format!("features[subscription_update][products][{i}][prices]"),
                    )?;
                    if pp.product != product {
                        return Err(ApiError::invalid(
                            format!("The price {price} does not belong to product {product}."),
                            Some(format!(
                                "features[subscription_update][products][{i}][prices]"
                            )),
                        ));
                    }
                }
                out.push((product, prices));
            }
            c.update_products = out;
        }
    }
    if let Some(x) = f.obj("payment_method_update")? {
        if let Some(e) = x.bool("enabled")? {
            c.payment_method_update = e;
        }
    }
    if let Some(x) = f.obj("invoice_history")? {
        if let Some(e) = x.bool("enabled")? {
            c.invoice_history = e;
        }
    }
    Ok(())
}

fn blank(s: &mut Sim, now: i64) -> PortalConfig {
    let seq = s.w.next_seq();
    PortalConfig {
        id: new_id("bpc"),
        seq,
        created: now,
        updated: now,
        is_default: false,
        active: true,
        name: None,
        default_return_url: None,
        metadata: Default::default(),
        cancel_enabled: false,
        cancel_mode: "at_period_end".into(),
        update_enabled: false,
        update_proration: "create_prorations".into(),
        update_products: vec![],
        payment_method_update: false,
        invoice_history: true,
    }
}

pub fn create_config(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "features",
        "business_profile",
        "default_return_url",
        "metadata",
        "name",
        "login_page",
    ])?;
    if !p.has("features") {
        return Err(ApiError::missing_param("features"));
    }
    let now = wall_now();
    let mut c = blank(s, now);
    apply(s, &mut c, p)?;
    c.is_default = !s.w.portal_configs.values().any(|x| x.is_default);
    let id = c.id.clone();
    s.w.portal_configs.insert(id.clone(), c);
    let v = s.r_portal_config(&s.w.portal_configs[&id]);
    s.emit("billing_portal.configuration.created", v.clone(), None, now);
    Ok(v)
}

pub fn update_config(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "features",
        "business_profile",
        "default_return_url",
        "metadata",
        "name",
        "active",
        "login_page",
    ])?;
    let mut c =
        s.w.portal_configs.get(id).cloned().ok_or_else(|| {
            ApiError::no_such("billing_portal.configuration", id, "configuration")
        })?;
    let before = s.r_portal_config(&c);
    apply(s, &mut c, p)?;
    c.updated = wall_now();
    s.w.portal_configs.insert(id.to_string(), c);
    let after = s.r_portal_config(&s.w.portal_configs[id]);
    s.emit_updated(
        "billing_portal.configuration.updated",
        &before,
        after.clone(),
        wall_now(),
    );
    Ok(after)
}

pub fn retrieve_config(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    let c =
        s.w.portal_configs.get(id).ok_or_else(|| {
            ApiError::no_such("billing_portal.configuration", id, "configuration")
        })?;
    Ok(s.r_portal_config(c))
}

pub fn list_configs(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    let v =
        s.w.portal_configs
            .values()
            .map(|x| (x.created, x.seq, x.id.clone(), x.clone()))
            .collect();
    paginate(
        newest_first(v),
        p,
        "/v1/billing_portal/configurations",
        |x| s.r_portal_config(x),
    )
}

pub fn create_session(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    p.allow(&["customer", "return_url", "configuration", "locale"])?;
    let customer = p.req_str("customer")?;
    s.customer(&customer, "customer")?;
    let now = s.now_for(Some(&customer));
    let config = match p.str("configuration")? {
        Some(c) => {
            s.w.portal_configs.get(&c).ok_or_else(|| {
                ApiError::no_such("billing_portal.configuration", &c, "configuration")
            })?;
            c
        }
        None => match s.w.portal_configs.values().find(|c| c.is_default) {
            Some(c) => c.id.clone(),
            None => {
                // Like the dashboard's default: cancel at period end, card updates, invoice history.
                let mut c = blank(s, now);
                c.is_default = true;
                c.cancel_enabled = true;
                c.payment_method_update = true;
                let id = c.id.clone();
                s.w.portal_configs.insert(id.clone(), c);
                id
            }
        },
    };
    let return_url = p
        .str("return_url")?
        .or_else(|| s.w.portal_configs[&config].default_return_url.clone());
    let id = format!("bps_{}", random_chars(24));
    s.w.portal_sessions.insert(
        id.clone(),
        PortalSession {
            id: id.clone(),
            created: now,
            customer,
            configuration: config,
            return_url,
            locale: p.str("locale")?,
        },
    );
    s.dirty = true;
    Ok(s.r_portal_session(&s.w.portal_sessions[&id]))
}
