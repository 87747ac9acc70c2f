//! A scripted month of subscriptions and invoices, every figure computed by hand.

use chrono::{DateTime, TimeZone, Utc};
use rust_decimal_macros::dec;

use super::*;

fn eur() -> Currency {
    Currency::parse("eur").unwrap()
}

fn usd() -> Currency {
    Currency::parse("usd").unwrap()
}

fn day(m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, m, d, 12, 0, 0).unwrap()
}

fn state(status: &str, fee: i64, cadence: Cadence) -> Option<SubscriptionState> {
    Some(SubscriptionState {
        status: status.into(),
        fee_minor: fee,
        currency: eur(),
        cadence,
        forever_discount: None,
    })
}

fn change(customer: &str, at: DateTime<Utc>, s: Option<SubscriptionState>) -> SubscriptionChange {
    SubscriptionChange {
        customer: customer.into(),
        at,
        state: s,
    }
}

const MONTHLY: Cadence = Cadence::Months(1);
const YEARLY: Cadence = Cadence::Years(1);

/// March 2026 in EUR (and one USD customer):
/// alice stays on 199.00/month; bob upgrades 199 → 499; carol downgrades yearly 4,788 → 1,908
/// (399 → 159 a month); dave cancels; erin, churned in February, comes back on 99; frank's trial
/// converts to 199; gina cancels in trial; hank starts on 199 with a forever 25 % coupon; ivan on
/// 199 with a once coupon (no effect on MRR); judy pays 10.00 a week (43.33 a month); kate is
/// past due on 199 (still MRR); leo starts on $49 a month.
fn history() -> Vec<SubscriptionChange> {
    let mut hank = state("active", 19900, MONTHLY);
    if let Some(h) = hank.as_mut() {
        h.forever_discount = Some(ForeverDiscount::PercentOff(dec!(25)));
    }
    let mut ivan = state("active", 19900, MONTHLY);
    if let Some(i) = ivan.as_mut() {
        i.forever_discount = None; // a once coupon is not a forever discount
    }
    let mut leo = state("active", 4900, MONTHLY);
    if let Some(l) = leo.as_mut() {
        l.currency = usd();
    }
    vec![
        change("alice", day(1, 10), state("active", 19900, MONTHLY)),
        change("bob", day(2, 1), state("active", 19900, MONTHLY)),
        change("bob", day(3, 10), state("active", 49900, MONTHLY)),
        change("carol", day(1, 1), state("active", 478800, YEARLY)),
        change("carol", day(3, 15), state("active", 190800, YEARLY)),
        change("dave", day(2, 1), state("active", 19900, MONTHLY)),
        change("dave", day(3, 20), state("canceled", 19900, MONTHLY)),
        change("erin", day(1, 1), state("active", 9900, MONTHLY)),
        change("erin", day(2, 1), None),
        change("erin", day(3, 5), state("active", 9900, MONTHLY)),
        change("frank", day(3, 1), state("trialing", 19900, MONTHLY)),
        change("frank", day(3, 15), state("active", 19900, MONTHLY)),
        change("gina", day(3, 2), state("trialing", 19900, MONTHLY)),
        change("gina", day(3, 16), state("canceled", 19900, MONTHLY)),
        change("hank", day(3, 3), hank),
        change("ivan", day(3, 4), ivan),
        change("judy", day(2, 1), state("active", 1000, Cadence::Weeks(1))),
        change("kate", day(2, 1), state("active", 19900, MONTHLY)),
        change("kate", day(2, 20), state("past_due", 19900, MONTHLY)),
        change("leo", day(3, 8), leo),
        change("mona", day(3, 9), state("active", 0, MONTHLY)), // a free plan
    ]
}

fn march() -> (DateTime<Utc>, DateTime<Utc>) {
    (
        Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap(),
    )
}

