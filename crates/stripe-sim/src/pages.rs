//! Hosted pages: Checkout (`/c/pay/{session}`) and the Customer Portal (`/p/session/{id}`).
//! Plain HTML forms, no scripts or external assets, so people and tests can drive them alike.

use crate::billing::currency_symbol;
use crate::form::{parse, Params};
use crate::resources::checkout::{complete, CardForm};
use crate::sim::{Shared, Sim};
use crate::state::Price;
use crate::util::ymd;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn money(amount: i64, currency: &str) -> String {
    let sym = currency_symbol(currency);
    let sign = if amount < 0 { "-" } else { "" };
    let a = amount.abs();
    if sym.is_empty() {
        format!(
            "{sign}{}.{:02} {}",
            a / 100,
            a % 100,
            currency.to_uppercase()
        )
    } else {
        format!("{sign}{sym}{}.{:02}", a / 100, a % 100)
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:720px;margin:2rem auto;padding:0 1rem;color:#1a1a2e}\
table{border-collapse:collapse;width:100%}td,th{padding:.4rem;border-bottom:1px solid #ddd;text-align:left}\
.err{background:#fde2e2;color:#8a1c1c;padding:.6rem;border-radius:4px}.box{border:1px solid #ccc;border-radius:6px;padding:1rem;margin:1rem 0}\
input{padding:.4rem;margin:.2rem 0;width:100%;box-sizing:border-box}button{padding:.5rem 1rem;margin-top:.5rem}.muted{color:#666}";

fn page(title: &str, body: &str) -> String {
    format!("<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body><p class=\"muted\">Stripe simulator · test mode</p>{body}</body></html>", esc(title))
}

/// 404 with a "No such {what}" page.
fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(page("Not found", &format!("<h1>No such {what}</h1>"))),
    )
        .into_response()
}

/// The name of a price's product; empty if the product is gone.
fn product_name(s: &Sim, p: &Price) -> String {
    s.w.products
        .get(&p.product)
        .map(|x| x.name.clone())
        .unwrap_or_default()
}

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

fn checkout_html(s: &Sim, id: &str, error: Option<&str>) -> Option<String> {
    let sess = s.w.checkout_sessions.get(id)?;
    let mut rows = String::new();
    for l in &sess.lines {
        let Some(p) = s.w.prices.get(&l.price) else {
            continue;
        };
        let name = product_name(s, p);
        let per = p
            .recurring
            .as_ref()
            .map(|r| format!(" / {}", r.interval))
            .unwrap_or_default();
        let unit = if p.unit_amount.is_whole() {
            money(p.unit_amount.round(), &p.currency)
        } else {
            format!("{} {}", p.unit_amount, p.currency)
        };
        let qty = if p.is_metered() {
            "metered usage".to_string()
        } else {
            format!("× {}", l.quantity)
        };
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{unit}{per}</td></tr>",
            esc(&name),
            esc(&qty)
        ));
    }
    let (_, total) = s.checkout_amounts(sess);
    let trial = sess
        .trial_period_days
        .map(|d| {
            format!("<p><strong>{d}-day free trial</strong>; you will not be charged today.</p>")
        })
        .unwrap_or_default();
    let err = error
        .map(|e| format!("<p class=\"err\" id=\"error\">{}</p>", esc(e)))
        .unwrap_or_default();
    let promo = if sess.allow_promotion_codes == Some(true) {
        "<label>Promotion code <input name=\"promotion_code\"></label>"
    } else {
        ""
    };
    let email = sess
        .customer_email
        .clone()
        .or_else(|| {
            sess.customer
                .as_ref()
                .and_then(|c| s.w.customers.get(c))
                .and_then(|c| c.email.clone())
        })
        .unwrap_or_default();
    let cancel = sess
        .cancel_url
        .as_ref()
        .map(|u| format!("<p><a href=\"{}\">← Cancel and go back</a></p>", esc(u)))
        .unwrap_or_default();
    let body = if sess.status != "open" {
        format!(
            "<h1>Checkout</h1><p>This session is {}.</p>",
            esc(&sess.status)
        )
    } else {
        format!(
            "<h1>Checkout</h1>{err}<table><tr><th>Item</th><th>Quantity</th><th>Price</th></tr>{rows}</table>\
             <p>Total due today: <strong id=\"total\">{}</strong></p>{trial}\
             <form method=\"post\" class=\"box\"><label>Email <input name=\"email\" value=\"{}\"></label>\
             <label>Name on card <input name=\"name\"></label>\
             <label>Card number <input name=\"card_number\" placeholder=\"4242 4242 4242 4242\" required></label>\
             <label>Expiry (MM / YY) <input name=\"card_expiry\" placeholder=\"12 / 34\" value=\"12 / 34\"></label>\
             <label>CVC <input name=\"card_cvc\" value=\"123\"></label>{promo}\
             <button type=\"submit\">{}</button></form>\
             <p class=\"muted\">Test cards: 4242 4242 4242 4242 succeeds · 4000 0000 0000 0002 is declined · 4000 0000 0000 0341 is saved but later charges fail.</p>{cancel}",
            if sess.trial_period_days.is_some() { money(0, &sess.currency) } else { money(total, &sess.currency) },
            esc(&email),
            if sess.mode == "subscription" { "Subscribe" } else { "Pay" }
        )
    };
    Some(page("Checkout", &body))
}

pub async fn checkout_get(State(shared): State<Shared>, Path(id): Path<String>) -> Response {
    let Ok(mut s) = shared.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    crate::resources::checkout::expire_if_due(&mut s, &id);
    match checkout_html(&s, &id, None) {
        Some(h) => Html(h).into_response(),
        None => not_found("checkout session"),
    }
}

fn parse_expiry(s: &str) -> (i64, i64) {
    let parts: Vec<i64> = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|x| !x.is_empty())
        .filter_map(|x| x.parse().ok())
        .collect();
    match parts.as_slice() {
        [m, y, ..] => (*m, if *y < 100 { 2000 + *y } else { *y }),
        _ => (12, 2034),
    }
}

