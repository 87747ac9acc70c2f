//! The billing engine: subscriptions, invoices, payments, prorations, renewals, retries and the
//! test-clock driven timeline.

use crate::error::ApiError;
use crate::sim::Sim;
use crate::state::*;
use crate::util::{add_interval, new_id, ymd, Dec, DAY};
use serde_json::{json, Value};

pub struct NewItem {
    pub price: String,
    pub quantity: Option<i64>,
    pub metadata: Meta,
}

pub struct NewSub {
    pub customer: String,
    pub items: Vec<NewItem>,
    pub trial_end: Option<i64>,
    pub default_payment_method: Option<String>,
    pub metadata: Meta,
    pub discounts: Vec<String>,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<i64>,
    pub payment_behavior: String,
    pub collection_method: String,
    pub days_until_due: Option<i64>,
    pub description: Option<String>,
}

/// One item change in a subscription update.
pub struct ItemChange {
    pub id: Option<String>,
    pub price: Option<String>,
    pub quantity: Option<i64>,
    pub deleted: bool,
    pub metadata: Option<Meta>,
}

/// (old price and quantity, new price and quantity, the item) for one prorated change.
type ProrationChange = (Option<(String, i64)>, Option<(String, i64)>, SubItem);

/// How a charge attempt ended.
pub type ChargeResult = Result<String, ApiError>;

const FINALIZE_DELAY: i64 = 3600;
const INCOMPLETE_EXPIRY: i64 = 23 * 3600;

impl Sim {
    fn product_name(&self, price: &str) -> String {
        self.w
            .prices
            .get(price)
            .and_then(|p| self.w.products.get(&p.product))
            .map(|p| p.name.clone())
            .unwrap_or_else(|| price.to_string())
    }

    fn price_label(&self, p: &Price) -> String {
        if let Some(mode) = &p.tiers_mode {
            return format!("{mode} tiers");
        }
        let unit = if p.unit_amount.is_whole() {
            let a = p.unit_amount.round();
            format!(
                "{}{}.{:02}",
                currency_symbol(&p.currency),
                a / 100,
                (a % 100).abs()
            )
        } else {
            format!("{} {}", p.unit_amount, p.currency)
        };
        match &p.recurring {
            Some(r) if r.interval_count == 1 => format!("at {unit} / {}", r.interval),
            Some(r) => format!("at {unit} / every {} {}s", r.interval_count, r.interval),
            None => format!("at {unit}"),
        }
    }

    /// A subscription item's line for [start, end): `quantity` of its price.
    fn sub_item_line(
        sub: &Subscription,
        it: &SubItem,
        p: &Price,
        quantity: Dec,
        description: String,
        start: i64,
        end: i64,
    ) -> Line {
        Line {
            id: new_id("il"),
            amount: p.amount_for(quantity),
            currency: p.currency.clone(),
            description: Some(description),
            period_start: start,
            period_end: end,
            proration: false,
            quantity,
            unit_amount: p.unit_amount,
            price: Some(p.id.clone()),
            product: Some(p.product.clone()),
            invoice_item: None,
            subscription: Some(sub.id.clone()),
            subscription_item: Some(it.id.clone()),
            discountable: true,
            discount_amounts: vec![],
            metadata: it.metadata.clone(),
        }
    }

    /// A licensed subscription line for one period.
    fn licensed_line(
        &self,
        sub: &Subscription,
        it: &SubItem,
        start: i64,
        end: i64,
    ) -> Option<Line> {
        let p = self.w.prices.get(&it.price)?;
        let q = it.quantity.unwrap_or(1);
        let description = format!(
            "{q} × {} ({})",
            self.product_name(&p.id),
            self.price_label(p)
        );
        Some(Self::sub_item_line(
            sub,
            it,
            p,
            Dec::from_int(q),
            description,
            start,
            end,
        ))
    }

    /// Aggregated meter usage of a customer over [start, end).
    pub fn usage(&self, meter: &str, customer: &str, start: i64, end: i64) -> Dec {
        let m = match self.w.meters.get(meter) {
            Some(m) => m,
            None => return Dec::default(),
        };
        let events = self.w.meter_events.iter().filter(|e| {
            e.event_name == m.event_name
                && e.customer == customer
                && !e.canceled
                && e.timestamp >= start
                && e.timestamp < end
        });
        match m.formula.as_str() {
            "count" => Dec::from_int(events.count() as i64),
            "last" => events
                .max_by_key(|e| (e.timestamp, e.created))
                .map(|e| e.value)
                .unwrap_or_default(),
            _ => Dec(events.map(|e| e.value.0).sum()),
        }
    }

    /// A metered line billing usage in arrears for [start, end).
    fn metered_line(&self, sub: &Subscription, it: &SubItem, start: i64, end: i64) -> Option<Line> {
        let p = self.w.prices.get(&it.price)?;
        let meter = p.recurring.as_ref()?.meter.clone()?;
        let q = self.usage(&meter, &sub.customer, start, end);
        let description = format!(
            "{} (usage {} – {})",
            self.product_name(&p.id),
            ymd(start),
            ymd(end)
        );
        Some(Self::sub_item_line(sub, it, p, q, description, start, end))
    }

    fn item_line(&self, ii: &InvoiceItem) -> Line {
        Line {
            id: new_id("il"),
            amount: ii.amount,
            currency: ii.currency.clone(),
            description: ii.description.clone(),
            period_start: ii.period_start,
            period_end: ii.period_end,
            proration: ii.proration,
            quantity: Dec::from_int(ii.quantity),
            unit_amount: ii.unit_amount,
            price: ii.price.clone(),
            product: ii
                .price
                .as_ref()
                .and_then(|p| self.w.prices.get(p))
                .map(|p| p.product.clone()),
            invoice_item: Some(ii.id.clone()),
            subscription: ii.subscription.clone(),
            subscription_item: ii.subscription_item.clone(),
            discountable: ii.discountable,
            discount_amounts: vec![],
            metadata: ii.metadata.clone(),
        }
    }

    /// Pending invoice items for a customer (optionally only those of one subscription).
    fn pending_items(&self, customer: &str, sub: Option<&str>, currency: &str) -> Vec<String> {
        let mut v: Vec<&InvoiceItem> = self
            .w
            .invoice_items
            .values()
            .filter(|i| {
                !i.deleted
                    && i.invoice.is_none()
                    && i.customer == customer
                    && i.currency == currency
            })
            .filter(|i| match sub {
                Some(s) => i.subscription.as_deref().is_none_or(|x| x == s),
                None => true,
            })
            .collect();
        v.sort_by_key(|i| i.seq);
        v.into_iter().map(|i| i.id.clone()).collect()
    }

    /// Discounts applying to an invoice of a subscription at `at`.
    fn active_discounts(&self, ids: &[String], at: i64) -> Vec<Discount> {
        ids.iter()
            .filter_map(|d| self.w.discounts.get(d))
            .filter(|d| !d.spent && d.end.is_none_or(|e| at < e))
            .cloned()
            .collect()
    }

    fn apply_discounts(&mut self, inv: &mut Invoice, discounts: &[Discount]) {
        for d in discounts {
            let Some(c) = self.w.coupons.get(&d.coupon).cloned() else {
                continue;
            };
            let mut applied = 0;
            if let Some(bp) = c.percent_off_bp {
                for l in inv
                    .lines
                    .iter_mut()
                    .filter(|l| l.discountable && l.amount > 0)
                {
                    let a = crate::util::div_round(l.amount as i128 * bp as i128, 10_000) as i64;
                    if a > 0 {
                        l.discount_amounts.push((a, d.id.clone()));
                        applied += a;
                    }
                }
            } else if let Some(off) = c.amount_off {
                if c.currency.as_deref() != Some(inv.currency.as_str()) {
                    continue;
                }
                let mut left = off;
                for l in inv
                    .lines
                    .iter_mut()
                    .filter(|l| l.discountable && l.amount > 0)
                {
                    let already: i64 = l.discount_amounts.iter().map(|x| x.0).sum();
                    let a = left.min(l.amount - already);
                    if a > 0 {
                        l.discount_amounts.push((a, d.id.clone()));
                        left -= a;
                        applied += a;
                    }
                }
            }
            if applied > 0 {
                inv.discounts.push(d.id.clone());
                if c.duration == "once" {
                    if let Some(dd) = self.w.discounts.get_mut(&d.id) {
                        dd.spent = true;
                        dd.end = Some(inv.created);
                    }
                }
            }
        }
    }

