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
    total                INTEGER NOT NULL,
    amount_paid          INTEGER NOT NULL,
    amount_remaining     INTEGER NOT NULL,
    finalized_at         INTEGER,
    due_date             INTEGER,
    period_start         INTEGER,
    period_end           INTEGER,
    billing_reason       TEXT,
    hosted_invoice_url   TEXT,
    number               TEXT,
    attempt_count        INTEGER NOT NULL,
    next_payment_attempt INTEGER,
    created              INTEGER NOT NULL,
    event_created        INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
);
CREATE INDEX stripe_invoices_customer ON stripe_invoices (customer_id, created);
CREATE INDEX stripe_invoices_created ON stripe_invoices (created);
