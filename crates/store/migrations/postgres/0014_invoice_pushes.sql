-- Usage lines of closed invoices sent to Stripe: one row per Tally invoice of a customer with a
-- Stripe subscription, committed before any Stripe call (the idempotency keys of the calls come
-- from it). `renewal_invoice` and `standalone_invoice` are each set once, by the first process
-- that chose them; `holder`/`until` keep two processes from pushing the same invoice at once.
CREATE TABLE invoice_pushes (
    invoice_id          TEXT PRIMARY KEY,
    customer_id         TEXT NOT NULL,
    stripe_customer     TEXT NOT NULL,
    stripe_subscription TEXT,
    period_start        TIMESTAMPTZ NOT NULL,
    period_end          TIMESTAMPTZ NOT NULL,
    currency            TEXT NOT NULL,
    lines               BIGINT NOT NULL,
    amount              BIGINT NOT NULL,
    state               TEXT NOT NULL,
    renewal_invoice     TEXT,
    standalone_invoice  TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    last_error          TEXT,
    request_id          TEXT,
    next_attempt_at     TIMESTAMPTZ NOT NULL,
    holder              TEXT,
    until               TIMESTAMPTZ,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX invoice_pushes_due ON invoice_pushes (state, next_attempt_at);
CREATE INDEX invoice_pushes_by_customer ON invoice_pushes (customer_id, period_start);
CREATE INDEX invoice_pushes_by_renewal ON invoice_pushes (renewal_invoice);
CREATE INDEX invoice_pushes_by_standalone ON invoice_pushes (standalone_invoice);
CREATE INDEX invoices_by_period_start ON invoices (period_start);

-- Refunds of payments: a row written before Stripe is called (its id is the refund's idempotency
-- key), or for a refund made in Stripe's dashboard when its `charge.refunded` arrives.
-- `dedup_key` makes each refund one row whichever way it comes; `credits_taken` and
-- `credits_shortfall` are what a refunded credit pack took back and could not (decimal strings).
CREATE TABLE refunds (
    id                TEXT PRIMARY KEY,
    dedup_key         TEXT NOT NULL UNIQUE,
    customer_id       TEXT NOT NULL,
    payment           TEXT,
    payment_intent    TEXT NOT NULL,
    amount            BIGINT NOT NULL,
    currency          TEXT NOT NULL,
    reason            TEXT,
    source            TEXT NOT NULL,
    state             TEXT NOT NULL,
    stripe_refund     TEXT,
    request_id        TEXT,
    last_error        TEXT,
    credits_taken     TEXT,
    credits_shortfall TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX refunds_by_payment_intent ON refunds (payment_intent);
