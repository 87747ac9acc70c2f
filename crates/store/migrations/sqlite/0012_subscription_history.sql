-- Every change of a customer's subscription (plan, interval, status, coupon, cancellation at the
-- period end, trial end), written in the transaction of the change itself, from both the local
-- API and the Stripe mirror. Business metrics (MRR and its movements, churn, trial conversion)
-- are computed from it. `at` is when the change took effect (the Stripe event's time for the
-- mirror), in Unix milliseconds.
CREATE TABLE subscription_history (
    seq                  INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id          TEXT NOT NULL REFERENCES customers(id),
    at                   INTEGER NOT NULL,
    plan                 TEXT NOT NULL,
    interval             TEXT NOT NULL,
    status               TEXT NOT NULL,
    source               TEXT NOT NULL,
    coupon               TEXT,
    cancel_at_period_end BOOLEAN NOT NULL DEFAULT FALSE,
    trial_end            INTEGER
);
CREATE INDEX subscription_history_by_customer ON subscription_history (customer_id, seq);
CREATE INDEX subscription_history_by_at ON subscription_history (at, seq);

-- Subscriptions that exist before the history starts: their current state, from their last change.
INSERT INTO subscription_history (customer_id, at, plan, interval, status, source, coupon,
    cancel_at_period_end, trial_end)
SELECT customer_id, updated_at, plan, interval, status, source,
       json_extract(stripe, '$.coupon'),
       COALESCE(json_extract(stripe, '$.cancel_at_period_end'), 0),
       CAST(strftime('%s', json_extract(stripe, '$.trial_end')) AS INTEGER) * 1000
FROM subscriptions ORDER BY updated_at, customer_id;
