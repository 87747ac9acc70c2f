-- Allowance periods follow a mirrored Stripe subscription's billing cycle anchor: when the anchor
-- changes, `billing_anchor` takes the new one and `previous_anchor` keeps the one the periods
-- before it followed (the period running at the change ends at the new anchor).
ALTER TABLE customers ADD COLUMN previous_anchor INTEGER;

-- Bumped by every anchor change, so each process sharing the database drops its cached anchors
-- when it sees a new value (read every few hundred milliseconds).
CREATE TABLE anchor_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO anchor_version (id, version) VALUES (1, 0);

-- Stripe's hosted page of the invoice that carries a push's lines, as its events report it.
ALTER TABLE invoice_pushes ADD COLUMN hosted_invoice_url TEXT;