#[test]
fn committed_mrr_normalizes_and_applies_only_forever_discounts() {
    let s = |status: &str, fee, cadence| state(status, fee, cadence).unwrap().committed_mrr();
    assert_eq!(s("active", 19900, MONTHLY), 19900);
    assert_eq!(s("active", 478800, YEARLY), 39900);
    assert_eq!(s("active", 1000, Cadence::Weeks(1)), 4333); // 4,333.33
    assert_eq!(s("active", 1000, Cadence::Weeks(2)), 2167); // 2,166.67
    assert_eq!(s("active", 30000, Cadence::Months(3)), 10000);
    assert_eq!(s("active", 10001, Cadence::Months(6)), 1667); // 1,666.83
    assert_eq!(s("past_due", 19900, MONTHLY), 19900);
    for status in [
        "trialing",
        "canceled",
        "unpaid",
        "incomplete",
        "incomplete_expired",
        "paused",
    ] {
        assert_eq!(s(status, 19900, MONTHLY), 0, "{status}");
    }
    assert_eq!(s("active", 0, MONTHLY), 0);
    let mut d = state("active", 19900, MONTHLY).unwrap();
    d.forever_discount = Some(ForeverDiscount::PercentOff(dec!(25)));
    assert_eq!(d.committed_mrr(), 14925);
    d.forever_discount = Some(ForeverDiscount::AmountOff(2500));
    assert_eq!(d.committed_mrr(), 17400);
    d.forever_discount = Some(ForeverDiscount::AmountOff(50000));
    assert_eq!(d.committed_mrr(), 0);
    d.cadence = Cadence::Months(0);
    d.forever_discount = None;
    assert_eq!(d.committed_mrr(), 0);
}

#[test]
fn march_movements_are_exact_and_add_up() {
    let (from, to) = march();
    let all = mrr_movements(&history(), from, to);
    let m = &all[&eur()];
    assert_eq!(
        *m,
        MrrMovements {
            // alice, bob, carol (399.00), dave, judy (43.33), kate
            start: 19900 + 19900 + 39900 + 19900 + 4333 + 19900,
            new: 19900 + 14925 + 19900, // frank, hank, ivan
            reactivation: 9900,         // erin
            expansion: 30000,           // bob
            contraction: 24000,         // carol
            churn: 19900,               // dave
            end: 174558,
            subscribers_start: 6,
            subscribers_end: 9,
            subscribers_gained: 4,
            subscribers_churned: 1,
        }
    );
    assert_eq!(
        m.start + m.new + m.reactivation + m.expansion - m.contraction - m.churn,
        m.end
    );
    assert_eq!(m.churned_revenue(), 43900);
    assert_eq!(m.gross_mrr_churn_rate(), Some(dec!(0.354510)));
    assert_eq!(m.subscriber_churn_rate(), Some(dec!(0.1)));
    assert_eq!(m.arpu(), Some(19395));
    assert_eq!(ltv(m.arpu(), m.subscriber_churn_rate()), Some(193950));
    assert_eq!(committed_mrr_at(&history(), to)[&eur()], 174558);
    assert_eq!(committed_mrr_at(&history(), from)[&eur()], 123833);

    let u = &all[&usd()];
    assert_eq!(
        (u.start, u.new, u.end, u.subscribers_end),
        (0, 4900, 4900, 1)
    );
}

#[test]
fn a_change_at_the_period_end_belongs_to_the_next_period() {
    let (from, to) = march();
    let mut h = history();
    h.push(change("alice", to, None));
    let m = &mrr_movements(&h, from, to)[&eur()];
    assert_eq!((m.churn, m.end), (19900, 174558));
    let april = mrr_movements(&h, to, Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap());
    assert_eq!(april[&eur()].churn, 19900);
    assert_eq!(april[&eur()].start, 174558);
}

#[test]
fn ltv_is_not_available_without_churn() {
    assert_eq!(ltv(Some(19900), Some(Decimal::ZERO)), None);
    assert_eq!(ltv(Some(19900), None), None);
    assert_eq!(ltv(None, Some(dec!(0.1))), None);
}

