-- Stripe → Tally: the webhook inbox, the subscription mirror and the transactions history.

-- Every verified Stripe event, stored raw before the webhook is acknowledged. `status`: pending
-- (to process; `attempts` > 0 after a transient failure, retried from `next_attempt_at`),
-- applied, ignored (not Tally's object or a type Tally does not handle), parked (permanent
-- failure, `last_error` says why). Workers claim rows with FOR UPDATE SKIP LOCKED and a lease
-- (`claimed_by`/`claimed_until`), so several Tally processes process each event once.
CREATE TABLE stripe_events (
    event_id        TEXT PRIMARY KEY,
    type            TEXT NOT NULL,
    object_id       TEXT,
    created         BIGINT NOT NULL,
    body            TEXT NOT NULL,
    source          TEXT NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    claimed_by      TEXT,
    claimed_until   TIMESTAMPTZ,
    last_error      TEXT,
    outcome         TEXT,
    processed_at    TIMESTAMPTZ
);
CREATE INDEX stripe_events_pending ON stripe_events (status, created, event_id);
CREATE INDEX stripe_events_object ON stripe_events (object_id, created, event_id);
CREATE INDEX stripe_events_received ON stripe_events (received_at);

-- The mirror of a Stripe subscription on Tally's subscription: Stripe's ids and fields as JSON
-- (`stripe`), and since when it is past due (the grace period counts from there).
ALTER TABLE subscriptions ADD COLUMN stripe JSONB;
ALTER TABLE subscriptions ADD COLUMN past_due_since TIMESTAMPTZ;

-- Payments, credit-pack purchases, failed payments and refunds, from Stripe's events. `key` makes
-- each fact recorded once however often its event is delivered or replayed.
CREATE TABLE transactions (
    seq                     BIGSERIAL PRIMARY KEY,
    id                      TEXT NOT NULL UNIQUE,
    key                     TEXT NOT NULL UNIQUE,
    customer_id             TEXT NOT NULL REFERENCES customers(id),
    kind                    TEXT NOT NULL,
    status                  TEXT NOT NULL,
    amount                  BIGINT NOT NULL,
    currency                TEXT NOT NULL,
    description             TEXT,
    stripe_invoice          TEXT,
    stripe_payment_intent   TEXT,
    stripe_charge           TEXT,
    stripe_checkout_session TEXT,
    stripe_subscription     TEXT,
    occurred_at             TIMESTAMPTZ NOT NULL,
    created_at              TIMESTAMPTZ NOT NULL
);
CREATE INDEX transactions_by_customer ON transactions (customer_id, seq);
