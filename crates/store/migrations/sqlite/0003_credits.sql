-- Prepaid credits, usage-threshold notifications, flag overrides, audit log.
-- Credit amounts are exact decimal TEXT; instants are INTEGER milliseconds (UTC).

-- The ledger: one row per entry, append-only.
CREATE TABLE credit_entries (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    kind            TEXT NOT NULL,
    amount          TEXT NOT NULL,
    balance_after   TEXT NOT NULL,
    expires_at      INTEGER,
    reason          TEXT,
    idempotency_key TEXT,
    actor           TEXT,
    metric          TEXT,
    quantity        TEXT,
    event_id        TEXT,
    created_at      INTEGER NOT NULL
);
CREATE INDEX credit_entries_by_customer ON credit_entries (customer_id, seq);

-- Credits left per entry that added credits; `open` = 1 while remaining > 0.
CREATE TABLE credit_buckets (
    entry_id    TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    amount      TEXT NOT NULL,
    remaining   TEXT NOT NULL,
    open        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER
) WITHOUT ROWID;
CREATE INDEX credit_buckets_open ON credit_buckets (customer_id, open);

-- Idempotency keys of credit requests, per customer.
CREATE TABLE credit_idempotency (
    customer_id TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    entry_id    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (customer_id, key)
) WITHOUT ROWID;

CREATE TABLE audit_log (
    seq             INTEGER PRIMARY KEY,
    at              INTEGER NOT NULL,
    actor           TEXT,
    action          TEXT NOT NULL,
    customer_id     TEXT,
    object_id       TEXT,
    idempotency_key TEXT,
    details         TEXT NOT NULL
);
CREATE INDEX audit_log_by_customer ON audit_log (customer_id, seq);

-- Outbox of usage-threshold notifications: one per customer, metric, period and threshold.
CREATE TABLE usage_notifications (
    seq          INTEGER PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    customer_id  TEXT NOT NULL,
    metric       TEXT NOT NULL,
    period_start INTEGER NOT NULL,
    threshold    INTEGER NOT NULL,
    used         TEXT NOT NULL,
    "limit"      TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    delivered_at INTEGER,
    UNIQUE (customer_id, metric, period_start, threshold)
);

CREATE TABLE flag_overrides (
    customer_id TEXT NOT NULL,
    flag        TEXT NOT NULL,
    enabled     INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (customer_id, flag)
) WITHOUT ROWID;
