//! Subscription schedules (`/v1/subscription_schedules`): a subscription's future as phases.
//! Made from an existing subscription (`from_subscription`), edited with `phases[]`, released
//! or canceled. At each phase boundary (a renewal) the subscription takes the phase's items;
//! after the last phase the schedule is released (or cancels the subscription).

use super::newest_first;
use crate::error::ApiError;
use crate::form::Params;
use crate::sim::{paginate, Sim};
use crate::state::{SchedulePhase, SubscriptionSchedule};
use crate::util::{add_interval, new_id};
use serde_json::Value;

fn schedule<'a>(s: &'a Sim, id: &str) -> Result<&'a SubscriptionSchedule, ApiError> {
    s.w.subscription_schedules
        .get(id)
        .ok_or_else(|| ApiError::no_such("subscription_schedule", id, "schedule"))
}

pub fn create(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "from_subscription",
        "customer",
        "phases",
        "start_date",
        "end_behavior",
        "metadata",
    ])?;
    let Some(sub_id) = p.str("from_subscription")? else {
        return Err(ApiError::invalid(
            "The simulator makes schedules from an existing subscription only: pass from_subscription.",
            Some("from_subscription".into()),
        ));
    };
    for other in ["customer", "phases", "start_date", "end_behavior"] {
        if p.has(other) {
            return Err(ApiError::invalid(
                format!("You cannot set `{other}` if `from_subscription` is set."),
                Some(other.into()),
            ));
        }
    }
    let sub = s.subscription(&sub_id, "from_subscription")?.clone();
    if let Some(existing) = &sub.schedule {
        return Err(ApiError::invalid(
            format!("You cannot migrate a subscription that is already attached to a schedule: `{existing}`."),
            Some("from_subscription".into()),
        ));
    }
    if matches!(sub.status.as_str(), "canceled" | "incomplete_expired") {
        return Err(ApiError::invalid(
            "You cannot migrate a canceled subscription to a schedule.",
            Some("from_subscription".into()),
        ));
    }
    let now = s.now_for(Some(&sub.customer));
    let Some(first) = sub.items.first() else {
        return Err(ApiError::invalid(
            "The subscription has no items.",
            Some("from_subscription".into()),
        ));
    };
    let id = new_id("sub_sched");
    let seq = s.w.next_seq();
    let sc = SubscriptionSchedule {
        id: id.clone(),
        seq,
        created: now,
        customer: sub.customer.clone(),
        subscription: Some(sub_id.clone()),
        status: "active".into(),
        phases: vec![SchedulePhase {
            start_date: first.current_period_start,
            end_date: first.current_period_end,
            items: sub
                .items
                .iter()
                .map(|i| (i.price.clone(), i.quantity))
                .collect(),
            proration_behavior: "create_prorations".into(),
            metadata: Default::default(),
        }],
        end_behavior: "release".into(),
        released_at: None,
        released_subscription: None,
        canceled_at: None,
        completed_at: None,
        metadata: p.metadata()?,
        test_clock: sub.test_clock.clone(),
    };
    s.w.subscription_schedules.insert(id.clone(), sc);
    let before = s.r_subscription(&sub);
    if let Some(x) = s.w.subscriptions.get_mut(&sub_id) {
        x.schedule = Some(id.clone());
    }
    s.dirty = true;
    let v = s.r_schedule(&s.w.subscription_schedules[&id]);
    s.emit("subscription_schedule.created", v.clone(), None, now);
    let after = s.r_subscription(&s.w.subscriptions[&sub_id]);
    s.emit_updated("customer.subscription.updated", &before, after, now);
    Ok(v)
}

pub fn retrieve(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    Ok(s.r_schedule(schedule(s, id)?))
}

pub fn list(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    let customer = p.str("customer")?;
    let v =
        s.w.subscription_schedules
            .values()
            .filter(|x| customer.as_ref().is_none_or(|c| *c == x.customer))
            .map(|x| (x.created, x.seq, x.id.clone(), x.clone()))
            .collect();
    paginate(newest_first(v), p, "/v1/subscription_schedules", |x| {
        s.r_schedule(x)
    })
}

fn editable(sc: &SubscriptionSchedule, action: &str) -> Result<(), ApiError> {
    if !matches!(sc.status.as_str(), "active" | "not_started") {
        return Err(ApiError::invalid(
            format!(
                "You cannot {action} a subscription schedule that is currently in the `{}` status. It must be in one of the following statuses: `not_started`, `active`.",
                sc.status
            ),
            None,
        ));
    }
    Ok(())
}

