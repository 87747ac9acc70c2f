CREATE TABLE customers (
    id              TEXT PRIMARY KEY,
    email           TEXT,
    name            TEXT,
    metadata        JSONB NOT NULL DEFAULT '{}',
    billing_anchor  TIMESTAMPTZ NOT NULL,
    -- End of the last invoiced allowance period: events before it are late adjustments.
    billed_through  TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE subscriptions (
    id          TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL UNIQUE REFERENCES customers(id),
    plan        TEXT NOT NULL,
    interval    TEXT NOT NULL,
    status      TEXT NOT NULL,
    source      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

-- Several Tally processes may ingest concurrently: the unique constraint is the dedup, and
-- INSERT ... ON CONFLICT DO NOTHING makes a concurrent identical batch wait and then count nothing.
CREATE TABLE events (
    seq                 BIGSERIAL PRIMARY KEY,
    customer_id         TEXT NOT NULL,
    event_id            TEXT NOT NULL,
    metric              TEXT NOT NULL,
    value               NUMERIC NOT NULL,
    ts                  TIMESTAMPTZ NOT NULL,
    properties          JSONB,
    usage_period_start  TIMESTAMPTZ NOT NULL,
    billed_period_start TIMESTAMPTZ NOT NULL,
    ingested_at         TIMESTAMPTZ NOT NULL,
    UNIQUE (customer_id, event_id)
);

CREATE TABLE usage_rollups (
    customer_id         TEXT NOT NULL,
    metric              TEXT NOT NULL,
    billed_period_start TIMESTAMPTZ NOT NULL,
    usage_period_start  TIMESTAMPTZ NOT NULL,
    sum                 NUMERIC NOT NULL,
    count               BIGINT NOT NULL,
    max                 NUMERIC,
    latest              NUMERIC,
    latest_at           TIMESTAMPTZ,
    unique_count        BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (customer_id, billed_period_start, metric, usage_period_start)
);

CREATE TABLE usage_unique_values (
    customer_id        TEXT NOT NULL,
    metric             TEXT NOT NULL,
    usage_period_start TIMESTAMPTZ NOT NULL,
    value              TEXT NOT NULL,
    PRIMARY KEY (customer_id, metric, usage_period_start, value)
);

CREATE TABLE invoices (
    id           TEXT PRIMARY KEY,
    customer_id  TEXT NOT NULL,
    plan         TEXT NOT NULL,
    interval     TEXT NOT NULL,
    period_start TIMESTAMPTZ NOT NULL,
    period_end   TIMESTAMPTZ NOT NULL,
    currency     TEXT NOT NULL,
    subtotal     BIGINT NOT NULL,
    discount     BIGINT NOT NULL,
    total        BIGINT NOT NULL,
    body         JSONB NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (customer_id, period_start)
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
);
