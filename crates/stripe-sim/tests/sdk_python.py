"""Drives the simulator with Stripe's official Python SDK (typed methods of StripeClient) through
every flow Tally uses, and prints what it saw as JSON for the Rust test to check."""

import json
import sys
import time

import stripe

base, version = sys.argv[1], sys.argv[2]
client = stripe.StripeClient(
    "sk_test_python_sdk",
    base_addresses={"api": base},
    stripe_version=version,
    max_network_retries=0,
)
v1 = client.v1
out = {}

# Catalog: a product with a monthly and a yearly price found by lookup key (tally stripe push).
product = v1.products.create({"id": "tally_sdk_plan_pro", "name": "Pro", "metadata": {"tally_plan": "pro"}})
monthly = v1.prices.create({"product": product.id, "currency": "usd", "unit_amount": 3000,
                            "recurring": {"interval": "month"}, "lookup_key": "sdk_pro_monthly"})
upgrade = v1.prices.create({"product": product.id, "currency": "usd", "unit_amount": 6000,
                            "recurring": {"interval": "month"}, "lookup_key": "sdk_scale_monthly"})
found = v1.prices.list({"lookup_keys": ["sdk_pro_monthly", "sdk_scale_monthly"], "active": True})
out["prices_by_lookup_key"] = sorted(p.lookup_key for p in found.data)

# Customers: created with Tally's id in metadata, found again by search.
cus = v1.customers.create({"email": "ada@example.com", "name": "Ada", "metadata": {"tally_customer_id": "c1"}},
                          {"idempotency_key": "stripe_customer:c1:0"})
again = v1.customers.create({"email": "ada@example.com", "name": "Ada", "metadata": {"tally_customer_id": "c1"}},
                            {"idempotency_key": "stripe_customer:c1:0"})
out["idempotent_replay_same_customer"] = cus.id == again.id
search = v1.customers.search({"query": "metadata['tally_customer_id']:'c1'"})
out["search_ids_match"] = [c.id for c in search.data] == [cus.id]

# Checkout Session (subscription mode) with Tally's metadata contract.
cs = v1.checkout.sessions.create({
    "mode": "subscription", "customer": cus.id,
    "line_items": [{"price": monthly.id, "quantity": 1}],
    "success_url": "https://app.example/ok?s={CHECKOUT_SESSION_ID}", "cancel_url": "https://app.example/no",
    "client_reference_id": "c1", "metadata": {"tally_customer_id": "c1", "tally_plan": "pro"},
    "subscription_data": {"metadata": {"tally_customer_id": "c1"}}, "allow_promotion_codes": True,
})
out["checkout"] = {"mode": cs.mode, "status": cs.status, "url_set": bool(cs.url),
                   "client_reference_id": cs.client_reference_id}

# A subscription paid with Stripe's test card, then an upgrade with proration charged at once.
pm = v1.payment_methods.attach("pm_card_visa", {"customer": cus.id})
sub = v1.subscriptions.create({"customer": cus.id, "items": [{"price": monthly.id}],
                               "default_payment_method": pm.id})
out["subscription_status"] = sub.status
up = v1.subscriptions.update(sub.id, {
    "items": [{"id": sub["items"].data[0].id, "price": upgrade.id}],
    "proration_behavior": "always_invoice", "payment_behavior": "pending_if_incomplete",
}, {"idempotency_key": "plan_change:pc_1:0"})
inv = v1.invoices.retrieve(up.latest_invoice)
out["upgrade"] = {
    "price": up["items"].data[0].price.lookup_key, "pending_update": up.pending_update is not None,
    "invoice_status": inv.status,
    "proration_lines": sorted(l.parent.subscription_item_details.proration
                              if l.parent.subscription_item_details else
                              l.parent.invoice_item_details.proration for l in inv.lines.data),
}

# The same upgrade with a card that declines every charge: Stripe keeps the old price pending.
bad = v1.payment_methods.attach("pm_card_chargeCustomerFail", {"customer": cus.id})
v1.subscriptions.update(sub.id, {"default_payment_method": bad.id})
top = v1.prices.create({"product": product.id, "currency": "usd", "unit_amount": 9000,
                        "recurring": {"interval": "month"}})
pending = v1.subscriptions.update(sub.id, {
    "items": [{"id": sub["items"].data[0].id, "price": top.id}],
    "proration_behavior": "always_invoice", "payment_behavior": "pending_if_incomplete",
})
out["failed_upgrade"] = {
    "price": pending["items"].data[0].price.id == upgrade.id,
    "pending_price": pending.pending_update.subscription_items[0].price.id == top.id,
    "status": pending.status,
}

