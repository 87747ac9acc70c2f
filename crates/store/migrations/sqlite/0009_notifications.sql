-- The notification outbox, webhook endpoints and their deliveries.

-- One row per moment Tally tells the app about, written in the transaction of the change that
-- causes it. `dedup_key` is unique so the same moment never enqueues twice.
CREATE TABLE notifications (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    type        TEXT NOT NULL,
    customer_id TEXT,
    payload     TEXT NOT NULL,
    dedup_key   TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);
CREATE INDEX notifications_by_customer ON notifications (customer_id, seq);

CREATE TABLE webhook_endpoints (
    id                   TEXT PRIMARY KEY,
    url                  TEXT NOT NULL,
    secret               TEXT NOT NULL,
    -- While a rotation's grace period lasts, the previous secret signs too.
    previous_secret      TEXT,
    previous_expires_at  INTEGER,
    status               TEXT NOT NULL,
    -- First failure since the last success; an endpoint failing for 3 days is disabled.
    failing_since        INTEGER,
    created_at           INTEGER NOT NULL,
    disabled_at          INTEGER,
    deleted_at           INTEGER
);

-- The event types an endpoint receives (`*`: all).
CREATE TABLE webhook_endpoint_events (
    endpoint_id TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    PRIMARY KEY (endpoint_id, event_type)
) WITHOUT ROWID;
CREATE INDEX webhook_endpoint_events_by_type ON webhook_endpoint_events (event_type);

-- One row per (endpoint, notification), created with the notification (fan-out in the same
-- transaction). `customer_key` orders deliveries per customer ('' for notifications without one).
CREATE TABLE webhook_deliveries (
    seq               INTEGER PRIMARY KEY,
    endpoint_id       TEXT NOT NULL,
    notification_seq  INTEGER NOT NULL,
    customer_key      TEXT NOT NULL,
    status            TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   INTEGER NOT NULL,
    leased_until      INTEGER,
    lease_holder      TEXT,
    last_status_code  INTEGER,
    last_error        TEXT,
    last_attempt_at   INTEGER,
    delivered_at      INTEGER,
    UNIQUE (endpoint_id, notification_seq)
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_order
    ON webhook_deliveries (endpoint_id, customer_key, status, notification_seq);

-- Usage-threshold notifications move to the outbox as `usage.threshold_reached`.
INSERT INTO notifications (id, type, customer_id, payload, dedup_key, created_at)
SELECT id, 'usage.threshold_reached', customer_id,
       json_object('customer', customer_id, 'metric', metric,
                   'period_start', strftime('%Y-%m-%dT%H:%M:%SZ', period_start / 1000.0, 'unixepoch'),
                   'threshold', threshold, 'used', used, 'limit', "limit"),
       'usage.threshold_reached:' || customer_id || ':' || metric || ':' || period_start || ':' || threshold,
       created_at
FROM usage_notifications ORDER BY seq;
DROP TABLE usage_notifications;