pub async fn checkout_post(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let p = Params::new(parse(&body).unwrap_or_default());
    let get = |k: &str| p.str(k).ok().flatten();
    let (exp_month, exp_year) = parse_expiry(&get("card_expiry").unwrap_or_default());
    let form = CardForm {
        email: get("email"),
        name: get("name"),
        number: get("card_number").unwrap_or_default(),
        exp_month,
        exp_year,
        promotion_code: get("promotion_code"),
    };
    let Ok(mut s) = shared.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    s.req = Default::default();
    match complete(&mut s, &id, form) {
        Ok(url) => redirect(&url),
        Err(msg) => match checkout_html(&s, &id, Some(&msg)) {
            Some(h) => (StatusCode::PAYMENT_REQUIRED, Html(h)).into_response(),
            None => not_found("checkout session"),
        },
    }
}

fn portal_html(s: &Sim, id: &str, notice: Option<&str>) -> Option<String> {
    let ps = s.w.portal_sessions.get(id)?;
    let cfg = s.w.portal_configs.get(&ps.configuration)?;
    let cust = s.w.customers.get(&ps.customer)?;
    let mut body = format!(
        "<h1>Billing</h1><p>{}</p>",
        esc(cust
            .email
            .as_deref()
            .or(cust.name.as_deref())
            .unwrap_or(&cust.id))
    );
    if let Some(n) = notice {
        body.push_str(&format!("<p class=\"err\" id=\"notice\">{}</p>", esc(n)));
    }
    let mut subs: Vec<_> = s
        .w
        .subscriptions
        .values()
        .filter(|x| {
            x.customer == cust.id && !matches!(x.status.as_str(), "canceled" | "incomplete_expired")
        })
        .collect();
    subs.sort_by_key(|x| x.seq);
    for sub in subs {
        let pe = sub.items.first().map(|i| i.current_period_end).unwrap_or(0);
        let mut items = String::new();
        for it in &sub.items {
            let Some(p) = s.w.prices.get(&it.price) else {
                continue;
            };
            let name = product_name(s, p);
            let amt = if p.unit_amount.is_whole() {
                money(p.unit_amount.round(), &p.currency)
            } else {
                p.unit_amount.to_string()
            };
            let per = p
                .recurring
                .as_ref()
                .map(|r| r.interval.clone())
                .unwrap_or_default();
            items.push_str(&format!(
                "<li>{} — {amt} / {per}{}</li>",
                esc(&name),
                if p.is_metered() { " per unit" } else { "" }
            ));
        }
        body.push_str(&format!("<div class=\"box\" id=\"{}\"><h2>Subscription</h2><ul>{items}</ul><p>Status: <strong class=\"status\">{}</strong></p>", esc(&sub.id), esc(&sub.status)));
        if sub.cancel_at_period_end {
            body.push_str(&format!("<p>Cancels on {}.</p><form method=\"post\" action=\"/p/session/{id}/renew\"><input type=\"hidden\" name=\"subscription\" value=\"{}\"><button>Renew subscription</button></form>", ymd(pe), esc(&sub.id)));
        } else {
            body.push_str(&format!("<p>Renews on {}.</p>", ymd(pe)));
            if cfg.cancel_enabled {
                body.push_str(&format!("<form method=\"post\" action=\"/p/session/{id}/cancel\"><input type=\"hidden\" name=\"subscription\" value=\"{}\"><button>Cancel subscription</button></form>", esc(&sub.id)));
            }
        }
        if cfg.update_enabled {
            let current: Vec<&str> = sub.items.iter().map(|i| i.price.as_str()).collect();
            for (_, prices) in &cfg.update_products {
                for pr in prices.iter().filter(|p| !current.contains(&p.as_str())) {
                    let Some(p) = s.w.prices.get(pr) else {
                        continue;
                    };
                    let name = product_name(s, p);
                    let per = p
                        .recurring
                        .as_ref()
                        .map(|r| r.interval.clone())
                        .unwrap_or_default();
                    body.push_str(&format!("<form method=\"post\" action=\"/p/session/{id}/switch\"><input type=\"hidden\" name=\"subscription\" value=\"{}\"><input type=\"hidden\" name=\"price\" value=\"{}\"><button>Switch to {} ({} / {per})</button></form>", esc(&sub.id), esc(pr), esc(&name), money(p.unit_amount.round(), &p.currency)));
                }
            }
        }
        body.push_str("</div>");
    }
    if cfg.payment_method_update {
        // The customer's default card, else the one its live subscription charges.
        let pm = cust
            .default_payment_method
            .clone()
            .or_else(|| {
                s.w.subscriptions
                    .values()
                    .filter(|x| x.customer == cust.id && x.status != "canceled")
                    .find_map(|x| x.default_payment_method.clone())
            })
            .and_then(|p| s.w.payment_methods.get(&p));
        let current = pm
            .map(|p| format!("{} •••• {}", p.brand, p.last4))
            .unwrap_or_else(|| "none".into());
        body.push_str(&format!("<div class=\"box\"><h2>Payment method</h2><p id=\"card\">{}</p><form method=\"post\" action=\"/p/session/{id}/card\"><label>New card number <input name=\"card_number\" required></label><label>Expiry (MM / YY) <input name=\"card_expiry\" value=\"12 / 34\"></label><button>Replace card</button></form></div>", esc(&current)));
    }
    if cfg.invoice_history {
        let mut invs: Vec<_> =
            s.w.invoices
                .values()
                .filter(|i| i.customer == cust.id && i.status != "draft")
                .collect();
        invs.sort_by_key(|i| std::cmp::Reverse((i.created, i.seq)));
        body.push_str("<div class=\"box\"><h2>Invoices</h2><table><tr><th>Date</th><th>Number</th><th>Total</th><th>Status</th></tr>");
        for i in invs {
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                ymd(i.created),
                esc(i.number.as_deref().unwrap_or("")),
                money(i.total(), &i.currency),
                esc(&i.status)
            ));
        }
        body.push_str("</table></div>");
    }
    if let Some(r) = &ps.return_url {
        body.push_str(&format!(
            "<p><a href=\"{}\" id=\"return\">← Return</a></p>",
            esc(r)
        ));
    }
    Some(page("Billing", &body))
}