    /// Creates a draft invoice holding `lines` plus the customer's pending invoice items.
    #[allow(clippy::too_many_arguments)]
    pub fn create_invoice(
        &mut self,
        customer: &str,
        sub: Option<&str>,
        reason: &str,
        mut lines: Vec<Line>,
        period: (i64, i64),
        currency: &str,
        include_pending: bool,
        discounts: &[String],
        now: i64,
    ) -> String {
        let id = new_id("in");
        if include_pending {
            for ii in self.pending_items(customer, sub, currency) {
                if let Some(item) = self.w.invoice_items.get_mut(&ii) {
                    item.invoice = Some(id.clone());
                }
                if let Some(item) = self.w.invoice_items.get(&ii) {
                    lines.push(self.item_line(item));
                }
            }
        }
        if let Some(c) = self.w.customers.get_mut(customer) {
            if c.currency.is_none() {
                c.currency = Some(currency.to_string());
            }
        }
        let cust = self.w.customers.get(customer).cloned();
        let s = sub.and_then(|s| self.w.subscriptions.get(s)).cloned();
        let seq = self.w.next_seq();
        let mut inv = Invoice {
            id: id.clone(),
            seq,
            customer: customer.to_string(),
            created: now,
            subscription: sub.map(str::to_string),
            subscription_metadata: s.as_ref().map(|s| s.metadata.clone()),
            billing_reason: reason.to_string(),
            status: "draft".into(),
            lines,
            period_start: period.0,
            period_end: period.1,
            currency: currency.to_string(),
            number: None,
            auto_advance: true,
            attempt_count: 0,
            attempted: false,
            next_payment_attempt: None,
            amount_paid: 0,
            starting_balance: 0,
            ending_balance: None,
            description: None,
            metadata: Meta::new(),
            discounts: vec![],
            finalized_at: None,
            paid_at: None,
            voided_at: None,
            marked_uncollectible_at: None,
            collection_method: s
                .as_ref()
                .map(|s| s.collection_method.clone())
                .unwrap_or_else(|| "charge_automatically".into()),
            payment_intent: None,
            due_date: None,
            effective_at: None,
            test_clock: cust.as_ref().and_then(|c| c.test_clock.clone()),
            automatically_finalizes_at: Some(now + FINALIZE_DELAY),
            default_payment_method: None,
            customer_email: cust.as_ref().and_then(|c| c.email.clone()),
            customer_name: cust.as_ref().and_then(|c| c.name.clone()),
            last_finalization_error: None,
        };
        let ds = self.active_discounts(discounts, now);
        self.apply_discounts(&mut inv, &ds);
        self.w.invoices.insert(id.clone(), inv);
        self.dirty = true;
        let v = self.r_invoice(&self.w.invoices[&id], false);
        self.emit("invoice.created", v, None, now);
        id
    }

    /// Finalizes a draft: numbers it, applies the customer balance, emits `invoice.finalized`;
    /// a zero amount due is marked paid at once.
    pub fn finalize_invoice(&mut self, id: &str, now: i64) -> Result<(), ApiError> {
        let inv = self.invoice(id, "invoice")?.clone();
        if inv.status != "draft" {
            return Err(ApiError::invalid_code(
                "invoice_not_editable",
                "This invoice is already finalized, you can't re-finalize a non-draft invoice."
                    .to_string(),
                None,
            ));
        }
        if inv.billing_reason == "subscription_cycle" {
            self.rerate_metered(id);
        }
        let inv = self.invoice(id, "invoice")?.clone();
        let (balance, number) = match self.w.customers.get_mut(&inv.customer) {
            Some(c) => {
                let n = format!("{}-{:04}", c.invoice_prefix, c.next_invoice_sequence);
                c.next_invoice_sequence += 1;
                (c.balance, n)
            }
            None => (0, format!("SIM-{:04}", inv.seq)),
        };
        let total = inv.total();
        let applied = total + balance;
        let ending = if applied > 0 { 0 } else { applied };
        if let Some(c) = self.w.customers.get_mut(&inv.customer) {
            c.balance = ending;
        }
        {
            let Some(i) = self.w.invoices.get_mut(id) else {
                return Ok(());
            };
            i.status = "open".into();
            i.number = Some(number);
            i.starting_balance = balance;
            i.ending_balance = Some(ending);
            i.finalized_at = Some(now);
            i.effective_at = Some(now);
            i.automatically_finalizes_at = None;
            if i.collection_method == "send_invoice" && i.due_date.is_none() {
                i.due_date = Some(now + 30 * DAY);
            }
        }
        let v = self.r_invoice(&self.w.invoices[id], false);
        self.emit("invoice.finalized", v, None, now);
        if self.w.invoices[id].amount_due() == 0 {
            self.mark_paid(id, now);
        }
        Ok(())
    }

    /// Rates a renewal's metered lines again from the meter events recorded by now: as on
    /// Stripe, usage of the ended period reported while its renewal is still a draft (the hour
    /// before finalization) is billed on it. Percent-off discounts follow the new amounts.
    fn rerate_metered(&mut self, id: &str) {
        let Some(inv) = self.w.invoices.get(id).cloned() else {
            return;
        };
        let Some(sub) = inv
            .subscription
            .as_ref()
            .and_then(|s| self.w.subscriptions.get(s))
            .cloned()
        else {
            return;
        };
        let mut lines = inv.lines.clone();
        let mut changed = false;
        for l in lines
            .iter_mut()
            .filter(|l| !l.proration && l.invoice_item.is_none())
        {
            let Some(p) = l.price.as_ref().and_then(|p| self.w.prices.get(p)) else {
                continue;
            };
            let Some(meter) = p.recurring.as_ref().and_then(|r| r.meter.clone()) else {
                continue;
            };
            let q = self.usage(&meter, &sub.customer, l.period_start, l.period_end);
            let amount = p.amount_for(q);
            if q == l.quantity && amount == l.amount {
                continue;
            }
            l.quantity = q;
            l.amount = amount;
            l.discount_amounts.clear();
            for d in self.active_discounts(&sub.discounts, inv.created) {
                let bp = self.w.coupons.get(&d.coupon).and_then(|c| c.percent_off_bp);
                if let (Some(bp), true) = (bp, l.discountable && l.amount > 0) {
                    let a = crate::util::div_round(l.amount as i128 * bp as i128, 10_000) as i64;
                    if a > 0 {
                        l.discount_amounts.push((a, d.id.clone()));
                    }
                }
            }
            changed = true;
        }
        if changed {
            if let Some(i) = self.w.invoices.get_mut(id) {
                i.lines = lines;
            }
            self.dirty = true;
        }
    }

    fn mark_paid(&mut self, id: &str, now: i64) {
        if let Some(i) = self.w.invoices.get_mut(id) {
            i.status = "paid".into();
            i.amount_paid = i.amount_due();
            i.paid_at = Some(now);
            i.next_payment_attempt = None;
            i.attempted = true;
            i.auto_advance = false;
        }
        let v = self.r_invoice(&self.w.invoices[id], false);
        self.emit("invoice.paid", v.clone(), None, now);
        self.emit("invoice.payment_succeeded", v, None, now);
        self.after_invoice_paid(id, now);
    }

    fn resolve_pm(&self, customer: &str, sub: Option<&str>) -> Option<String> {
        sub.and_then(|s| self.w.subscriptions.get(s))
            .and_then(|s| s.default_payment_method.clone())
            .or_else(|| {
                self.w
                    .customers
                    .get(customer)
                    .and_then(|c| c.default_payment_method.clone())
            })
    }

    /// A new payment intent with a fresh id, sequence number and client secret: awaiting a
    /// payment method, nothing received, no description, metadata or invoice. Not stored yet:
    /// the caller fills in the rest and hands it to [`Sim::add_payment_intent`].
    pub(crate) fn draft_payment_intent(
        &mut self,
        amount: i64,
        currency: &str,
        customer: Option<String>,
        now: i64,
    ) -> PaymentIntent {
        let id = new_id("pi");
        let seq = self.w.next_seq();
        PaymentIntent {
            id: id.clone(),
            seq,
            created: now,
            amount,
            currency: currency.to_string(),
            customer,
            status: "requires_payment_method".into(),
            payment_method: None,
            description: None,
            metadata: Meta::new(),
            latest_charge: None,
            last_payment_error: None,
            invoice: None,
            amount_received: 0,
            canceled_at: None,
            cancellation_reason: None,
            setup_future_usage: None,
            receipt_email: None,
            client_secret: format!("{id}_secret_{}", crate::util::random_chars(24)),
        }
    }

    /// Stores a new payment intent and emits `payment_intent.created`; returns its id.
    pub(crate) fn add_payment_intent(&mut self, pi: PaymentIntent, now: i64) -> String {
        let id = pi.id.clone();
        self.w.payment_intents.insert(id.clone(), pi);
        let v = self.r_payment_intent(&self.w.payment_intents[&id]);
        self.emit("payment_intent.created", v, None, now);
        id
    }

    /// An unconfirmed payment intent for an invoice.
    fn new_invoice_intent(
        &mut self,
        inv: &str,
        customer: &str,
        pm: Option<String>,
        amount: i64,
        currency: &str,
        now: i64,
    ) -> String {
        let mut pi = self.draft_payment_intent(amount, currency, Some(customer.to_string()), now);
        pi.status = if pm.is_some() {
            "requires_confirmation".into()
        } else {
            "requires_payment_method".into()
        };
        pi.payment_method = pm;
        pi.description = Some("Subscription creation".into());
        pi.invoice = Some(inv.to_string());
        self.add_payment_intent(pi, now)
    }

