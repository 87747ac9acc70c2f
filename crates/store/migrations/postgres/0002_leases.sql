-- Named leases: one holder at a time until `until` (e.g. the period closer's leader among several
-- Tally processes).
CREATE TABLE leases (
    name   TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until  TIMESTAMPTZ NOT NULL
);
