-- The one-round-trip debit (0013) with fewer and cheaper statements, the same outcomes and rules:
-- * the customer's account row is locked with `SELECT … FOR UPDATE` when it exists (the usual
--   case), instead of an upsert that wrote a new row version, and looked the customer up, on
--   every debit; the upsert remains for a customer's first credit change;
-- * one scan of the open buckets answers both "are expired credits waiting to be written off?"
--   and the balance;
-- * the buckets are drawn down by one UPDATE (running sums in the same order as before: expiring
--   first, earliest expiry first, then oldest) instead of a loop of one UPDATE per bucket.
-- Concurrent changes of one customer still serialize on the account row, so the balance never
-- goes below zero, whichever process debits.
CREATE OR REPLACE FUNCTION tally_credit_debit(
    p_customer TEXT, p_entry TEXT, p_kind TEXT, p_amount NUMERIC, p_reason TEXT,
    p_key TEXT, p_fingerprint TEXT, p_actor TEXT, p_quantity NUMERIC, p_now TIMESTAMPTZ,
    p_notify BOOLEAN, p_low NUMERIC)
RETURNS TABLE (outcome TEXT, balance NUMERIC, entry credit_entries)
LANGUAGE plpgsql AS $$
DECLARE
    v_balance NUMERIC;
    v_expired BOOLEAN;
    v_after NUMERIC;
    v_left NUMERIC := -p_amount;
    v_fingerprint TEXT;
    v_entry_id TEXT;
    v_entry credit_entries;
BEGIN
    IF p_amount >= 0 THEN
        RAISE EXCEPTION 'tally_credit_debit: the amount must be negative';
    END IF;
    PERFORM 1 FROM credit_accounts a WHERE a.customer_id = p_customer FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO credit_accounts (customer_id) SELECT id FROM customers WHERE id = p_customer
            ON CONFLICT (customer_id) DO UPDATE SET customer_id = EXCLUDED.customer_id;
        IF NOT FOUND THEN
            RETURN QUERY SELECT 'no_customer'::TEXT, NULL::NUMERIC, NULL::credit_entries;
            RETURN;
        END IF;
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
    SELECT COALESCE(bool_or(c.expires_at <= p_now), FALSE), COALESCE(SUM(c.remaining), 0)
        INTO v_expired, v_balance
        FROM credit_buckets c WHERE c.customer_id = p_customer AND c.open AND c.remaining > 0;
    IF v_expired THEN
        RETURN QUERY SELECT 'fallback'::TEXT, NULL::NUMERIC, NULL::credit_entries;
        RETURN;
    END IF;
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
    -- A bucket is drawn from when the buckets before it hold less than the debit; it gives what
    -- is left of the debit after them, at most all it holds.
    UPDATE credit_buckets c
        SET remaining = c.remaining - t.take, open = c.remaining - t.take > 0
        FROM (SELECT w.entry_id, LEAST(w.remaining, v_left - (w.before)) AS take
              FROM (SELECT b.entry_id, b.remaining,
                           SUM(b.remaining) OVER (
                               ORDER BY b.expires_at IS NULL, b.expires_at, b.created_at,
                                        b.entry_id
                               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) - b.remaining
                               AS before
                    FROM credit_buckets b
                    WHERE b.customer_id = p_customer AND b.open AND b.remaining > 0) w
              WHERE w.before < v_left) t
        WHERE c.entry_id = t.entry_id;
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