    /// One charge attempt on a payment intent (created if needed). Emits the payment intent and
    /// charge events. Returns the payment intent id and the charge outcome.
    #[allow(clippy::too_many_arguments)]
    pub fn charge(
        &mut self,
        pi_id: Option<String>,
        customer: Option<&str>,
        pm: Option<&str>,
        amount: i64,
        currency: &str,
        description: Option<String>,
        invoice: Option<&str>,
        metadata: Meta,
        now: i64,
    ) -> (String, ChargeResult) {
        let pi_id = match pi_id {
            Some(p) if self.w.payment_intents.contains_key(&p) => p,
            _ => {
                let mut pi =
                    self.draft_payment_intent(amount, currency, customer.map(str::to_string), now);
                pi.description = description.clone();
                pi.metadata = metadata;
                pi.invoice = invoice.map(str::to_string);
                self.add_payment_intent(pi, now)
            }
        };
        let card = pm.and_then(|p| self.w.payment_methods.get(p)).cloned();
        let outcome: Result<(), ApiError> = match &card {
            None => {
                let mut e = ApiError::invalid_code(
                    "payment_intent_unexpected_state",
                    "You must provide a payment method to confirm this PaymentIntent.",
                    None,
                );
                e.status = 400;
                Err(e)
            }
            Some(c) => match &c.behavior {
                CardBehavior::Succeeds => Ok(()),
                CardBehavior::Declines {
                    code,
                    decline_code,
                    message,
                } => Err(ApiError::card(code, Some(decline_code), message)),
                CardBehavior::ChargeFails => Err(ApiError::card(
                    "card_declined",
                    Some("generic_decline"),
                    "Your card was declined.",
                )),
            },
        };
        let ch_id = new_id("ch");
        if let Some(c) = &card {
            let seq = self.w.next_seq();
            let ch = Charge {
                id: ch_id.clone(),
                seq,
                created: now,
                amount,
                amount_refunded: 0,
                currency: currency.to_string(),
                customer: customer.map(str::to_string),
                payment_intent: Some(pi_id.clone()),
                payment_method: Some(c.id.clone()),
                status: if outcome.is_ok() {
                    "succeeded".into()
                } else {
                    "failed".into()
                },
                failure_code: outcome.as_ref().err().and_then(|e| e.code.clone()),
                failure_message: outcome.as_ref().err().map(|e| e.message.clone()),
                decline_code: outcome.as_ref().err().and_then(|e| e.decline_code.clone()),
                description,
                metadata: Meta::new(),
            };
            self.w.charges.insert(ch_id.clone(), ch);
        }
        let pm_json = card.as_ref().map(|c| self.r_payment_method(c));
        if let Some(pi) = self.w.payment_intents.get_mut(&pi_id) {
            pi.payment_method = pm.map(str::to_string);
            pi.amount = amount;
            if card.is_some() {
                pi.latest_charge = Some(ch_id.clone());
            }
            match &outcome {
                Ok(()) => {
                    pi.status = "succeeded".into();
                    pi.amount_received = amount;
                    pi.last_payment_error = None;
                }
                Err(e) => {
                    pi.status = "requires_payment_method".into();
                    let mut le = e.body()["error"].clone();
                    if card.is_some() {
                        le["charge"] = json!(ch_id);
                    }
                    le["payment_method"] = pm_json.clone().unwrap_or(Value::Null);
                    pi.last_payment_error = Some(le);
                    pi.payment_method = None;
                }
            }
        }
        if card.is_some() {
            let cv = self.r_charge(&self.w.charges[&ch_id]);
            self.emit(
                if outcome.is_ok() {
                    "charge.succeeded"
                } else {
                    "charge.failed"
                },
                cv,
                None,
                now,
            );
        }
        let pv = self.r_payment_intent(&self.w.payment_intents[&pi_id]);
        match outcome {
            Ok(()) => {
                self.emit("payment_intent.succeeded", pv, None, now);
                (pi_id, Ok(ch_id))
            }
            Err(mut e) => {
                self.emit("payment_intent.payment_failed", pv.clone(), None, now);
                if card.is_some() {
                    e.extra.insert("charge".into(), json!(ch_id));
                }
                e.extra.insert("payment_intent".into(), pv);
                if let Some(p) = pm_json {
                    e.extra.insert("payment_method".into(), p);
                }
                (pi_id, Err(e))
            }
        }
    }

    /// Attempts to collect an open invoice. `automatic` attempts follow the retry schedule.
    pub fn pay_invoice(
        &mut self,
        id: &str,
        now: i64,
        pm_override: Option<String>,
        automatic: bool,
    ) -> Result<(), ApiError> {
        let inv = self.invoice(id, "invoice")?.clone();
        if inv.status == "paid" {
            return Err(ApiError::invalid_code(
                "invoice_already_paid",
                "Invoice is already paid",
                None,
            ));
        }
        if inv.status != "open" {
            return Err(ApiError::invalid_code(
                "invoice_not_editable",
                format!(
                    "You can only pay an invoice that is open. This invoice is {}.",
                    inv.status
                ),
                None,
            ));
        }
        let amount = inv.amount_remaining();
        if amount == 0 {
            self.mark_paid(id, now);
            return Ok(());
        }
        let pm = pm_override
            .or_else(|| inv.default_payment_method.clone())
            .or_else(|| self.resolve_pm(&inv.customer, inv.subscription.as_deref()));
        let desc = Some(if inv.subscription.is_some() {
            "Subscription update".to_string()
        } else {
            format!("Invoice {}", inv.number.clone().unwrap_or_default())
        });
        let (pi, res) = self.charge(
            inv.payment_intent.clone(),
            Some(&inv.customer),
            pm.as_deref(),
            amount,
            &inv.currency,
            desc,
            Some(id),
            Meta::new(),
            now,
        );
        let attempts;
        {
            let Some(i) = self.w.invoices.get_mut(id) else {
                return Ok(());
            };
            i.payment_intent = Some(pi);
            i.attempt_count += 1;
            i.attempted = true;
            attempts = i.attempt_count;
        }
        match res {
            Ok(_) => {
                if let Some(i) = self.w.invoices.get_mut(id) {
                    i.amount_paid += amount;
                }
                self.mark_paid_after_charge(id, now);
                Ok(())
            }
            Err(e) => {
                let schedule = self.cfg.retry_schedule_days.clone();
                // Stripe does not retry a hard decline: the invoice waits for a new payment method.
                let hard = e.decline_code.as_deref().is_some_and(is_hard_decline);
                let next = if inv.collection_method == "charge_automatically"
                    && !hard
                    && (attempts as usize) <= schedule.len()
                    && inv.billing_reason != "subscription_create"
                {
                    Some(now + schedule[(attempts - 1) as usize] * DAY)
                } else {
                    None
                };
                if let Some(i) = self.w.invoices.get_mut(id) {
                    i.next_payment_attempt = next;
                }
                let v = self.r_invoice(&self.w.invoices[id], false);
                self.emit("invoice.payment_failed", v, None, now);
                self.after_invoice_failed(id, now, automatic && next.is_none() && !hard);
                Err(e)
            }
        }
    }

    /// Retries at once the latest open, already attempted invoice of each of the customer's past
    /// due subscriptions: what Stripe does when a past-due customer replaces the card (a hard
    /// decline is retried only this way). Failures are recorded like any attempt.
    pub fn retry_past_due(&mut self, customer: &str, now: i64) {
        let subs: Vec<String> = self
            .w
            .subscriptions
            .values()
            .filter(|s| s.customer == customer && s.status == "past_due")
            .map(|s| s.id.clone())
            .collect();
        for sub in subs {
            let latest = self
                .w
                .invoices
                .values()
                .filter(|i| {
                    i.subscription.as_deref() == Some(sub.as_str())
                        && i.status == "open"
                        && i.attempt_count > 0
                })
                .max_by_key(|i| (i.created, i.seq))
                .map(|i| i.id.clone());
            if let Some(id) = latest {
                let _ = self.pay_invoice(&id, now, None, false);
            }
        }
    }

    fn mark_paid_after_charge(&mut self, id: &str, now: i64) {
        if let Some(i) = self.w.invoices.get_mut(id) {
            i.status = "paid".into();
            i.paid_at = Some(now);
            i.next_payment_attempt = None;
            i.auto_advance = false;
        }
        let v = self.r_invoice(&self.w.invoices[id], false);
        self.emit("invoice.paid", v.clone(), None, now);
        self.emit("invoice.payment_succeeded", v, None, now);
        self.after_invoice_paid(id, now);
    }

    fn after_invoice_paid(&mut self, id: &str, now: i64) {
        let Some(sub_id) = self.w.invoices.get(id).and_then(|i| i.subscription.clone()) else {
            return;
        };
        self.apply_pending_update(&sub_id, id, now);
        let Some(sub) = self.w.subscriptions.get(&sub_id).cloned() else {
            return;
        };
        let other_open = self.w.invoices.values().any(|i| {
            i.id != id
                && i.subscription.as_deref() == Some(&sub_id)
                && i.status == "open"
                && i.attempt_count > 0
        });
        if matches!(sub.status.as_str(), "incomplete" | "past_due" | "unpaid") && !other_open {
            let before = self.r_subscription(&sub);
            if let Some(s) = self.w.subscriptions.get_mut(&sub_id) {
                s.status = if s.trial_end.is_some_and(|t| now < t) {
                    "trialing".into()
                } else {
                    "active".into()
                };
            }
            let after = self.r_subscription(&self.w.subscriptions[&sub_id]);
            self.emit_updated("customer.subscription.updated", &before, after, now);
        }
    }

