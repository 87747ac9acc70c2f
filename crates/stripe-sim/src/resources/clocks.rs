use super::newest_first;
use crate::error::ApiError;
use crate::form::Params;
use crate::sim::{paginate, Sim};
use crate::state::TestClock;
use crate::util::{add_interval, new_id, wall_now};
use serde_json::{json, Value};

pub fn create(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    p.allow(&["frozen_time", "name"])?;
    let frozen = p.req_i64("frozen_time")?;
    let id = new_id("clock");
    let seq = s.w.next_seq();
    s.w.test_clocks.insert(
        id.clone(),
        TestClock {
            id: id.clone(),
            seq,
            created: wall_now(),
            frozen_time: frozen,
            name: p.str("name")?,
            status: "ready".into(),
            deleted: false,
        },
    );
    let v = s.r_test_clock(&s.w.test_clocks[&id]);
    s.emit("test_helpers.test_clock.created", v.clone(), None, frozen);
    Ok(v)
}

fn clock<'a>(s: &'a Sim, id: &str) -> Result<&'a TestClock, ApiError> {
    s.w.test_clocks
        .get(id)
        .filter(|c| !c.deleted)
        .ok_or_else(|| ApiError::no_such("test_clock", id, "test_clock"))
}

pub fn retrieve(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    Ok(s.r_test_clock(clock(s, id)?))
}

pub fn list(s: &mut Sim, p: &Params) -> Result<Value, ApiError> {
    let v =
        s.w.test_clocks
            .values()
            .filter(|c| !c.deleted)
            .map(|c| (c.created, c.seq, c.id.clone(), c.clone()))
            .collect();
    paginate(newest_first(v), p, "/v1/test_helpers/test_clocks", |c| {
        s.r_test_clock(c)
    })
}

/// Deleting a clock deletes the customers on it and their subscriptions, without events.
pub fn delete(s: &mut Sim, id: &str) -> Result<Value, ApiError> {
    let c = clock(s, id)?.clone();
    for cu in
        s.w.customers
            .values_mut()
            .filter(|x| x.test_clock.as_deref() == Some(id))
    {
        cu.deleted = true;
    }
    for sub in
        s.w.subscriptions
            .values_mut()
            .filter(|x| x.test_clock.as_deref() == Some(id))
    {
        sub.status = "canceled".into();
        sub.ended_at = Some(c.frozen_time);
    }
    if let Some(x) = s.w.test_clocks.get_mut(id) {
        x.deleted = true;
    }
    let v = s.r_test_clock(&c);
    s.emit("test_helpers.test_clock.deleted", v, None, c.frozen_time);
    Ok(json!({"id": id, "object": "test_helpers.test_clock", "deleted": true}))
}

/// Advances the clock: every renewal, invoice finalization, payment retry and status change
/// due on the way happens in time order, then `test_helpers.test_clock.ready` is emitted.
pub fn advance(s: &mut Sim, id: &str, p: &Params) -> Result<Value, ApiError> {
    p.allow(&["frozen_time"])?;
    let c = clock(s, id)?.clone();
    let target = p.req_i64("frozen_time")?;
    if target <= c.frozen_time {
        return Err(ApiError::invalid(
            "The frozen_time must be after the test clock's current frozen_time.",
            Some("frozen_time".into()),
        ));
    }
    // Stripe refuses to skip more than two intervals of the shortest subscription on the clock.
    let shortest =
        s.w.subscriptions
            .values()
            .filter(|x| {
                x.test_clock.as_deref() == Some(id)
                    && !matches!(x.status.as_str(), "canceled" | "incomplete_expired")
            })
            .map(|x| add_interval(c.frozen_time, &x.interval, x.interval_count, 2))
            .min();
    if let Some(limit) = shortest {
        if target > limit {
            return Err(ApiError::invalid("Cannot advance the test clock more than two intervals of the shortest subscription interval on it at once.", Some("frozen_time".into())));
        }
    }
    if let Some(x) = s.w.test_clocks.get_mut(id) {
        x.status = "advancing".into();
    }
    let mut adv = s.r_test_clock(&s.w.test_clocks[id]);
    adv["frozen_time"] = json!(target);
    s.emit(
        "test_helpers.test_clock.advancing",
        adv.clone(),
        None,
        c.frozen_time,
    );
    s.req = Default::default();
    s.run_until(Some(id), target);
    if let Some(x) = s.w.test_clocks.get_mut(id) {
        x.frozen_time = target;
        x.status = "ready".into();
    }
    let v = s.r_test_clock(&s.w.test_clocks[id]);
    s.emit("test_helpers.test_clock.ready", v, None, target);
    Ok(adv)
}
