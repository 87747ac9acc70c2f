-- The Stripe invoices of Tally's customers as their `invoice.*` events last reported them (the
-- row of the newest event wins: `event_created` is Stripe's `created` of that event).
CREATE TABLE stripe_invoices (
    id                   TEXT PRIMARY KEY,
    customer_id          TEXT NOT NULL,
    stripe_customer      TEXT,
    stripe_subscription  TEXT,
    status               TEXT NOT NULL,
    collection_method    TEXT,
    currency             TEXT NOT NULL,
    total                BIGINT NOT NULL,
    amount_paid          BIGINT NOT NULL,
    amount_remaining     BIGINT NOT NULL,
    finalized_at         TIMESTAMPTZ,
    due_date             TIMESTAMPTZ,
    period_start         TIMESTAMPTZ,
    period_end           TIMESTAMPTZ,
    billing_reason       TEXT,
    hosted_invoice_url   TEXT,
    number               TEXT,
    attempt_count        BIGINT NOT NULL,
    next_payment_attempt TIMESTAMPTZ,
    created              TIMESTAMPTZ NOT NULL,
    event_created        BIGINT NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL
);
CREATE INDEX stripe_invoices_customer ON stripe_invoices (customer_id, created);
CREATE INDEX stripe_invoices_created ON stripe_invoices (created);