    fn after_invoice_failed(&mut self, id: &str, now: i64, exhausted: bool) {
        let Some(inv) = self.w.invoices.get(id).cloned() else {
            return;
        };
        let Some(sub_id) = inv.subscription.clone() else {
            return;
        };
        let Some(sub) = self.w.subscriptions.get(&sub_id).cloned() else {
            return;
        };
        if inv.billing_reason == "subscription_create"
            || matches!(
                sub.status.as_str(),
                "canceled" | "incomplete_expired" | "incomplete"
            )
        {
            return;
        }
        if exhausted {
            match self.cfg.after_retries {
                AfterRetries::Cancel => {
                    self.cancel_subscription(&sub_id, now, Some("payment_failed"));
                    return;
                }
                AfterRetries::Unpaid => {
                    self.set_sub_status(&sub_id, "unpaid", now);
                    return;
                }
                AfterRetries::PastDue => {}
            }
        }
        if matches!(sub.status.as_str(), "active" | "trialing") {
            self.set_sub_status(&sub_id, "past_due", now);
        }
    }

    fn set_sub_status(&mut self, sub_id: &str, status: &str, now: i64) {
        let Some(sub) = self.w.subscriptions.get(sub_id) else {
            return;
        };
        let before = self.r_subscription(sub);
        if let Some(s) = self.w.subscriptions.get_mut(sub_id) {
            s.status = status.to_string();
        }
        let after = self.r_subscription(&self.w.subscriptions[sub_id]);
        self.emit_updated("customer.subscription.updated", &before, after, now);
    }

    /// Cancels now: status canceled, `customer.subscription.deleted`.
    pub fn cancel_subscription(&mut self, sub_id: &str, now: i64, reason: Option<&str>) {
        let Some(s) = self.w.subscriptions.get_mut(sub_id) else {
            return;
        };
        if s.status == "canceled" {
            return;
        }
        s.status = "canceled".into();
        s.canceled_at = Some(s.canceled_at.unwrap_or(now));
        // A schedule ends with its subscription.
        if let Some(sc) = s.schedule.take() {
            if let Some(x) = self.w.subscription_schedules.get_mut(&sc) {
                x.status = "canceled".into();
                x.canceled_at = Some(now);
            }
        }
        let Some(s) = self.w.subscriptions.get_mut(sub_id) else {
            return;
        };
        s.ended_at = Some(now);
        if s.cancellation_reason.is_none() {
            s.cancellation_reason = Some(reason.unwrap_or("cancellation_requested").to_string());
        }
        let v = self.r_subscription(&self.w.subscriptions[sub_id]);
        self.dirty = true;
        self.emit("customer.subscription.deleted", v, None, now);
        // Open invoices of a canceled subscription stop being retried.
        for i in self.w.invoices.values_mut() {
            if i.subscription.as_deref() == Some(sub_id) && i.status == "open" {
                i.next_payment_attempt = None;
            }
        }
    }

    /// Creates a subscription and its first invoice, and collects it.
    pub fn create_subscription(&mut self, n: NewSub, now: i64) -> Result<String, ApiError> {
        let nested = self.held.is_some();
        if !nested {
            self.hold_events();
        }
        let res = self.create_subscription_inner(n, now);
        if !nested {
            match &res {
                Ok(id) => {
                    let id = id.clone();
                    self.release_events(
                        "customer.subscription.created",
                        &id,
                        "customer.subscription.updated",
                    );
                }
                Err(_) => {
                    // A refused creation leaves only the failed payment attempt behind.
                    if let Some(h) = self.held.as_mut() {
                        h.retain(|e| {
                            e.0.starts_with("payment_intent.")
                                || e.0.starts_with("charge.")
                                || e.0.starts_with("payment_method.")
                        });
                    }
                    self.release_events("", "", "");
                }
            }
        }
        res
    }

