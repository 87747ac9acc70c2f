-- Links to Stripe and durable rows of Tally's calls to Stripe that create something.

-- One row per Tally customer that needs a Stripe customer, committed before Stripe is called
-- (the idempotency key of the create comes from it); `stripe_id` is set once, by the first
-- process whose call succeeds.
CREATE TABLE stripe_customers (
    customer_id TEXT PRIMARY KEY,
    stripe_id   TEXT UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

-- Checkout Sessions Tally asked Stripe for: the row is written first (its id is the session's
-- idempotency key and `metadata[tally_checkout_id]`), then Stripe's id, URL and request id.
CREATE TABLE checkout_sessions (
    id          TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    mode        TEXT NOT NULL,
    plan        TEXT,
    interval    TEXT,
    pack        TEXT,
    stripe_id   TEXT,
    url         TEXT,
    request_id  TEXT,
    last_error  TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX checkout_sessions_by_customer ON checkout_sessions (customer_id, created_at);

-- Plan changes of Stripe subscriptions Tally asked for (an upgrade invoices and charges at
-- once): the row is written first and its id is the update's idempotency key.
CREATE TABLE plan_changes (
    id            TEXT PRIMARY KEY,
    customer_id   TEXT NOT NULL,
    subscription  TEXT NOT NULL,
    from_plan     TEXT,
    from_interval TEXT,
    to_plan       TEXT NOT NULL,
    to_interval   TEXT NOT NULL,
    request_id    TEXT,
    last_error    TEXT,
    applied       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX plan_changes_by_customer ON plan_changes (customer_id, created_at);

-- Local subscriptions' coupons: one row per (coupon, customer), and a per-coupon count the
-- redemption increments only while it is below the catalog's max_redemptions, in the same
-- transaction, so the limit holds exactly across customers and processes.
CREATE TABLE coupon_counters (
    coupon_id TEXT PRIMARY KEY,
    redeemed  BIGINT NOT NULL
);
CREATE TABLE coupon_redemptions (
    coupon_id   TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    redeemed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (coupon_id, customer_id)
);