pub fn update(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(&[
        "phases",
        "end_behavior",
        "proration_behavior",
        "metadata",
        "default_settings",
    ])?;
    let sc = schedule(s, id)?.clone();
    editable(&sc, "update")?;
    let now = s.now_for(Some(&sc.customer));
    let sub = match &sc.subscription {
        Some(x) => Some(s.subscription(x, "subscription")?.clone()),
        None => None,
    };
    let mut next = sc.clone();
    if let Some(e) = p.str("end_behavior")? {
        if !["release", "cancel"].contains(&e.as_str()) {
            return Err(ApiError::invalid(
                "Invalid end_behavior: must be one of release or cancel",
                Some("end_behavior".into()),
            ));
        }
        next.end_behavior = e;
    }
    p.apply_metadata(&mut next.metadata)?;
    let default_proration = p
        .str("proration_behavior")?
        .unwrap_or_else(|| "create_prorations".into());
    if p.has("phases") {
        let mut phases: Vec<SchedulePhase> = vec![];
        let list = p.list("phases")?;
        if list.is_empty() {
            return Err(ApiError::missing_param("phases"));
        }
        for (i, ph) in list.iter().enumerate() {
            ph.allow(&[
                "items",
                "start_date",
                "end_date",
                "iterations",
                "proration_behavior",
                "metadata",
                "billing_cycle_anchor",
            ])?;
            let start = match (phases.last(), ph.str("start_date")?.as_deref()) {
                (_, Some("now")) => now,
                (_, Some(_)) => ph.req_i64("start_date")?,
                (Some(prev), None) => prev.end_date,
                (None, None) => sc.phases.first().map_or(now, |f| f.start_date),
            };
            if let Some(prev) = phases.last() {
                if start != prev.end_date {
                    return Err(ApiError::invalid(
                        "Phases must be contiguous: each phase starts when the previous one ends.",
                        Some(format!("phases[{i}][start_date]")),
                    ));
                }
            } else if sc.status == "active"
                && sc.phases.first().is_some_and(|f| f.start_date != start)
            {
                return Err(ApiError::invalid(
                    "You can not modify the start date of the current phase.",
                    Some("phases[0][start_date]".into()),
                ));
            }
            let mut items = vec![];
            for (j, it) in ph.list("items")?.iter().enumerate() {
                it.allow(&["price", "quantity", "metadata", "discounts", "tax_rates"])?;
                let price = it.req_str("price")?;
                let pr = s.price(&price, &format!("phases[{i}][items][{j}][price]"))?;
                if pr.recurring.is_none() {
                    return Err(ApiError::invalid(
                        "The price specified is set to `type=one_time` but this field only accepts prices with `type=recurring`.",
                        Some(format!("phases[{i}][items][{j}][price]")),
                    ));
                }
                if let Some(sub) = &sub {
                    if pr.currency != sub.currency {
                        return Err(ApiError::invalid(
                            "All prices on a subscription must have the same `currency`.",
                            Some(format!("phases[{i}][items][{j}][price]")),
                        ));
                    }
                }
                items.push((price, it.i64("quantity")?));
            }
            if items.is_empty() {
                return Err(ApiError::missing_param(&format!("phases[{i}][items]")));
            }
            let end = match (ph.i64("end_date")?, ph.i64("iterations")?) {
                (Some(_), Some(_)) => {
                    return Err(ApiError::invalid(
                        "You may only specify one of these parameters: end_date, iterations.",
                        Some(format!("phases[{i}][end_date]")),
                    ))
                }
                (Some(e), None) => e,
                // One iteration of the phase's first price by default.
                (None, n) => {
                    let r = s.w.prices[&items[0].0].recurring.clone();
                    let (iv, ic) =
                        r.map_or(("month".to_string(), 1), |r| (r.interval, r.interval_count));
                    add_interval(start, &iv, ic, n.unwrap_or(1).max(1))
                }
            };
            if end <= start {
                return Err(ApiError::invalid(
                    "The end date of a phase must be after its start date.",
                    Some(format!("phases[{i}][end_date]")),
                ));
            }
            phases.push(SchedulePhase {
                start_date: start,
                end_date: end,
                items,
                proration_behavior: ph
                    .str("proration_behavior")?
                    .unwrap_or_else(|| default_proration.clone()),
                metadata: ph.metadata()?,
            });
        }
        next.phases = phases;
    }
    let before = s.r_schedule(&sc);
    s.w.subscription_schedules.insert(id.to_string(), next);
    s.dirty = true;
    let after = s.r_schedule(&s.w.subscription_schedules[id]);
    s.emit_updated("subscription_schedule.updated", &before, after.clone(), now);
    Ok(after)
}

pub fn release(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(&["preserve_cancel_date"])?;
    let sc = schedule(s, id)?.clone();
    editable(&sc, "release")?;
    let now = s.now_for(Some(&sc.customer));
    s.release_schedule(id, now);
    Ok(s.r_schedule(&s.w.subscription_schedules[id]))
}

pub fn cancel(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(&["invoice_now", "prorate"])?;
    let sc = schedule(s, id)?.clone();
    editable(&sc, "cancel")?;
    let now = s.now_for(Some(&sc.customer));
    if let Some(x) = s.w.subscription_schedules.get_mut(id) {
        x.status = "canceled".into();
        x.canceled_at = Some(now);
    }
    if let Some(sub) = &sc.subscription {
        s.cancel_subscription(sub, now, Some("cancellation_requested"));
    }
    s.dirty = true;
    let v = s.r_schedule(&s.w.subscription_schedules[id]);
    s.emit("subscription_schedule.canceled", v.clone(), None, now);
    Ok(v)
}