# An invoice preview for a change not yet made (proration by the simulator's date).
preview = v1.invoices.create_preview({
    "customer": cus.id, "subscription": sub.id,
    "subscription_details": {"items": [{"id": sub["items"].data[0].id, "price": monthly.id}],
                             "proration_behavior": "create_prorations"},
})
out["preview_object"] = preview.object

# A downgrade at the period end: a subscription schedule with two phases, then released.
v1.subscriptions.update(sub.id, {"default_payment_method": pm.id})
sched = v1.subscription_schedules.create({"from_subscription": sub.id})
ph = sched.phases[0]
sched = v1.subscription_schedules.update(sched.id, {
    "end_behavior": "release", "proration_behavior": "none",
    "phases": [{"items": [{"price": ph["items"][0].price, "quantity": 1}],
                "start_date": ph.start_date, "end_date": ph.end_date},
               {"items": [{"price": monthly.id, "quantity": 1}], "iterations": 1}],
})
out["schedule"] = {"phases": len(sched.phases), "status": sched.status,
                   "next_starts_at_period_end": sched.phases[1].start_date == ph.end_date}
released = v1.subscription_schedules.release(sched.id)
out["schedule_released"] = released.status

# The Customer Portal.
portal = v1.billing_portal.sessions.create({"customer": cus.id, "return_url": "https://app.example/account"})
out["portal_url_set"] = bool(portal.url)

# Refunds and events, as the webhook backfill and refund listing read them.
ch = [c for c in v1.charges.list({"customer": cus.id, "limit": 100}).data if c.status == "succeeded"][0]
v1.refunds.create({"charge": ch.id, "amount": 100})
refunds = v1.refunds.list({"charge": ch.id})
out["refunds"] = [r.amount for r in refunds.data]
events = v1.events.list({"type": "customer.subscription.updated", "limit": 100})
out["events_all_of_type"] = all(e.type == "customer.subscription.updated" for e in events.data) and len(events.data) > 0

# A test clock: a customer on it, a monthly subscription, the clock advanced past a renewal.
start = int(time.time()) - 3600
clock = v1.test_helpers.test_clocks.create({"frozen_time": start, "name": "tally:c2"})
cus2 = v1.customers.create({"email": "bob@example.com", "test_clock": clock.id})
pm2 = v1.payment_methods.attach("pm_card_visa", {"customer": cus2.id})
sub2 = v1.subscriptions.create({"customer": cus2.id, "items": [{"price": monthly.id}], "default_payment_method": pm2.id})
clock = v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": start + 32 * 86400})
for _ in range(100):
    clock = v1.test_helpers.test_clocks.retrieve(clock.id)
    if clock.status == "ready":
        break
    time.sleep(0.05)
invs = v1.invoices.list({"subscription": sub2.id})
out["clock"] = {"status": clock.status, "frozen_time_moved": clock.frozen_time == start + 32 * 86400,
                "invoices": sorted(i.billing_reason for i in invs.data),
                "paid": sorted(i.amount_paid for i in invs.data)}

# Meter mode: a sum meter, a graduated metered price on it, a meter event and its duplicate.
meter = v1.billing.meters.create({"display_name": "Compute", "event_name": "sdk_compute",
                                  "default_aggregation": {"formula": "sum"},
                                  "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
                                  "value_settings": {"event_payload_key": "value"}})
metered = v1.prices.create({"product": product.id, "currency": "usd", "recurring": {
    "interval": "month", "usage_type": "metered", "meter": meter.id}, "billing_scheme": "tiered",
    "tiers_mode": "graduated", "tiers": [{"up_to": 300000, "unit_amount_decimal": "0"},
                                         {"up_to": "inf", "unit_amount_decimal": "0.004"}],
    "lookup_key": "sdk_pro_monthly_compute"})
ev = {"event_name": "sdk_compute", "payload": {"stripe_customer_id": cus.id, "value": "350000"},
      "identifier": "tally:c1:compute:1", "timestamp": int(time.time()) - 60}
first = v1.billing.meter_events.create(ev)
try:
    v1.billing.meter_events.create(ev)
    duplicate = "accepted"
except stripe.InvalidRequestError as e:
    duplicate = e.code
active = v1.billing.meters.list({"status": "active"})
out["meters"] = {"event_names": sorted(m.event_name for m in active.data),
                 "price": [metered.recurring.usage_type, metered.billing_scheme, metered.tiers_mode],
                 "event": first.identifier, "duplicate": duplicate}

print(json.dumps(out))