pub async fn portal_get(State(shared): State<Shared>, Path(id): Path<String>) -> Response {
    let Ok(s) = shared.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    match portal_html(&s, &id, None) {
        Some(h) => Html(h).into_response(),
        None => not_found("portal session"),
    }
}

fn portal_action(s: &mut Sim, id: &str, action: &str, p: &Params) -> Result<(), String> {
    let ps =
        s.w.portal_sessions
            .get(id)
            .cloned()
            .ok_or("No such portal session")?;
    let cfg =
        s.w.portal_configs
            .get(&ps.configuration)
            .cloned()
            .ok_or("No such configuration")?;
    let get = |k: &str| p.str(k).ok().flatten().unwrap_or_default();
    let sub_id = get("subscription");
    let owned = |s: &Sim| {
        s.w.subscriptions
            .get(&sub_id)
            .is_some_and(|x| x.customer == ps.customer)
    };
    let mut q = Params::default();
    match action {
        "cancel" if cfg.cancel_enabled && owned(s) => {
            if cfg.cancel_mode == "immediately" {
                crate::resources::subscriptions::cancel(s, &sub_id, &q)
                    .map_err(|e| e.message.clone())?;
            } else {
                q.map
                    .insert("cancel_at_period_end".into(), Value::String("true".into()));
                crate::resources::subscriptions::update(s, &sub_id, &q)
                    .map_err(|e| e.message.clone())?;
            }
        }
        "renew" if owned(s) => {
            q.map
                .insert("cancel_at_period_end".into(), Value::String("false".into()));
            crate::resources::subscriptions::update(s, &sub_id, &q)
                .map_err(|e| e.message.clone())?;
        }
        "switch" if cfg.update_enabled && owned(s) => {
            let price = get("price");
            if !cfg
                .update_products
                .iter()
                .any(|(_, prices)| prices.contains(&price))
            {
                return Err("That price is not offered here.".into());
            }
            if !s.w.prices.contains_key(&price) {
                return Err("No such price".into());
            }
            let sub = s.w.subscriptions[&sub_id].clone();
            // Switch the item whose product is configured for updates (else the first licensed one).
            let item = sub
                .items
                .iter()
                .find(|it| {
                    cfg.update_products.iter().any(|(prod, _)| {
                        s.w.prices
                            .get(&it.price)
                            .is_some_and(|pp| pp.product == *prod)
                    })
                })
                .or_else(|| {
                    sub.items
                        .iter()
                        .find(|it| !s.w.prices.get(&it.price).is_some_and(|pp| pp.is_metered()))
                })
                .ok_or("Nothing to switch")?;
            let items = serde_json::json!([{"id": item.id, "price": price}]);
            q.map.insert("items".into(), items);
            q.map.insert(
                "proration_behavior".into(),
                Value::String(cfg.update_proration.clone()),
            );
            crate::resources::subscriptions::update(s, &sub_id, &q)
                .map_err(|e| e.message.clone())?;
        }
        "card" if cfg.payment_method_update => {
            let now = s.now_for(Some(&ps.customer));
            let (m, y) = parse_expiry(&get("card_expiry"));
            let pm = crate::resources::payments::new_card(s, &get("card_number"), m, y, now)
                .map_err(|e| e.message.clone())?;
            crate::resources::payments::attach(s, &pm, &ps.customer, "payment_method", now)
                .map_err(|e| e.message.clone())?;
            q.map.insert(
                "invoice_settings".into(),
                serde_json::json!({"default_payment_method": pm}),
            );
            crate::resources::customers::update(s, &ps.customer, &q)
                .map_err(|e| e.message.clone())?;
            let subs: Vec<String> =
                s.w.subscriptions
                    .values()
                    .filter(|x| {
                        x.customer == ps.customer
                            && x.default_payment_method.is_some()
                            && x.status != "canceled"
                    })
                    .map(|x| x.id.clone())
                    .collect();
            for sid in subs {
                let mut u = Params::default();
                u.map
                    .insert("default_payment_method".into(), Value::String(pm.clone()));
                crate::resources::subscriptions::update(s, &sid, &u)
                    .map_err(|e| e.message.clone())?;
            }
            s.retry_past_due(&ps.customer, now);
        }
        _ => return Err("This action is not available.".into()),
    }
    Ok(())
}