#[test]
fn trial_conversion_over_the_last_30_days() {
    let (_, to) = march();
    let trials = vec![
        TrialEnd {
            customer: "frank".into(),
            at: day(3, 15),
            converted: true,
        },
        TrialEnd {
            customer: "gina".into(),
            at: day(3, 16),
            converted: false,
        },
        // Outside the window [Mar 2, Apr 1).
        TrialEnd {
            customer: "old".into(),
            at: day(2, 10),
            converted: false,
        },
    ];
    assert_eq!(trial_conversion_rate(&trials, to), Some(dec!(0.5)));
    assert_eq!(trial_conversion_rate(&[], to), None);
}

fn invoice(
    id: &str,
    finalized: DateTime<Utc>,
    total: i64,
    payment: PaymentState,
    usage: &[(&str, i64)],
) -> InvoiceFacts {
    InvoiceFacts {
        id: id.into(),
        currency: eur(),
        finalized_at: finalized,
        due_at: finalized + Duration::days(7),
        total,
        paid: if payment == PaymentState::Succeeded {
            total
        } else {
            0
        },
        credited: 0,
        payment,
        usage_lines: usage.iter().map(|(m, a)| ((*m).to_owned(), *a)).collect(),
        next_retry_at: None,
    }
}

#[test]
fn revenue_overdue_and_failed_payments() {
    let (from, to) = march();
    let mut dave = invoice("in_dave", day(3, 1), 19900, PaymentState::Failed, &[]);
    dave.next_retry_at = Some(day(3, 13));
    let mut kate = invoice("in_kate", day(2, 15), 19900, PaymentState::Pending, &[]);
    kate.credited = 900;
    let invoices = vec![
        invoice(
            "in_alice",
            day(3, 10),
            19900,
            PaymentState::Succeeded,
            &[("compute_hours", 200), ("api_spend", 3450)],
        ),
        invoice(
            "in_bob",
            day(3, 1),
            23550,
            PaymentState::Succeeded,
            &[("api_spend", 3650)],
        ),
        dave,
        kate,
        invoice(
            "in_void",
            day(3, 5),
            5000,
            PaymentState::Voided,
            &[("api_spend", 1000)],
        ),
        invoice("in_april", to, 7000, PaymentState::Pending, &[]),
    ];
    let pay = |reference: &str, at, amount| Payment {
        reference: reference.into(),
        at,
        currency: eur(),
        amount,
    };
    let fees = vec![pay("pi_pack", day(3, 12), 4900)];
    let refunds = vec![
        pay("pi_pack", day(3, 20), 1000),
        pay("in_alice", day(3, 25), 500),
        pay("in_kate", day(3, 26), 300), // against a February invoice: not March's revenue
    ];
    let attempt = |at, amount, succeeded| PaymentAttempt {
        at,
        currency: eur(),
        amount,
        succeeded,
    };
    let attempts = vec![
        attempt(day(3, 1), 19900, false),
        attempt(day(3, 2), 23550, true),
        attempt(day(3, 4), 19900, false),
        attempt(day(2, 27), 19900, false),
    ];
    let r = &revenue(&invoices, &fees, &refunds, &attempts, from, to)[&eur()];
    assert_eq!(
        r.usage_by_metric,
        BTreeMap::from([
            ("api_spend".to_owned(), 7100),
            ("compute_hours".to_owned(), 200)
        ])
    );
    assert_eq!(r.usage_run_rate, 7300);
    assert_eq!(r.gross_revenue, 19900 + 23550 + 19900 + 4900 - 1000 - 500);
    assert_eq!((r.failed_payments, r.failed_amount), (2, 39800));
    assert_eq!(
        r.collection,
        BTreeMap::from([("failed", (1, 19900)), ("succeeded", (2, 43450))])
    );
    assert_eq!(overdue_balance(&invoices, to)[&eur()], 19900 + 19000);
    assert_eq!(
        failing_invoices(&invoices),
        vec![("in_dave", Some(day(3, 13)))]
    );
}
