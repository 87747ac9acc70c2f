-- Prepaid credits, usage-threshold notifications, flag overrides, audit log.

-- One row per customer with credits: locked FOR UPDATE by every credit change, so concurrent
-- changes of one customer (from any Tally process) are serialized.
CREATE TABLE credit_accounts (
    customer_id TEXT PRIMARY KEY REFERENCES customers(id)
);

CREATE TABLE credit_entries (
    seq             BIGSERIAL PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    kind            TEXT NOT NULL,
    amount          NUMERIC NOT NULL,
    balance_after   NUMERIC NOT NULL CHECK (balance_after >= 0),
    expires_at      TIMESTAMPTZ,
    reason          TEXT,
    idempotency_key TEXT,
    actor           TEXT,
    metric          TEXT,
    quantity        NUMERIC,
    event_id        TEXT,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX credit_entries_by_customer ON credit_entries (customer_id, seq);

CREATE TABLE credit_buckets (
    entry_id    TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    amount      NUMERIC NOT NULL,
    remaining   NUMERIC NOT NULL CHECK (remaining >= 0),
    open        BOOLEAN NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ
);
CREATE INDEX credit_buckets_open ON credit_buckets (customer_id) WHERE open;

CREATE TABLE credit_idempotency (
    customer_id TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    entry_id    TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (customer_id, key)
);

CREATE TABLE audit_log (
    seq             BIGSERIAL PRIMARY KEY,
    at              TIMESTAMPTZ NOT NULL,
    actor           TEXT,
    action          TEXT NOT NULL,
    customer_id     TEXT,
    object_id       TEXT,
    idempotency_key TEXT,
    details         JSONB NOT NULL
);
CREATE INDEX audit_log_by_customer ON audit_log (customer_id, seq);

CREATE TABLE usage_notifications (
    seq          BIGSERIAL PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    customer_id  TEXT NOT NULL,
    metric       TEXT NOT NULL,
    period_start TIMESTAMPTZ NOT NULL,
    threshold    INTEGER NOT NULL,
    used         NUMERIC NOT NULL,
    "limit"      NUMERIC NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    delivered_at TIMESTAMPTZ,
    UNIQUE (customer_id, metric, period_start, threshold)
);

CREATE TABLE flag_overrides (
    customer_id TEXT NOT NULL,
    flag        TEXT NOT NULL,
    enabled     BOOLEAN NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (customer_id, flag)
);
