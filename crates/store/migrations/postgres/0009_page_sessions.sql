-- Page sessions of the customer billing page: a one-time link code that becomes a session token.
-- Only hashes of the code and the token are stored.
CREATE TABLE page_sessions (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers (id),
    code_hash TEXT NOT NULL UNIQUE,
    token_hash TEXT UNIQUE,
    locale TEXT NOT NULL,
    return_url TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    code_expires_at TIMESTAMPTZ NOT NULL,
    redeemed_at TIMESTAMPTZ,
    last_seen_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX page_sessions_by_customer ON page_sessions (customer_id);
