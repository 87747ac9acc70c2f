-- Rate limits shared by every Tally process on this database: one row per limited key holding
-- the GCRA "theoretical arrival time" (microseconds since the Unix epoch), advanced in one
-- statement per admitted request. UNLOGGED: the counters are worth no WAL flush; after a crash
-- PostgreSQL empties the table, which only forgets the current windows.
CREATE UNLOGGED TABLE rate_limits (
    key TEXT PRIMARY KEY,
    tat BIGINT NOT NULL
);

-- A debit of a customer's credits in one round trip: lock the customer's account, look the
-- idempotency key up, check the balance, draw from the open buckets (expiring first, earliest
-- expiry first, then oldest) and write the entry and the key, all inside the caller's statement.
-- The same rules as the store's general path (`crate::credits::plan`), which handles what this
-- function hands back as 'fallback': expired credits to write off first, or a balance crossing
-- zero or the low-balance threshold (notifications to enqueue). Outcomes: 'applied' or
-- 'replayed' (with the entry), 'conflict' (key reused for another request), 'insufficient' (with
-- the balance), 'no_customer', 'fallback' (nothing written).
CREATE FUNCTION tally_credit_debit(
    p_customer TEXT, p_entry TEXT, p_kind TEXT, p_amount NUMERIC, p_reason TEXT,
    p_key TEXT, p_fingerprint TEXT, p_actor TEXT, p_quantity NUMERIC, p_now TIMESTAMPTZ,
    p_notify BOOLEAN, p_low NUMERIC)
RETURNS TABLE (outcome TEXT, balance NUMERIC, entry credit_entries)
LANGUAGE plpgsql AS $$
DECLARE
    v_balance NUMERIC;
    v_after NUMERIC;
    v_left NUMERIC := -p_amount;
    v_take NUMERIC;
    v_fingerprint TEXT;
    v_entry_id TEXT;
    v_entry credit_entries;
    b RECORD;
BEGIN
    IF p_amount >= 0 THEN
        RAISE EXCEPTION 'tally_credit_debit: the amount must be negative';
    END IF;
    INSERT INTO credit_accounts (customer_id) SELECT id FROM customers WHERE id = p_customer
        ON CONFLICT (customer_id) DO UPDATE SET customer_id = EXCLUDED.customer_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'no_customer'::TEXT, NULL::NUMERIC, NULL::credit_entries;
        RETURN;
    END IF;
    IF p_key IS NOT NULL THEN
        SELECT i.fingerprint, i.entry_id INTO v_fingerprint, v_entry_id
            FROM credit_idempotency i WHERE i.customer_id = p_customer AND i.key = p_key;
        IF FOUND THEN
            IF v_fingerprint <> p_fingerprint THEN
                RETURN QUERY SELECT 'conflict'::TEXT, NULL::NUMERIC, NULL::credit_entries;
                RETURN;
            END IF;
            SELECT * INTO v_entry FROM credit_entries e WHERE e.id = v_entry_id;
            RETURN QUERY SELECT 'replayed'::TEXT, NULL::NUMERIC, v_entry;
            RETURN;
        END IF;
    END IF;
    IF EXISTS (SELECT 1 FROM credit_buckets c WHERE c.customer_id = p_customer AND c.open
               AND c.remaining > 0 AND c.expires_at <= p_now) THEN
        RETURN QUERY SELECT 'fallback'::TEXT, NULL::NUMERIC, NULL::credit_entries;
        RETURN;
    END IF;
    SELECT COALESCE(SUM(c.remaining), 0) INTO v_balance FROM credit_buckets c
        WHERE c.customer_id = p_customer AND c.open AND c.remaining > 0;
    IF v_balance < v_left THEN
        RETURN QUERY SELECT 'insufficient'::TEXT, v_balance, NULL::credit_entries;
        RETURN;
    END IF;
    v_after := v_balance + p_amount;
    IF p_notify AND ((v_balance > 0 AND v_after <= 0)
                     OR (p_low IS NOT NULL AND v_balance >= p_low AND v_after < p_low)) THEN
        RETURN QUERY SELECT 'fallback'::TEXT, NULL::NUMERIC, NULL::credit_entries;
        RETURN;
    END IF;
    FOR b IN SELECT c.entry_id, c.remaining FROM credit_buckets c
             WHERE c.customer_id = p_customer AND c.open AND c.remaining > 0
             ORDER BY c.expires_at IS NULL, c.expires_at, c.created_at, c.entry_id
    LOOP
        EXIT WHEN v_left = 0;
        v_take := LEAST(v_left, b.remaining);
        UPDATE credit_buckets SET remaining = b.remaining - v_take, open = b.remaining - v_take > 0
            WHERE entry_id = b.entry_id;
        v_left := v_left - v_take;
    END LOOP;
    INSERT INTO credit_entries (id, customer_id, kind, amount, balance_after, reason,
            idempotency_key, actor, quantity, created_at)
        VALUES (p_entry, p_customer, p_kind, p_amount, v_after, p_reason, p_key, p_actor,
            p_quantity, p_now)
        RETURNING * INTO v_entry;
    IF p_key IS NOT NULL THEN
        INSERT INTO credit_idempotency (customer_id, key, fingerprint, entry_id, created_at)
            VALUES (p_customer, p_key, p_fingerprint, p_entry, p_now);
    END IF;
    RETURN QUERY SELECT 'applied'::TEXT, v_after, v_entry;
END
$$;

-- Whether a period's usage total is within what Tally holds exactly (`tally_core::decimal::
-- USAGE_TOTAL`), counted on NUMERIC's text as `decimal::parse` counts it: at most 19 integer
-- digits, 28 fraction digits and 28 significant digits.
CREATE FUNCTION tally_usage_total_ok(n NUMERIC) RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE STRICT AS $$
    WITH t AS (SELECT split_part(abs(n)::text, '.', 1) AS i, split_part(abs(n)::text, '.', 2) AS f),
    d AS (SELECT CASE WHEN i = '0' THEN 0 ELSE length(i) END AS int_digits, f FROM t)
    SELECT int_digits <= 19 AND length(f) <= 28
        AND int_digits + CASE WHEN int_digits = 0 THEN length(ltrim(f, '0')) ELSE length(f) END <= 28
    FROM d
$$;

-- Fails the ingest statement calling it (rolling the whole batch back) when the batch names a
-- customer that does not exist or takes a usage total out of range. SQLSTATEs TY002 and TY001,
-- the message the customer or the metric.
CREATE FUNCTION tally_check_ingest(missing_customer TEXT, too_large_metric TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF missing_customer IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TY002', MESSAGE = missing_customer;
    END IF;
    IF too_large_metric IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TY001', MESSAGE = too_large_metric;
    END IF;
    RETURN TRUE;
END
$$;
