-- Every change of a customer's subscription (plan, interval, status, coupon, cancellation at the
-- period end, trial end), written in the transaction of the change itself, from both the local
-- API and the Stripe mirror. Business metrics (MRR and its movements, churn, trial conversion)
-- are computed from it. `at` is when the change took effect (the Stripe event's time for the
-- mirror).
CREATE TABLE subscription_history (
    seq                  BIGSERIAL PRIMARY KEY,
    customer_id          TEXT NOT NULL REFERENCES customers(id),
    at                   TIMESTAMPTZ NOT NULL,
    plan                 TEXT NOT NULL,
    interval             TEXT NOT NULL,
    status               TEXT NOT NULL,
    source               TEXT NOT NULL,
    coupon               TEXT,
    cancel_at_period_end BOOLEAN NOT NULL DEFAULT FALSE,
    trial_end            TIMESTAMPTZ
);
CREATE INDEX subscription_history_by_customer ON subscription_history (customer_id, seq);
CREATE INDEX subscription_history_by_at ON subscription_history (at, seq);

-- Subscriptions that exist before the history starts: their current state, from their last change.
INSERT INTO subscription_history (customer_id, at, plan, interval, status, source, coupon,
    cancel_at_period_end, trial_end)
SELECT customer_id, updated_at, plan, interval, status, source,
       stripe->>'coupon',
       COALESCE((stripe->>'cancel_at_period_end')::boolean, FALSE),
       (stripe->>'trial_end')::timestamptz
FROM subscriptions ORDER BY updated_at, customer_id;
