-- Instants are INTEGER milliseconds since the Unix epoch (UTC); decimals are TEXT (exact).

CREATE TABLE customers (
    id              TEXT PRIMARY KEY,
    email           TEXT,
    name            TEXT,
    metadata        TEXT NOT NULL DEFAULT '{}',
    billing_anchor  INTEGER NOT NULL,
    -- End of the last invoiced allowance period: events before it are late adjustments.
    billed_through  INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE subscriptions (
    id          TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL UNIQUE REFERENCES customers(id),
    plan        TEXT NOT NULL,
    interval    TEXT NOT NULL,
    status      TEXT NOT NULL,
    source      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- Append-only, keyed by ingestion order: inserting a batch writes sequential pages. No secondary
-- index: dedup is the writer's in-memory set (rebuilt from this table at start), aggregates come
-- from usage_rollups.
CREATE TABLE events (
    seq                 INTEGER PRIMARY KEY,
    customer_id         TEXT NOT NULL,
    event_id            TEXT NOT NULL,
    metric              TEXT NOT NULL,
    value               TEXT NOT NULL,
    ts                  INTEGER NOT NULL,
    properties          TEXT,
    usage_period_start  INTEGER NOT NULL,
    billed_period_start INTEGER NOT NULL,
    ingested_at         INTEGER NOT NULL
);

CREATE TABLE usage_rollups (
    customer_id         TEXT NOT NULL,
    metric              TEXT NOT NULL,
    billed_period_start INTEGER NOT NULL,
    usage_period_start  INTEGER NOT NULL,
    sum                 TEXT NOT NULL,
    count               INTEGER NOT NULL,
    max                 TEXT,
    latest              TEXT,
    latest_at           INTEGER,
    unique_count        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (customer_id, billed_period_start, metric, usage_period_start)
) WITHOUT ROWID;

-- Distinct values seen per period, only for unique_count metrics.
CREATE TABLE usage_unique_values (
    customer_id        TEXT NOT NULL,
    metric             TEXT NOT NULL,
    usage_period_start INTEGER NOT NULL,
    value              TEXT NOT NULL,
    PRIMARY KEY (customer_id, metric, usage_period_start, value)
) WITHOUT ROWID;

CREATE TABLE invoices (
    id           TEXT PRIMARY KEY,
    customer_id  TEXT NOT NULL,
    plan         TEXT NOT NULL,
    interval     TEXT NOT NULL,
    period_start INTEGER NOT NULL,
    period_end   INTEGER NOT NULL,
    currency     TEXT NOT NULL,
    subtotal     INTEGER NOT NULL,
    discount     INTEGER NOT NULL,
    total        INTEGER NOT NULL,
    body         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    UNIQUE (customer_id, period_start)
) WITHOUT ROWID;

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
) WITHOUT ROWID;
