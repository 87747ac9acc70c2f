-- Automatic top-ups: each customer's settings, and one row per charge Tally decides to make.
CREATE TABLE auto_topups (
    customer_id           TEXT PRIMARY KEY,
    threshold             TEXT NOT NULL,
    pack                  TEXT NOT NULL,
    max_per_month         INTEGER NOT NULL,
    -- Declines in a row; at 3 the breaker is open until the card changes.
    consecutive_failures  INTEGER NOT NULL DEFAULT 0,
    -- After a decline, no top-up before this (exponential backoff).
    retry_after           INTEGER,
    failed_payment_method TEXT,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);

CREATE TABLE topups (
    id              TEXT PRIMARY KEY,
    customer_id     TEXT NOT NULL,
    pack            TEXT NOT NULL,
    credits         TEXT NOT NULL,
    amount          INTEGER NOT NULL,
    currency        TEXT NOT NULL,
    -- Calendar month (UTC) of the request, YYYY-MM: what max_per_month counts.
    month           TEXT NOT NULL,
    -- pending, succeeded or failed.
    state           TEXT NOT NULL,
    -- Calls to Stripe that ended without an answer about the charge (429, 5xx, timeouts).
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    claimed_until   INTEGER,
    payment_method  TEXT,
    payment_intent  TEXT,
    decline_code    TEXT,
    request_id      TEXT,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
-- At most one top-up in flight per customer, whichever process asks.
CREATE UNIQUE INDEX topups_one_in_flight ON topups (customer_id) WHERE state = 'pending';
CREATE INDEX topups_by_customer_month ON topups (customer_id, month);
CREATE INDEX topups_due ON topups (next_attempt_at) WHERE state = 'pending';
