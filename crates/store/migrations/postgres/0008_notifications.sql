-- The notification outbox, webhook endpoints and their deliveries (see the SQLite migration for
-- the meaning of each column).

CREATE TABLE notifications (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    type        TEXT NOT NULL,
    customer_id TEXT,
    payload     JSONB NOT NULL,
    dedup_key   TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX notifications_by_customer ON notifications (customer_id, seq);

CREATE TABLE webhook_endpoints (
    id                   TEXT PRIMARY KEY,
    url                  TEXT NOT NULL,
    secret               TEXT NOT NULL,
    previous_secret      TEXT,
    previous_expires_at  TIMESTAMPTZ,
    status               TEXT NOT NULL,
    failing_since        TIMESTAMPTZ,
    created_at           TIMESTAMPTZ NOT NULL,
    disabled_at          TIMESTAMPTZ,
    deleted_at           TIMESTAMPTZ
);

CREATE TABLE webhook_endpoint_events (
    endpoint_id TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    PRIMARY KEY (endpoint_id, event_type)
);
CREATE INDEX webhook_endpoint_events_by_type ON webhook_endpoint_events (event_type);

CREATE TABLE webhook_deliveries (
    seq               BIGSERIAL PRIMARY KEY,
    endpoint_id       TEXT NOT NULL,
    notification_seq  BIGINT NOT NULL,
    customer_key      TEXT NOT NULL,
    status            TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   TIMESTAMPTZ NOT NULL,
    leased_until      TIMESTAMPTZ,
    lease_holder      TEXT,
    last_status_code  INTEGER,
    last_error        TEXT,
    last_attempt_at   TIMESTAMPTZ,
    delivered_at      TIMESTAMPTZ,
    UNIQUE (endpoint_id, notification_seq)
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_order
    ON webhook_deliveries (endpoint_id, customer_key, status, notification_seq);

INSERT INTO notifications (id, type, customer_id, payload, dedup_key, created_at)
SELECT id, 'usage.threshold_reached', customer_id,
       jsonb_build_object('customer', customer_id, 'metric', metric,
                          'period_start', to_char(period_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                          'threshold', threshold, 'used', used::text, 'limit', "limit"::text),
       'usage.threshold_reached:' || customer_id || ':' || metric || ':'
           || (extract(epoch FROM period_start) * 1000)::bigint || ':' || threshold,
       created_at
FROM usage_notifications ORDER BY seq;
DROP TABLE usage_notifications;