pub async fn portal_post(
    State(shared): State<Shared>,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let p = Params::new(parse(&body).unwrap_or_default());
    let Ok(mut s) = shared.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    s.req = Default::default();
    match portal_action(&mut s, &id, &action, &p) {
        Ok(()) => redirect(&format!("/p/session/{id}")),
        Err(msg) => match portal_html(&s, &id, Some(&msg)) {
            Some(h) => (StatusCode::BAD_REQUEST, Html(h)).into_response(),
            None => not_found("portal session"),
        },
    }
}

/// A hosted invoice page, linked from `hosted_invoice_url`.
pub async fn invoice_get(State(shared): State<Shared>, Path(id): Path<String>) -> Response {
    let Ok(s) = shared.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Some(i) = s.w.invoices.get(&id) else {
        return not_found("invoice");
    };
    let mut rows = String::new();
    for l in &i.lines {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(l.description.as_deref().unwrap_or("")),
            l.quantity,
            money(l.amount, &l.currency)
        ));
    }
    let body = format!("<h1>Invoice {}</h1><p>Status: {}</p><table><tr><th>Description</th><th>Qty</th><th>Amount</th></tr>{rows}</table><p>Total: {}</p><p>Amount due: {}</p>", esc(i.number.as_deref().unwrap_or("")), esc(&i.status), money(i.total(), &i.currency), money(i.amount_remaining(), &i.currency));
    Html(page("Invoice", &body)).into_response()
}