    fn create_subscription_inner(&mut self, n: NewSub, now: i64) -> Result<String, ApiError> {
        if n.items.is_empty() {
            return Err(ApiError::missing_param("items"));
        }
        let mut currency = None;
        let mut interval: Option<(String, i64)> = None;
        for (i, it) in n.items.iter().enumerate() {
            let p = self.price(&it.price, &format!("items[{i}][price]"))?;
            let Some(r) = &p.recurring else {
                return Err(ApiError::invalid("The price specified is set to `type=one_time` but this field only accepts prices with `type=recurring`.".to_string(), Some(format!("items[{i}][price]"))));
            };
            if !p.active {
                return Err(ApiError::invalid(
                    "The price specified is inactive. This field only accepts active prices."
                        .to_string(),
                    Some(format!("items[{i}][price]")),
                ));
            }
            match &currency {
                None => currency = Some(p.currency.clone()),
                Some(c) if *c != p.currency => {
                    return Err(ApiError::invalid(
                        "All prices on a subscription must have the same `currency`.",
                        Some(format!("items[{i}][price]")),
                    ))
                }
                _ => {}
            }
            match &interval {
                None => interval = Some((r.interval.clone(), r.interval_count)),
                Some((iv, c)) if *iv != r.interval || *c != r.interval_count => {
                    return Err(ApiError::invalid("All prices on a subscription must have the same `recurring.interval` and `recurring.interval_count`.", Some(format!("items[{i}][price]"))))
                }
                _ => {}
            }
        }
        let currency = currency.unwrap_or_else(|| "usd".into());
        self.same_currency(&n.customer, &currency)?;
        let (iv, ic) = interval.unwrap_or(("month".into(), 1));
        if let Some(pm) = &n.default_payment_method {
            let pmo = self.payment_method(pm, "default_payment_method")?;
            if pmo.customer.as_deref() != Some(n.customer.as_str()) {
                return Err(ApiError::invalid(
                    format!("The payment method `{pm}` must be attached to the customer."),
                    Some("default_payment_method".into()),
                ));
            }
        }
        let trial = n.trial_end.filter(|t| *t > now);
        let (anchor, cycle, ps, pe) = match trial {
            Some(t) => (t, -1, now, t),
            None => (now, 0, now, add_interval(now, &iv, ic, 1)),
        };
        let sub_id = new_id("sub");
        let items: Vec<SubItem> = n
            .items
            .iter()
            .map(|it| {
                let metered = self.w.prices.get(&it.price).is_some_and(|p| p.is_metered());
                SubItem {
                    id: new_id("si"),
                    created: now,
                    price: it.price.clone(),
                    quantity: if metered {
                        None
                    } else {
                        Some(it.quantity.unwrap_or(1))
                    },
                    metadata: it.metadata.clone(),
                    current_period_start: ps,
                    current_period_end: pe,
                }
            })
            .collect();
        let mut discounts = vec![];
        for d in &n.discounts {
            if let Some(dd) = self.w.discounts.get_mut(d) {
                dd.subscription = Some(sub_id.clone());
                dd.customer = Some(n.customer.clone());
                discounts.push(d.clone());
            }
        }
        let seq = self.w.next_seq();
        let sub = Subscription {
            id: sub_id.clone(),
            seq,
            customer: n.customer.clone(),
            created: now,
            start_date: now,
            status: if trial.is_some() {
                "trialing".into()
            } else {
                "incomplete".into()
            },
            items,
            billing_cycle_anchor: anchor,
            cycle,
            interval: iv,
            interval_count: ic,
            cancel_at_period_end: n.cancel_at_period_end,
            cancel_at: n.cancel_at,
            canceled_at: None,
            cancellation_reason: None,
            cancellation_comment: None,
            cancellation_feedback: None,
            ended_at: None,
            trial_start: trial.map(|_| now),
            trial_end: trial,
            trial_will_end_sent: false,
            metadata: n.metadata,
            default_payment_method: n.default_payment_method,
            latest_invoice: None,
            currency: currency.clone(),
            discounts,
            collection_method: n.collection_method,
            days_until_due: n.days_until_due,
            description: n.description,
            test_clock: self.clock_of(&n.customer),
            upcoming_sent_for: None,
            schedule: None,
            pending_update: None,
        };
        self.w.subscriptions.insert(sub_id.clone(), sub.clone());
        self.dirty = true;
        let created = self.r_subscription(&sub);
        self.emit("customer.subscription.created", created, None, now);
        let lines: Vec<Line> = sub
            .items
            .iter()
            .filter(|it| !self.w.prices.get(&it.price).is_some_and(|p| p.is_metered()))
            .filter_map(|it| {
                let mut l = self.licensed_line(&sub, it, ps, pe)?;
                if trial.is_some() {
                    l.amount = 0;
                    l.description =
                        Some(format!("Trial period for {}", self.product_name(&it.price)));
                }
                Some(l)
            })
            .collect();
        let inv = self.create_invoice(
            &n.customer,
            Some(&sub_id),
            "subscription_create",
            lines,
            (ps, pe),
            &currency,
            true,
            &sub.discounts,
            now,
        );
        let before = self.r_subscription(&self.w.subscriptions[&sub_id]);
        if let Some(s) = self.w.subscriptions.get_mut(&sub_id) {
            s.latest_invoice = Some(inv.clone());
        }
        if sub.collection_method == "send_invoice" {
            self.finalize_invoice(&inv, now)?;
            if let Some(s) = self.w.subscriptions.get_mut(&sub_id) {
                if s.status == "incomplete" {
                    s.status = "active".into();
                }
            }
            let after = self.r_subscription(&self.w.subscriptions[&sub_id]);
            self.emit_updated("customer.subscription.updated", &before, after, now);
            return Ok(sub_id);
        }
        self.finalize_invoice(&inv, now)?;
        let status = self.w.invoices[&inv].status.clone();
        if status == "open" && n.payment_behavior == "default_incomplete" {
            // Payment waits for the client to confirm the invoice's payment intent.
            let pm = self.resolve_pm(&n.customer, Some(&sub_id));
            let amount = self.w.invoices[&inv].amount_remaining();
            let pi = self.new_invoice_intent(&inv, &n.customer, pm, amount, &currency, now);
            if let Some(i) = self.w.invoices.get_mut(&inv) {
                i.payment_intent = Some(pi);
            }
        } else if status == "open" {
            let res = self.pay_invoice(&inv, now, None, false);
            if let Err(e) = res {
                if n.payment_behavior == "error_if_incomplete" {
                    self.w.subscriptions.remove(&sub_id);
                    self.w.invoices.remove(&inv);
                    for ii in self.w.invoice_items.values_mut() {
                        if ii.invoice.as_deref() == Some(inv.as_str()) {
                            ii.invoice = None;
                        }
                    }
                    for pi in self.w.payment_intents.values_mut() {
                        if pi.invoice.as_deref() == Some(inv.as_str()) {
                            pi.invoice = None;
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(sub_id)
    }

    /// Proration invoice items for moving `qty_old × old` to `qty_new × new` at `now` within the
    /// item's current period.
    fn proration_items(
        &mut self,
        sub: &Subscription,
        it: &SubItem,
        old: Option<(String, i64)>,
        new: Option<(String, i64)>,
        now: i64,
    ) -> Vec<String> {
        let (ps, pe) = (it.current_period_start, it.current_period_end);
        if pe <= now || pe <= ps {
            return vec![];
        }
        let num = (pe - now) as i128;
        let den = (pe - ps) as i128;
        let mut out = vec![];
        for (pq, sign) in [(old, -1i64), (new, 1i64)] {
            let Some((price, q)) = pq else { continue };
            let Some(p) = self.w.prices.get(&price).cloned() else {
                continue;
            };
            if p.is_metered() {
                continue;
            }
            let full = p.amount_for(Dec::from_int(q)) as i128;
            let amt = crate::util::div_round(full * num, den) as i64 * sign;
            let what = if q == 1 {
                self.product_name(&price)
            } else {
                format!("{q} × {}", self.product_name(&price))
            };
            let desc = if sign < 0 {
                format!("Unused time on {what} after {}", ymd(now))
            } else {
                format!("Remaining time on {what} after {}", ymd(now))
            };
            let id = new_id("ii");
            let seq = self.w.next_seq();
            self.w.invoice_items.insert(
                id.clone(),
                InvoiceItem {
                    id: id.clone(),
                    seq,
                    customer: sub.customer.clone(),
                    amount: amt,
                    currency: p.currency.clone(),
                    description: Some(desc),
                    date: now,
                    period_start: now,
                    period_end: pe,
                    proration: true,
                    quantity: q,
                    unit_amount: p.unit_amount,
                    price: Some(price.clone()),
                    invoice: None,
                    subscription: Some(sub.id.clone()),
                    subscription_item: Some(it.id.clone()),
                    metadata: Meta::new(),
                    discountable: false,
                    test_clock: sub.test_clock.clone(),
                    deleted: false,
                },
            );
            let v = self.r_invoice_item(&self.w.invoice_items[&id]);
            self.emit("invoiceitem.created", v, None, now);
            out.push(id);
        }
        out
    }

    /// Applies item changes with the given proration behaviour.
    pub fn update_items(
        &mut self,
        sub_id: &str,
        changes: Vec<ItemChange>,
        proration: &str,
        now: i64,
    ) -> Result<(), ApiError> {
        self.update_items_with(sub_id, changes, proration, now, false)
    }

    /// [`Sim::update_items`]; with `pending_if_incomplete`, an update whose immediate invoice
    /// is not paid is not applied: the subscription keeps its items and carries the change as
    /// `pending_update` until that invoice is paid or 23 hours pass.
    pub fn update_items_with(
        &mut self,
        sub_id: &str,
        changes: Vec<ItemChange>,
        proration: &str,
        now: i64,
        pending_if_incomplete: bool,
    ) -> Result<(), ApiError> {
        if !pending_if_incomplete {
            return self.update_items_inner(sub_id, changes, proration, now);
        }
        let saved = self.subscription(sub_id, "id")?.clone();
        let nested = self.held.is_some();
        if !nested {
            self.hold_events();
        }
        let res = self.update_items_inner(sub_id, changes, proration, now);
        let after = self.w.subscriptions[sub_id].clone();
        let unpaid = after
            .latest_invoice
            .as_ref()
            .filter(|i| saved.latest_invoice.as_ref() != Some(*i))
            .filter(|i| self.w.invoices.get(*i).is_some_and(|x| x.status == "open"))
            .cloned();
        if let (Ok(()), Some(inv)) = (&res, unpaid) {
            // Only the payment attempt is left behind: no retries, no past due.
            if let Some(i) = self.w.invoices.get_mut(&inv) {
                i.next_payment_attempt = None;
            }
            let mut kept = saved.clone();
            kept.latest_invoice = Some(inv.clone());
            kept.pending_update = Some(PendingUpdate {
                expires_at: now + 23 * 3600,
                after: Box::new(after),
                invoice: inv,
            });
            self.w.subscriptions.insert(sub_id.to_string(), kept);
            if let Some(h) = self.held.as_mut() {
                h.retain(|e| {
                    !(e.0 == "customer.subscription.updated"
                        && e.1.get("id").and_then(Value::as_str) == Some(sub_id))
                });
            }
            let before = self.r_subscription(&saved);
            let now_v = self.r_subscription(&self.w.subscriptions[sub_id]);
            self.emit_updated("customer.subscription.updated", &before, now_v, now);
        }
        if !nested {
            self.release_events("", "", "");
        }
        res
    }

    /// Applies a pending update once its invoice is paid.
    fn apply_pending_update(&mut self, sub_id: &str, invoice: &str, now: i64) {
        let Some(sub) = self.w.subscriptions.get(sub_id).cloned() else {
            return;
        };
        let Some(pu) = sub.pending_update.clone().filter(|p| p.invoice == invoice) else {
            return;
        };
        let before = self.r_subscription(&sub);
        let mut next = *pu.after;
        next.pending_update = None;
        next.latest_invoice = Some(invoice.to_string());
        next.status = sub.status.clone();
        next.cancel_at_period_end = sub.cancel_at_period_end;
        next.cancel_at = sub.cancel_at;
        next.schedule = sub.schedule.clone();
        self.w.subscriptions.insert(sub_id.to_string(), next);
        let after = self.r_subscription(&self.w.subscriptions[sub_id]);
        self.emit_updated("customer.subscription.updated", &before, after, now);
    }

    /// Drops an expired pending update and voids its invoice.
    fn expire_pending_update(&mut self, sub_id: &str, now: i64) {
        let Some(sub) = self.w.subscriptions.get(sub_id).cloned() else {
            return;
        };
        let Some(pu) = sub.pending_update.clone() else {
            return;
        };
        if self
            .w
            .invoices
            .get(&pu.invoice)
            .is_some_and(|x| x.status == "open")
        {
            if let Some(x) = self.w.invoices.get_mut(&pu.invoice) {
                x.status = "void".into();
                x.voided_at = Some(now);
                x.next_payment_attempt = None;
            }
            let v = self.r_invoice(&self.w.invoices[&pu.invoice], false);
            self.emit("invoice.voided", v, None, now);
        }
        let before = self.r_subscription(&sub);
        if let Some(x) = self.w.subscriptions.get_mut(sub_id) {
            x.pending_update = None;
        }
        let after = self.r_subscription(&self.w.subscriptions[sub_id]);
        self.emit_updated("customer.subscription.updated", &before, after, now);
    }

    fn update_items_inner(
        &mut self,
        sub_id: &str,
        changes: Vec<ItemChange>,
        proration: &str,
        now: i64,
    ) -> Result<(), ApiError> {
        let sub = self.subscription(sub_id, "id")?.clone();
        if sub.status == "canceled" || sub.status == "incomplete_expired" {
            return Err(ApiError::invalid(
                "A canceled subscription can only update its cancellation_details and metadata."
                    .to_string(),
                None,
            ));
        }
        let mut items = sub.items.clone();
        let mut new_interval: Option<(String, i64)> = None;
        let mut prorations: Vec<ProrationChange> = vec![];
        for (i, ch) in changes.into_iter().enumerate() {
            if let Some(p) = &ch.price {
                let pr = self.price(p, &format!("items[{i}][price]"))?.clone();
                let Some(r) = &pr.recurring else {
                    return Err(ApiError::invalid("The price specified is set to `type=one_time` but this field only accepts prices with `type=recurring`.", Some(format!("items[{i}][price]"))));
                };
                if pr.currency != sub.currency {
                    return Err(ApiError::invalid(
                        "All prices on a subscription must have the same `currency`.",
                        Some(format!("items[{i}][price]")),
                    ));
                }
                if r.interval != sub.interval || r.interval_count != sub.interval_count {
                    new_interval = Some((r.interval.clone(), r.interval_count));
                }
            }
            match &ch.id {
                Some(id) => {
                    let pos = items.iter().position(|x| x.id == *id).ok_or_else(|| {
                        ApiError::no_such("subscription_item", id, &format!("items[{i}][id]"))
                    })?;
                    let old = items[pos].clone();
                    if ch.deleted {
                        prorations.push((
                            Some((old.price.clone(), old.quantity.unwrap_or(1))),
                            None,
                            old.clone(),
                        ));
                        items.remove(pos);
                        continue;
                    }
                    let it = &mut items[pos];
                    if let Some(p) = ch.price {
                        it.price = p;
                    }
                    let metered = self.w.prices.get(&it.price).is_some_and(|p| p.is_metered());
                    it.quantity = if metered {
                        None
                    } else {
                        Some(ch.quantity.or(it.quantity).unwrap_or(1))
                    };
                    if let Some(m) = ch.metadata {
                        it.metadata = m;
                    }
                    if it.price != old.price || it.quantity != old.quantity {
                        prorations.push((
                            Some((old.price.clone(), old.quantity.unwrap_or(1))),
                            Some((it.price.clone(), it.quantity.unwrap_or(1))),
                            it.clone(),
                        ));
                    }
                }
                None => {
                    let Some(p) = ch.price else {
                        return Err(ApiError::missing_param(&format!("items[{i}][price]")));
                    };
                    let metered = self.w.prices.get(&p).is_some_and(|x| x.is_metered());
                    let first = &sub.items[0];
                    let it = SubItem {
                        id: new_id("si"),
                        created: now,
                        price: p.clone(),
                        quantity: if metered {
                            None
                        } else {
                            Some(ch.quantity.unwrap_or(1))
                        },
                        metadata: ch.metadata.unwrap_or_default(),
                        current_period_start: first.current_period_start,
                        current_period_end: first.current_period_end,
                    };
                    prorations.push((None, Some((p, it.quantity.unwrap_or(1))), it.clone()));
                    items.push(it);
                }
            }
        }
        if items.is_empty() {
            return Err(ApiError::invalid(
                "A subscription must have at least one active item.",
                Some("items".into()),
            ));
        }
        let before = self.r_subscription(&sub);
        let trialing = sub.status == "trialing";
        if let Some((iv, ic)) = new_interval {
            // Changing the interval restarts the billing cycle now and invoices at once.
            // The credits become pending items, which the immediate invoice picks up.
            if proration != "none" && !trialing {
                for (old, _, it) in &prorations {
                    self.proration_items(&sub, it, old.clone(), None, now);
                }
            }
            let end = add_interval(now, &iv, ic, 1);
            if let Some(s) = self.w.subscriptions.get_mut(sub_id) {
                s.items = items;
                s.interval = iv;
                s.interval_count = ic;
                s.billing_cycle_anchor = now;
                s.cycle = 0;
                if trialing {
                    s.trial_end = Some(now);
                    s.status = "active".into();
                }
                for it in s.items.iter_mut() {
                    it.current_period_start = now;
                    it.current_period_end = end;
                }
            }
            let s = self.w.subscriptions[sub_id].clone();
            let lines: Vec<Line> = s
                .items
                .iter()
                .filter(|it| !self.w.prices.get(&it.price).is_some_and(|p| p.is_metered()))
                .filter_map(|it| self.licensed_line(&s, it, now, end))
                .collect();
            let inv = self.create_invoice(
                &s.customer,
                Some(sub_id),
                "subscription_update",
                lines,
                (now, end),
                &s.currency,
                true,
                &s.discounts,
                now,
            );
            if let Some(x) = self.w.subscriptions.get_mut(sub_id) {
                x.latest_invoice = Some(inv.clone());
            }
            let after = self.r_subscription(&self.w.subscriptions[sub_id]);
            self.emit_updated("customer.subscription.updated", &before, after, now);
            self.finalize_invoice(&inv, now)?;
            if self.w.invoices[&inv].status == "open" {
                let _ = self.pay_invoice(&inv, now, None, true);
            }
            return Ok(());
        }
        if let Some(s) = self.w.subscriptions.get_mut(sub_id) {
            s.items = items;
        }
        let mut created = vec![];
        if proration != "none" && !trialing {
            for (old, new, it) in &prorations {
                created.extend(self.proration_items(&sub, it, old.clone(), new.clone(), now));
            }
        }
        let after = self.r_subscription(&self.w.subscriptions[sub_id]);
        self.emit_updated("customer.subscription.updated", &before, after, now);
        if proration == "always_invoice" && !created.is_empty() {
            let s = self.w.subscriptions[sub_id].clone();
            let pe = s.items[0].current_period_end;
            let inv = self.create_invoice(
                &s.customer,
                Some(sub_id),
                "subscription_update",
                vec![],
                (now, pe),
                &s.currency,
                true,
                &s.discounts,
                now,
            );
            let before = self.r_subscription(&s);
            if let Some(x) = self.w.subscriptions.get_mut(sub_id) {
                x.latest_invoice = Some(inv.clone());
            }
            let after = self.r_subscription(&self.w.subscriptions[sub_id]);
            self.emit_updated("customer.subscription.updated", &before, after, now);
            self.finalize_invoice(&inv, now)?;
            if self.w.invoices[&inv].status == "open" {
                let _ = self.pay_invoice(&inv, now, None, true);
            }
        }
        Ok(())
    }

    /// Ends the current period of a subscription at its end: cancels it, or starts the next
    /// period and drafts its invoice (licensed items in advance, metered usage in arrears).
    fn renew(&mut self, sub_id: &str) {
        if let Some(s) = self.w.subscriptions.get(sub_id) {
            let ending = s.cancel_at_period_end;
            if let (Some(pe), false) = (s.items.first().map(|i| i.current_period_end), ending) {
                self.schedule_transition(sub_id, pe);
            }
        }
        let Some(sub) = self.w.subscriptions.get(sub_id).cloned() else {
            return;
        };
        let Some(first) = sub.items.first() else {
            return;
        };
        let (ps, pe) = (first.current_period_start, first.current_period_end);
        let now = pe;
        let usage_lines: Vec<Line> = sub
            .items
            .iter()
            .filter(|it| self.w.prices.get(&it.price).is_some_and(|p| p.is_metered()))
            .filter_map(|it| self.metered_line(&sub, it, ps, pe))
            .collect();
        let ending = sub.cancel_at_period_end || sub.cancel_at.is_some_and(|c| c <= pe);
        if ending {
            if usage_lines.iter().any(|l| l.amount != 0) {
                let inv = self.create_invoice(
                    &sub.customer,
                    Some(sub_id),
                    "subscription_cycle",
                    usage_lines,
                    (ps, pe),
                    &sub.currency,
                    true,
                    &sub.discounts,
                    now,
                );
                if let Some(s) = self.w.subscriptions.get_mut(sub_id) {
                    s.latest_invoice = Some(inv);
                }
            }
            self.cancel_subscription(sub_id, now, Some("cancellation_requested"));
            return;
        }
        let before = self.r_subscription(&sub);
        let (next_cycle, anchor) = if sub.cycle < 0 {
            (0, pe)
        } else {
            (sub.cycle + 1, sub.billing_cycle_anchor)
        };
        let ns = pe;
        let ne = add_interval(anchor, &sub.interval, sub.interval_count, next_cycle + 1);
        if let Some(s) = self.w.subscriptions.get_mut(sub_id) {
            s.cycle = next_cycle;
            s.billing_cycle_anchor = anchor;
            for it in s.items.iter_mut() {
                it.current_period_start = ns;
                it.current_period_end = ne;
            }
            if s.status == "trialing" {
                s.status = "active".into();
            }
        }
        let s = self.w.subscriptions[sub_id].clone();
        let mut lines: Vec<Line> = s
            .items
            .iter()
            .filter(|it| !self.w.prices.get(&it.price).is_some_and(|p| p.is_metered()))
            .filter_map(|it| self.licensed_line(&s, it, ns, ne))
            .collect();
        lines.extend(usage_lines);
        let inv = self.create_invoice(
            &s.customer,
            Some(sub_id),
            "subscription_cycle",
            lines,
            (ps, pe),
            &s.currency,
            true,
            &s.discounts,
            now,
        );
        if s.status == "unpaid" {
            if let Some(i) = self.w.invoices.get_mut(&inv) {
                i.auto_advance = false;
                i.automatically_finalizes_at = None;
            }
        }
        if let Some(x) = self.w.subscriptions.get_mut(sub_id) {
            x.latest_invoice = Some(inv);
        }
        let after = self.r_subscription(&self.w.subscriptions[sub_id]);
        self.emit_updated("customer.subscription.updated", &before, after, now);
    }

    /// At a period boundary `at`, moves a scheduled subscription into the phase that starts
    /// then (its items, and a new billing cycle if the interval changes), or ends the schedule
    /// after its last phase (released, or the subscription canceled).
    fn schedule_transition(&mut self, sub_id: &str, at: i64) {
        let Some(sched_id) = self
            .w
            .subscriptions
            .get(sub_id)
            .and_then(|s| s.schedule.clone())
        else {
            return;
        };
        let Some(sc) = self.w.subscription_schedules.get(&sched_id).cloned() else {
            return;
        };
        let Some(last) = sc.phases.last() else {
            return;
        };
        if at >= last.end_date {
            if sc.end_behavior == "cancel" {
                if let Some(x) = self.w.subscription_schedules.get_mut(&sched_id) {
                    x.status = "completed".into();
                    x.completed_at = Some(at);
                }
                if let Some(x) = self.w.subscriptions.get_mut(sub_id) {
                    x.cancel_at_period_end = true;
                }
                let v = self.r_schedule(&self.w.subscription_schedules[&sched_id]);
                self.emit("subscription_schedule.completed", v, None, at);
            } else {
                self.release_schedule(&sched_id, at);
            }
            return;
        }
        let Some(ph) = sc
            .phases
            .iter()
            .find(|p| p.start_date <= at && at < p.end_date)
            .cloned()
        else {
            return;
        };
        let sub = self.w.subscriptions[sub_id].clone();
        let current: Vec<(String, Option<i64>)> = sub
            .items
            .iter()
            .map(|i| (i.price.clone(), i.quantity))
            .collect();
        let wanted: Vec<(String, Option<i64>)> = ph
            .items
            .iter()
            .map(|(p, q)| {
                let metered = self.w.prices.get(p).is_some_and(|x| x.is_metered());
                (p.clone(), if metered { None } else { Some(q.unwrap_or(1)) })
            })
            .collect();
        if current == wanted {
            return;
        }
        let before_sched = self.r_schedule(&sc);
        let items: Vec<SubItem> = wanted
            .iter()
            .enumerate()
            .map(|(k, (price, q))| match sub.items.get(k) {
                Some(old) if old.price == *price => SubItem {
                    quantity: *q,
                    ..old.clone()
                },
                _ => SubItem {
                    id: new_id("si"),
                    created: at,
                    price: price.clone(),
                    quantity: *q,
                    metadata: Default::default(),
                    current_period_start: sub.items[0].current_period_start,
                    current_period_end: sub.items[0].current_period_end,
                },
            })
            .collect();
        let (iv, ic) = self
            .w
            .prices
            .get(&wanted[0].0)
            .and_then(|p| p.recurring.clone())
            .map_or((sub.interval.clone(), sub.interval_count), |r| {
                (r.interval, r.interval_count)
            });
        if let Some(x) = self.w.subscriptions.get_mut(sub_id) {
            x.items = items;
            if iv != x.interval || ic != x.interval_count {
                // A new interval starts a new billing cycle at the phase start.
                x.interval = iv;
                x.interval_count = ic;
                x.cycle = -1;
            }
        }
        let after_sched = self.r_schedule(&self.w.subscription_schedules[&sched_id]);
        let mut b = before_sched;
        // The current phase moved on: the renewal is what changed it.
        b["current_phase"] = serde_json::json!({"start_date": sc.phases[0].start_date, "end_date": sc.phases[0].end_date});
        self.emit_updated("subscription_schedule.updated", &b, after_sched, at);
    }

    /// Detaches a schedule from its subscription, which keeps its current items.
    pub fn release_schedule(&mut self, sched_id: &str, now: i64) {
        let Some(sc) = self.w.subscription_schedules.get(sched_id).cloned() else {
            return;
        };
        if let Some(x) = self.w.subscription_schedules.get_mut(sched_id) {
            x.status = "released".into();
            x.released_at = Some(now);
            x.released_subscription = sc.subscription.clone();
            x.subscription = None;
        }
        self.dirty = true;
        let v = self.r_schedule(&self.w.subscription_schedules[sched_id]);
        self.emit("subscription_schedule.released", v, None, now);
        if let Some(sub_id) = &sc.subscription {
            if let Some(sub) = self.w.subscriptions.get(sub_id).cloned() {
                let before = self.r_subscription(&sub);
                if let Some(x) = self.w.subscriptions.get_mut(sub_id) {
                    x.schedule = None;
                }
                let after = self.r_subscription(&self.w.subscriptions[sub_id]);
                self.emit_updated("customer.subscription.updated", &before, after, now);
            }
        }
    }

    /// The earliest pending timeline action for objects on `clock` (None = wall-clock objects).
    fn next_action(&self, clock: Option<&str>) -> Option<(i64, Action)> {
        let mut best: Option<(i64, Action)> = None;
        let mut consider = |t: i64, a: Action| {
            if best.as_ref().is_none_or(|(bt, _)| t < *bt) {
                best = Some((t, a));
            }
        };
        for s in self
            .w
            .subscriptions
            .values()
            .filter(|s| s.test_clock.as_deref() == clock)
        {
            match s.status.as_str() {
                "canceled" | "incomplete_expired" => continue,
                "incomplete" => {
                    consider(s.created + INCOMPLETE_EXPIRY, Action::Expire(s.id.clone()));
                    continue;
                }
                _ => {}
            }
            let Some(first) = s.items.first() else {
                continue;
            };
            if let Some(pu) = &s.pending_update {
                consider(pu.expires_at, Action::ExpirePendingUpdate(s.id.clone()));
            }
            if s.status == "trialing" && !s.trial_will_end_sent {
                if let Some(te) = s.trial_end {
                    consider(
                        (te - 3 * DAY).max(s.created),
                        Action::TrialWillEnd(s.id.clone()),
                    );
                }
            }
            if let Some(c) = s.cancel_at {
                if c < first.current_period_end {
                    consider(c, Action::CancelAt(s.id.clone()));
                }
            }
            let up = first.current_period_end - 7 * DAY;
            if up > first.current_period_start
                && s.upcoming_sent_for != Some(first.current_period_end)
                && !s.cancel_at_period_end
            {
                consider(up, Action::Upcoming(s.id.clone()));
            }
            consider(first.current_period_end, Action::Renew(s.id.clone()));
        }
        for i in self
            .w
            .invoices
            .values()
            .filter(|i| i.test_clock.as_deref() == clock)
        {
            if i.status == "draft" && i.auto_advance {
                if let Some(t) = i.automatically_finalizes_at {
                    consider(t, Action::Finalize(i.id.clone()));
                }
            }
            if i.status == "open" && i.collection_method == "charge_automatically" {
                if let Some(t) = i.next_payment_attempt {
                    consider(t, Action::Retry(i.id.clone()));
                }
            }
        }
        best
    }

    /// Runs every timeline action due up to `until`, in time order.
    pub fn run_until(&mut self, clock: Option<&str>, until: i64) {
        for _ in 0..100_000 {
            let Some((t, action)) = self.next_action(clock) else {
                break;
            };
            if t > until {
                break;
            }
            if let Some(c) = clock.and_then(|c| self.w.test_clocks.get_mut(c)) {
                c.frozen_time = c.frozen_time.max(t);
            }
            self.dirty = true;
            match action {
                Action::Renew(s) => self.renew(&s),
                Action::ExpirePendingUpdate(s) => self.expire_pending_update(&s, t),
                Action::CancelAt(s) => {
                    self.cancel_subscription(&s, t, Some("cancellation_requested"))
                }
                Action::Expire(s) => {
                    // The unpaid first invoice is voided with it.
                    let inv = self
                        .w
                        .subscriptions
                        .get(&s)
                        .and_then(|x| x.latest_invoice.clone());
                    if let Some(i) =
                        inv.filter(|i| self.w.invoices.get(i).is_some_and(|x| x.status == "open"))
                    {
                        if let Some(x) = self.w.invoices.get_mut(&i) {
                            x.status = "void".into();
                            x.voided_at = Some(t);
                            x.next_payment_attempt = None;
                        }
                        let v = self.r_invoice(&self.w.invoices[&i], false);
                        self.emit("invoice.voided", v, None, t);
                    }
                    self.set_sub_status(&s, "incomplete_expired", t);
                }
                Action::TrialWillEnd(s) => {
                    if let Some(x) = self.w.subscriptions.get_mut(&s) {
                        x.trial_will_end_sent = true;
                    }
                    let v = self.r_subscription(&self.w.subscriptions[&s]);
                    self.emit("customer.subscription.trial_will_end", v, None, t);
                }
                Action::Upcoming(s) => self.upcoming(&s, t),
                Action::Finalize(i) => {
                    if self.finalize_invoice(&i, t).is_ok()
                        && self.w.invoices.get(&i).is_some_and(|x| x.status == "open")
                    {
                        let _ = self.pay_invoice(&i, t, None, true);
                    }
                }
                Action::Retry(i) => {
                    let _ = self.pay_invoice(&i, t, None, true);
                }
            }
        }
    }

    fn upcoming(&mut self, sub_id: &str, t: i64) {
        let Some(s) = self.w.subscriptions.get_mut(sub_id) else {
            return;
        };
        let pe = s.items.first().map(|i| i.current_period_end).unwrap_or(t);
        s.upcoming_sent_for = Some(pe);
        if let Ok(inv) = self.preview_invoice(sub_id, &s_clone_customer(&self.w, sub_id), pe) {
            let v = self.r_invoice(&inv, true);
            self.emit("invoice.upcoming", v, None, t);
        }
    }

    /// The invoice the subscription's next renewal would produce, without storing anything.
    pub fn preview_invoice(
        &self,
        sub_id: &str,
        customer: &str,
        at: i64,
    ) -> Result<Invoice, ApiError> {
        let sub = self.subscription(sub_id, "subscription")?.clone();
        if sub.customer != customer {
            return Err(ApiError::invalid(
                "The subscription does not belong to this customer.",
                Some("subscription".into()),
            ));
        }
        let first = sub
            .items
            .first()
            .ok_or_else(|| ApiError::invalid("Subscription has no items", None))?;
        let (ps, pe) = (first.current_period_start, first.current_period_end);
        let (next_cycle, anchor) = if sub.cycle < 0 {
            (0, pe)
        } else {
            (sub.cycle + 1, sub.billing_cycle_anchor)
        };
        let ne = add_interval(anchor, &sub.interval, sub.interval_count, next_cycle + 1);
        let mut lines: Vec<Line> = vec![];
        for it in &sub.items {
            let metered = self.w.prices.get(&it.price).is_some_and(|p| p.is_metered());
            let l = if metered {
                self.metered_line(&sub, it, ps, pe)
            } else if sub.cancel_at_period_end {
                None
            } else {
                self.licensed_line(&sub, it, pe, ne)
            };
            lines.extend(l);
        }
        for ii in self.pending_items(customer, Some(sub_id), &sub.currency) {
            if let Some(item) = self.w.invoice_items.get(&ii) {
                lines.push(self.item_line(item));
            }
        }
        let c = self.w.customers.get(customer);
        let mut inv = Invoice {
            id: String::new(),
            seq: 0,
            customer: customer.to_string(),
            created: at,
            subscription: Some(sub_id.to_string()),
            subscription_metadata: Some(sub.metadata.clone()),
            billing_reason: if at > 0 {
                "upcoming".into()
            } else {
                "subscription_cycle".into()
            },
            status: "draft".into(),
            lines,
            period_start: ps,
            period_end: pe,
            currency: sub.currency.clone(),
            number: None,
            auto_advance: false,
            attempt_count: 0,
            attempted: false,
            next_payment_attempt: Some(pe + FINALIZE_DELAY),
            amount_paid: 0,
            starting_balance: c.map(|c| c.balance).unwrap_or(0),
            ending_balance: None,
            description: None,
            metadata: Meta::new(),
            discounts: vec![],
            finalized_at: None,
            paid_at: None,
            voided_at: None,
            marked_uncollectible_at: None,
            collection_method: sub.collection_method.clone(),
            payment_intent: None,
            due_date: None,
            effective_at: None,
            test_clock: sub.test_clock.clone(),
            automatically_finalizes_at: None,
            default_payment_method: None,
            customer_email: c.and_then(|c| c.email.clone()),
            customer_name: c.and_then(|c| c.name.clone()),
            last_finalization_error: None,
        };
        let ds = self.active_discounts(&sub.discounts, pe);
        preview_discounts(self, &mut inv, &ds);
        Ok(inv)
    }
}

fn s_clone_customer(w: &World, sub: &str) -> String {
    w.subscriptions
        .get(sub)
        .map(|s| s.customer.clone())
        .unwrap_or_default()
}

/// Discount arithmetic for previews, which must not spend `once` coupons.
fn preview_discounts(sim: &Sim, inv: &mut Invoice, ds: &[Discount]) {
    for d in ds {
        let Some(c) = sim.w.coupons.get(&d.coupon) else {
            continue;
        };
        if let Some(bp) = c.percent_off_bp {
            for l in inv
                .lines
                .iter_mut()
                .filter(|l| l.discountable && l.amount > 0)
            {
                let a = crate::util::div_round(l.amount as i128 * bp as i128, 10_000) as i64;
                if a > 0 {
                    l.discount_amounts.push((a, d.id.clone()));
                }
            }
        } else if let Some(off) = c.amount_off {
            let mut left = off;
            for l in inv
                .lines
                .iter_mut()
                .filter(|l| l.discountable && l.amount > 0)
            {
                let a = left.min(l.amount);
                if a > 0 {
                    l.discount_amounts.push((a, d.id.clone()));
                    left -= a;
                }
            }
        }
        if !inv.discounts.contains(&d.id) {
            inv.discounts.push(d.id.clone());
        }
    }
}

pub fn currency_symbol(c: &str) -> &'static str {
    match c {
        "usd" => "$",
        "eur" => "€",
        "gbp" => "£",
        _ => "",
    }
}

#[derive(Debug, Clone)]
enum Action {
    Renew(String),
    ExpirePendingUpdate(String),
    CancelAt(String),
    Expire(String),
    TrialWillEnd(String),
    Upcoming(String),
    Finalize(String),
    Retry(String),
}

impl Sim {
    /// On immediate cancellation with `invoice_now`: bills metered usage so far and pending
    /// items (such as prorations) at once.
    pub fn final_invoice(&mut self, sub_id: &str, now: i64) {
        let Some(sub) = self.w.subscriptions.get(sub_id).cloned() else {
            return;
        };
        let Some(first) = sub.items.first() else {
            return;
        };
        let ps = first.current_period_start;
        let lines: Vec<Line> = sub
            .items
            .iter()
            .filter(|it| self.w.prices.get(&it.price).is_some_and(|p| p.is_metered()))
            .filter_map(|it| self.metered_line(&sub, it, ps, now))
            .collect();
        let pending = !self
            .pending_items(&sub.customer, Some(sub_id), &sub.currency)
            .is_empty();
        if lines.is_empty() && !pending {
            return;
        }
        let inv = self.create_invoice(
            &sub.customer,
            Some(sub_id),
            "subscription_cycle",
            lines,
            (ps, now),
            &sub.currency,
            true,
            &sub.discounts,
            now,
        );
        if let Some(x) = self.w.subscriptions.get_mut(sub_id) {
            x.latest_invoice = Some(inv.clone());
        }
        if self.finalize_invoice(&inv, now).is_ok()
            && self
                .w
                .invoices
                .get(&inv)
                .is_some_and(|i| i.status == "open")
        {
            let _ = self.pay_invoice(&inv, now, None, false);
        }
    }
}

impl Sim {
    /// A customer bills in one currency: the first subscription or invoice item fixes it.
    pub fn same_currency(&self, customer: &str, currency: &str) -> Result<(), ApiError> {
        match self.w.customers.get(customer).and_then(|c| c.currency.as_deref()) {
            Some(c) if c != currency => Err(ApiError::invalid(
                format!("You cannot combine currencies on a single customer. This customer has had a subscription or payment in {c}, but you are trying to pay in {currency}."),
                Some("currency".into()),
            )),
            _ => Ok(()),
        }
    }

    /// A copy of the world that emits nothing, for previews.
    pub fn shadow(&self) -> Sim {
        Sim::new(self.cfg.clone(), self.base_url.clone(), self.w.clone())
    }

    pub fn add_item_to_draft(&mut self, inv: &str, item: &str) {
        let Some(ii) = self.w.invoice_items.get(item).cloned() else {
            return;
        };
        let line = self.item_line(&ii);
        if let Some(i) = self.w.invoices.get_mut(inv) {
            i.lines.push(line);
        }
    }

    pub fn refresh_draft_line(&mut self, inv: &str, item: &str) {
        let Some(ii) = self.w.invoice_items.get(item).cloned() else {
            return;
        };
        let line = self.item_line(&ii);
        if let Some(i) = self.w.invoices.get_mut(inv) {
            for l in i
                .lines
                .iter_mut()
                .filter(|l| l.invoice_item.as_deref() == Some(item))
            {
                let id = l.id.clone();
                *l = line.clone();
                l.id = id;
            }
        }
    }

    pub fn pay_out_of_band(&mut self, id: &str, now: i64) {
        if let Some(i) = self.w.invoices.get_mut(id) {
            i.amount_paid = i.amount_due();
        }
        self.mark_paid_after_charge(id, now);
    }

    /// A voided or uncollectible invoice no longer holds its subscription past due.
    pub fn after_invoice_settled(&mut self, id: &str, now: i64) {
        self.after_invoice_paid(id, now);
    }
}

/// Decline codes on which Stripe does not retry (the issuer will never approve the card).
pub fn is_hard_decline(code: &str) -> bool {
    matches!(
        code,
        "lost_card" | "stolen_card" | "fraudulent" | "pickup_card" | "expired_card"
    )
}
